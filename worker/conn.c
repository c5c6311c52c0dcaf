/* worker/conn.c — one Redis connection of the worker (worker/conn.h).
 * Owns: finding the server (the URL's; a Sentinel's master; a Cluster slot's
 * owner), the handshake (AUTH, SELECT, ROLE), sending with the EVALSHA -> EVAL
 * fallback on NOSCRIPT, the redirections of a Cluster, reconnecting with
 * backoff and jitter, and the watchdog. Does not own what is sent or what a
 * loss means: that is the owner's, told through conn_hooks (worker/conn.h), so
 * this file calls nothing above it. Why a watchdog: a dead or black-holed
 * server would leave a reply pending forever; an overdue reply drops the
 * connection (pending callbacks see NULL) and a timer connects a new one. What
 * a redirection means here (docs/redis.md): MOVED     the slot has a new owner:
 * the call and every pending one end with NULL (as on a lost connection, which
 * the owner already survives) and the conn reconnects to the owner at once; ASK
 * the key is being migrated: the call alone is sent again to the importing
 *             node, preceded by ASKING, on a second connection kept for that;
 *   TRYAGAIN  a multi-key call met a half-migrated slot: it is sent again 50 ms
 * later; READONLY  (Sentinel) the master was demoted: like MOVED, and the
 * master is found again through the sentinels. */
#include "worker/conn.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"

#define CONNECT_TIMEOUT_MS (CONN_REPLY_TIMEOUT_MS / 2)
#define TRYAGAIN_DELAY_MS  50
#define TRYAGAIN_MAX       400 /* 20 s of a half-migrated slot, then the error goes up */

typedef struct call {
    struct call *next; /* in retry_q */
    conn *c;
    conn_reply_fn fn;
    void *ud;
    int script; /* argv[0] is EVALSHA: fall back to EVAL on NOSCRIPT */
    scr_id sid;
    int tries; /* TRYAGAIN resends */
    cmdv args;
} call;

static void call_cb(rtr *t, redisReply *r, void *priv);
static void lost(conn *c, const char *why);
static void drop(conn *c, const char *why);

static int send_on(rtr *t, call *cl)
{
    size_t len;
    char *resp = cv_resp(&cl->args, &len);
    int rc = rtr_send(t, resp, len, call_cb, cl);
    free(resp);
    return rc;
}

static void end_call(call *cl, redisReply *r)
{
    if (cl->fn) cl->fn(cl->c->owner, r, cl->ud);
    cv_free(&cl->args);
    free(cl);
}

static int is_err(const redisReply *r, const char *prefix)
{
    return r && r->type == REDIS_REPLY_ERROR && r->str && !strncmp(r->str, prefix, strlen(prefix));
}

static void reconnect_soon(conn *c)
{
    c->backoff_ms = 100;
    struct timeval tv = {0, 0};
    if (!c->closing) evtimer_add(c->retry_ev, &tv);
}

/* AUTH [user] password into v. */
static void auth_cmd(cmdv *v, const char *user, const char *pass)
{
    cv_init(v);
    cv_add(v, "AUTH");
    if (user) cv_add(v, user);
    cv_add(v, pass);
}

/* Send v (taken) on t; its reply is not waited for (a failure shows in what follows). */
static void send_unanswered(rtr *t, cmdv *v)
{
    size_t len;
    char *resp = cv_resp(v, &len);
    rtr_send(t, resp, len, NULL, NULL);
    free(resp);
    cv_free(v);
}

static void ask_event(rtr *t, int up, const char *why, void *ud)
{
    (void)why;
    conn *c = ud;
    if (up) return;
    if (c->ask == t) c->ask = NULL;
    rtr_free(t);
}

/* ASK: the call once to host:port, after ASKING. */
static int send_asking(conn *c, call *cl, const char *host, int port)
{
    if (c->ask && (strcmp(rtr_host(c->ask), host) != 0 || rtr_port(c->ask) != port)) {
        rtr *old = c->ask;
        c->ask = NULL;
        rtr_free(old);
    }
    if (!c->ask) {
        char why[200];
        c->ask = rtr_open(c->base, c->url, host, port, NULL, ask_event, c, why, sizeof why);
        if (!c->ask) return -1;
        const rds_url *u = c->url;
        if (u->password) {
            cmdv v;
            auth_cmd(&v, u->username, u->password);
            send_unanswered(c->ask, &v);
        }
    }
    static const char asking[] = "*1\r\n$6\r\nASKING\r\n";
    if (rtr_send(c->ask, asking, sizeof asking - 1, NULL, NULL) < 0) return -1;
    return send_on(c->ask, cl);
}

static void retry_calls(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    conn *c = arg;
    call *q = c->retry_q;
    c->retry_q = NULL;
    while (q) {
        call *cl = q;
        q = q->next;
        cl->next = NULL;
        if (!c->tr || send_on(c->tr, cl) < 0) end_call(cl, NULL);
    }
}

static void call_cb(rtr *t, redisReply *r, void *priv)
{
    call *cl = priv;
    conn *c = cl->c;
    c->progress_ms = metrics_mono_ms();
    if (r && cl->script && is_err(r, "NOSCRIPT")) {
        cv_set(&cl->args, 0, "EVAL");
        cv_set(&cl->args, 1, scr_source(cl->sid));
        cl->script = 0;
        if (send_on(t, cl) == 0) return;
        r = NULL;
    }
    const rds_url *u = c->url;
    if (r && r->type == REDIS_REPLY_ERROR && u->mode == RDS_CLUSTER) {
        char host[256];
        int port;
        if (is_err(r, "MOVED ") && rds_parse_redirect(r->str, host, sizeof host, &port) == 0) {
            log_msg(SW_LOG_INFO, "redis_moved", "conn", c->name, "to", host, NULL);
            snprintf(c->master_host, sizeof c->master_host, "%s", host);
            c->master_port = port;
            end_call(cl, NULL);
            if (t == c->tr) {
                drop(c, "slot moved");
                reconnect_soon(c);
            }
            return;
        }
        if (is_err(r, "ASK ") && rds_parse_redirect(r->str, host, sizeof host, &port) == 0) {
            if (send_asking(c, cl, host, port) == 0) return;
            end_call(cl, NULL);
            return;
        }
        if (is_err(r, "TRYAGAIN") && cl->tries++ < TRYAGAIN_MAX) {
            cl->next = c->retry_q;
            c->retry_q = cl;
            struct timeval tv = {0, TRYAGAIN_DELAY_MS * 1000};
            if (!evtimer_pending(c->retry_call_ev, NULL)) evtimer_add(c->retry_call_ev, &tv);
            return;
        }
    }
    if (u->mode == RDS_SENTINEL && is_err(r, "READONLY")) {
        end_call(cl, NULL);
        if (t == c->tr) drop(c, "the master was demoted to a replica");
        return;
    }
    end_call(cl, r);
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
    int idle = rtr_pending(c->tr) == 0;
    if (!c->tr || send_on(c->tr, cl) < 0) {
        c->ready = 0; /* a connection that refuses commands is going away: wait for it */
        end_call(cl, NULL);
        return;
    }
    if (idle) c->progress_ms = metrics_mono_ms();
}

void conn_send(conn *c, cmdv *args, conn_reply_fn fn, void *ud)
{
    send_any(c, args, 0, 0, fn, ud);
}

void conn_script(conn *c, cmdv *args, scr_id sid, conn_reply_fn fn, void *ud)
{
    send_any(c, args, 1, sid, fn, ud); /* only an EVALSHA can meet NOSCRIPT */
}

/* argv = EVALSHA sha numkeys (EVAL source numkeys until Redis reported the
 * SHA). */
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

static void connect_failed_log(conn *c, const char *why)
{
    if (!strncmp(c->last_fail, why, sizeof c->last_fail - 1)) return;
    snprintf(c->last_fail, sizeof c->last_fail, "%s", why);
    log_msg(SW_LOG_WARN, "redis_connect_failed", "conn", c->name, "reason", why, NULL);
}

/* The connection is gone (tr already freed or being freed by the caller). */
static void lost_ready(conn *c, const char *why, int was_ready)
{
    if (was_ready)
        metrics_count(MC_REDIS_RECONNECTS, 1);
    else if (!c->closing)
        connect_failed_log(c, why);
    c->tr = NULL;
    c->ready = 0;
    c->handshake = 0;
    if (c->ask) {
        rtr *a = c->ask;
        c->ask = NULL;
        rtr_free(a);
    }
    if (c->url->mode == RDS_CLUSTER && !was_ready) {
        c->master_port = 0; /* the owner we knew is unreachable: ask a seed again */
        c->seed_idx++;
    }
    if (!c->closing && !evtimer_pending(c->retry_ev, NULL)) schedule_reconnect(c);
    if (c->hooks && c->hooks->on_lost) c->hooks->on_lost(c, c->owner, why, was_ready);
}

static void lost(conn *c, const char *why)
{
    lost_ready(c, why, c->ready);
}

static void drop(conn *c, const char *why)
{
    rtr *t = c->tr;
    if (!t) return;
    int was_ready = c->ready;
    c->tr = NULL;
    c->ready = 0;
    rtr_free(t); /* pending callbacks see NULL */
    lost_ready(c, why, was_ready);
}

static void set_ready(conn *c)
{
    c->ready = 1;
    c->backoff_ms = 100;
    c->last_fail[0] = '\0';
    c->progress_ms = metrics_mono_ms();
    log_msg(SW_LOG_INFO, "redis_connected", "conn", c->name, NULL);
    if (c->hooks && c->hooks->on_ready) c->hooks->on_ready(c, c->owner);
}

/* Handshake replies: AUTH, SELECT (role 0), ROLE (role 1: must say master). */
typedef struct hs {
    conn *c;
    int role;
} hs;

static void hs_reply(rtr *t, redisReply *r, void *priv)
{
    hs *h = priv;
    conn *c = h->c;
    int role = h->role;
    free(h);
    if (t != c->tr) return; /* an old connection's */
    if (!r) return;         /* lost: the event callback handles it */
    char why[400] = "";
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof why, "%s",
                 is_err(r, "WRONGPASS") || is_err(r, "ERR invalid password") || is_err(r, "NOAUTH") ||
                         is_err(r, "ERR AUTH")
                     ? "AUTH failed: credentials refused"
                     : r->str);
    } else if (role) {
        int master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                     r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "master");
        if (!master)
            snprintf(why, sizeof why,
                     "%s:%d, named master by Sentinel, is not a master (a failover "
                     "in progress)",
                     c->master_host, c->master_port);
    }
    if (why[0]) {
        drop(c, why);
        return;
    }
    if (--c->handshake == 0) set_ready(c);
}

static void hs_send(conn *c, cmdv *v, int role)
{
    hs *h = xmalloc(sizeof *h);
    h->c = c;
    h->role = role;
    size_t len;
    char *resp = cv_resp(v, &len);
    if (rtr_send(c->tr, resp, len, hs_reply, h) == 0)
        c->handshake++;
    else
        free(h);
    free(resp);
    cv_free(v);
}

/* A published message on the main connection (conn_hooks.on_message). */
static void message_cb(rtr *t, redisReply *r, void *priv)
{
    conn *c = priv;
    if (t != c->tr) return;
    c->progress_ms = metrics_mono_ms();
    c->hooks->on_message(c, c->owner, r);
}

static void main_event(rtr *t, int up, const char *why, void *ud)
{
    conn *c = ud;
    if (t != c->tr) { /* not ours any more */
        if (!up) rtr_free(t);
        return;
    }
    if (up) {
        if (c->handshake == 0) set_ready(c);
        return;
    }
    c->tr = NULL;
    rtr_free(t);
    lost(c, why);
}

/* Connect to the server itself and queue the handshake. */
static void open_main(conn *c, const char *host, int port, const char *unix_path)
{
    const rds_url *u = c->url;
    char why[300];
    c->connect_ms = metrics_mono_ms();
    c->ready = 0;
    c->handshake = 0;
    c->tr = rtr_open(c->base, u, host, port, unix_path, main_event, c, why, sizeof why);
    if (!c->tr) {
        lost(c, why);
        return;
    }
    if (c->hooks && c->hooks->on_message) rtr_on_message(c->tr, message_cb, c);
    cmdv v;
    if (u->password) {
        auth_cmd(&v, u->username, u->password);
        hs_send(c, &v, 0);
    }
    if (u->db && u->mode != RDS_CLUSTER) {
        cv_init(&v);
        cv_add(&v, "SELECT");
        cv_addf(&v, "%d", u->db);
        hs_send(c, &v, 0);
    }
    if (u->mode == RDS_SENTINEL) {
        cv_init(&v);
        cv_add(&v, "ROLE");
        hs_send(c, &v, 1);
    }
}

/* ---- Sentinel ----------------------------------------------------------- */

static void sen_event(rtr *t, int up, const char *why, void *ud);

static void sen_close(conn *c)
{
    rtr *s = c->sen;
    c->sen = NULL;
    c->sen_asking = 0;
    rtr_free(s);
}

static void sen_reply(rtr *t, redisReply *r, void *priv)
{
    conn *c = priv;
    if (t != c->sen) return;
    c->sen_asking = 0;
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING;
    if (!ok) {
        char why[300];
        if (!r)
            snprintf(why, sizeof why, "sentinel %s:%d: connection lost", rtr_host(t), rtr_port(t));
        else
            snprintf(why, sizeof why, "sentinel %s:%d does not know master '%s'%s%s", rtr_host(t),
                     rtr_port(t), c->url->master_name, is_err(r, "") ? ": " : "", is_err(r, "") ? r->str : "");
        sen_close(c);
        c->sen_idx = (c->sen_idx + 1) % c->url->nhosts;
        if (!c->tr && !c->closing) lost(c, why); /* discovering: next sentinel after the backoff */
        return;
    }
    const char *host = r->element[0]->str;
    int port = atoi(r->element[1]->str);
    if (c->tr) { /* connected: has the master changed? */
        if (port != c->master_port || strcmp(host, c->master_host) != 0) {
            log_msg(SW_LOG_WARN, "redis_master_changed", "conn", c->name, "master", host, NULL);
            drop(c, "Sentinel names a new master (failover)");
            reconnect_soon(c);
        }
        return;
    }
    if (c->closing) return;
    snprintf(c->master_host, sizeof c->master_host, "%s", host);
    c->master_port = port;
    open_main(c, host, port, NULL);
}

static int sen_ask(conn *c)
{
    static const char fmt[] = "*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n";
    const char *name = c->url->master_name;
    char *cmd = xasprintf("%s$%zu\r\n%s\r\n", fmt, strlen(name), name);
    int rc = rtr_send(c->sen, cmd, strlen(cmd), sen_reply, c);
    free(cmd);
    if (rc == 0) c->sen_asking = 1;
    return rc;
}

static int sen_open(conn *c)
{
    const rds_url *u = c->url;
    const rds_host *h = &u->hosts[c->sen_idx % u->nhosts];
    char why[300];
    c->sen = rtr_open(c->base, u, h->host, h->port, NULL, sen_event, c, why, sizeof why);
    if (!c->sen) {
        c->sen_idx = (c->sen_idx + 1) % u->nhosts;
        if (!c->tr) lost(c, why);
        return -1;
    }
    if (u->sentinel_password) {
        cmdv v;
        auth_cmd(&v, NULL, u->sentinel_password);
        send_unanswered(c->sen, &v);
    }
    return 0;
}

static void sen_event(rtr *t, int up, const char *why, void *ud)
{
    conn *c = ud;
    (void)why;
    if (up) return;
    if (t == c->sen) {
        c->sen = NULL;
        c->sen_asking = 0;
        c->sen_idx = (c->sen_idx + 1) % c->url->nhosts;
    }
    rtr_free(t); /* a pending ask already saw NULL and moved on */
}

/* ---- life --------------------------------------------------------------- */

static void retry_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    conn_connect(arg);
}

void conn_init(conn *c, struct event_base *base, const rds_url *url, const char *name, int extra_timeout_ms,
               const conn_hooks *hooks, void *owner)
{
    *c = (conn){.owner = owner,
                .hooks = hooks,
                .base = base,
                .url = url,
                .name = name,
                .extra_timeout_ms = extra_timeout_ms,
                .backoff_ms = 100};
    c->retry_ev = evtimer_new(base, retry_cb, c);
    c->retry_call_ev = evtimer_new(base, retry_calls, c);
}

void conn_connect(conn *c)
{
    const rds_url *u = c->url;
    if (c->tr || c->closing) return;
    c->connect_ms = metrics_mono_ms();
    switch (u->mode) {
    case RDS_SENTINEL:
        if (c->sen_asking) return; /* a discovery is under way */
        if (!c->sen && sen_open(c) < 0) return;
        if (sen_ask(c) < 0) {
            sen_close(c);
            lost(c, "sentinel connection lost");
        }
        return;
    case RDS_CLUSTER:
        if (c->master_port) {
            open_main(c, c->master_host, c->master_port, NULL);
        } else {
            const rds_host *h = &u->hosts[c->seed_idx % u->nhosts];
            open_main(c, h->host, h->port, NULL);
        }
        return;
    case RDS_DIRECT:
        open_main(c, u->host, u->port, u->unix_path);
        return;
    }
}

void conn_close(conn *c)
{
    c->closing = 1;
    if (c->sen) sen_close(c);
    if (c->tr) {
        int was_up = rtr_is_up(c->tr);
        if (was_up) {
            drop(c, "closed"); /* cancels what is pending (a blocking read too) */
        } else {
            rtr *t = c->tr;
            c->tr = NULL;
            c->ready = 0;
            rtr_free(t);
        }
    }
    if (c->ask) {
        rtr *a = c->ask;
        c->ask = NULL;
        rtr_free(a);
    }
    if (c->retry_call_ev) retry_calls(-1, 0, c); /* no connection now: they end with NULL */
}

void conn_free(conn *c)
{
    conn_close(c);
    if (c->retry_ev) event_free(c->retry_ev);
    c->retry_ev = NULL;
    if (c->retry_call_ev) event_free(c->retry_call_ev);
    c->retry_call_ev = NULL;
}

/* The 1 s tick: a reply overdue (or a connect or discovery that hangs) drops
 * the connection; under Sentinel, the master is asked for again. */
void conn_watch(conn *c)
{
    int64_t now = metrics_mono_ms();
    if (c->url->mode == RDS_SENTINEL && !c->closing) {
        if (c->ready && !c->sen_asking && (c->sen || sen_open(c) == 0) && sen_ask(c) < 0) sen_close(c);
        if (!c->tr && c->sen_asking && now - c->connect_ms > CONNECT_TIMEOUT_MS) {
            sen_close(c);
            c->sen_idx = (c->sen_idx + 1) % c->url->nhosts;
            lost(c, "sentinel did not answer");
            return;
        }
    }
    if (!c->tr) return;
    int64_t limit = CONN_REPLY_TIMEOUT_MS + c->extra_timeout_ms;
    int overdue = c->ready ? (rtr_pending(c->tr) > 0 && now - c->progress_ms > limit)
                           : (now - c->connect_ms > CONNECT_TIMEOUT_MS);
    if (!overdue) return;
    log_msg(SW_LOG_WARN, "redis_timeout", "conn", c->name, "action", "reconnect", NULL);
    drop(c, "timeout");
}
