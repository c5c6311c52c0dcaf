/* worker/jobproc.h — heavy jobs in their own processes (docs/processes.md).
 * Owns: which runs leave the daemon, spawning the job process (posix_spawn of this same
 * binary with the hidden subcommand `__job`), the channel between an executor thread and its
 * job process (socketpair; frames: a 4-byte big-endian length, then one JSON object),
 * cancellation (SIGTERM, then SIGKILL after SNAPWORKER_JOB_KILL_GRACE_S), reaping and the
 * crash outcome; and, in the job process, the resource limits and the job_ctx hooks that
 * ask the daemon over the channel (memo writes, enqueue, progress).
 * Does not own: what a job does (jobs/), the item's outcome policy (worker/exec.c turns the
 * returned result or sw_err into succeeded / retry / dead exactly as for in-process jobs). */
#ifndef SW_WORKER_JOBPROC_H
#define SW_WORKER_JOBPROC_H
#include <jansson.h>
#include <stdbool.h>

#include "common/cfg.h"
#include "common/err.h"
#include "jobs/job.h"

typedef enum jp_op {
    JP_RUN,       /* job_type.run */
    JP_ON_DEAD    /* job_type.on_dead */
} jp_op;

/* Remember the daemon's argv up to its subcommand (the program and its config flags), so a
 * job process loads the same configuration. Called once by main before anything runs. */
void jobproc_init(int nargs, char **argv);

/* True when this run goes to a job process: every type but noop; noop too when
 * SNAPWORKER_TEST_HOOKS=1 and its args carry "crash" (the test hook). */
bool jobproc_wanted(const job_req *req);

/* Run 'op' of the job in ctx->req in a job process and wait for it. ctx is the daemon's
 * (its memo_set, enqueue and progress hooks serve the job process's requests; its cancel
 * flag and deadline end the process); 'memo' holds the memo values known at start (may be
 * NULL). Same contract as job_type.run / on_dead: 0 with *result (JP_RUN; owned), or -1 with
 * err. A process that died without an outcome is -1 with SW_E_INTERNAL, retryable, naming
 * the signal ("job process killed by signal 11 (SIGSEGV)") or the exit status. */
int jobproc_run(job_ctx *ctx, jp_op op, const json_t *memo, json_t **result, sw_err *err);

/* Sweep store orphans under 'prefix' (store_gc, within budget_ms) in a job process; logs
 * the `store_gc` line there. */
void jobproc_gc(const cfg *c, const char *prefix, int64_t budget_ms);

/* `snapworker __job PPID`: the job process's main (fd 3 is its end of the channel). */
int jobchild_main(const cfg *c, int argc, char **argv);

#endif
