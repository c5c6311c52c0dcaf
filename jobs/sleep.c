/* jobs/sleep.c — the sleep job (docs/lifecycle.md): put a running sandbox to sleep the way Onyx's
 * idle task does. Owns: the order "objects, then one transaction, then teardown", the snapshot
 * id rule of a sleep, the skipped/resumed results.
 * Does not own: archiving and uploading one session (snapshot.c, job_snapshot_session), the
 * transaction's SQL (common/db.h db_sandbox_sleep), listing sessions and stopping what runs
 * (the backend's list_sessions and teardown ops).
 *
 *   1. sandbox row not 'running'       -> {"skipped": true}   (nothing touched)
 *   2. each UUID-named session folder with outputs/ -> archive + store (no row yet)
 *   3. ONE transaction: snapshot rows, ports NULL, active -> idle, sandbox 'sleeping'
 *   4. teardown: local = stop the recorded dev servers; kubernetes = DELETE service + pod
 *
 * Failure anywhere before 3 leaves the database as it was (objects already stored are
 * write-once and adopted by the retry, which computes the same ids: UUIDv5 of job id and
 * session id). A crash between 3 and 4 is caught by the memo "sleep"="commit" written just
 * before 3: the retry finds the sandbox 'sleeping' and only tears down. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"
#include "jobs/jobs.h"
#include "jobs/sandbox.h"

typedef int (*list_fn)(const cfg *c, const char *sandbox_id, char ***ids, size_t *n, sw_err *err);
typedef int (*teardown_fn)(const cfg *c, const char *sandbox_id, sw_err *err);

/* The backend's sandbox-level ops, from its table only (jobs/sandbox.h). */
static int backend(const cfg *c, list_fn *list, teardown_fn *teardown, sw_err *err)
{
    const sb_ops *ops = sb_backend_ops(c, err);
    if (!ops) return -1;
    *list = ops->list_sessions;
    *teardown = ops->teardown;
    if (!*list || !*teardown)
        return sw_errf(err, SW_E_BACKEND, false, "sandbox backend '%s' cannot put sandboxes to "
                       "sleep", ops->name);
    return 0;
}

static void sleep_snapshot_id(const char *job_id, const char *session_id, char out[SW_UUID_LEN + 1])
{
    char name[256];
    snprintf(name, sizeof name, "snapworker:sleep:%s:%s", job_id, session_id);
    id_uuid5_url(name, out);
}

/* Archive every session with outputs/ into rows[] (json 'snaps' gets each result). */
static int snapshot_all(job_ctx *ctx, char **ids, size_t n, job_snap_row *rows, size_t *nrows,
                        json_t *snaps, sw_err *err)
{
    const job_req *r = ctx->req;
    excl *ex = NULL;
    int rc = -1;
    *nrows = 0;
    if (job_snapshot_excludes(ctx, &ex, err) != 0) return -1;
    for (size_t i = 0; i < n; i++) {
        sb_session s;
        char sid[SW_UUID_LEN + 1];
        if (job_cancelled(ctx)) {
            sw_errc(err, SW_E_TIMEOUT, "sleep cancelled");
            goto out;
        }
        if (sb_session_init(&s, ctx->cfg, ctx, r->id, r->sandbox_id, ids[i], err) != 0) {
            sb_session_close(&s);
            goto out;
        }
        s.exclude = ex;
        sleep_snapshot_id(r->id, s.session_id, sid);
        int one = job_snapshot_session(ctx, &s, r->tenant_id, sid, &rows[*nrows], err);
        sb_session_close(&s);
        /* a session folder removed while we walked is no session any more */
        if (one != 0 && err->code == SW_E_WORKSPACE_MISSING) continue;
        if (one != 0) goto out;
        if (rows[*nrows].empty) continue;
        json_array_append_new(snaps, job_snap_row_json(&rows[*nrows]));
        (*nrows)++;
    }
    rc = 0;
out:
    excl_free(ex);
    return rc;
}

int job_sleep_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    const job_req *r = ctx->req;
    list_fn list;
    teardown_fn teardown;
    db_sandbox sb;
    char **ids = NULL;
    size_t n = 0, nrows = 0;
    job_snap_row *rows = NULL;
    db_snap_row *drows = NULL;
    json_t *snaps = json_array();
    int rc = -1;
    bool slept = false;
    if (!r->sandbox_id[0]) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "sleep needs a sandbox_id");
        goto out;
    }
    if (backend(ctx->cfg, &list, &teardown, err) != 0) goto out;
    if (db_sandbox_get(job_db(ctx), r->sandbox_id, &sb, err) != 0) goto out;
    if (!sb.found || strcmp(sb.status, "running") != 0) {
        const char *memo = ctx->memo_get ? ctx->memo_get(ctx, "sleep") : NULL;
        if (sb.found && strcmp(sb.status, "sleeping") == 0 && memo && !strcmp(memo, "commit")) {
            /* our own earlier attempt committed, then stopped before the teardown */
            if (teardown(ctx->cfg, r->sandbox_id, err) != 0) goto out;
            *result = json_pack("{s:b,s:s}", "resumed", 1, "status", "sleeping");
        } else {
            *result = json_pack("{s:b,s:s?}", "skipped", 1, "status", sb.found ? sb.status : NULL);
        }
        rc = 0;
        goto out;
    }
    if (list(ctx->cfg, r->sandbox_id, &ids, &n, err) != 0) goto out;
    rows = xcalloc(n + 1, sizeof *rows);
    if (snapshot_all(ctx, ids, n, rows, &nrows, snaps, err) != 0) goto out;
    drows = xcalloc(nrows + 1, sizeof *drows);
    for (size_t i = 0; i < nrows; i++)
        drows[i] = (db_snap_row){rows[i].snapshot_id, rows[i].session_id, rows[i].storage_path,
                                 rows[i].size_bytes};
    if (job_cancelled(ctx)) {
        sw_errc(err, SW_E_TIMEOUT, "sleep cancelled before its transaction");
        goto out;
    }
    if (ctx->memo_set && ctx->memo_set(ctx, "sleep", "commit", err) != 0) goto out;
    if (db_sandbox_sleep(job_db(ctx), r->sandbox_id, drows, nrows, &slept, err) != 0) goto out;
    if (!slept) { /* it stopped running while we archived: left as it is now */
        *result = json_pack("{s:b}", "skipped", 1);
        rc = 0;
        goto out;
    }
    if (teardown(ctx->cfg, r->sandbox_id, err) != 0) goto out;
    *result = json_pack("{s:I,s:O}", "sessions", (json_int_t)n, "snapshots", snaps);
    rc = 0;
out:
    json_decref(snaps);
    onyx_strv_free(ids);
    free(rows);
    free(drows);
    job_store_release(ctx);
    return rc;
}
