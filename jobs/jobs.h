/* jobs/jobs.h — the run functions of each job type, for the table in jobs/job.c, and the
 * lazily created per-executor-thread handles the job types share. */
#ifndef SW_JOBS_JOBS_H
#define SW_JOBS_JOBS_H
#include <string.h>

#include "common/db.h"
#include "common/store.h"
#include "jobs/job.h"

int job_noop_run(job_ctx *ctx, json_t **result, sw_err *err);
int job_snapshot_run(job_ctx *ctx, json_t **result, sw_err *err);     /* jobs/snapshot.c */
int job_restore_run(job_ctx *ctx, json_t **result, sw_err *err);      /* jobs/restore.c */
int job_restore_on_dead(job_ctx *ctx, sw_err *err);                   /* port rollback */
int job_regenerate_run(job_ctx *ctx, json_t **result, sw_err *err);   /* jobs/regenerate.c */

/* The thread's PostgreSQL handle, created (not connected) on first use; borrowed, closed by
 * job_thread_free(). NULL only when ctx->thread is NULL. */
db *job_db(job_ctx *ctx);
/* The thread's store handle, opened on first use, with its cancel flag pointed at this
 * job's (reset with job_store_release() before the job returns). Borrowed; NULL with err
 * (SW_E_STORAGE) when SNAPWORKER_STORE cannot be opened or ctx->thread is NULL. */
store *job_store(job_ctx *ctx, sw_err *err);
void job_store_release(job_ctx *ctx);   /* detach the job's cancel flag; NULL-safe */

#endif
