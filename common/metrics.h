/* common/metrics.h — the process's own counters and histograms for /metrics.
 * Owns: lock-free counters (C11 atomics) that any thread bumps with one call, the
 * fixed histogram buckets, and their rendering as Prometheus text 0.0.4 (HELP and
 * TYPE for every family). Does not own: the queue figures read from Redis
 * (worker/opsdata.c) nor the HTTP listener (worker/http.c).
 *
 * It is process-wide state on purpose, like a Prometheus client registry: the
 * places that count (executor threads, the event loop, common/db.c) are far apart
 * and each gets a one-line call, not a pointer threaded through every signature.
 * Names and labels are the contract in docs/operations.md "Metrics". */
#ifndef SW_COMMON_METRICS_H
#define SW_COMMON_METRICS_H
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

typedef enum metric_counter {
    MC_RECLAIMED,        /* entries taken over from idle consumers (XAUTOCLAIM) */
    MC_REDIS_RECONNECTS, /* a ready Redis connection was lost (it is reconnected) */
    MC_PG_RECONNECTS,    /* a PostgreSQL connection was found dead and replaced (here, or in a
                            job process, which reports its own in its outcome) */
    MC_BYTES_SNAPSHOT,   /* archive bytes written by snapshot jobs */
    MC_BYTES_RESTORE,    /* archive bytes extracted by restore jobs */
    MC_COUNT
} metric_counter;

/* Duration histogram upper bounds in seconds: 1 ms .. 1 h (then +Inf). */
#define METRICS_NBUCKETS 20
extern const double metrics_bucket_s[METRICS_NBUCKETS];

void metrics_count(metric_counter c, uint64_t n); /* any thread */
uint64_t metrics_counter_value(metric_counter c); /* any thread; 0 for an unknown one */

/* How a job ended, as counted: the `outcome` label of snapworker_jobs_total. */
typedef enum metrics_outcome {
    MO_SUCCEEDED, MO_FAILED /* will be retried */, MO_DEAD, MO_REJECTED, MO_RELEASED,
    MO_DEFERRED, MO_LEASE_LOST, MO_CANCELLED, MO_ABANDONED, MO_OTHER, MO_COUNT
} metrics_outcome;

/* A job's finish was answered with outcome 'o'. Durations are observed for runs only
 * (succeeded, failed, dead, cancelled, lease_lost). Any thread. */
void metrics_job_done(const char *type, metrics_outcome o, int64_t duration_ms);
/* An executor took a job read from stream entry 'entry_id' ("ms-seq"): observes the
 * queue wait from the entry's time (Redis clock) to now (this host's clock, >= 0). */
void metrics_job_started(const char *entry_id);
/* A succeeded job's result: snapshot and restore results add their byte counts. */
void metrics_job_result(const char *type, const json_t *result);
/* The event loop's 1 s tick: gauges, and the heartbeat /healthz checks. */
void metrics_loop_tick(int inflight, int redis_up, int draining);
/* A PostgreSQL connect is about to start; 'replacing' = an open one was found dead (counted
 * in MC_PG_RECONNECTS; a first connect, or one after a failed connect, is not). Marks
 * PostgreSQL as used by this process (readiness checks it from then on). */
void metrics_pg_connecting(int replacing);
void metrics_mark_store_used(void);   /* ... or the snapshot store */

typedef struct metrics_loop {
    int inflight, redis_up, draining;
    int64_t tick_ms;   /* CLOCK_MONOTONIC ms of the last tick, 0 = never */
    int pg_used, store_used;
} metrics_loop;
void metrics_loop_read(metrics_loop *out);
int64_t metrics_mono_ms(void);

/* Write the process's families (jobs, durations, waits, inflight, counters,
 * build_info) for queue 'queue' to 'f'. */
void metrics_render(FILE *f, const char *queue, const char *version);

/* Escape a label value ("\\", "\"", "\n") into out (size n). */
void metrics_label(const char *v, char *out, size_t n);

#endif
