/* jobs/sweep.c — the sweep job (docs/lifecycle.md): find the tenant's idle sandboxes and enqueue a
 * `sleep` job for each. Owns: the sleep job id `sleep:{sandbox_id}:{minute}` (minute = Unix
 * seconds / 60), so two sweeps in the same minute, from the scheduler, a Celery beat or both,
 * enqueue each sandbox once: the enqueue hook adds nothing when that id's job hash exists.
 * Does not own: the idle query (common/db.h db_sandboxes_idle), Redis (the worker's enqueue
 * hook, job_ctx.enqueue). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jobs/jobs.h"

int job_sweep_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    const job_req *r = ctx->req;
    char **ids = NULL;
    size_t n = 0;
    int rc = -1;
    json_t *added = json_array();
    long long minute = (long long)time(NULL) / 60;
    if (!ctx->enqueue) {
        sw_errf(err, SW_E_INTERNAL, false, "sweep needs the worker's enqueue hook");
        goto out;
    }
    if (db_sandboxes_idle(job_db(ctx), ctx->cfg->idle_timeout_s, &ids, &n, err) != 0) goto out;
    for (size_t i = 0; i < n; i++) {
        char id[128];
        snprintf(id, sizeof id, "sleep:%s:%lld", ids[i], minute);
        json_t *p = json_pack("{s:i,s:s,s:s,s:s,s:s,s:{}}", "v", 1, "id", id, "type", "sleep",
                              "tenant_id", r->tenant_id, "sandbox_id", ids[i], "args");
        char *text = json_dumps(p, JSON_COMPACT);
        json_decref(p);
        int a = ctx->enqueue(ctx, text, err);
        free(text);
        if (a < 0) goto out;
        if (a == 1) json_array_append_new(added, json_string(id));
    }
    *result = json_pack("{s:I,s:O,s:I}", "idle", (json_int_t)n, "enqueued", added, "minute",
                        (json_int_t)minute);
    rc = 0;
out:
    json_decref(added);
    db_strv_free(ids);
    return rc;
}
