/* jobs/job.c — the dispatch table of job types and small job_ctx helpers. */
#include "jobs/job.h"

#include <string.h>
#include <time.h>

#include "jobs/jobs.h"

static const job_type types[] = {
    {"noop", job_noop_run, NULL, 60, true},
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

void job_thread_free(job_thread *t)
{
    if (!t) return;
    /* db and store handles are closed here once those modules exist */
    t->db = NULL;
    t->store = NULL;
}
