/* worker/http.h — the optional HTTP listener (SNAPWORKER_HTTP_ADDR): /healthz, /readyz,
 * /metrics, the dashboard at /ui and its JSON under /api (docs/operations.md "HTTP").
 * Owns: the evhttp server, its thread and the text it serves. The worker owns the
 * counters it hands over (worker_stats, filled on the loop thread) and bumps the
 * process metrics of common/metrics.h, which this header brings in for its files. */
#ifndef SW_WORKER_HTTP_H
#define SW_WORKER_HTTP_H
#include <stdint.h>

#include "common/cfg.h"
#include "common/metrics.h"

struct event_base;

typedef struct worker_stats {
    uint64_t succeeded, failed, dead, rejected, released, deferred, lease_lost; /* counters */
    int inflight;     /* jobs held by this process */
    int redis_up;     /* both broker connections ready */
    int draining;     /* SIGTERM received */
    const char *consumer;
    const char *queue;
    const cfg *cfg;   /* set before http_start; read-only afterwards */
} worker_stats;

typedef struct http_srv http_srv;

/* Listen on "HOST:PORT" with at most 'max_conns' open connections (more are closed at
 * once) and 'timeout_s' for each connection's request and reply; NULL (logged) when it
 * cannot bind. The listener runs on its own thread with its own event base ('base' is
 * not used), so a slow Redis or a dashboard never delays the worker's loop; from the
 * worker it reads only what common/metrics.h publishes and st's constant fields. */
http_srv *http_start(struct event_base *base, const char *addr, int max_conns, int timeout_s,
                     const worker_stats *st);
void http_stop(http_srv *h); /* NULL-safe; joins the thread */

#endif
