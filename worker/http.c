/* worker/http.c — GET /healthz and GET /metrics (Prometheus text format).
 * /healthz answers 200 while both Redis connections are up and the worker is not
 * draining, else 503, so an orchestrator can route around it.
 *
 * Owns the limits on what a client may cost (issue 10 item 5): request headers are
 * cut at HEADERS_MAX bytes and bodies at BODY_MAX (evhttp answers and closes); every
 * connection gets SNAPWORKER_HTTP_TIMEOUT_S for its request and reply in total (an
 * idle timeout alone lets a slowloris client trickle a byte at a time forever); at most
 * SNAPWORKER_HTTP_MAX_CONNECTIONS are open, and one more is closed at once.
 *
 * evhttp in libevent 2.1 has no connection cap and no hook on a new connection, so:
 * our bufferevent callback (evhttp_set_bevcb) creates each connection's bufferevent
 * and keeps a reference to it; right after, from an activated event, we read back
 * the evhttp connection that owns it (its callback argument), then admit it (close
 * callback, deadline) or free it. Our reference is dropped in the close callback, or
 * by the sweep when evhttp let the bufferevent go without calling it; so a count can
 * never leak and refuse connections forever. Replies say "Connection: close": one
 * request per connection keeps the deadline simple. */
#include "worker/http.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/xmalloc.h"

#define HEADERS_MAX 8192 /* request line + headers, bytes */
#define BODY_MAX 1024    /* GET and HEAD only: nothing needs a body */
#define TICK_MS 200      /* deadline and sweep granularity, only while connections exist */

typedef struct hconn {
    struct hconn *prev, *next;
    struct http_srv *h;
    struct bufferevent *bev;          /* our reference until released */
    struct evhttp_connection *evcon;  /* NULL until adopted */
    int64_t deadline_ms;              /* monotonic: request and reply done by then */
} hconn;

struct http_srv {
    struct evhttp *http;
    struct event_base *base;
    const worker_stats *st;
    int max_conns;          /* SNAPWORKER_HTTP_MAX_CONNECTIONS */
    int timeout_s;          /* SNAPWORKER_HTTP_TIMEOUT_S */
    int open;               /* admitted connections */
    hconn *conns;           /* admitted and waiting for adoption */
    struct event *adopt_ev; /* activated by the bufferevent callback */
    struct event *tick;     /* deadlines and sweep */
    uint64_t refused;       /* connections closed over the cap */
    int64_t refused_log_ms; /* last refusal logged (at most one line a second) */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Drop our reference: the bufferevent (and its socket) goes once evhttp's is gone too. */
static void release(hconn *c)
{
    http_srv *h = c->h;
    if (c->prev) c->prev->next = c->next;
    else h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->evcon) h->open--;
    bufferevent_decref(c->bev);
    free(c);
}

/* evhttp frees an admitted connection (closed, failed, timed out, replied). */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    release(arg);
}

/* evhttp gave the bufferevent up (its callbacks are cleared when it frees it). */
static bool let_go(hconn *c)
{
    bufferevent_data_cb rd = NULL;
    bufferevent_getcb(c->bev, &rd, NULL, NULL, NULL);
    return rd == NULL;
}

static void arm_tick(http_srv *h)
{
    if (h->conns && !evtimer_pending(h->tick, NULL)) {
        struct timeval tv = {0, TICK_MS * 1000};
        evtimer_add(h->tick, &tv);
    }
}

static void tick_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    http_srv *h = arg;
    int64_t now = mono_ms();
    for (hconn *c = h->conns, *nx; c; c = nx) {
        nx = c->next;
        if (!c->evcon) continue; /* adopted first (adopt_cb) */
        if (let_go(c)) release(c);
        else if (now >= c->deadline_ms) evhttp_connection_free(c->evcon); /* -> on_close */
    }
    arm_tick(h);
}

/* Runs right after the bufferevent callback, before any byte is read: admit each new
 * connection or close it. */
static void adopt_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    http_srv *h = arg;
    for (hconn *c = h->conns, *nx; c; c = nx) {
        nx = c->next;
        if (c->evcon) continue;
        void *owner = NULL;
        bufferevent_data_cb rd = NULL;
        bufferevent_getcb(c->bev, &rd, NULL, NULL, &owner);
        if (!rd || !owner) { /* evhttp already dropped it */
            release(c);
            continue;
        }
        struct evhttp_connection *evcon = owner;
        if (h->open >= h->max_conns) {
            h->refused++;
            release(c);
            evhttp_connection_free(evcon); /* closes the socket: the client reads EOF */
            int64_t now = mono_ms();
            if (now - h->refused_log_ms >= 1000) {
                h->refused_log_ms = now;
                char n[24], m[24];
                snprintf(n, sizeof n, "%llu", (unsigned long long)h->refused);
                snprintf(m, sizeof m, "%d", h->max_conns);
                log_msg(LOG_WARN, "http_connection_refused", "max_connections", m,
                        "refused_total", n, NULL);
            }
            continue;
        }
        c->evcon = evcon;
        h->open++;
        evhttp_connection_set_closecb(evcon, on_close, c);
    }
    arm_tick(h);
}

static struct bufferevent *new_bev(struct event_base *base, void *arg)
{
    http_srv *h = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) return NULL;
    hconn *c = xcalloc(1, sizeof *c);
    c->h = h;
    c->bev = bev;
    bufferevent_incref(bev);
    c->deadline_ms = mono_ms() + (int64_t)h->timeout_s * 1000;
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    event_active(h->adopt_ev, EV_TIMEOUT, 0);
    return bev;
}

static void close_after(struct evhttp_request *req)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
}

static void healthz(struct evhttp_request *req, void *arg)
{
    http_srv *h = arg;
    int ok = h->st->redis_up && !h->st->draining;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"ok\":%s,\"redis\":%s,\"draining\":%s,\"inflight\":%d}\n",
                        ok ? "true" : "false", h->st->redis_up ? "true" : "false",
                        h->st->draining ? "true" : "false", h->st->inflight);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    close_after(req);
    evhttp_send_reply(req, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", b);
    evbuffer_free(b);
}

static void metrics(struct evhttp_request *req, void *arg)
{
    const worker_stats *s = ((http_srv *)arg)->st;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "# TYPE snapworker_jobs_total counter\n");
    const struct { const char *outcome; uint64_t v; } rows[] = {
        {"succeeded", s->succeeded}, {"failed", s->failed},     {"dead", s->dead},
        {"rejected", s->rejected},   {"released", s->released}, {"deferred", s->deferred},
        {"lease_lost", s->lease_lost},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        evbuffer_add_printf(b, "snapworker_jobs_total{queue=\"%s\",outcome=\"%s\"} %llu\n", s->queue,
                            rows[i].outcome, (unsigned long long)rows[i].v);
    evbuffer_add_printf(b, "# TYPE snapworker_inflight gauge\nsnapworker_inflight{queue=\"%s\"} %d\n",
                        s->queue, s->inflight);
    evbuffer_add_printf(b, "# TYPE snapworker_redis_up gauge\nsnapworker_redis_up %d\n", s->redis_up);
    evbuffer_add_printf(b, "# TYPE snapworker_draining gauge\nsnapworker_draining %d\n", s->draining);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    close_after(req);
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

http_srv *http_start(struct event_base *base, const char *addr, int max_conns, int timeout_s,
                     const worker_stats *st)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return NULL;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    int port = atoi(colon + 1);
    http_srv *h = xcalloc(1, sizeof *h);
    h->st = st;
    h->base = base;
    h->max_conns = max_conns > 0 ? max_conns : 1;
    h->timeout_s = timeout_s > 0 ? timeout_s : 1;
    h->adopt_ev = event_new(base, -1, 0, adopt_cb, h);
    h->tick = evtimer_new(base, tick_cb, h);
    h->http = evhttp_new(base);
    if (!h->http || !h->adopt_ev || !h->tick ||
        evhttp_bind_socket(h->http, host, (unsigned short)port) != 0) {
        log_msg(LOG_ERROR, "http_bind_failed", "addr", addr, NULL);
        http_stop(h);
        return NULL;
    }
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(h->http, HEADERS_MAX);
    evhttp_set_max_body_size(h->http, BODY_MAX);
    evhttp_set_timeout(h->http, h->timeout_s); /* idle reads and writes; the tick bounds the total */
    evhttp_set_bevcb(h->http, new_bev, h);
    evhttp_set_cb(h->http, "/healthz", healthz, h);
    evhttp_set_cb(h->http, "/metrics", metrics, h);
    log_msg(LOG_INFO, "http_listening", "addr", addr, NULL);
    return h;
}

void http_stop(http_srv *h)
{
    if (!h) return;
    if (h->http) evhttp_free(h->http); /* every admitted connection: on_close */
    while (h->conns) release(h->conns); /* not adopted yet: evhttp has let go of them */
    if (h->adopt_ev) event_free(h->adopt_ev);
    if (h->tick) event_free(h->tick);
    free(h);
}
