/* worker/http.c — GET /healthz and GET /metrics (Prometheus text format).
 * /healthz answers 200 while both Redis connections are up and the worker is not
 * draining, else 503, so an orchestrator can route around it. */
#include "worker/http.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xmalloc.h"

struct http_srv {
    struct evhttp *http;
    const worker_stats *st;
};

static void healthz(struct evhttp_request *req, void *arg)
{
    http_srv *h = arg;
    int ok = h->st->redis_up && !h->st->draining;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"ok\":%s,\"redis\":%s,\"draining\":%s,\"inflight\":%d}\n",
                        ok ? "true" : "false", h->st->redis_up ? "true" : "false",
                        h->st->draining ? "true" : "false", h->st->inflight);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
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
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

http_srv *http_start(struct event_base *base, const char *addr, const worker_stats *st)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return NULL;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    int port = atoi(colon + 1);
    http_srv *h = xcalloc(1, sizeof *h);
    h->st = st;
    h->http = evhttp_new(base);
    if (!h->http || evhttp_bind_socket(h->http, host, (unsigned short)port) != 0) {
        log_msg(LOG_ERROR, "http_bind_failed", "addr", addr, NULL);
        http_stop(h);
        return NULL;
    }
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_cb(h->http, "/healthz", healthz, h);
    evhttp_set_cb(h->http, "/metrics", metrics, h);
    log_msg(LOG_INFO, "http_listening", "addr", addr, NULL);
    return h;
}

void http_stop(http_srv *h)
{
    if (!h) return;
    if (h->http) evhttp_free(h->http);
    free(h);
}
