/* worker/conn.c — the worker's Redis connections (hiredis 0.14 async on libevent).
 * Owns: connecting (AUTH, SELECT, the consumer group on the reader), sending with
 * the EVALSHA -> EVAL fallback on NOSCRIPT, reconnecting with backoff and jitter,
 * and the watchdog. Why a watchdog: hiredis 0.14 has no async timeouts, so a dead
 * or black-holed server would leave a callback pending forever; an overdue reply
 * frees the context (callbacks then see NULL) and a timer connects a new one.
 * Never frees a context inside its own connect callback (a use-after-free in 0.14). */
#include <adapters/libevent.h>
#include <malloc.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rds.h"
#include "common/xmalloc.h"
#include "worker/worker_priv.h"


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
    c->progress_ms = job_now_ms();
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
    if (cl->fn) cl->fn(c->w, r, cl->ud);
    cv_free(&cl->args);
    free(cl);
}

/* Send 'args' (taken) on 'c'; fn(w, NULL, ud) is called when it cannot be sent. */
void wk_send(conn *c, cmdv *args, int script, scr_id sid, reply_fn fn, void *ud)
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
        if (fn) fn(c->w, NULL, ud);
        cv_free(&cl->args);
        free(cl);
        return;
    }
    if (c->pending++ == 0) c->progress_ms = job_now_ms();
}

/* Start a script call: argv = EVALSHA sha numkeys (EVAL source numkeys until
 * Redis reported the SHA); the caller adds keys and args. */
void wk_script_begin(cmdv *v, scr_id sid, int nkeys)
{
    cv_init(v);
    const char *sha = scr_sha(sid);
    cv_add(v, sha ? "EVALSHA" : "EVAL");
    cv_add(v, sha ? sha : scr_source(sid));
    cv_addll(v, nkeys);
}

static void script_loaded(worker *w, redisReply *r, void *ud)
{
    scr_id sid = (scr_id)(intptr_t)ud;
    if (!r) return; /* connection lost: the next connect loads it again */
    if (r->type == REDIS_REPLY_STRING && scr_learn_sha(sid, r->str, r->len) == 0) {
        w->script_load_warned = 0;
        return;
    }
    /* e.g. LOADING right after a restart: the 1 s tick tries again; meanwhile calls
     * go out by a SHA learned earlier (NOSCRIPT falls back to EVAL) or as EVAL.
     * Warned once per streak of failures (an ACL without SCRIPT would repeat). */
    w->reload_scripts = 1;
    if (w->script_load_warned) return;
    w->script_load_warned = 1;
    log_msg(LOG_WARN, "redis_script_load_failed", "script", scr_name(sid), "error",
            r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply", NULL);
}

/* SCRIPT LOAD every script on each connect of the command connection (a restarted
 * Redis has none); queued ahead of every call on that connection, so EVALSHA finds
 * them. The SHA1 is the same on any server; until the first replies arrive, calls
 * go out as EVAL. */
void wk_load_scripts(conn *c)
{
    for (int i = 0; i < SCR_COUNT; i++) {
        cmdv v;
        cv_init(&v);
        cv_add(&v, "SCRIPT");
        cv_add(&v, "LOAD");
        cv_add(&v, scr_source((scr_id)i));
        wk_send(c, &v, 0, 0, script_loaded, (void *)(intptr_t)i);
    }
}

static void schedule_reconnect(conn *c)
{
    if (c->closing) { /* only the reader closes at a drain: results must still go out */
        wk_check_exit(c->w);
        return;
    }
    int jitter = 0;
    unsigned r;
    if (getrandom(&r, sizeof r, 0) == sizeof r) jitter = (int)(r % (unsigned)(c->backoff_ms / 2 + 1));
    struct timeval tv = {(c->backoff_ms + jitter) / 1000, ((c->backoff_ms + jitter) % 1000) * 1000};
    evtimer_add(c->retry_ev, &tv);
    c->backoff_ms = c->backoff_ms < 2500 ? c->backoff_ms * 2 : 5000;
}

static void lost(conn *c, const char *why)
{
    worker *w = c->w;
    int was_ready = c->ready;
    if (was_ready) metrics_count(MC_REDIS_RECONNECTS, 1);
    c->ac = NULL;
    c->ready = 0;
    c->pending = 0;
    wk_recover_all(w);
    if (c == &w->rd) w->reading = 0;
    if (!c->closing && !w->stopping)
        log_msg(was_ready ? LOG_WARN : LOG_DEBUG, "redis_connection_lost", "conn", c->name,
                "reason", why, NULL);
    schedule_reconnect(c);
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
    log_msg(LOG_INFO, "redis_connected", "conn", c->name, NULL);
    if (c == &c->w->cmd) wk_flush_finish(c->w);
    if (c == &c->w->res) wk_retry_meta(c->w);
    wk_maybe_read(c->w);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (c->ac != ac) return; /* already handled by the watchdog */
    lost(c, status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "error"));
}

void wk_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    wk_conn_connect(arg);
}

static void group_created(worker *w, redisReply *r, void *ud)
{
    (void)ud;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
        log_msg(LOG_ERROR, "redis_group_create_failed", "error", r->str, NULL);
    (void)w;
}

/* On the reader: the consumer group at 0 with MKSTREAM (jobs added before any worker
 * started are run); BUSYGROUP means it exists. */
void wk_create_group(worker *w)
{
    for (int i = 0; i < PRIO_COUNT; i++) { /* high, default, low: one group name */
        cmdv v;
        cv_init(&v);
        cv_add(&v, "XGROUP");
        cv_add(&v, "CREATE");
        cv_add(&v, w->k_streams[i]);
        cv_add(&v, GROUP);
        cv_add(&v, "0");
        cv_add(&v, "MKSTREAM");
        wk_send(&w->rd, &v, 0, 0, group_created, NULL);
    }
}

static void policy_cb(worker *w, redisReply *r, void *ud)
{
    (void)ud;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 || w->warned_policy) return;
    w->warned_policy = 1;
    const char *pol = r->element[1]->str ? r->element[1]->str : "";
    if (strcmp(pol, "noeviction") != 0)
        log_msg(LOG_WARN, "redis_maxmemory_policy", "policy", pol, "hint",
                "not noeviction: evicted keys are lost jobs", NULL);
}

void wk_conn_connect(conn *c)
{
    worker *w = c->w;
    const rds_url *u = c->url;
    if (c->ac || c->closing) return;
    redisAsyncContext *ac = u->unix_path ? redisAsyncConnectUnix(u->unix_path)
                                         : redisAsyncConnect(u->host, u->port);
    if (!ac || ac->err) {
        const char *why = ac ? ac->errstr : "out of memory";
        log_msg(LOG_WARN, "redis_connect_failed", "conn", c->name, "reason", why, NULL);
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    ac->data = c;
    c->ac = ac;
    c->ready = 0;
    c->pending = 0;
    c->connect_ms = job_now_ms();
    redisLibeventAttach(ac, w->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisEnableKeepAlive(&ac->c);
    cmdv v;
    if (u->password) {
        cv_init(&v);
        cv_add(&v, "AUTH");
        if (u->username) cv_add(&v, u->username);
        cv_add(&v, u->password);
        wk_send(c, &v, 0, 0, NULL, NULL);
    }
    if (u->db) {
        cv_init(&v);
        cv_add(&v, "SELECT");
        cv_addf(&v, "%d", u->db);
        wk_send(c, &v, 0, 0, NULL, NULL);
    }
    if (c == &w->rd) {
        wk_create_group(w);
    } else if (c == &w->cmd) {
        w->reload_scripts = 0;
        wk_load_scripts(c);
    }
    if (c == &w->cmd && !w->warned_policy) {
        cv_init(&v);
        cv_add(&v, "CONFIG");
        cv_add(&v, "GET");
        cv_add(&v, "maxmemory-policy");
        wk_send(c, &v, 0, 0, policy_cb, NULL);
    }
}

/* A connection whose reply is overdue (or whose connect hangs) is freed; its
 * pending callbacks run with NULL and on_disconnect schedules the reconnect. */
void wk_conn_watch(conn *c)
{
    if (!c->ac) return;
    int64_t now = job_now_ms();
    int64_t limit = REPLY_TIMEOUT_MS + (c == &c->w->rd ? BLOCK_MS : 0);
    int overdue = c->ready ? (c->pending > 0 && now - c->progress_ms > limit)
                           : (now - c->connect_ms > REPLY_TIMEOUT_MS / 2);
    if (!overdue) return;
    log_msg(LOG_WARN, "redis_timeout", "conn", c->name, "action", "reconnect", NULL);
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac);
    if (c->ac == ac) lost(c, "timeout"); /* not connected: no disconnect callback */
}

void wk_watch_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    wk_conn_watch(&w->rd);
    wk_conn_watch(&w->cmd);
    if (w->celery_on) {
        wk_conn_watch(&w->res);
        wk_celery_started_due(w);
    }
    wk_poll_cancel(w);
    if (w->reload_scripts && w->cmd.ready) {
        w->reload_scripts = 0;
        wk_load_scripts(&w->cmd);
    }
    /* back to idle after work: give freed heap back to the OS (idle RSS target) */
    uint64_t done = w->stats.succeeded + w->stats.failed + w->stats.dead + w->stats.rejected;
    if (w->inflight == 0 && done != w->trimmed_at) {
        malloc_trim(0);
        w->trimmed_at = done;
    }
    w->stats.inflight = w->inflight;
    w->stats.redis_up = w->rd.ready && w->cmd.ready;
    w->stats.draining = w->stopping;
    metrics_loop_tick(w->inflight, w->stats.redis_up, w->stopping);
}

