/* worker/http_priv.h — what worker/http.c and worker/http_api.c share: the server
 * struct and the reply helpers. Everything here runs on the listener's thread. */
#ifndef SW_WORKER_HTTP_PRIV_H
#define SW_WORKER_HTTP_PRIV_H
#include <event2/http.h>
#include <hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "common/rds.h"
#include "worker/http.h"
#include "worker/ready.h"

struct hconn;

struct http_srv {
    struct evhttp *http;
    struct event_base *base;  /* the listener's own, run by 'th' */
    const worker_stats *st;
    const cfg *cfg;
    int max_conns;          /* SNAPWORKER_HTTP_MAX_CONNECTIONS */
    int timeout_s;          /* SNAPWORKER_HTTP_TIMEOUT_S */
    int open;               /* admitted connections */
    struct hconn *conns;    /* admitted and waiting for adoption */
    struct event *adopt_ev; /* activated by the bufferevent callback */
    struct event *tick;     /* deadlines and sweep */
    uint64_t refused;       /* connections closed over the cap */
    int64_t refused_log_ms; /* last refusal logged (at most one line a second) */
    int wake[2];            /* http_stop writes here to end the thread's loop */
    struct event *wake_ev;
    pthread_t th;
    int th_started;
    rds *rc;       /* the handlers' blocking connection, lazily (re)made */
    ready_probe *ready;
};

/* The handlers' Redis connection, connected on demand; NULL with a 503 already sent. */
rds *http_redis(http_srv *h, struct evhttp_request *req);
/* After a Redis error: drop the connection so the next request makes a new one. */
void http_redis_reset(http_srv *h);
/* Send 'body' (stolen; NULL = {}) as JSON with status 'code'. */
void http_reply_json(struct evhttp_request *req, int code, json_t *body);
/* {"error": msg} with status 'code'. */
void http_reply_error(struct evhttp_request *req, int code, const char *msg);
/* Common headers of every reply: Connection: close, nosniff, no caching. */
void http_base_headers(struct evhttp_request *req);

/* worker/http_api.c: /ui, /ui/..., /api/...; returns 0 when the path is not theirs. */
int http_api_route(http_srv *h, struct evhttp_request *req, const char *path);

#endif
