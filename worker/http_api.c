/* worker/http_api.c — the dashboard (/ui) and its JSON (/api/...).
 *
 * The page, its script and its style are files of worker/ui/ compiled into the binary
 * (tools/embed.c); no CDN, no build step. Reads need nothing; actions (dead requeue,
 * dead purge) need SNAPWORKER_HTTP_TOKEN sent as "Authorization: Bearer TOKEN" with a
 * JSON body. Why that resists CSRF: a browser adds no Authorization header by itself
 * (unlike a cookie), another site's script cannot set one on a cross-origin request
 * without a CORS preflight this server never grants, and a form cannot send
 * application/json. The page escapes all data (textContent only) and the CSP forbids
 * inline script. Nothing shown holds a secret (worker/opsdata.c).
 * Endpoints: docs/operations.md "Dashboard and /api". */
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>

#include "common/embedded.h"
#include "worker/http_priv.h"
#include "worker/opsdata.h"
#include "worker/version.h"

#define UI_FIGURES_MAX_AGE_MS 2000 /* the page polls every 2 s: at most one read per 2 s, shared */

static const struct { const char *path, *file, *type; } ui_files[] = {
    {"/ui", "worker/ui/index.html", "text/html; charset=utf-8"},
    {"/ui/", "worker/ui/index.html", "text/html; charset=utf-8"},
    {"/ui/app.js", "worker/ui/app.js", "text/javascript; charset=utf-8"},
    {"/ui/app.css", "worker/ui/app.css", "text/css; charset=utf-8"},
};

static void serve_file(struct evhttp_request *req, const char *file, const char *type)
{
    size_t len = 0;
    const char *data = embedded_get(file, &len);
    if (!data) {
        http_reply_error(req, 404, "not found");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_reference(b, data, len, NULL, NULL);
    http_base_headers(req);
    struct evkeyvalq *o = evhttp_request_get_output_headers(req);
    evhttp_add_header(o, "Content-Type", type);
    evhttp_add_header(o, "Content-Security-Policy",
                      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                      "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    evhttp_add_header(o, "Referrer-Policy", "no-referrer");
    evhttp_add_header(o, "X-Frame-Options", "DENY");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

/* Constant-time comparison: the token's length may leak, its bytes do not. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

/* 1 when the request may act; else the refusal is sent. */
static int authorized(http_srv *h, struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    if (!*h->cfg->http_token) {
        http_reply_error(req, 403, "read-only: SNAPWORKER_HTTP_TOKEN is not set on this worker");
        return 0;
    }
    const char *auth = evhttp_find_header(in, "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || !token_equal(auth + 7, h->cfg->http_token)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        http_reply_error(req, 401, "a valid bearer token is required");
        return 0;
    }
    const char *ct = evhttp_find_header(in, "Content-Type");
    if (!ct || strncmp(ct, "application/json", 16) != 0) {
        http_reply_error(req, 415, "Content-Type must be application/json");
        return 0;
    }
    return 1;
}

static json_t *body_json(struct evhttp_request *req)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(b);
    char buf[1025];
    if (n >= sizeof buf) return NULL; /* evhttp already refuses bodies over 1 KiB */
    evbuffer_copyout(b, buf, n);
    buf[n] = '\0';
    json_t *j = json_loads(n ? buf : "{}", 0, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* Reply with 'out' or with err's meaning: invalid input 400/404, Redis 503. */
static void reply_result(http_srv *h, struct evhttp_request *req, json_t *out, const sw_err *e)
{
    if (out) {
        http_reply_json(req, 200, out);
    } else if (e->code == SW_E_INVALID_PAYLOAD) {
        http_reply_error(req, strstr(e->msg, "no such") ? 404 : 400, e->msg);
    } else {
        http_redis_reset(h);
        http_reply_error(req, 503, "redis unavailable");
    }
}

static void api_get(http_srv *h, struct evhttp_request *req, const char *path)
{
    const char *queue = h->st->queue;
    if (!strcmp(path, "/api/config")) {
        http_reply_json(req, 200,
                        json_pack("{s:s,s:s,s:s,s:b,s:i}", "queue", queue, "version",
                                  SNAPWORKER_VERSION, "consumer", h->st->consumer ? h->st->consumer : "",
                                  "actions", *h->cfg->http_token != '\0', "poll_ms",
                                  UI_FIGURES_MAX_AGE_MS));
        return;
    }
    struct evkeyvalq q = {0}; /* evhttp_parse_query_str initializes it */
    const char *qs = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    if (qs && evhttp_parse_query_str(qs, &q) != 0) {
        http_reply_error(req, 400, "bad query string");
        return;
    }
    rds *rc = http_redis(h, req);
    sw_err e;
    sw_err_clear(&e);
    if (!rc) goto out;
    if (!strcmp(path, "/api/queues")) {
        json_t *f = ops_queue_figures_shared(rc, h->cfg, queue, UI_FIGURES_MAX_AGE_MS, &e);
        reply_result(h, req, f ? json_pack("{s:[o]}", "queues", f) : NULL, &e);
    } else if (!strcmp(path, "/api/jobs")) {
        const char *state = evhttp_find_header(&q, "state"), *type = evhttp_find_header(&q, "type");
        const char *lim = evhttp_find_header(&q, "limit");
        if (!state || !ops_state_valid(state)) {
            http_reply_error(req, 400,
                             "state must be queued, running, delayed, dead, failed, succeeded or cancelled");
            goto out;
        }
        json_t *l = ops_list(rc, h->cfg, queue, state, type, lim ? atoi(lim) : 50, &e);
        reply_result(h, req, l ? json_pack("{s:s,s:s,s:o}", "queue", queue, "state", state, "jobs", l) : NULL, &e);
    } else if (!strcmp(path, "/api/job")) {
        reply_result(h, req, ops_job(rc, h->cfg, queue, evhttp_find_header(&q, "id"), &e), &e);
    } else {
        http_reply_error(req, 404, "not found");
    }
out:
    evhttp_clear_headers(&q);
}

static void api_post(http_srv *h, struct evhttp_request *req, const char *path)
{
    int requeue = !strcmp(path, "/api/dead/requeue"), purge = !strcmp(path, "/api/dead/purge");
    if (!requeue && !purge) {
        http_reply_error(req, 404, "not found");
        return;
    }
    if (!authorized(h, req)) return;
    json_t *body = body_json(req);
    if (!body) {
        http_reply_error(req, 400, "body must be a JSON object");
        return;
    }
    const char *id = json_string_value(json_object_get(body, "id"));
    sw_err e;
    sw_err_clear(&e);
    rds *rc = http_redis(h, req);
    if (rc) {
        if (requeue && !id) http_reply_error(req, 400, "\"id\" (the dead entry id) is required");
        else if (requeue) reply_result(h, req, ops_dead_requeue(rc, h->cfg, h->st->queue, id, &e), &e);
        else reply_result(h, req, ops_dead_purge(rc, h->cfg, h->st->queue, id, &e), &e);
    }
    json_decref(body);
}

int http_api_route(http_srv *h, struct evhttp_request *req, const char *path)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    int get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;
    if (!strcmp(path, "/")) {
        http_base_headers(req);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Location", "/ui/");
        evhttp_send_reply(req, 302, "Found", NULL);
        return 1;
    }
    for (size_t i = 0; i < sizeof ui_files / sizeof ui_files[0]; i++) {
        if (strcmp(path, ui_files[i].path) != 0) continue;
        if (!get) http_reply_error(req, 405, "GET only");
        else serve_file(req, ui_files[i].file, ui_files[i].type);
        return 1;
    }
    if (strncmp(path, "/api/", 5) != 0) return 0;
    if (get) api_get(h, req, path);
    else if (m == EVHTTP_REQ_POST) api_post(h, req, path);
    else http_reply_error(req, 405, "method not allowed");
    return 1;
}
