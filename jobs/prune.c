/* jobs/prune.c — the prune job (docs/lifecycle.md): snapshot retention for one tenant.
 * Owns: the order "rows, then objects", the batch size, the memo of objects still to delete.
 * Does not own: which rows go (common/db.h db_snapshots_prune: older than the retention and
 * not among the SNAPWORKER_SNAPSHOT_KEEP newest of their session), deletes (common/store.h:
 * store_delete removes the .sha256 sidecar first, then the object; missing = success).
 *
 * Rows first, each batch in one transaction: a restore can never pick a row whose object is
 * gone. A crash after a batch committed leaves at worst objects no row points to (never the
 * reverse); the paths of a committed batch go to the memo "prune" before any object is
 * deleted, so a retry of this job deletes what a failed store left (checking again that no
 * row names them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"

#define PRUNE_BATCH 500    /* rows per transaction */
#define PRUNE_MAX_BATCHES 200 /* per attempt; the next run continues */

/* Delete the objects of 'paths' (a JSON array) that no row names. */
static int delete_objects(job_ctx *ctx, store *sto, json_t *paths, int64_t *deleted, sw_err *err)
{
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p) {
        const char *key = json_string_value(p);
        bool used = false;
        if (!key) continue;
        if (job_cancelled(ctx)) return sw_errc(err, SW_E_TIMEOUT, "prune cancelled");
        if (db_snapshot_path_used(job_db(ctx), key, &used, err) != 0) return -1;
        if (used) continue;
        if (store_delete(sto, key, err) != 0) return -1;
        (*deleted)++;
    }
    return 0;
}

int job_prune_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    const cfg *c = ctx->cfg;
    const job_req *r = ctx->req;
    int64_t older_s = c->snapshot_retention_s > 0 ? c->snapshot_retention_s
                                                   : (int64_t)c->snapshot_retention_days * 86400;
    int64_t rows = 0, objects = 0;
    int rc = -1;
    json_t *pending = NULL;
    store *sto = job_store(ctx, err);
    if (!sto) goto out;
    /* what an earlier attempt deleted the rows of but not (all) the objects */
    const char *memo = ctx->memo_get ? ctx->memo_get(ctx, "prune") : NULL;
    pending = memo ? json_loads(memo, 0, NULL) : NULL;
    if (pending && json_is_array(pending) && delete_objects(ctx, sto, pending, &objects, err) != 0)
        goto out;
    for (int b = 0; b < PRUNE_MAX_BATCHES; b++) {
        char **paths = NULL;
        size_t n = 0;
        if (job_cancelled(ctx)) {
            sw_errc(err, SW_E_TIMEOUT, "prune cancelled");
            goto out;
        }
        if (db_snapshots_prune(job_db(ctx), r->tenant_id, older_s, c->snapshot_keep, PRUNE_BATCH,
                               &paths, &n, err) != 0)
            goto out;
        json_decref(pending);
        pending = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(pending, json_string(paths[i]));
        db_strv_free(paths);
        rows += (int64_t)n;
        if (n == 0) break;
        char *text = json_dumps(pending, JSON_COMPACT);
        int m = ctx->memo_set ? ctx->memo_set(ctx, "prune", text, err) : 0;
        free(text);
        if (m != 0 || delete_objects(ctx, sto, pending, &objects, err) != 0) goto out;
        if (n < PRUNE_BATCH) break;
    }
    if (ctx->memo_set && ctx->memo_set(ctx, "prune", "[]", err) != 0) goto out;
    *result = json_pack("{s:I,s:I,s:I,s:i}", "rows", (json_int_t)rows, "objects",
                        (json_int_t)objects, "retention_s", (json_int_t)older_s, "keep",
                        c->snapshot_keep);
    rc = 0;
out:
    json_decref(pending);
    job_store_release(ctx);
    return rc;
}
