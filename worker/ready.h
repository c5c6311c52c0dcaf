/* worker/ready.h — the readiness probe behind GET /readyz.
 * Owns: a thread that checks, every READY_INTERVAL_MS, that Redis answers and, when
 * SNAPWORKER_READY_CHECKS asks for them (or, with `auto`, once a job of this process
 * used them), that PostgreSQL and the snapshot store answer; the last answer is kept,
 * so a probe request never waits on a server. */
#ifndef SW_WORKER_READY_H
#define SW_WORKER_READY_H
#include <jansson.h>

#include "common/cfg.h"

#define READY_INTERVAL_MS 2000
#define READY_STALE_MS 8000 /* a result older than this means a check hangs: not ready */

typedef struct ready_probe ready_probe;

ready_probe *ready_start(const cfg *c);  /* NULL when the thread cannot start */
void ready_stop(ready_probe *p);         /* NULL-safe; joins the thread */
/* The last result: {"ready":bool,"reason":text (when not ready),"checks":{"redis":"ok"|
 * error,...},"age_ms"}. New reference. Not ready while draining or before the first
 * round of checks. */
json_t *ready_get(ready_probe *p);

#endif
