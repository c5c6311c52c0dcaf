/* worker/conn.c — one Redis connection of the worker (hiredis 0.14 async on libevent).
 * Owns: connecting (AUTH, SELECT), sending with the EVALSHA -> EVAL fallback on
 * NOSCRIPT, reconnecting with backoff and jitter, and the watchdog. Does not own what
 * is sent or what a loss means: that is the owner's, told through conn_hooks
 * (worker/conn.h), so this file calls nothing above it.
 * Why a watchdog: hiredis 0.14 has no async timeouts, so a dead or black-holed server
 * would leave a callback pending forever; an overdue reply frees the context
 * (callbacks then see NULL) and a timer connects a new one.
 * Never frees a context inside its own connect callback (a use-after-free in 0.14). */
#include "worker/conn.h"

#include <adapters/libevent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"

typedef struct call {
    conn *c;
    conn_reply_fn fn;
    void *ud;
    int script;           /* argv[0] is EVALSHA: fall back to EVAL on NOSCRIPT */
    scr_id sid;
    cmdv args;
} call;

static void call_cb(redisAsyncContext *ac, void *reply, void *priv);

/* Format the call's argv to RESP ourselves (one pass, no printf) and queue it. */
static int send_call(redisAsyncContext *ac, call *cl)
{
    size_t len;
    char *resp = cv_resp(&cl->args, &len);
    int rc = redisAsyncFormattedCommand(ac, call_cb, cl, resp, len);
    free(resp);
    return rc;
}

static void call_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    call *cl = priv;
    conn *c = cl->c;
    redisReply *r = reply;
    if (c->pending > 0) c->pending--; /* lost() may have reset it already */
    c->progress_ms = metrics_mono_ms();
    if (r && cl->script && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        cv_set(&cl->args, 0, "EVAL");
        cv_set(&cl->args, 1, scr_source(cl->sid));
        cl->script = 0;
        if (send_call(ac, cl) == REDIS_OK) {
            c->pending++;
            return;
        }
        r = NULL;
    }
    if (cl->fn) cl->fn(c->owner, r, cl->ud);
    cv_free(&cl->args);
    free(cl);
}

static void send_any(conn *c, cmdv *args, int script, scr_id sid, conn_reply_fn fn, void *ud)
{
    call *cl = xcalloc(1, sizeof *cl);
    cl->c = c;
    cl->fn = fn;
    cl->ud = ud;
    cl->script = script;
    cl->sid = sid;
    cl->args = *args;
    cv_init(args);
    if (!c->ac || send_call(c->ac, cl) != REDIS_OK) {
        c->ready = 0; /* a context that refuses commands is going away: wait for it */
        if (fn) fn(c->owner, NULL, ud);
        cv_free(&cl->args);
        free(cl);
        return;
    }
    if (c->pending++ == 0) c->progress_ms = metrics_mono_ms();
}

void conn_send(conn *c, cmdv *args, conn_reply_fn fn, void *ud)
{
    send_any(c, args, 0, 0, fn, ud);
}

void conn_script(conn *c, cmdv *args, scr_id sid, conn_reply_fn fn, void *ud)
{
    send_any(c, args, 1, sid, fn, ud); /* only an EVALSHA can meet NOSCRIPT */
}

/* argv = EVALSHA sha numkeys (EVAL source numkeys until Redis reported the SHA). */
void conn_script_begin(cmdv *v, scr_id sid, int nkeys)
{
    cv_init(v);
    const char *sha = scr_sha(sid);
    cv_add(v, sha ? "EVALSHA" : "EVAL");
    cv_add(v, sha ? sha : scr_source(sid));
    cv_addll(v, nkeys);
}

static void schedule_reconnect(conn *c)
{
    int jitter = 0;
    unsigned r;
    if (getrandom(&r, sizeof r, 0) == sizeof r) jitter = (int)(r % (unsigned)(c->backoff_ms / 2 + 1));
    struct timeval tv = {(c->backoff_ms + jitter) / 1000, ((c->backoff_ms + jitter) % 1000) * 1000};
    evtimer_add(c->retry_ev, &tv);
    c->backoff_ms = c->backoff_ms < 2500 ? c->backoff_ms * 2 : 5000;
}

static void lost(conn *c, const char *why)
{
    int was_ready = c->ready;
    if (was_ready) metrics_count(MC_REDIS_RECONNECTS, 1);
    c->ac = NULL;
    c->ready = 0;
    c->pending = 0;
    if (!c->closing) schedule_reconnect(c);
    if (c->hooks && c->hooks->on_lost) c->hooks->on_lost(c, c->owner, why, was_ready);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context itself after a failed connect */
        lost(c, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    c->ready = 1;
    c->backoff_ms = 100;
    log_msg(SW_LOG_INFO, "redis_connected", "conn", c->name, NULL);
    if (c->hooks && c->hooks->on_ready) c->hooks->on_ready(c, c->owner);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (c->ac != ac) return; /* already handled by the watchdog */
    lost(c, status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "error"));
}

static void retry_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    conn_connect(arg);
}

void conn_init(conn *c, struct event_base *base, const rds_url *url, const char *name,
               int extra_timeout_ms, const conn_hooks *hooks, void *owner)
{
    *c = (conn){.owner = owner, .hooks = hooks, .base = base, .url = url, .name = name,
                .extra_timeout_ms = extra_timeout_ms, .backoff_ms = 100};
    c->retry_ev = evtimer_new(base, retry_cb, c);
}

void conn_connect(conn *c)
{
    const rds_url *u = c->url;
    if (c->ac || c->closing) return;
    redisAsyncContext *ac = u->unix_path ? redisAsyncConnectUnix(u->unix_path)
                                         : redisAsyncConnect(u->host, u->port);
    if (!ac || ac->err) {
        const char *why = ac ? ac->errstr : "out of memory";
        log_msg(SW_LOG_WARN, "redis_connect_failed", "conn", c->name, "reason", why, NULL);
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    ac->data = c;
    c->ac = ac;
    c->ready = 0;
    c->pending = 0;
    c->connect_ms = metrics_mono_ms();
    redisLibeventAttach(ac, c->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisEnableKeepAlive(&ac->c);
    cmdv v;
    if (u->password) {
        cv_init(&v);
        cv_add(&v, "AUTH");
        if (u->username) cv_add(&v, u->username);
        cv_add(&v, u->password);
        conn_send(c, &v, NULL, NULL);
    }
    if (u->db) {
        cv_init(&v);
        cv_add(&v, "SELECT");
        cv_addf(&v, "%d", u->db);
        conn_send(c, &v, NULL, NULL);
    }
}

void conn_close(conn *c)
{
    c->closing = 1;
    if (!c->ac) return;
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac); /* cancels what is pending (a blocking read too) */
    if (c->ac == ac) c->ac = NULL; /* not connected yet: no disconnect callback */
}

void conn_free(conn *c)
{
    conn_close(c);
    if (c->retry_ev) event_free(c->retry_ev);
    c->retry_ev = NULL;
}

/* A connection whose reply is overdue (or whose connect hangs) is freed; its
 * pending callbacks run with NULL and on_disconnect schedules the reconnect. */
void conn_watch(conn *c)
{
    if (!c->ac) return;
    int64_t now = metrics_mono_ms();
    int64_t limit = CONN_REPLY_TIMEOUT_MS + c->extra_timeout_ms;
    int overdue = c->ready ? (c->pending > 0 && now - c->progress_ms > limit)
                           : (now - c->connect_ms > CONN_REPLY_TIMEOUT_MS / 2);
    if (!overdue) return;
    log_msg(SW_LOG_WARN, "redis_timeout", "conn", c->name, "action", "reconnect", NULL);
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac);
    if (c->ac == ac) lost(c, "timeout"); /* not connected: no disconnect callback */
}
