/* worker/exec.h — executor threads and the items they run.
 * Owns: the item (one delivered job on this worker), the run queue, the done
 * queue and its wake-up pipe into the event loop. Jobs run here, never on the
 * loop thread; the loop only moves items in and out. */
#ifndef SW_WORKER_EXEC_H
#define SW_WORKER_EXEC_H
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/err.h"
#include "common/payload.h"
#include "jobs/job.h"
#include "worker/scripts.h"

typedef enum item_state {
    IT_STARTING,   /* start script sent */
    IT_QUEUED,     /* in the run queue */
    IT_RUNNING,    /* on an executor thread */
    IT_DONE,       /* outcome set, waiting for the finish script */
    IT_FINISHING   /* finish script sent */
} item_state;

typedef struct item {
    struct item *next;        /* run/done queue or batch link */
    struct item *prev_all, *next_all; /* the worker's in-flight list */
    char entry[48];           /* stream entry id */
    char *raw;                /* payload text, owned */
    size_t raw_len;
    job_req req;              /* parsed payload (valid when type != NULL) */
    const job_type *type;     /* NULL for rejects */
    _Atomic item_state state; /* written by the executor under its mutex, read by the loop */
    int attempt, deliveries, max_attempts;
    int poison;               /* delivered too often: skip run, go dead */
    json_t *memo;             /* object name -> string, owned */
    atomic_int cancel;        /* set on lease loss, hard stop or a cancel request */
    atomic_int cancel_req;    /* a producer asked to cancel (worker/lua/cancel.lua) */
    int sidx;                 /* PRIO_*: the stream the entry was read from */
    int64_t progress_ms;      /* job_now_ms() of the last progress event (executor thread) */
    int64_t started_ms;       /* monotonic, when the executor took it */
    int64_t duration_ms;
    /* outcome */
    job_outcome outcome;      /* OUT_NONE until known (worker/scripts.h); OUT_DEFER_AT:
                                 delay_ms is the absolute due ms */
    char *data;               /* JSON text: result or {code,message,retryable}; owned */
    int64_t delay_ms;         /* retry delay */
    sw_err err;               /* the error when not succeeded */
    /* Celery origin (docs/celery.md) */
    int celery;               /* results go to the Celery result backend */
    int attempt_base;         /* headers.retries: the first run is attempt base+1 */
    char *meta;               /* result meta JSON to write before the finish script; owned */
    const char *meta_state;   /* "STARTED", "SUCCESS", ... for logs */
    int started_meta;         /* STARTED written (loop thread only) */
    int64_t submitted_ms;     /* monotonic, when handed to the executors (loop thread only) */
} item;

typedef struct exec_pool exec_pool;

/* Start 'n' threads. notify_fd is written (one byte) when the done queue turns
 * non-empty. 'consumer' (copied) fences memo writes. Returns NULL on failure. */
exec_pool *exec_new(const cfg *c, const char *consumer, int n, int notify_fd);
void exec_submit(exec_pool *p, item *list);        /* takes the items (linked by next) until done */
item *exec_take_done(exec_pool *p);                /* whole done list (linked by next) */
item *exec_take_queued(exec_pool *p);              /* not yet started items (drain) */
int exec_busy(exec_pool *p);                       /* items queued or running */
void exec_stop(exec_pool *p);                      /* ask threads to stop after current job */
/* Join the threads if all are idle within 'wait_ms', then free the pool (not the
 * items: the caller owns them); returns 0, or -1 when a thread is still busy (then
 * nothing is freed: the process exits around it). */
int exec_free(exec_pool *p, int wait_ms);
void item_free(item *it);                          /* NULL-safe */
/* Set the item's outcome from an error (retry with backoff or dead). */
void item_fail(item *it, const cfg *c, const sw_err *e);
char *err_json(const sw_err *e);                   /* {"code","message","retryable"}; caller frees */

#endif
