/* worker/schedule.h — the lifecycle scheduler (docs/lifecycle.md "Scheduler"):
 * one leader among any number of replicas enqueues `sweep` every SNAPWORKER_SCHEDULE_PERIOD_S
 * and `prune` every SNAPWORKER_PRUNE_PERIOD_S for each tenant of SNAPWORKER_TENANTS.
 * Runs as `snapworker schedule` or, with SNAPWORKER_SCHEDULE=1, inside `run` on the worker's
 * event loop. Owns: the leader lock and its fencing token, the job ids
 * sweep:{tenant}:{epoch_s / period} and prune:{tenant}:{epoch_s / period}. */
#ifndef SW_WORKER_SCHEDULE_H
#define SW_WORKER_SCHEDULE_H
#include <event2/event.h>

#include "common/cfg.h"

typedef struct schedule schedule;

/* Start ticking on 'base' (borrowed, outlives the scheduler); 'c' borrowed likewise. Caller
 * frees with schedule_free(), which gives the lock up when this replica holds it. */
schedule *schedule_new(struct event_base *base, const cfg *c);
void schedule_free(schedule *s);   /* NULL-safe */
/* `snapworker schedule`: its own loop until SIGTERM/SIGINT. Exit code. */
int schedule_main(const cfg *c);

#endif
