/* worker/rtr.c — a Redis connection on a libevent bufferevent (worker/rtr.h).
 * Reads feed hiredis's redisReader chunk by chunk (no pull-up copy); each complete reply
 * goes to the oldest pending callback, a published message to the message callback. Freeing inside a callback is deferred until the
 * read loop unwinds ('busy'). */
#include "worker/rtr.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/tls.h"
#include "common/xmalloc.h"

typedef struct pend {
    struct pend *next;
    rtr_reply_fn fn;
    void *priv;
} pend;

struct rtr {
    struct bufferevent *bev;
    SSL *ssl;                   /* owned by bev (BEV_OPT_CLOSE_ON_FREE) */
    redisReader *rd;
    pend *head, *tail, *spare;  /* spare: a small free list, replies come at a high rate */
    int npending, nspare;
    int up;
    int busy;                   /* inside a callback: rtr_free defers */
    int freed;
    int gone;                   /* lost: sends refused */
    rtr_event_fn ev;
    void *ud;
    rtr_reply_fn msg_fn;        /* published messages (rtr_on_message), or NULL */
    void *msg_priv;
    char host[256];
    int port;
};

static void fail_all(rtr *t)
{
    pend *p = t->head;
    t->head = t->tail = NULL;
    t->npending = 0;
    while (p) {
        pend *nx = p->next;
        if (p->fn) p->fn(t, NULL, p->priv);
        free(p);
        p = nx;
    }
}

static void destroy(rtr *t)
{
    fail_all(t);
    if (t->bev) bufferevent_free(t->bev); /* closes the socket and frees the SSL */
    if (t->rd) redisReaderFree(t->rd);
    while (t->spare) {
        pend *nx = t->spare->next;
        free(t->spare);
        t->spare = nx;
    }
    free(t);
}

static void lose(rtr *t, const char *why)
{
    if (t->gone) return;
    t->gone = 1;
    t->up = 0;
    t->busy++;
    fail_all(t);
    if (!t->freed && t->ev) t->ev(t, 0, why, t->ud);
    t->busy--;
    if (t->freed && !t->busy) destroy(t);
}

/* A message published to a channel we subscribed to (RESP2: a 3-element array). */
static int is_message(const redisReply *r)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
           r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 7 &&
           memcmp(r->element[0]->str, "message", 7) == 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    rtr *t = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    /* everything that arrived goes to the reader now: a callback queued after this one
     * (the EOF of a closing server) must not find replies still unread */
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v[8];
        int nv = evbuffer_peek(in, -1, NULL, v, 8);
        size_t fed = 0;
        for (int i = 0; i < nv && i < 8; i++) {
            redisReaderFeed(t->rd, v[i].iov_base, v[i].iov_len); /* copies; fails only on OOM */
            fed += v[i].iov_len;
        }
        evbuffer_drain(in, fed);
    }
    t->busy++;
    while (!t->freed && !t->gone) {
        void *reply = NULL;
        if (redisReaderGetReply(t->rd, &reply) != REDIS_OK) {
            char why[160];
            snprintf(why, sizeof why, "protocol error: %s", t->rd->errstr);
            lose(t, why);
            break;
        }
        if (!reply) break;
        if (t->msg_fn && is_message(reply)) { /* no command waits for it */
            t->msg_fn(t, reply, t->msg_priv);
            freeReplyObject(reply);
            continue;
        }
        pend *p = t->head;
        if (!p) { /* a reply nobody asked for (a push): not ours to handle */
            freeReplyObject(reply);
            continue;
        }
        t->head = p->next;
        if (!t->head) t->tail = NULL;
        t->npending--;
        if (p->fn) p->fn(t, reply, p->priv);
        freeReplyObject(reply);
        if (t->nspare < 64) {
            p->next = t->spare;
            t->spare = p;
            t->nspare++;
        } else {
            free(p);
        }
    }
    t->busy--;
    if (t->freed && !t->busy) {
        destroy(t);
        return;
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    rtr *t = arg;
    if (what & BEV_EVENT_CONNECTED) {
        evutil_socket_t fd = bufferevent_getfd(bev);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on unix */
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        t->up = 1;
        t->busy++;
        if (t->ev) t->ev(t, 1, NULL, t->ud);
        t->busy--;
        if (t->freed && !t->busy) destroy(t);
        return;
    }
    char why[256];
    if (t->ssl) {
        unsigned long e, first = 0;
        while ((e = bufferevent_get_openssl_error(bev)) != 0)
            if (!first && !(ERR_GET_LIB(e) == 0 && ERR_GET_REASON(e) < 16)) first = e;
        int serr = EVUTIL_SOCKET_ERROR();
        if (!first && SSL_get_verify_result(t->ssl) == X509_V_OK && (what & BEV_EVENT_ERROR) && serr)
            snprintf(why, sizeof why, "%s", evutil_socket_error_to_string(serr));
        else if (!first && SSL_get_verify_result(t->ssl) == X509_V_OK && (what & BEV_EVENT_EOF))
            snprintf(why, sizeof why, "Server closed the connection");
        else
            tls_explain(t->ssl, first, why, sizeof why);
    } else if (what & BEV_EVENT_EOF) {
        snprintf(why, sizeof why, "Server closed the connection");
    } else {
        int serr = EVUTIL_SOCKET_ERROR();
        snprintf(why, sizeof why, "%s", serr ? evutil_socket_error_to_string(serr) : "connection error");
    }
    lose(t, why);
}

rtr *rtr_open(struct event_base *base, const rds_url *u, const char *host, int port,
              const char *unix_path, rtr_event_fn ev, void *ud, char *why, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (unix_path) {
        struct sockaddr_un *sa = (struct sockaddr_un *)&ss;
        if (strlen(unix_path) >= sizeof sa->sun_path) {
            snprintf(why, n, "socket path too long");
            return NULL;
        }
        sa->sun_family = AF_UNIX;
        memcpy(sa->sun_path, unix_path, strlen(unix_path) + 1);
        sl = sizeof *sa;
    } else {
        /* numeric addresses need no lookup; names use the resolver (blocking, brief) */
        char ps[8];
        snprintf(ps, sizeof ps, "%d", port);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int gai = getaddrinfo(host, ps, &hints, &res);
        if (gai) {
            snprintf(why, n, "cannot resolve '%s': %s", host, gai_strerror(gai));
            return NULL;
        }
        /* one address is tried (a bufferevent connects once): IPv4 first, because
         * "localhost" often lists ::1 first while Redis is bound to 127.0.0.1 */
        struct addrinfo *pick = res;
        for (struct addrinfo *a = res; a; a = a->ai_next)
            if (a->ai_family == AF_INET) {
                pick = a;
                break;
            }
        memcpy(&ss, pick->ai_addr, pick->ai_addrlen);
        sl = pick->ai_addrlen;
        freeaddrinfo(res);
    }
    rtr *t = xcalloc(1, sizeof *t);
    t->ev = ev;
    t->ud = ud;
    t->port = unix_path ? 0 : port;
    snprintf(t->host, sizeof t->host, "%s", unix_path ? unix_path : host);
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (u->tls && !unix_path) {
        sw_err e;
        SSL_CTX *ctx = tls_ctx(u, &e);
        SSL *ssl = ctx ? tls_session(ctx, u, host, &e) : NULL;
        if (!ssl) {
            snprintf(why, n, "%s", e.msg);
            free(t);
            return NULL;
        }
        t->ssl = ssl;
        t->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, opts);
        if (!t->bev) SSL_free(ssl);
    } else {
        t->bev = bufferevent_socket_new(base, -1, opts);
    }
    if (!t->bev) {
        snprintf(why, n, "out of memory");
        free(t);
        return NULL;
    }
    t->rd = redisReaderCreate();
    bufferevent_setcb(t->bev, on_read, NULL, on_event, t);
    bufferevent_enable(t->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(t->bev, (struct sockaddr *)&ss, (int)sl) < 0) {
        int serr = EVUTIL_SOCKET_ERROR();
        snprintf(why, n, "%s", serr ? evutil_socket_error_to_string(serr) : "connect failed");
        t->ev = NULL;
        destroy(t);
        return NULL;
    }
    return t;
}

int rtr_send(rtr *t, const char *resp, size_t len, rtr_reply_fn fn, void *priv)
{
    if (!t || t->gone || t->freed) return -1;
    if (bufferevent_write(t->bev, resp, len) < 0) return -1;
    pend *p = t->spare;
    if (p) {
        t->spare = p->next;
        t->nspare--;
    } else {
        p = xmalloc(sizeof *p);
    }
    *p = (pend){.fn = fn, .priv = priv};
    if (t->tail) t->tail->next = p;
    else t->head = p;
    t->tail = p;
    t->npending++;
    return 0;
}

void rtr_on_message(rtr *t, rtr_reply_fn fn, void *priv)
{
    t->msg_fn = fn;
    t->msg_priv = priv;
}

void rtr_free(rtr *t)
{
    if (!t || t->freed) return;
    t->freed = 1;
    t->ev = NULL;
    if (t->busy) { /* inside a callback: fail what waits now, free when it unwinds */
        t->gone = 1;
        t->busy++;
        fail_all(t);
        t->busy--;
        return;
    }
    t->busy++;
    fail_all(t);
    t->busy--;
    destroy(t);
}

int rtr_pending(const rtr *t) { return t ? t->npending : 0; }
int rtr_is_up(const rtr *t) { return t && t->up && !t->gone; }
const char *rtr_host(const rtr *t) { return t->host; }
int rtr_port(const rtr *t) { return t->port; }
