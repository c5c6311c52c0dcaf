/* worker/http.h — the optional health and metrics listener (SNAPWORKER_HTTP_ADDR).
 * Owns: the evhttp server and the text it serves. The worker owns the counters and
 * hands a borrowed pointer; everything runs on the loop thread, so no locks. */
#ifndef SW_WORKER_HTTP_H
#define SW_WORKER_HTTP_H
#include <stdint.h>

struct event_base;

typedef struct worker_stats {
    uint64_t succeeded, failed, dead, rejected, released, deferred, lease_lost; /* counters */
    int inflight;     /* jobs held by this process */
    int redis_up;     /* both broker connections ready */
    int draining;     /* SIGTERM received */
    const char *consumer;
    const char *queue;
} worker_stats;

typedef struct http_srv http_srv;

/* Listen on "HOST:PORT" with at most 'max_conns' open connections (more are closed at
 * once) and 'timeout_s' for each connection's request and reply; NULL (logged) when it
 * cannot bind. */
http_srv *http_start(struct event_base *base, const char *addr, int max_conns, int timeout_s,
                     const worker_stats *st);
void http_stop(http_srv *h); /* NULL-safe */

#endif
