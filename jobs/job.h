/* jobs/job.h — what a job type is and what it gets to run with.
 * Owns: the job_ctx handed to every job, the job_type table entry and the lookup.
 * jobs/ never sees the event loop or Redis: the worker fills job_ctx (config,
 * request, attempt, deadline, cancel flag, per-thread resources, memo access)
 * and turns the returned result or sw_err into events, retries and dead letters. */
#ifndef SW_JOBS_JOB_H
#define SW_JOBS_JOB_H
#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/err.h"
#include "common/payload.h"

typedef struct job_ctx job_ctx;

/* Per-executor-thread resources, created lazily by the jobs that need them and
 * kept across jobs of that thread (connection reuse). Freed by job_thread_free(). */
typedef struct job_thread {
    void *db;     /* common/db.h connection, NULL until a job needs PostgreSQL */
    void *store;  /* common/store.h handle, NULL until a job needs the store */
} job_thread;

struct job_ctx {
    const cfg *cfg;          /* borrowed, whole process lifetime */
    const job_req *req;      /* borrowed, valid during run() */
    int attempt;             /* 1-based */
    int64_t deadline_ms;     /* monotonic ms (job_now_ms) at which the job times out */
    atomic_int *cancel;      /* non-zero: stop soon (timeout, lease lost, hard stop) */
    job_thread *thread;      /* borrowed per-thread resources */
    /* Memo: small facts a job must remember across attempts (kept in the job
     * hash, field "m:<name>"). get returns a borrowed string or NULL; set writes
     * through to Redis before returning (0, or -1 with an error). */
    const char *(*memo_get)(job_ctx *ctx, const char *name);
    int (*memo_set)(job_ctx *ctx, const char *name, const char *value, sw_err *err);
    /* Enqueue another job (a payload the caller built; checked by payload_parse first) on
     * this worker's queue, idempotently: 1 = added, 0 = a job with that id is already known
     * (its hash exists), -1 with err. NULL outside a worker (tests). Used by `sweep`. */
    int (*enqueue)(job_ctx *ctx, const char *payload_json, sw_err *err);
    /* Progress of a long job (docs/producers.md): totals so far. May be NULL; the worker
     * rate-limits it to one `progress` event a second, so call it as often as you like. */
    void (*progress)(job_ctx *ctx, int64_t bytes, int64_t entries);
    void *worker_priv;       /* the worker's, opaque to jobs */
};

typedef struct job_type {
    const char *name;
    /* Run one attempt: 0 with *result (owned, an object) or -1 with err filled. */
    int (*run)(job_ctx *ctx, json_t **result, sw_err *err);
    /* Called once when the job is about to end dead (may be NULL); -1 = try again
     * later (e.g. PostgreSQL down while rolling back a port). */
    int (*on_dead)(job_ctx *ctx, sw_err *err);
    int default_timeout_s;
    bool session_lock;       /* serialize with other jobs of the session */
} job_type;

const job_type *job_lookup(const char *name);  /* NULL when unknown */
int64_t job_now_ms(void);                      /* CLOCK_MONOTONIC in ms */
bool job_cancelled(const job_ctx *ctx);        /* cancel flag set or deadline passed */
void job_progress(job_ctx *ctx, int64_t bytes, int64_t entries); /* ctx->progress if set */
void job_thread_free(job_thread *t);           /* NULL-safe; closes db and store */

#endif
