/* worker/http.c — the listener: its thread, its limits, and the routes /healthz
 * (liveness: the worker's loop turns, Redis is up, not draining), /readyz (the last
 * result of worker/ready.c) and /metrics (Prometheus text 0.0.4: common/metrics.h
 * plus the queue figures of worker/opsdata.c, shared by replicas). /ui and /api are
 * in worker/http_api.c.
 *
 * The listener has its own thread and event base: its handlers use the blocking
 * hiredis API (the same code as `snapworker stats`), which must never stall the
 * worker's loop; the loop publishes what /healthz needs through common/metrics.h.
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

#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rds.h"
#include "common/xmalloc.h"
#include "worker/http_priv.h"
#include "worker/opsdata.h"
#include "worker/version.h"

#define HEADERS_MAX 8192 /* request line + headers, bytes */
#define BODY_MAX 1024    /* the dashboard's actions send small JSON bodies: {"id": "..."} */
#define TICK_MS 200      /* deadline and sweep granularity, only while connections exist */
#define LOOP_STALE_MS 10000 /* /healthz fails when the worker's loop has not ticked for this */

typedef struct hconn {
    struct hconn *prev, *next;
    struct http_srv *h;
    struct bufferevent *bev;          /* our reference until released */
    struct evhttp_connection *evcon;  /* NULL until adopted */
    int64_t deadline_ms;              /* monotonic: request and reply done by then */
} hconn;


static int64_t mono_ms(void) { return metrics_mono_ms(); }

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

/* evhttp frees an admitted connection (closed, failed, timed out, replied). The node is
 * looked up by its connection rather than passed as the argument: the tick may already have
 * released it (let_go: evhttp dropped the bufferevent first), and evhttp still calls this
 * afterwards; a node passed by pointer would then be used after its free. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    http_srv *h = arg;
    for (hconn *c = h->conns; c; c = c->next)
        if (c->evcon == evcon) {
            release(c);
            return;
        }
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
                log_msg(SW_LOG_WARN, "http_connection_refused", "max_connections", m,
                        "refused_total", n, NULL);
            }
            continue;
        }
        c->evcon = evcon;
        h->open++;
        evhttp_connection_set_closecb(evcon, on_close, h);
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


/* ---- replies ------------------------------------------------------------ */

void http_base_headers(struct evhttp_request *req)
{
    struct evkeyvalq *o = evhttp_request_get_output_headers(req);
    evhttp_add_header(o, "Connection", "close");
    evhttp_add_header(o, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(o, "Cache-Control", "no-store");
}

static const char *reason_of(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 415: return "Unsupported Media Type";
    default: return code >= 500 ? "Service Unavailable" : "Error";
    }
}

void http_reply_json(struct evhttp_request *req, int code, json_t *body)
{
    char *s = json_dumps(body ? body : json_object(), JSON_COMPACT);
    json_decref(body);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%s\n", s ? s : "{}");
    free(s);
    http_base_headers(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, reason_of(code), b);
    evbuffer_free(b);
}

void http_reply_error(struct evhttp_request *req, int code, const char *msg)
{
    http_reply_json(req, code, json_pack("{s:s}", "error", msg));
}

rds *http_redis(http_srv *h, struct evhttp_request *req)
{
    if (h->rc && h->rc->err) http_redis_reset(h);
    if (!h->rc) {
        sw_err e;
        h->rc = rds_connect(&h->cfg->redis, 2000, &e);
        if (!h->rc) {
            if (req) http_reply_error(req, 503, "redis unavailable");
            return NULL;
        }
    }
    return h->rc;
}

void http_redis_reset(http_srv *h)
{
    if (h->rc) rds_free(h->rc);
    h->rc = NULL;
}

/* ---- /healthz /readyz /metrics ----------------------------------------------- */

static void healthz(http_srv *h, struct evhttp_request *req)
{
    metrics_loop lp;
    metrics_loop_read(&lp);
    int64_t age = lp.tick_ms ? mono_ms() - lp.tick_ms : -1;
    int loop_ok = age >= 0 && age < LOOP_STALE_MS;
    int ok = lp.redis_up && !lp.draining && loop_ok;
    (void)h;
    http_reply_json(req, ok ? 200 : 503,
                    json_pack("{s:b,s:b,s:b,s:i,s:b}", "ok", ok, "redis", lp.redis_up, "draining",
                              lp.draining, "inflight", lp.inflight, "loop", loop_ok));
}

static void readyz(http_srv *h, struct evhttp_request *req)
{
    json_t *o = ready_get(h->ready);
    http_reply_json(req, json_is_true(json_object_get(o, "ready")) ? 200 : 503, o);
}

static void queue_gauges(FILE *f, const char *q, const json_t *fig)
{
    static const struct { const char *name, *field, *help; } g[] = {
        {"snapworker_queue_depth", "depth",
         "Unfinished jobs in the queue's streams (all priorities), running ones included."},
        {"snapworker_queue_pending", "pending", "Entries delivered to a worker and not finished."},
        {"snapworker_queue_lag", "lag",
         "Entries not yet delivered to any worker (depth - pending)."},
        {"snapworker_queue_delayed", "delayed", "Jobs waiting for a retry or their run_at time."},
        {"snapworker_queue_dead", "dead", "Entries in the dead-letter stream."},
        {"snapworker_queue_oldest_age_seconds", "oldest_age_s",
         "Age of the oldest unfinished entry (0 when the streams are empty)."},
        {"snapworker_queue_live_workers", "live_workers",
         "Consumers of the queue seen within the lease time."},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", g[i].name, g[i].help, g[i].name);
        json_t *v = json_object_get(fig, g[i].field);
        if (fig) fprintf(f, "%s{queue=\"%s\"} %.17g\n", g[i].name, q, json_number_value(v));
    }
    fprintf(f, "# HELP snapworker_queue_stream_length Entries in one priority stream.\n"
               "# TYPE snapworker_queue_stream_length gauge\n");
    const char *pr;
    json_t *v;
    json_object_foreach(json_object_get(fig, "streams"), pr, v)
        fprintf(f, "snapworker_queue_stream_length{queue=\"%s\",priority=\"%s\"} %lld\n", q, pr,
                (long long)json_integer_value(v));
    fprintf(f, "# HELP snapworker_queue_figures_age_seconds Age of the shared queue figures.\n"
               "# TYPE snapworker_queue_figures_age_seconds gauge\n");
    if (fig)
        fprintf(f, "snapworker_queue_figures_age_seconds{queue=\"%s\"} %.3f\n", q,
                (double)json_integer_value(json_object_get(fig, "age_ms")) / 1000.0);
}

static void metrics(http_srv *h, struct evhttp_request *req)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        http_reply_error(req, 503, "out of memory");
        return;
    }
    char q[160];
    metrics_label(h->st->queue, q, sizeof q);
    metrics_render(f, h->st->queue, SNAPWORKER_VERSION);
    json_t *fig = NULL;
    rds *rc = http_redis(h, NULL);
    if (rc) {
        sw_err e;
        fig = ops_queue_figures_shared(rc, h->cfg, h->st->queue, h->cfg->metrics_interval_s * 1000, &e);
        if (!fig) http_redis_reset(h);
    }
    queue_gauges(f, q, fig); /* families without samples when Redis did not answer */
    fprintf(f, "# HELP snapworker_queue_figures_up 1 when the queue figures above were read.\n"
               "# TYPE snapworker_queue_figures_up gauge\nsnapworker_queue_figures_up %d\n",
            fig != NULL);
    json_decref(fig);
    fclose(f);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text, len);
    free(text);
    http_base_headers(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void route(struct evhttp_request *req, void *arg)
{
    http_srv *h = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path) path = "/";
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    int get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;
    if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz") || !strcmp(path, "/metrics")) {
        if (!get) http_reply_error(req, 405, "GET only");
        else if (path[1] == 'h') healthz(h, req);
        else if (path[1] == 'r') readyz(h, req);
        else metrics(h, req);
        return;
    }
    if (http_api_route(h, req, path)) return;
    http_reply_error(req, 404, "not found");
}

/* ---- the thread ------------------------------------------------------------ */

static void wake_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)ev;
    char buf[8];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    event_base_loopbreak(((http_srv *)arg)->base);
}

static void *http_main(void *arg)
{
    http_srv *h = arg;
    event_base_dispatch(h->base);
    /* everything the thread made is freed by the thread */
    if (h->http) evhttp_free(h->http); /* every admitted connection: on_close */
    h->http = NULL;
    while (h->conns) release(h->conns); /* not adopted yet: evhttp has let go of them */
    http_redis_reset(h);
    return NULL;
}

http_srv *http_start(struct event_base *base, const char *addr, int max_conns, int timeout_s,
                     const worker_stats *st)
{
    (void)base;
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return NULL;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    int port = atoi(colon + 1);
    http_srv *h = xcalloc(1, sizeof *h);
    h->st = st;
    h->cfg = st->cfg;
    h->wake[0] = h->wake[1] = -1;
    h->max_conns = max_conns > 0 ? max_conns : 1;
    h->timeout_s = timeout_s > 0 ? timeout_s : 1;
    h->base = event_base_new();
    if (!h->base || pipe2(h->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        log_msg(SW_LOG_ERROR, "http_bind_failed", "addr", addr, "error", "no event base", NULL);
        http_stop(h);
        return NULL;
    }
    h->adopt_ev = event_new(h->base, -1, 0, adopt_cb, h);
    h->tick = evtimer_new(h->base, tick_cb, h);
    h->wake_ev = event_new(h->base, h->wake[0], EV_READ | EV_PERSIST, wake_cb, h);
    h->http = evhttp_new(h->base);
    if (!h->http || !h->adopt_ev || !h->tick || !h->wake_ev || event_add(h->wake_ev, NULL) != 0 ||
        evhttp_bind_socket(h->http, host, (unsigned short)port) != 0) {
        log_msg(SW_LOG_ERROR, "http_bind_failed", "addr", addr, NULL);
        http_stop(h);
        return NULL;
    }
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_max_headers_size(h->http, HEADERS_MAX);
    evhttp_set_max_body_size(h->http, BODY_MAX);
    evhttp_set_timeout(h->http, h->timeout_s); /* idle reads and writes; the tick bounds the total */
    evhttp_set_bevcb(h->http, new_bev, h);
    evhttp_set_gencb(h->http, route, h);
    h->ready = ready_start(h->cfg);
    if (!h->ready || pthread_create(&h->th, NULL, http_main, h) != 0) {
        log_msg(SW_LOG_ERROR, "http_bind_failed", "addr", addr, "error", "no thread", NULL);
        http_stop(h);
        return NULL;
    }
    h->th_started = 1;
    log_msg(SW_LOG_INFO, "http_listening", "addr", addr, "actions",
            *h->cfg->http_token ? "token" : "off", NULL);
    return h;
}

void http_stop(http_srv *h)
{
    if (!h) return;
    if (h->th_started) {
        char one = 1;
        while (write(h->wake[1], &one, 1) < 0 && errno == EINTR) {
        }
        pthread_join(h->th, NULL);
    } else {
        if (h->http) evhttp_free(h->http);
        while (h->conns) release(h->conns);
    }
    ready_stop(h->ready);
    if (h->adopt_ev) event_free(h->adopt_ev);
    if (h->tick) event_free(h->tick);
    if (h->wake_ev) event_free(h->wake_ev);
    if (h->wake[0] >= 0) close(h->wake[0]);
    if (h->wake[1] >= 0) close(h->wake[1]);
    if (h->base) event_base_free(h->base);
    free(h);
}
