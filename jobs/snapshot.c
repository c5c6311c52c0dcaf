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

#include "common/ids.h"
#include "common/lazylib.h"
#include "jobs/jobs.h"
#include "jobs/sandbox.h"

typedef struct sink_arg {
    store_writer *w;
    job_ctx *ctx;
} sink_arg;

static int sink(void *arg, const void *buf, size_t n, sw_err *err)
{
    sink_arg *a = arg;
    if (job_cancelled(a->ctx)) return sw_errc(err, SW_E_TIMEOUT, "snapshot cancelled");
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
    if (lazy_need(LAZY_CRYPTO, err) != 0) return -1;   /* UUIDv5 hashes with libcrypto */
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
    sink_arg a = {w, ctx};
    if (s->ops->archive(s, sink, &a, st, err) != 0) {
        store_put_abort(w);
        return -1;
    }
    if (job_cancelled(ctx)) {
        store_put_abort(w);
        return sw_errc(err, SW_E_TIMEOUT, "snapshot cancelled before commit");
    }
    return store_put_commit(w, info, err);
}

int job_snapshot_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    const job_req *r = ctx->req;
    sb_session s;
    sb_state state;
    char sid[SW_UUID_LEN + 1], key[STORE_KEY_MAX];
    store_info info = {0};
    arc_stats st = {0};
    int rc = -1;
    if (sb_session_init(&s, ctx->cfg, ctx, r->id, r->sandbox_id, r->session_id, err) != 0 ||
        snapshot_id(r, sid, err) != 0 || s.ops->state(&s, &state, err) != 0)
        goto out;
    if (state == SB_NO_SESSION) {
        sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s", s.dir);
        goto out;
    }
    if (state == SB_NO_OUTPUTS) { /* Onyx's EMPTY_SNAPSHOT: no object, no row */
        *result = json_pack("{s:b}", "empty", 1);
        rc = 0;
        goto out;
    }
    snprintf(key, sizeof key, "%s/snapshots/%s/%s.tar.gz", r->tenant_id, s.session_id, sid);
    if (upload(ctx, &s, key, &info, &st, err) != 0) goto out;
    if (job_cancelled(ctx)) {
        sw_errc(err, SW_E_TIMEOUT, "snapshot cancelled before its row was written");
        goto out;
    }
    if (db_snapshot_insert(job_db(ctx), sid, s.session_id, key, info.size_bytes, err) != 0) goto out;
    *result = json_pack("{s:s,s:s,s:I,s:s,s:I}", "snapshot_id", sid, "storage_path", key,
                        "size_bytes", (json_int_t)info.size_bytes, "sha256", info.sha256,
                        "entries", (json_int_t)st.entries);
    rc = 0;
out:
    sb_session_close(&s);
    job_store_release(ctx);
    return rc;
}
