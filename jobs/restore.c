/* jobs/restore.c — the restore job (docs/jobs.md "restore", docs/onyx-compat.md) and its rollback.
 * Owns: the order of the steps, the port memo, the snapshot path rule, and undoing a
 * half-done restore. Does not own: SQL and the port lock (common/db.h), transfers
 * (common/store.h), extraction and swaps (the backend, jobs/sandbox.h), config bytes.
 *
 *   remember port_before (memo, first attempt only) → allocate + commit the port (memo
 *   port_job) → outputs/ exists?  yes: skipped
 *                                no:  latest snapshot (or the given path) → stream from the
 *                                     store into a staging folder → swap into the session;
 *                                     no snapshot at all: fresh workspace from the template
 *   → regenerate config → start the dev server → session active.
 *
 * Failure: whatever this attempt swapped in is swapped back out and its dev server stopped,
 * the session's files@/AGENTS.md/opencode.json are put back as they were (kept aside before
 * the rewrite: no new api key lingers), the staging folder is removed, and the error goes up (a retryable one is retried by the
 * worker with the port kept). When the job ends dead, job_restore_on_dead puts the port
 * back to port_before with a compare-and-set on port_job; the worker retries that until
 * PostgreSQL answers. The session lock keeps other jobs of the session out meanwhile. */
#include <stdio.h>
#include <stdlib.h>

#include "common/ids.h"
#include "common/log.h"
#include "jobs/jobs.h"
#include "jobs/sandbox.h"

#define MEMO_BEFORE "port_before"   /* "null" or the port the session had before the job */
#define MEMO_MINE "port_job"        /* the port this job allocated or set */

typedef struct restore_args {
    const char *snapshot_path;  /* validated, or NULL = the latest row */
    int port;                   /* requested nextjs_port, 0 = allocate */
    bool start_webapp;          /* default true */
} restore_args;

typedef struct restore_out {
    int port;
    char snapshot_path[1024];   /* "" = none used */
    arc_stats st;
    bool fresh, skipped;
    sb_webapp web;
} restore_out;

/* {tenant}/snapshots/{session}/<uuid>.tar.gz of this job's own tenant and session. */
static int check_given_path(const job_req *r, const char *p, sw_err *err)
{
    char prefix[160];
    int n = snprintf(prefix, sizeof prefix, "%s/snapshots/%s/", r->tenant_id, r->session_id);
    size_t len = strlen(p);
    if (strncmp(p, prefix, (size_t)n) != 0 || len != (size_t)n + SW_UUID_LEN + 7 ||
        strcmp(p + n + SW_UUID_LEN, ".tar.gz") != 0)
        return sw_errc(err, SW_E_INVALID_PAYLOAD,
                       "args.snapshot_storage_path: not a snapshot of this tenant and session");
    char id[SW_UUID_LEN + 1];
    memcpy(id, p + n, SW_UUID_LEN);
    id[SW_UUID_LEN] = '\0';
    if (!id_valid_uuid(id))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.snapshot_storage_path: bad snapshot id");
    return 0;
}

static int parse_args(const job_req *r, restore_args *a, sw_err *err)
{
    a->snapshot_path = NULL;
    a->port = 0;
    a->start_webapp = true;
    json_t *v = json_object_get(r->args, "snapshot_storage_path");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.snapshot_storage_path: expected a string");
        if (check_given_path(r, json_string_value(v), err) != 0) return -1;
        a->snapshot_path = json_string_value(v);
    }
    v = json_object_get(r->args, "nextjs_port");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
            return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.nextjs_port: expected 1..65535");
        a->port = (int)json_integer_value(v);
    }
    v = json_object_get(r->args, "start_webapp");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.start_webapp: expected a boolean");
        a->start_webapp = json_is_true(v);
    }
    return 0;
}

/* ------------------------------------------------------------------ port */

static int memo_port(job_ctx *ctx, const char *name, int port, sw_err *err)
{
    char v[16];
    if (port < 0) snprintf(v, sizeof v, "null");
    else snprintf(v, sizeof v, "%d", port);
    const char *have = ctx->memo_get(ctx, name);
    if (have && strcmp(have, v) == 0) return 0;
    return ctx->memo_set(ctx, name, v, err);
}

/* A requested port is written with a compare-and-set from the current value; db_port_restore
 * turns a port held by another session of the scope into NULL, which is refused here. */
static int set_port(db *d, const char *sid, int want, sw_err *err)
{
    int cur;
    if (!db_external(d) && db_session_ensure(d, sid, NULL, err) != 0) return -1;
    if (db_session_port(d, sid, &cur, err) != 0) return -1;
    if (cur == want) return 0;
    if (db_port_restore(d, sid, cur, want, err) < 0 || db_session_port(d, sid, &cur, err) != 0)
        return -1;
    if (cur != want)
        return sw_errc(err, SW_E_PORT_EXHAUSTED, "requested port %d is held by another session",
                       want);
    return 0;
}

static int take_port(job_ctx *ctx, const restore_args *a, int *port, sw_err *err)
{
    db *d = job_db(ctx);
    const char *sid = ctx->req->session_id;
    if (!ctx->memo_get(ctx, MEMO_BEFORE)) { /* retries keep the first attempt's value */
        int before;
        if (db_session_port(d, sid, &before, err) != 0 || memo_port(ctx, MEMO_BEFORE, before, err) != 0)
            return -1;
    }
    if (a->port > 0) {
        if (set_port(d, sid, a->port, err) != 0) return -1;
        *port = a->port;
    } else if (db_port_allocate(d, sid, port, err) != 0) {
        return -1;
    }
    return memo_port(ctx, MEMO_MINE, *port, err);
}

int job_restore_on_dead(job_ctx *ctx, sw_err *err)
{
    const char *before = ctx->memo_get(ctx, MEMO_BEFORE);
    if (!before) return 0; /* the job never got as far as the port */
    int prev = strcmp(before, "null") == 0 ? -1 : atoi(before);
    const char *mine = ctx->memo_get(ctx, MEMO_MINE);
    db *d = job_db(ctx);
    int expected;
    if (!d) return sw_errc(err, SW_E_INTERNAL, "no database handle");
    if (mine) expected = strcmp(mine, "null") == 0 ? -1 : atoi(mine);
    else if (db_session_port(d, ctx->req->session_id, &expected, err) != 0) return -1;
    if (expected == prev) return 0;
    return db_port_restore(d, ctx->req->session_id, expected, prev, err) < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ workspace */

typedef struct source_arg {
    store_reader *rd;
    job_ctx *ctx;
    int64_t bytes;   /* archive bytes read so far (progress events) */
    arc_live live;   /* members extracted (or checked) so far, kept by the backend */
} source_arg;

static ssize_t source(void *arg, void *buf, size_t n, sw_err *err)
{
    source_arg *a = arg;
    if (job_cancelled(a->ctx)) return sw_errc(err, SW_E_TIMEOUT, "restore cancelled");
    ssize_t got = store_get_read(a->rd, buf, n, err);
    if (got > 0) {
        a->bytes += got;
        job_progress(a->ctx, a->bytes, arc_live_get(&a->live));
    }
    return got;
}

/* The object must be the one its row recorded: the size before a byte is extracted
 * (row_size 0 = not recorded, as Onyx writes rows), the sha256 against KEY.sha256 by
 * the store while it streams (store_get_drain, before the swap). A mismatch is a
 * permanent storage_error, like a sidecar mismatch: retrying would read the same bytes.
 * (Not unsafe_archive: the archive is not hostile, it is not the recorded one.) */
static int download(job_ctx *ctx, sb_session *s, sb_stage *g, int64_t row_size, restore_out *o,
                    sw_err *err)
{
    store *sto = job_store(ctx, err);
    if (!sto) return -1;
    store_info info = {0};
    store_reader *rd = store_get_open(sto, o->snapshot_path, &info, err);
    if (!rd) return -1;
    if (row_size > 0 && info.size_bytes >= 0 && info.size_bytes != row_size) {
        store_get_close(rd);
        return sw_errf(err, SW_E_STORAGE, false,
                       "%s/%.120s is %lld bytes but its snapshot row records %lld: not the "
                       "snapshot that was recorded", store_describe(sto), o->snapshot_path,
                       (long long)info.size_bytes, (long long)row_size);
    }
    source_arg a = {rd, ctx};
    arc_live_init(&a.live);
    s->live = &a.live;
    int rc = s->ops->stage_extract(g, source, &a, &o->st, err);
    s->live = NULL;
    if (rc == 0) rc = store_get_drain(rd, err); /* verify size and sha256 to the last byte */
    store_get_close(rd);
    return rc;
}

/* Into the stage: the snapshot (given or latest), or a fresh workspace when there is none. */
static int fill_stage(job_ctx *ctx, sb_session *s, const restore_args *a, sb_stage *g,
                      restore_out *o, sw_err *err)
{
    bool found = true, has_row = false;
    int64_t row_size = 0;
    if (a->snapshot_path) {
        snprintf(o->snapshot_path, sizeof o->snapshot_path, "%s", a->snapshot_path);
        if (db_snapshot_size(job_db(ctx), s->session_id, a->snapshot_path, &row_size, &has_row,
                             err) != 0)
            return -1;
    } else if (db_snapshot_latest(job_db(ctx), s->session_id, o->snapshot_path,
                                  sizeof o->snapshot_path, &row_size, &found, err) != 0) {
        return -1;
    }
    if (job_cancelled(ctx)) return sw_errc(err, SW_E_TIMEOUT, "restore cancelled");
    if (found) return download(ctx, s, g, row_size, o, err);
    o->snapshot_path[0] = '\0';
    o->fresh = true;
    return s->ops->stage_fresh(g, err);
}

/* ------------------------------------------------------------------ the job */

static json_t *result_json(const restore_out *o)
{
    return json_pack("{s:i,s:o,s:I,s:I,s:b,s:b,s:o}", "nextjs_port", o->port, "snapshot_storage_path",
                     o->snapshot_path[0] ? json_string(o->snapshot_path) : json_null(), "bytes",
                     (json_int_t)o->st.bytes, "entries", (json_int_t)o->st.entries, "fresh", o->fresh,
                     "skipped", o->skipped, "webapp_pid",
                     o->web.pid > 0 ? json_integer(o->web.pid) : json_null());
}

/* Config, dev server, session row: the steps shared by a restore and a skipped one. The
 * session's config files are kept aside first (*keep), so a failure can put them back. */
static int finish(job_ctx *ctx, sb_session *s, const restore_args *a, restore_out *o,
                  sb_cfgkeep **keep, sw_err *err)
{
    sb_config c;
    if (sb_config_parse(ctx->req->args, ctx->cfg, &c, err) != 0) return -1;
    c.nextjs_port = o->port;
    int rc = 0;
    if (s->ops->config_keep && !(*keep = s->ops->config_keep(s, err))) rc = -1;
    if (rc == 0) rc = s->ops->write_config(s, &c, NULL, err);
    sb_config_free(&c);
    if (rc != 0) return -1;
    if (job_cancelled(ctx)) return sw_errc(err, SW_E_TIMEOUT, "restore cancelled");
    if (a->start_webapp && s->ops->webapp_start(s, o->port, &o->web, err) != 0) return -1;
    if (job_cancelled(ctx)) return sw_errc(err, SW_E_TIMEOUT, "restore cancelled");
    return db_session_activate(job_db(ctx), s->session_id, err);
}

int job_restore_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    const job_req *r = ctx->req;
    sb_session s;
    restore_args a;
    restore_out o = {0};
    sb_state state;
    sb_stage *g = NULL;
    sb_cfgkeep *keep = NULL;
    bool swapped = false;
    int rc = -1;
    if (sb_session_init(&s, ctx->cfg, ctx, r->id, r->sandbox_id, r->session_id, err) != 0 ||
        parse_args(r, &a, err) != 0 || take_port(ctx, &a, &o.port, err) != 0 ||
        s.ops->state(&s, &state, err) != 0)
        goto out;
    if (job_cancelled(ctx)) {
        sw_errc(err, SW_E_TIMEOUT, "restore cancelled");
        goto out;
    }
    if (state == SB_WORKSPACE) {
        o.skipped = true;
    } else {
        if (!(g = s.ops->stage_begin(&s, err)) || fill_stage(ctx, &s, &a, g, &o, err) != 0)
            goto out;
        if (job_cancelled(ctx)) {
            sw_errc(err, SW_E_TIMEOUT, "restore cancelled");
            goto out;
        }
        if (s.ops->stage_swap(g, err) != 0) goto out;
        swapped = true;
    }
    if (finish(ctx, &s, &a, &o, &keep, err) != 0) goto out;
    *result = result_json(&o);
    rc = 0;
out:
    if (rc != 0) {
        sw_err e2;
        if (s.ops) s.ops->webapp_stop(&s, &o.web);
        if (keep && s.ops->config_restore(keep, &e2) != 0)
            log_msg(SW_LOG_ERROR, "restore_config_undo_failed", "job", r->id, "error", e2.msg, NULL);
        if (swapped && s.ops->stage_unswap(g, &e2) != 0)
            log_msg(SW_LOG_ERROR, "restore_undo_failed", "job", r->id, "error", e2.msg, NULL);
    }
    if (keep) s.ops->config_drop(keep);
    if (g) s.ops->stage_end(g);
    sb_session_close(&s);
    job_store_release(ctx);
    return rc;
}
