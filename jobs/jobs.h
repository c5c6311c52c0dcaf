/* jobs/jobs.h — the run functions of each job type, for the table in jobs/job.c, and the
 * lazily created per-executor-thread handles the job types share. */
#ifndef SW_JOBS_JOBS_H
#define SW_JOBS_JOBS_H
#include <string.h>

#include "common/db.h"
#include "common/excl.h"
#include "common/ids.h"
#include "common/store.h"
#include "jobs/job.h"

int job_noop_run(job_ctx *ctx, json_t **result, sw_err *err);
int job_snapshot_run(job_ctx *ctx, json_t **result, sw_err *err);     /* jobs/snapshot.c */
int job_restore_run(job_ctx *ctx, json_t **result, sw_err *err);      /* jobs/restore.c */
int job_restore_on_dead(job_ctx *ctx, sw_err *err);                   /* port rollback */
int job_regenerate_run(job_ctx *ctx, json_t **result, sw_err *err);   /* jobs/regenerate.c */
int job_sleep_run(job_ctx *ctx, json_t **result, sw_err *err);        /* jobs/sleep.c */
int job_sweep_run(job_ctx *ctx, json_t **result, sw_err *err);        /* jobs/sweep.c */
int job_prune_run(job_ctx *ctx, json_t **result, sw_err *err);        /* jobs/prune.c */

struct sb_session; /* jobs/sandbox.h */
/* ---- snapshot.c: one session's archive, shared by snapshot and sleep ---------------- */
typedef struct job_snap_row {
    bool empty;                            /* no outputs/: nothing stored, no row to write */
    char snapshot_id[SW_UUID_LEN + 1];
    char session_id[SW_UUID_LEN + 1];
    char storage_path[STORE_KEY_MAX + 1];  /* {tenant}/snapshots/{session}/{id}.tar.gz */
    int64_t size_bytes;                    /* of the stored object (adopted or written) */
    char sha256[65];
    int64_t entries;                       /* members archived (0 when adopted from a rerun) */
} job_snap_row;
/* Archive the session 's' (s->exclude applies) and commit it to the store under
 * {tenant_id}/snapshots/{session}/{snapshot_id}.tar.gz (write-once: a rerun adopts the stored
 * object); fill 'row' but write NO database row (the caller does, in its own transaction).
 * No outputs/ is 0 with row->empty. -1 with SW_E_WORKSPACE_MISSING, SW_E_ARCHIVE_TOO_LARGE
 * (SNAPWORKER_MAX_SNAPSHOT_BYTES; nothing stored), SW_E_TIMEOUT, the backend's or the store's
 * error. Leaves the store's cancel flag attached: the job calls job_store_release(). */
int job_snapshot_session(job_ctx *ctx, struct sb_session *s, const char *tenant_id,
                         const char *snapshot_id, job_snap_row *row, sw_err *err);
/* The snapshot result object of 'row' (owned): snapshot_id, storage_path, size_bytes, sha256,
 * entries. */
json_t *job_snap_row_json(const job_snap_row *row);
/* The job's exclude patterns: args.exclude (a list of strings or a comma-separated string),
 * else SNAPWORKER_SNAPSHOT_EXCLUDE. *out owned (excl_free). -1 with SW_E_INVALID_PAYLOAD. */
int job_snapshot_excludes(job_ctx *ctx, excl **out, sw_err *err);

/* The thread's PostgreSQL handle, created (not connected) on first use; borrowed, closed by
 * job_thread_free(). NULL only when ctx->thread is NULL. */
db *job_db(job_ctx *ctx);
/* The thread's store handle, opened on first use, with its cancel flag pointed at this
 * job's (reset with job_store_release() before the job returns). Borrowed; NULL with err
 * (SW_E_STORAGE) when SNAPWORKER_STORE cannot be opened or ctx->thread is NULL. */
store *job_store(job_ctx *ctx, sw_err *err);
void job_store_release(job_ctx *ctx);   /* detach the job's cancel flag; NULL-safe */

#endif
