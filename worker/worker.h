/* worker/worker.h — the daemon: event loop, Redis connections, reader, executors.
 * Owns: struct worker and the lifetime of everything a running worker holds.
 * main() builds one with worker_new(), runs it, frees it. */
#ifndef SW_WORKER_WORKER_H
#define SW_WORKER_WORKER_H

#include "common/cfg.h"

typedef struct worker worker;

worker *worker_new(const cfg *c);   /* NULL on a fatal setup error (logged) */
int worker_run(worker *w);          /* until SIGTERM/SIGINT and drain; 0 = clean */
/* NULL-safe. Returns -1 (and frees nothing) when a job thread is still running
 * after the drain: the caller must then exit without freeing what jobs may read. */
int worker_free(worker *w);

#endif
