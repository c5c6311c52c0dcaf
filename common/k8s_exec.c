/* common/k8s_exec.c — k8s_exec(): one command in a pod over pods/exec, a WebSocket on a
 * libcurl CONNECT_ONLY handle (libcurl 7.88 has no ws:// of its own).
 * Owns: the exec URL, the upgrade exchange, the single non-blocking loop that moves stdin
 * out and stdout/stderr/status in, pings and the silence timeout, the deadline and cancel
 * flag, and turning the status channel into the result.
 * Does not own: frame bytes (common/ws.c), Status decoding (k8s_status.c), TLS options and
 * the token (k8s.c), what the command is (the caller; only r->name reaches a message).
 *
 * Channels (one byte in front of every binary message, docs/kubernetes.md):
 *   0 stdin (out)   1 stdout   2 stderr   3 status (metav1.Status JSON)   255 close (out, v5)
 *
 * Why one loop for both directions: the server writes stdin into a pipe that blocks while
 * the process does not read it, and the process may be blocked writing a stdout we do not
 * read. So stdin is only produced when the previous frame has left, a blocked write leaves
 * its bytes queued, and reading goes on meanwhile. */
#include <curl/curl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/k8s_priv.h"
#include "common/ws.h"
#include "common/xmalloc.h"

#define PROTOCOLS "v5.channel.k8s.io, v4.channel.k8s.io"
#define STDIN_CHUNK (32 * 1024 - 1)      /* + the channel byte = a 32 KiB message */
#define WQ_CAP (STDIN_CHUNK + 1 + WS_FRAME_HDR_MAX + 8 * (WS_CONTROL_MAX + WS_FRAME_HDR_MAX))
#define RBUF_SIZE (64 * 1024)
#define MSG_MAX (1024 * 1024)            /* the server's messages are <= 32 KiB + 1 */
#define STATUS_MAX (64 * 1024)
#define PING_EVERY_MS 5000               /* client-go's pingPeriod */
#define CANCEL_POLL_MS 250

enum { CH_STDIN = 0, CH_STDOUT = 1, CH_STDERR = 2, CH_STATUS = 3, CH_CLOSE = 255 };

typedef struct xs {
    k8s_client *k;
    const k8s_exec_req *r;
    k8s_exec_res *res;
    CURL *e;
    curl_socket_t fd;
    char what[160];              /* "exec 'NAME' in pod POD": every message starts with it */
    int64_t silence_ms;          /* fail after this long without a byte from the server */
    /* outgoing frames; fixed buffer so a write curl has half-taken never moves */
    unsigned char *wq;
    size_t wq_off, wq_len;
    unsigned char *rbuf;         /* received bytes */
    unsigned char *ibuf;         /* one stdin chunk */
    ws_decoder dec;
    bool in_done;                /* no more stdin (none asked, EOF sent, or v4 EOF) */
    bool rx_again;               /* the last recv said CURLE_AGAIN: safe to poll */
    bool eof;                    /* recv returned 0 bytes: the server closed TCP */
    bool closed;                 /* a Close frame arrived */
    int close_code;
    size_t out_len, err_len;     /* bytes kept in out_buf / err_buf */
    char *status;                /* channel 3, concatenated, bounded */
    size_t status_len;
    int64_t last_io_ms;          /* last byte received or accepted for sending */
    int64_t next_ping_ms;
} xs;

/* ------------------------------------------------------------------ helpers */

static int xfer_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a; (void)b; (void)c; (void)d;
    atomic_int *cancel = arg;
    return cancel && atomic_load(cancel) ? 1 : 0;
}

/* Deadline or cancel: 0 to go on, -1 with err filled. */
static int check_stop(xs *s, sw_err *err)
{
    if (s->r->cancel && atomic_load(s->r->cancel))
        return sw_errf(err, SW_E_TIMEOUT, true, "%s: cancelled", s->what);
    if (s->r->deadline_ms && k8s_now_ms() >= s->r->deadline_ms)
        return sw_errf(err, SW_E_TIMEOUT, true, "%s: deadline passed", s->what);
    return 0;
}

/* Prefix err's message with s->what (the codec's messages do not name the exec). */
static int rename_err(xs *s, sw_err *err, bool retryable)
{
    char why[sizeof err->msg];
    snprintf(why, sizeof why, "%s", err->msg);
    return sw_errf(err, SW_E_BACKEND, retryable, "%s: %s", s->what, why);
}

/* Wait until fd is ready for 'events' or ms pass (capped so cancel is seen). */
static void wait_fd(xs *s, short events, int64_t ms)
{
    if (ms > CANCEL_POLL_MS) ms = CANCEL_POLL_MS;
    if (ms < 0) ms = 0;
    struct pollfd p = {.fd = s->fd, .events = events};
    poll(&p, 1, (int)ms);
}

/* Append a masked frame whose payload is pre[0..pn) then p[0..n); -1 when it does not
 * fit (the caller skips a ping or pong then; stdin is only queued into an empty queue). */
static int wq_add(xs *s, int op, const unsigned char *pre, size_t pn, const void *p, size_t n)
{
    if (s->wq_len + WS_FRAME_HDR_MAX + pn + n > WQ_CAP) return -1;
    unsigned char mask[4];
    ws_mask_key(mask);
    unsigned char *o = s->wq + s->wq_len;
    size_t h = ws_frame_header(o, op, true, pn + n, mask);
    if (pn) memcpy(o + h, pre, pn);
    if (n) memcpy(o + h + pn, p, n);
    ws_mask(o + h, pn + n, mask, 0);
    s->wq_len += h + pn + n;
    return 0;
}

/* Send what is queued until done or the socket is full. */
static int flush(xs *s, sw_err *err)
{
    while (s->wq_off < s->wq_len) {
        size_t n = 0;
        CURLcode rc = curl_easy_send(s->e, s->wq + s->wq_off, s->wq_len - s->wq_off, &n);
        if (rc == CURLE_AGAIN) return 0;
        if (rc != CURLE_OK)
            return sw_errf(err, SW_E_BACKEND, true, "%s: send: %s", s->what,
                           curl_easy_strerror(rc));
        s->wq_off += n;
        if (n) s->last_io_ms = k8s_now_ms();
    }
    s->wq_off = s->wq_len = 0;   /* nothing half-written: the buffer may restart */
    return 0;
}

static void keep(char *buf, size_t cap, size_t *len, const unsigned char *p, size_t n)
{
    if (!buf || cap == 0) return;
    size_t room = cap - 1 - *len;
    if (n > room) n = room;
    memcpy(buf + *len, p, n);
    *len += n;
    buf[*len] = '\0';
}

/* ------------------------------------------------------------------ messages in */

static int on_msg(xs *s, const ws_msg *m, sw_err *err)
{
    switch (m->opcode) {
    case WS_OP_BINARY:
        break;
    case WS_OP_PING:
        (void)wq_add(s, WS_OP_PONG, NULL, 0, m->data, m->len);   /* skipped when full */
        return 0;
    case WS_OP_PONG:
        return 0;
    case WS_OP_CLOSE: {
        unsigned char code[2] = {0x03, 0xE8};   /* 1000: answer in kind, best effort */
        s->closed = true;
        s->close_code = ws_close_code(m->data, m->len, NULL, 0);
        (void)wq_add(s, WS_OP_CLOSE, code, sizeof code, NULL, 0);
        return 0;
    }
    default:
        return sw_errf(err, SW_E_BACKEND, true, "%s: unexpected text message", s->what);
    }
    if (m->len < 2) return 0;   /* the initial empty "ready" message, or an empty one */
    const unsigned char *p = m->data + 1;
    size_t n = m->len - 1;
    const k8s_exec_req *r = s->r;
    switch (m->data[0]) {
    case CH_STDOUT:
        s->res->bytes_out += (int64_t)n;
        if (r->out) {
            if (r->out(r->out_arg, (const char *)p, n) < 0)
                return sw_errf(err, SW_E_BACKEND, false, "%s: stdout consumer failed", s->what);
        } else {
            keep(r->out_buf, r->out_cap, &s->out_len, p, n);
        }
        break;
    case CH_STDERR:
        keep(r->err_buf, r->err_cap, &s->err_len, p, n);
        break;
    case CH_STATUS:
        if (n > STATUS_MAX - s->status_len) n = STATUS_MAX - s->status_len;
        memcpy(s->status + s->status_len, p, n);
        s->status_len += n;
        break;
    default:
        break;   /* resize or unknown channels: nothing to do */
    }
    return 0;
}

/* Feed received bytes to the decoder and act on every message. */
static int feed(xs *s, const unsigned char *p, size_t n, sw_err *err)
{
    while (n > 0 && !s->closed) {
        size_t used = 0;
        ws_msg m;
        int rc = ws_decode(&s->dec, p, n, &used, &m, err);
        if (rc < 0) return rename_err(s, err, true);
        p += used;
        n -= used;
        if (rc == 1 && on_msg(s, &m, err) < 0) return -1;
    }
    return 0;
}

/* Read until CURLE_AGAIN (or a bounded number of reads, so writes and timers get a turn). */
static int pump_out(xs *s, sw_err *err)
{
    s->rx_again = false;
    for (int i = 0; i < 16 && !s->closed; i++) {
        size_t n = 0;
        CURLcode rc = curl_easy_recv(s->e, s->rbuf, RBUF_SIZE, &n);
        if (rc == CURLE_AGAIN) {
            s->rx_again = true;
            return 0;
        }
        if (rc != CURLE_OK)
            return sw_errf(err, SW_E_BACKEND, true, "%s: stream dropped: %s", s->what,
                           curl_easy_strerror(rc));
        if (n == 0) {
            s->eof = true;
            return 0;
        }
        s->last_io_ms = k8s_now_ms();
        if (feed(s, s->rbuf, n, err) < 0) return -1;
    }
    return 0;
}

/* Queue the next stdin frame, or the v5 half-close at EOF. Only into an empty queue. */
static int pump_in(xs *s, sw_err *err)
{
    if (s->in_done || s->wq_len > 0) return 0;
    ssize_t n = s->r->in(s->r->in_arg, (char *)s->ibuf, STDIN_CHUNK);
    if (n < 0) return sw_errf(err, SW_E_BACKEND, false, "%s: stdin source failed", s->what);
    if (n == 0) {
        static const unsigned char half_close[2] = {CH_CLOSE, CH_STDIN};
        s->in_done = true;
        /* v4 has no way to say EOF: the script reads a known length (head -c N). */
        if (s->res->v5) (void)wq_add(s, WS_OP_BINARY, half_close, 2, NULL, 0);
        return 0;
    }
    static const unsigned char ch[1] = {CH_STDIN};
    (void)wq_add(s, WS_OP_BINARY, ch, 1, s->ibuf, (size_t)n);   /* fits: queue was empty */
    s->res->bytes_in += n;
    return 0;
}

/* ------------------------------------------------------------------ the stream */

static int stream(xs *s, const unsigned char *first, size_t first_n, sw_err *err)
{
    int64_t now = k8s_now_ms();
    s->last_io_ms = now;
    s->next_ping_ms = now + PING_EVERY_MS;
    s->in_done = s->r->in == NULL;
    if (feed(s, first, first_n, err) < 0) return -1;
    for (;;) {
        if (check_stop(s, err) < 0) return -1;
        if (pump_out(s, err) < 0) return -1;
        if (s->closed || s->eof) {
            (void)flush(s, err);   /* the Close answer, best effort: the server hangs up */
            return 0;
        }
        if (flush(s, err) < 0) return -1;
        if (!s->in_done && s->wq_len == 0) {
            if (pump_in(s, err) < 0) return -1;
            if (flush(s, err) < 0) return -1;
        }
        now = k8s_now_ms();
        if (now >= s->next_ping_ms) {
            (void)wq_add(s, WS_OP_PING, NULL, 0, NULL, 0);
            s->next_ping_ms = now + PING_EVERY_MS;
            if (flush(s, err) < 0) return -1;
        }
        if (now - s->last_io_ms >= s->silence_ms)
            return sw_errf(err, SW_E_BACKEND, true, "%s: no data from the server for %llds",
                           s->what, (long long)(s->silence_ms / 1000));
        if (!s->rx_again) continue;                        /* more may be buffered in curl */
        if (!s->in_done && s->wq_len == 0) continue;       /* stdin can go on at once */
        int64_t ms = s->next_ping_ms - now;
        if (s->last_io_ms + s->silence_ms - now < ms) ms = s->last_io_ms + s->silence_ms - now;
        if (s->r->deadline_ms && s->r->deadline_ms - now < ms) ms = s->r->deadline_ms - now;
        wait_fd(s, (short)(POLLIN | (s->wq_len > s->wq_off ? POLLOUT : 0)), ms);
    }
}

/* What the stream's end means: the status channel, else why there is none. */
static int outcome(xs *s, sw_err *err)
{
    int code = 0;
    long http = 0;
    char msg[200];
    switch (k8s_exec_status(s->status, s->status_len, &code, &http, msg, sizeof msg)) {
    case K8S_ST_SUCCESS:
    case K8S_ST_EXIT:
        s->res->exit_code = code;
        return 0;
    case K8S_ST_FAILURE:
        return sw_errf(err, SW_E_BACKEND, http >= 500 || http == 429, "%s: %s", s->what, msg);
    case K8S_ST_GARBAGE:
        return sw_errf(err, SW_E_BACKEND, true, "%s: unreadable status from the server",
                       s->what);
    case K8S_ST_NONE:
    default:
        if (s->closed && s->close_code != 1000 && s->close_code != WS_CLOSE_NONE)
            return sw_errf(err, SW_E_BACKEND, true, "%s: closed with code %d and no status",
                           s->what, s->close_code);
        return sw_errf(err, SW_E_BACKEND, true, "%s: stream ended without a status", s->what);
    }
}

/* ------------------------------------------------------------------ the upgrade */

/* path?query of the exec request; every argv item, the container, the pod and the
 * namespace percent-encoded. Caller frees. */
static char *exec_path(xs *s)
{
    const k8s_exec_req *r = s->r;
    size_t cap = 256, len = 0;
    char *p = xmalloc(cap);
    p[0] = '\0';
#define PUT(str) do {                                                                         \
        const char *str_ = (str);                                                             \
        size_t l_ = strlen(str_);                                                             \
        if (len + l_ + 1 > cap) { while (len + l_ + 1 > cap) cap *= 2; p = xrealloc(p, cap); } \
        memcpy(p + len, str_, l_ + 1);                                                        \
        len += l_;                                                                            \
    } while (0)
#define PUT_ESC(str) do {                                                                     \
        char *e_ = curl_easy_escape(s->e, (str), 0);                                          \
        if (!e_) { fprintf(stderr, "snapworker: out of memory (curl_easy_escape)\n"); abort(); } \
        PUT(e_);                                                                              \
        curl_free(e_);                                                                        \
    } while (0)
    PUT(s->k->path_prefix);
    PUT("/api/v1/namespaces/");
    PUT_ESC(s->k->ns);
    PUT("/pods/");
    PUT_ESC(r->pod);
    PUT("/exec?");
    for (size_t i = 0; r->argv[i]; i++) {
        PUT(i ? "&command=" : "command=");
        PUT_ESC(r->argv[i]);
    }
    PUT("&container=");
    PUT_ESC(r->container);
    PUT(r->in ? "&stdin=true" : "&stdin=false");
    PUT("&stdout=true&stderr=true&tty=false");
#undef PUT_ESC
#undef PUT
    return p;
}

/* Time left for one blocking step: the silence timeout, capped by the deadline. */
static int64_t step_ms(xs *s)
{
    int64_t ms = s->silence_ms;
    if (s->r->deadline_ms) {
        int64_t left = s->r->deadline_ms - k8s_now_ms();
        if (left < ms) ms = left;
    }
    return ms > 0 ? ms : 1;
}

/* A CONNECT_ONLY handle, connected (TCP + TLS) on HTTP/1.1. 0 or -1. */
static int connect_only(xs *s, sw_err *err)
{
    char ebuf[CURL_ERROR_SIZE] = "";
    s->e = curl_easy_init();
    if (!s->e) return sw_errf(err, SW_E_BACKEND, true, "%s: curl_easy_init failed", s->what);
    k8s_curl_tls(s->k, s->e, (long)step_ms(s));
    curl_easy_setopt(s->e, CURLOPT_URL, s->k->base);
    curl_easy_setopt(s->e, CURLOPT_CONNECT_ONLY, 1L);
    /* Without this libcurl offers h2 in ALPN, the API server takes it, and the upgrade
     * dies under an HTTP/2 preface. */
    curl_easy_setopt(s->e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(s->e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(s->e, CURLOPT_XFERINFOFUNCTION, xfer_progress);
    curl_easy_setopt(s->e, CURLOPT_XFERINFODATA, s->r->cancel);
    curl_easy_setopt(s->e, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode rc = curl_easy_perform(s->e);
    curl_easy_setopt(s->e, CURLOPT_ERRORBUFFER, (char *)NULL);
    if (rc != CURLE_OK) {
        if (check_stop(s, err) < 0) return -1;
        return sw_errf(err, SW_E_BACKEND, rc != CURLE_PEER_FAILED_VERIFICATION,
                       "%s: connect: %s%s%s", s->what, curl_easy_strerror(rc),
                       ebuf[0] ? ": " : "", ebuf);
    }
    curl_easy_getinfo(s->e, CURLINFO_ACTIVESOCKET, &s->fd);
    return 0;
}

/* Write all of req[0..n) before the silence timeout / deadline. 0 or -1. */
static int send_all(xs *s, const char *req, size_t n, sw_err *err)
{
    size_t sent = 0;
    int64_t until = k8s_now_ms() + step_ms(s);
    for (;;) {
        size_t w = 0;
        CURLcode rc = curl_easy_send(s->e, req + sent, n - sent, &w);
        if (rc != CURLE_OK && rc != CURLE_AGAIN)
            return sw_errf(err, SW_E_BACKEND, true, "%s: send: %s", s->what,
                           curl_easy_strerror(rc));
        sent += w;
        if (sent == n) return 0;
        if (check_stop(s, err) < 0) return -1;
        if (k8s_now_ms() >= until)
            return sw_errf(err, SW_E_BACKEND, true, "%s: timed out sending the upgrade", s->what);
        wait_fd(s, POLLOUT, until - k8s_now_ms());
    }
}

/* Read the answer into h until its head (and, when refused, its body) is complete. For a
 * 101, s->rbuf[*first_off .. +*first_n) are frame bytes that came with it. 0 or -1. */
static int read_head(xs *s, ws_head *h, size_t *first_off, size_t *first_n, sw_err *err)
{
    int64_t until = k8s_now_ms() + step_ms(s);
    for (;;) {
        size_t n = 0, used = 0;
        CURLcode rc = curl_easy_recv(s->e, s->rbuf, RBUF_SIZE, &n);
        if (rc == CURLE_AGAIN) {
            if (check_stop(s, err) < 0) return -1;
            if (k8s_now_ms() >= until)
                return sw_errf(err, SW_E_BACKEND, true, "%s: no answer to the upgrade", s->what);
            wait_fd(s, POLLIN, until - k8s_now_ms());
            continue;
        }
        if (rc != CURLE_OK)
            return sw_errf(err, SW_E_BACKEND, true, "%s: reading the upgrade answer: %s",
                           s->what, curl_easy_strerror(rc));
        int hr = n == 0 ? ws_head_eof(h, err) : ws_head_feed(h, s->rbuf, n, &used, err);
        if (hr < 0) return rename_err(s, err, true);
        if (hr == 1) {
            *first_off = used;
            *first_n = n - used;
            return 0;
        }
    }
}

/* The error for an answer other than 101. */
static int refused(xs *s, const ws_head *h, sw_err *err)
{
    if (h->status == 403 && h->body_len == 0)
        return sw_errf(err, SW_E_BACKEND, false,
                       "%s: upgrade refused: 403 with an empty body (subprotocol refused: the "
                       "server accepts neither v5.channel.k8s.io nor v4.channel.k8s.io)",
                       s->what);
    char m[sizeof err->msg];
    k8s_http_error_msg(h->status == 404 ? "pod not found" : "upgrade refused", h->status,
                       h->body, h->body_len, m, sizeof m);
    return sw_errf(err, SW_E_BACKEND, k8s_http_retryable(h->status), "%s: %s", s->what, m);
}

/* Connect, send the upgrade, read the answer. 1 upgraded (s->rbuf[*first_off..+*first_n)
 * holds frame bytes that came with the head), 0 = 401 and the token file now holds
 * another token: try again, -1 with err filled. The handle is released unless 1. */
static int upgrade(xs *s, bool retry_auth, size_t *first_off, size_t *first_n, sw_err *err)
{
    char key[WS_KEY_LEN + 1];
    char *path = NULL, *req = NULL, *auth = NULL;
    ws_head h;
    int ret = -1;
    ws_head_init(&h);
    if (connect_only(s, err) < 0 || ws_make_key(key, err) < 0) goto out;
    path = exec_path(s);
    auth = k8s_auth_line(s->k, retry_auth, NULL);
    req = ws_upgrade_request(s->k->host, path, auth, key, PROTOCOLS);
    if (send_all(s, req, strlen(req), err) < 0) goto out;
    if (read_head(s, &h, first_off, first_n, err) < 0) goto out;
    if (h.status == 101) {
        if (ws_head_verify(&h, key, err) < 0) {
            rename_err(s, err, false);
        } else if (!strcmp(h.protocol, "v5.channel.k8s.io")) {
            s->res->v5 = true;
            ret = 1;
        } else if (!strcmp(h.protocol, "v4.channel.k8s.io")) {
            ret = 1;
        } else {
            sw_errf(err, SW_E_BACKEND, false, "%s: server chose subprotocol '%.40s'", s->what,
                    h.protocol);
        }
        goto out;
    }
    if (h.status == 401 && !retry_auth && s->k->cr.token_file) {
        bool changed = false;
        k8s_wipe_free(k8s_auth_line(s->k, true, &changed));
        if (changed) {
            ret = 0;
            goto out;
        }
    }
    refused(s, &h, err);
out:
    if (req) {
        explicit_bzero(req, strlen(req));
        free(req);
    }
    k8s_wipe_free(auth);
    free(path);
    ws_head_free(&h);
    if (ret != 1) {
        k8s_curl_done(s->e);
        s->e = NULL;
    }
    return ret;
}

/* ------------------------------------------------------------------ entry point */

int k8s_exec(k8s_client *k, const k8s_exec_req *r, k8s_exec_res *res, sw_err *err_out)
{
    xs s = {0};
    sw_err e_local, *err = &e_local;   /* the helpers read err->msg: never NULL here */
    int ret = -1;
    sw_err_clear(err);
    memset(res, 0, sizeof *res);
    s.k = k;
    s.r = r;
    s.res = res;
    snprintf(s.what, sizeof s.what, "exec '%.40s' in pod %.63s", r->name ? r->name : "command",
             r->pod ? r->pod : "?");
    ws_decoder_init(&s.dec, MSG_MAX);
    if (!r->pod || !k8s_valid_name(r->pod) || !r->container || !*r->container || !r->argv ||
        !r->argv[0]) {
        sw_errf(err, SW_E_BACKEND, false, "%s: pod, container and argv are required", s.what);
        goto out;
    }
    s.silence_ms = (int64_t)k->timeout_s * 1000;
    s.wq = xmalloc(WQ_CAP);
    s.rbuf = xmalloc(RBUF_SIZE);
    s.ibuf = xmalloc(STDIN_CHUNK);
    s.status = xmalloc(STATUS_MAX);
    if (r->out_buf && r->out_cap) r->out_buf[0] = '\0';
    if (r->err_buf && r->err_cap) r->err_buf[0] = '\0';
    size_t first_off = 0, first_n = 0;
    int up = upgrade(&s, false, &first_off, &first_n, err);
    if (up == 0) up = upgrade(&s, true, &first_off, &first_n, err);
    if (up != 1) goto out;
    if (stream(&s, s.rbuf + first_off, first_n, err) < 0) {
        /* A status that arrived whole before the drop still tells the outcome: the server
         * writes it after all output (docs/kubernetes.md). */
        int code = 0;
        long http = 0;
        char msg[8];
        k8s_status_kind st = k8s_exec_status(s.status, s.status_len, &code, &http, msg, sizeof msg);
        bool stopped = err->code == SW_E_TIMEOUT || !err->retryable;
        if (stopped || (st != K8S_ST_SUCCESS && st != K8S_ST_EXIT)) goto out;
    }
    ret = outcome(&s, err);
out:
    k8s_curl_done(s.e);
    ws_decoder_free(&s.dec);
    free(s.wq);
    free(s.rbuf);
    free(s.ibuf);
    free(s.status);
    if (ret < 0 && err_out) *err_out = e_local;
    return ret;
}
