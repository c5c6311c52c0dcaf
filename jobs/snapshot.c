/* jobs/snapshot.c — the snapshot job (docs/jobs.md "snapshot"): a session's outputs/ (and non-empty
 * attachments/) streamed as tar.gz straight into the store, then the `snapshot` row.
 * Owns: the snapshot id rule, the object key, the order "object, then row" and the result.
 * Does not own: the archive walk (common/arc.h via the backend), uploads (common/store.h),
 * SQL (common/db.h).
 * Idempotent: the id (and so the key and the row) is a function of the job id, and store
 * objects are write-once: the first attempt to commit the key wins, a later one (a rerun,
 * or a worker that stalled past its lease and resumed) adopts the stored object, so the
 * size and sha256 in the row and the result always describe the bytes stored, whoever
 * wrote them (docs/store.md "Write-once objects"). The row insert treats a conflict as
 * success: any attempt would insert the same values. No temp file: the archive's gzip
 * blocks go to store_put_write as they are produced. */
#include <stdio.h>
#include <string.h>

#include "common/ids.h"
#include "jobs/jobs.h"
#include "jobs/sandbox.h"

typedef struct sink_arg {
    store_writer *w;
    job_ctx *ctx;
    int64_t bytes;        /* compressed bytes so far (cap, progress events) */
    int64_t max_bytes;    /* SNAPWORKER_MAX_SNAPSHOT_BYTES, 0 = none */
    arc_live live;        /* members written so far, kept by the backend (progress events) */
} sink_arg;

/* The cap counts the archive as stored (compressed), checked as it grows: an archive over it
 * is aborted before its commit, so nothing is published and no row written. */
static int sink(void *arg, const void *buf, size_t n, sw_err *err)
{
    sink_arg *a = arg;
    if (job_cancelled(a->ctx)) return sw_errc(err, SW_E_TIMEOUT, "snapshot cancelled");
    a->bytes += (int64_t)n;
    if (a->max_bytes > 0 && a->bytes > a->max_bytes)
        return sw_errf(err, SW_E_ARCHIVE_TOO_LARGE, false,
                       "snapshot archive over SNAPWORKER_MAX_SNAPSHOT_BYTES (%lld bytes)",
                       (long long)a->max_bytes);
    job_progress(a->ctx, a->bytes, arc_live_get(&a->live));
    return store_put_write(a->w, buf, n, err);
}

/* args.snapshot_id (a UUID, lowercased), else the job id when it is a UUID, else
 * UUIDv5(URL namespace, "snapworker:" + job id). */
static int snapshot_id(const job_req *r, char out[SW_UUID_LEN + 1], sw_err *err)
{
    json_t *v = json_object_get(r->args, "snapshot_id");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || !id_uuid_lower(json_string_value(v), out))
            return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.snapshot_id: expected a UUID");
        return 0;
    }
    if (id_uuid_lower(r->id, out)) return 0;
    char name[160];
    snprintf(name, sizeof name, "snapworker:%s", r->id);
    id_uuid5_url(name, out);
    return 0;
}

static int upload(job_ctx *ctx, sb_session *s, const char *key, store_info *info, arc_stats *st,
                  sw_err *err)
{
    store *sto = job_store(ctx, err);
    if (!sto) return -1;
    store_writer *w = store_put_begin(sto, key, err);
    if (!w) return -1;
    sink_arg a = {w, ctx, 0, ctx->cfg->max_snapshot_bytes};
    arc_live_init(&a.live);
    s->live = &a.live;
    int rc = s->ops->archive(s, sink, &a, st, err);
    s->live = NULL;
    if (rc != 0) {
        store_put_abort(w);
        return -1;
    }
    if (job_cancelled(ctx)) {
        store_put_abort(w);
        return sw_errc(err, SW_E_TIMEOUT, "snapshot cancelled before commit");
    }
    return store_put_commit(w, info, err);
}

/* args.exclude: a list of strings or one comma-separated string; absent or null = the
 * SNAPWORKER_SNAPSHOT_EXCLUDE default (already checked at start). */
int job_snapshot_excludes(job_ctx *ctx, excl **out, sw_err *err)
{
    char why[160];
    excl *x = excl_new();
    json_t *v = ctx->req ? json_object_get(ctx->req->args, "exclude") : NULL;
    int rc = 0;
    if (!v || json_is_null(v)) {
        rc = excl_add_csv(x, ctx->cfg->snapshot_exclude, why, sizeof why);
    } else if (json_is_string(v)) {
        rc = excl_add_csv(x, json_string_value(v), why, sizeof why);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *p;
        json_array_foreach(v, i, p) {
            if (!json_is_string(p)) {
                snprintf(why, sizeof why, "item %zu is not a string", i);
                rc = -1;
                break;
            }
            if ((rc = excl_add(x, json_string_value(p), why, sizeof why)) != 0) break;
        }
    } else {
        snprintf(why, sizeof why, "expected a list of strings or a comma-separated string");
        rc = -1;
    }
    if (rc != 0) {
        excl_free(x);
        *out = NULL;
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.exclude: %s", why);
    }
    *out = x;
    return 0;
}

int job_snapshot_session(job_ctx *ctx, struct sb_session *s, const char *tenant_id,
                         const char *snapshot_id_, job_snap_row *row, sw_err *err)
{
    sb_state state;
    store_info info = {0};
    arc_stats st = {0};
    memset(row, 0, sizeof *row);
    if (s->ops->state(s, &state, err) != 0) return -1;
    if (state == SB_NO_SESSION)
        return sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s", s->dir);
    if (state == SB_NO_OUTPUTS) { /* Onyx's EMPTY_SNAPSHOT: no object, no row */
        row->empty = true;
        return 0;
    }
    snprintf(row->snapshot_id, sizeof row->snapshot_id, "%s", snapshot_id_);
    snprintf(row->session_id, sizeof row->session_id, "%s", s->session_id);
    snprintf(row->storage_path, sizeof row->storage_path, "%s/snapshots/%s/%s.tar.gz", tenant_id,
             s->session_id, snapshot_id_);
    if (upload(ctx, s, row->storage_path, &info, &st, err) != 0) return -1;
    row->size_bytes = info.size_bytes;
    snprintf(row->sha256, sizeof row->sha256, "%s", info.sha256);
    row->entries = st.entries;
    return 0;
}

json_t *job_snap_row_json(const job_snap_row *row)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:I}", "snapshot_id", row->snapshot_id, "storage_path",
                     row->storage_path, "size_bytes", (json_int_t)row->size_bytes, "sha256",
                     row->sha256, "entries", (json_int_t)row->entries);
}

int job_snapshot_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    const job_req *r = ctx->req;
    sb_session s;
    char sid[SW_UUID_LEN + 1];
    job_snap_row row;
    excl *ex = NULL;
    int rc = -1;
    if (sb_session_init(&s, ctx->cfg, ctx, r->id, r->sandbox_id, r->session_id, err) != 0 ||
        snapshot_id(r, sid, err) != 0 || job_snapshot_excludes(ctx, &ex, err) != 0)
        goto out;
    s.exclude = ex;
    if (job_snapshot_session(ctx, &s, r->tenant_id, sid, &row, err) != 0) goto out;
    if (row.empty) {
        *result = json_pack("{s:b}", "empty", 1);
        rc = 0;
        goto out;
    }
    if (job_cancelled(ctx)) {
        sw_errc(err, SW_E_TIMEOUT, "snapshot cancelled before its row was written");
        goto out;
    }
    if (db_snapshot_insert(job_db(ctx), row.snapshot_id, row.session_id, row.storage_path,
                           row.size_bytes, err) != 0)
        goto out;
    *result = job_snap_row_json(&row);
    rc = 0;
out:
    sb_session_close(&s);
    excl_free(ex);
    job_store_release(ctx);
    return rc;
}
