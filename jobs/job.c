/* jobs/job.c — the dispatch table of job types and small job_ctx helpers, including the
 * per-executor-thread PostgreSQL and store handles (created on first use, reused by every
 * later job of the thread, closed by job_thread_free). */
#include "jobs/job.h"

#include <string.h>
#include <time.h>

#include "jobs/jobs.h"

static const job_type types[] = {
    {"noop", job_noop_run, NULL, 60, true},
    {"snapshot", job_snapshot_run, NULL, 3600, true},
    {"restore", job_restore_run, job_restore_on_dead, 3600, true},
    {"regenerate", job_regenerate_run, NULL, 300, true},
    /* lifecycle (docs/lifecycle.md): no session of their own, so no session lock */
    {"sleep", job_sleep_run, NULL, 3600, false},
    {"sweep", job_sweep_run, NULL, 300, false},
    {"prune", job_prune_run, NULL, 3600, false},
};

const job_type *job_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].name, name) == 0) return &types[i];
    return NULL;
}

int64_t job_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool job_cancelled(const job_ctx *ctx)
{
    return (ctx->cancel && atomic_load(ctx->cancel)) ||
           (ctx->deadline_ms > 0 && job_now_ms() >= ctx->deadline_ms);
}

void job_progress(job_ctx *ctx, int64_t bytes, int64_t entries)
{
    if (ctx && ctx->progress) ctx->progress(ctx, bytes, entries);
}

void job_thread_free(job_thread *t)
{
    if (!t) return;
    db_free(t->db);
    store_close(t->store);
    t->db = NULL;
    t->store = NULL;
}

db *job_db(job_ctx *ctx)
{
    if (!ctx->thread) return NULL;
    if (!ctx->thread->db) ctx->thread->db = db_new(ctx->cfg);
    /* SNAPWORKER_TENANT_SCHEMAS: this job's transactions run in its tenant's schema; the
     * tenant id was validated by payload_parse, so this cannot fail */
    sw_err e;
    (void)db_set_tenant(ctx->thread->db,
                        ctx->cfg->tenant_schemas && ctx->req ? ctx->req->tenant_id : NULL, &e);
    return ctx->thread->db;
}

store *job_store(job_ctx *ctx, sw_err *err)
{
    if (!ctx->thread) {
        sw_errf(err, SW_E_INTERNAL, false, "no executor thread resources");
        return NULL;
    }
    if (!ctx->thread->store && !(ctx->thread->store = store_open(ctx->cfg, err))) return NULL;
    store_set_cancel(ctx->thread->store, ctx->cancel);
    return ctx->thread->store;
}

void job_store_release(job_ctx *ctx)
{
    if (ctx && ctx->thread && ctx->thread->store) store_set_cancel(ctx->thread->store, NULL);
}
