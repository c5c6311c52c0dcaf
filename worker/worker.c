/* worker/worker.c — the daemon's event loop (libevent + hiredis async).
 *
 * Owns: two Redis connections (a reader that blocks in XREADGROUP, and a command
 * connection for scripts), their reconnects and watchdogs, the in-flight list,
 * the timers (promote delayed jobs, renew leases, reclaim idle jobs), signals and
 * the graceful drain. Jobs run on executor threads (worker/exec.c); every queue
 * transition is one Lua script (worker/scripts.c).
 *
 *   XREADGROUP ─► decode/validate ─► start script ─► executors ─► done pipe
 *        ▲               │ reject                                      │
 *        └── capacity ◄──┴──────────────── finish script ◄─────────────┘
 *
 * hiredis 0.14 has no async timeouts and no reconnect: a watchdog frees a
 * connection whose reply is overdue, and a timer reconnects with a new context.
 * After any loss the worker first re-reads its own pending entries (id 0). */
#include "worker/worker.h"

#include <adapters/libevent.h>
#include <async.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rds.h"
#include "common/xmalloc.h"
#include "worker/celery_msg.h"
#include "worker/cmdv.h"
#include "worker/exec.h"
#include "worker/http.h"
#include "worker/scripts.h"

#define GROUP "snapworker"
#define BLOCK_MS 5000
#define REPLY_TIMEOUT_MS 10000
#define BATCH_MAX 256
#define BUSY_DELAY_MS 250

typedef struct conn {
    struct worker *w;
    const rds_url *url;   /* where it connects (broker or result backend) */
    redisAsyncContext *ac;
    const char *name;
    int ready;            /* connected */
    int closing;          /* do not reconnect */
    int pending;          /* replies outstanding */
    int64_t progress_ms;  /* last reply, or first send after idle */
    int64_t connect_ms;   /* when the current connect started */
    int backoff_ms;
    struct event *retry_ev;
} conn;

typedef void (*reply_fn)(struct worker *w, redisReply *r, void *ud);

typedef struct call {
    conn *c;
    reply_fn fn;
    void *ud;
    int script;           /* argv[0] is EVALSHA: fall back to EVAL on NOSCRIPT */
    scr_id sid;
    cmdv args;
} call;

struct worker {
    const cfg *cfg;
    struct event_base *base;
    conn rd, cmd;
    conn res;                      /* Celery result backend (celery_on only) */
    int celery_on;
    rds_url res_url;
    cmdv ingress_keys;             /* stream + kombu lists in pop order */
    struct event *t_ingress;
    int ingress_delay_ms;          /* poll backoff, 0..50 ms */
    int ingressing;
    item *meta_wait;               /* items whose result write must be retried */
    char name[160];                /* consumer name: host:pid:rand */
    char k_stream[200], k_events[200], k_delayed[200], k_dead[200], job_prefix[200];
    exec_pool *pool;
    int pipefd[2];
    struct event *pipe_ev, *sig_term, *sig_int, *t_promote, *t_renew, *t_reclaim, *t_watch,
        *t_drain, *t_finish_retry, *t_read_retry;
    item *all;                     /* in-flight list (prev_all/next_all) */
    int inflight;
    item *finish_q, *finish_tail;  /* done, waiting for a finish script */
    int reading;
    int recover;                   /* re-read own pending entries first */
    char recover_from[48];
    int reclaiming;
    char reclaim_cursor[48];
    int stopping;
    double ewma_ms;                /* recent job duration, for read-ahead */
    int warned_policy;
    int exit_code;
    worker_stats stats;            /* served by worker/http.c */
    http_srv *http;
};

static void maybe_read(worker *w);
static void retry_meta(worker *w);
static void complete(worker *w, item *it);
static void meta_for_outcome(item *it);
static cmdv meta_cmd(worker *w, const char *task_id, const char *meta);
static void read_retry_cb(evutil_socket_t fd, short ev, void *arg);
static void flush_finish(worker *w);
static void conn_connect(conn *c);
static void check_exit(worker *w);

static int64_t now_ms(void) { return job_now_ms(); }

/* ---- in-flight list ---------------------------------------------------- */

static void track(worker *w, item *it)
{
    it->prev_all = NULL;
    it->next_all = w->all;
    if (w->all) w->all->prev_all = it;
    w->all = it;
    w->inflight++;
}

static void untrack_free(worker *w, item *it)
{
    if (it->prev_all) it->prev_all->next_all = it->next_all;
    else w->all = it->next_all;
    if (it->next_all) it->next_all->prev_all = it->prev_all;
    w->inflight--;
    item_free(it);
}

static int tracked(worker *w, const char *entry)
{
    for (item *it = w->all; it; it = it->next_all)
        if (strcmp(it->entry, entry) == 0) return 1;
    return 0;
}

/* ---- connections ------------------------------------------------------- */

static void call_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    call *cl = priv;
    conn *c = cl->c;
    redisReply *r = reply;
    c->pending--;
    c->progress_ms = now_ms();
    if (r && cl->script && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        cv_set(&cl->args, 0, "EVAL");
        cv_set(&cl->args, 1, scr_source(cl->sid));
        cl->script = 0;
        if (redisAsyncCommandArgv(ac, call_cb, cl, cl->args.argc, cv_argv(&cl->args),
                                  cl->args.lens) == REDIS_OK) {
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
static void send_cmd(conn *c, cmdv *args, int script, scr_id sid, reply_fn fn, void *ud)
{
    call *cl = xcalloc(1, sizeof *cl);
    cl->c = c;
    cl->fn = fn;
    cl->ud = ud;
    cl->script = script;
    cl->sid = sid;
    cl->args = *args;
    cv_init(args);
    if (!c->ac || redisAsyncCommandArgv(c->ac, call_cb, cl, cl->args.argc,
                                        cv_argv(&cl->args), cl->args.lens) != REDIS_OK) {
        if (fn) fn(c->w, NULL, ud);
        cv_free(&cl->args);
        free(cl);
        return;
    }
    if (c->pending++ == 0) c->progress_ms = now_ms();
}

/* Start a script call: argv = EVALSHA sha numkeys; the caller adds keys and args. */
static void script_begin(cmdv *v, scr_id sid, int nkeys)
{
    cv_init(v);
    cv_add(v, "EVALSHA");
    cv_add(v, scr_sha(sid));
    cv_addf(v, "%d", nkeys);
}

static void schedule_reconnect(conn *c)
{
    if (c->closing || c->w->stopping) {
        check_exit(c->w);
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
    c->ac = NULL;
    c->ready = 0;
    c->pending = 0;
    w->recover = 1;
    strcpy(w->recover_from, "0");
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
    if (c == &c->w->cmd) flush_finish(c->w);
    if (c == &c->w->res) retry_meta(c->w);
    maybe_read(c->w);
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

static void group_created(worker *w, redisReply *r, void *ud)
{
    (void)ud;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
        log_msg(LOG_ERROR, "redis_group_create_failed", "error", r->str, NULL);
    (void)w;
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

static void conn_connect(conn *c)
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
    c->connect_ms = now_ms();
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
        send_cmd(c, &v, 0, 0, NULL, NULL);
    }
    if (u->db) {
        cv_init(&v);
        cv_add(&v, "SELECT");
        cv_addf(&v, "%d", u->db);
        send_cmd(c, &v, 0, 0, NULL, NULL);
    }
    if (c == &w->rd) {
        cv_init(&v);
        cv_add(&v, "XGROUP");
        cv_add(&v, "CREATE");
        cv_add(&v, w->k_stream);
        cv_add(&v, GROUP);
        cv_add(&v, "0");
        cv_add(&v, "MKSTREAM");
        send_cmd(c, &v, 0, 0, group_created, NULL);
    } else if (c == &w->cmd && !w->warned_policy) {
        cv_init(&v);
        cv_add(&v, "CONFIG");
        cv_add(&v, "GET");
        cv_add(&v, "maxmemory-policy");
        send_cmd(c, &v, 0, 0, policy_cb, NULL);
    }
}

/* A connection whose reply is overdue (or whose connect hangs) is freed; its
 * pending callbacks run with NULL and on_disconnect schedules the reconnect. */
static void watch_conn(conn *c)
{
    if (!c->ac) return;
    int64_t now = now_ms();
    int64_t limit = REPLY_TIMEOUT_MS + (c == &c->w->rd ? BLOCK_MS : 0);
    int overdue = c->ready ? (c->pending > 0 && now - c->progress_ms > limit)
                           : (now - c->connect_ms > REPLY_TIMEOUT_MS / 2);
    if (!overdue) return;
    log_msg(LOG_WARN, "redis_timeout", "conn", c->name, "action", "reconnect", NULL);
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac);
    if (c->ac == ac) lost(c, "timeout"); /* not connected: no disconnect callback */
}

static void watch_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    watch_conn(&w->rd);
    watch_conn(&w->cmd);
    if (w->celery_on) watch_conn(&w->res);
    w->stats.inflight = w->inflight;
    w->stats.redis_up = w->rd.ready && w->cmd.ready;
    w->stats.draining = w->stopping;
}

/* ---- finishing ----------------------------------------------------------- */

static void log_outcome(worker *w, item *it, const char *result)
{
    (void)w;
    log_level lvl = LOG_INFO;
    const char *msg = "job_succeeded";
    const char *o = it->outcome;
    if (strcmp(result, "lost") == 0) { lvl = LOG_WARN; msg = "job_lease_lost"; }
    else if (strcmp(o, "retry") == 0) { lvl = LOG_WARN; msg = "job_failed"; }
    else if (strcmp(o, "dead") == 0 || strcmp(o, "reject") == 0) { lvl = LOG_ERROR; msg = "job_dead"; }
    else if (strcmp(o, "release") == 0) { msg = "job_released"; }
    else if (strcmp(o, "defer") == 0) { msg = "job_deferred"; }
    log_line l;
    log_begin(&l, lvl, msg);
    log_str(&l, "job", it->req.id[0] ? it->req.id : NULL);
    log_str(&l, "type", it->req.type[0] ? it->req.type : NULL);
    log_str(&l, "entry", it->entry);
    log_int(&l, "attempt", it->attempt);
    if (strcmp(o, "reject") != 0 && strcmp(o, "release") != 0 && strcmp(o, "defer") != 0)
        log_int(&l, "duration_ms", it->duration_ms);
    if (strcmp(o, "succeeded") != 0 && strcmp(o, "release") != 0 && strcmp(o, "defer") != 0) {
        log_str(&l, "code", sw_code_name(it->err.code));
        log_str(&l, "error", it->err.msg);
    }
    if (strcmp(o, "retry") == 0 || strcmp(o, "defer") == 0) log_int(&l, "delay_ms", it->delay_ms);
    if (it->meta_state) log_str(&l, "celery_state", it->meta_state);
    log_end(&l);
}

static void count_outcome(worker_stats *s, const char *o, const char *res)
{
    if (strcmp(res, "lost") == 0) s->lease_lost++;
    else if (strcmp(o, "succeeded") == 0) s->succeeded++;
    else if (strcmp(o, "retry") == 0) s->failed++;
    else if (strcmp(o, "dead") == 0) s->dead++;
    else if (strcmp(o, "reject") == 0) s->rejected++;
    else if (strcmp(o, "release") == 0) s->released++;
    else if (strcmp(o, "defer") == 0) s->deferred++;
}

static void finish_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    flush_finish(arg);
    retry_meta(arg);
}

static void requeue_finish(worker *w, item *batch)
{
    /* put a failed batch back in front, in order */
    item *last = batch;
    while (last->next) last = last->next;
    for (item *it = batch; it; it = it->next) it->state = IT_DONE;
    last->next = w->finish_q;
    if (!w->finish_q) w->finish_tail = last;
    w->finish_q = batch;
}

static void finish_cb(worker *w, redisReply *r, void *ud)
{
    item *batch = ud;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r) log_msg(LOG_ERROR, "finish_script_failed", "error", r->str ? r->str : "?", NULL);
        requeue_finish(w, batch);
        if (r && w->cmd.ready) {
            struct timeval tv = {1, 0};
            evtimer_add(w->t_finish_retry, &tv);
        }
        return;
    }
    size_t i = 0;
    for (item *it = batch; it;) {
        item *nx = it->next;
        const char *res = (i < r->elements && r->element[i]->str) ? r->element[i]->str : "lost";
        log_outcome(w, it, res);
        count_outcome(&w->stats, it->outcome, res);
        untrack_free(w, it);
        it = nx;
        i++;
    }
    flush_finish(w);
    maybe_read(w);
    check_exit(w);
}

static void add_finish_args(worker *w, cmdv *keys, cmdv *args, item *it)
{
    char k[400];
    rds_job_key(w->cfg, it->req.id[0] ? it->req.id : "-", k, sizeof k);
    cv_add(keys, k);
    snprintf(k, sizeof k, "%s:{%s}:lock:session:%s", w->cfg->ns, w->cfg->queue,
             it->req.session_id[0] ? it->req.session_id : "-");
    cv_add(keys, k);
    cv_add(args, it->entry);
    cv_add(args, it->req.id);
    cv_add(args, it->req.type);
    cv_add(args, it->outcome);
    cv_addf(args, "%d", it->attempt);
    cv_add(args, it->data ? it->data : "{}");
    cv_addf(args, "%lld", (long long)it->delay_ms);
    if (strcmp(it->outcome, "succeeded") != 0 && it->raw) cv_addn(args, it->raw, it->raw_len);
    else cv_add(args, "");
}

static void flush_finish(worker *w)
{
    while (w->finish_q && w->cmd.ready) {
        item *batch = NULL, *tail = NULL;
        int n = 0;
        cmdv keys, args;
        cv_init(&keys);
        cv_init(&args);
        while (w->finish_q && n < BATCH_MAX) {
            item *it = w->finish_q;
            w->finish_q = it->next;
            if (!w->finish_q) w->finish_tail = NULL;
            it->next = NULL;
            it->state = IT_FINISHING;
            if (tail) tail->next = it;
            else batch = it;
            tail = it;
            add_finish_args(w, &keys, &args, it);
            n++;
        }
        cmdv v;
        script_begin(&v, SCR_FINISH, 4 + keys.argc);
        cv_add(&v, w->k_stream);
        cv_add(&v, w->k_events);
        cv_add(&v, w->k_delayed);
        cv_add(&v, w->k_dead);
        cv_cat(&v, &keys);
        cv_add(&v, GROUP);
        cv_add(&v, w->name);
        cv_addf(&v, "%d", w->cfg->job_ttl_s);
        cv_addf(&v, "%lld", (long long)w->cfg->events_maxlen);
        cv_addf(&v, "%lld", (long long)w->cfg->dead_maxlen);
        cv_addf(&v, "%d", n);
        cv_cat(&v, &args);
        cv_free(&keys);
        cv_free(&args);
        send_cmd(&w->cmd, &v, 1, SCR_FINISH, finish_cb, batch);
    }
}

static void queue_finish(worker *w, item *it)
{
    it->next = NULL;
    it->state = IT_DONE;
    if (w->finish_tail) w->finish_tail->next = it;
    else w->finish_q = it;
    w->finish_tail = it;
}

static void pipe_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)ev;
    worker *w = arg;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    for (item *it = exec_take_done(w->pool); it;) {
        item *nx = it->next;
        w->ewma_ms = w->ewma_ms * 0.8 + (double)it->duration_ms * 0.2;
        if (strcmp(it->outcome, "abandon") == 0) {
            untrack_free(w, it);
        } else {
            meta_for_outcome(it);
            complete(w, it);
        }
        it = nx;
    }
    flush_finish(w);
    check_exit(w);
}

/* ---- starting ------------------------------------------------------------ */

static void start_cb(worker *w, redisReply *r, void *ud)
{
    item *batch = ud;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        /* unknown whether the script ran: drop locally; the entries stay pending
         * for this consumer and are re-read (id 0) after the reconnect */
        if (r) log_msg(LOG_ERROR, "start_script_failed", "error", r->str ? r->str : "?", NULL);
        for (item *it = batch; it;) {
            item *nx = it->next;
            untrack_free(w, it);
            it = nx;
        }
        w->recover = 1;
        strcpy(w->recover_from, "0");
        struct timeval tv = {0, 200000};
        evtimer_add(w->t_read_retry, &tv);
        return;
    }
    size_t i = 0;
    item *run = NULL, *run_tail = NULL;
    for (item *it = batch; it; i++) {
        item *nx = it->next;
        redisReply *e = i < r->elements ? r->element[i] : NULL;
        const char *act = (e && e->type == REDIS_REPLY_ARRAY && e->elements >= 3) ? e->element[0]->str : "skip";
        if (strcmp(act, "run") == 0 || strcmp(act, "poison") == 0) {
            it->attempt = (int)e->element[1]->integer;
            it->deliveries = (int)e->element[2]->integer;
            it->poison = act[0] == 'p';
            if (e->elements > 3 && !it->memo) it->memo = json_object();
            for (size_t k = 3; k + 1 < e->elements; k += 2)
                json_object_set_new(it->memo, e->element[k]->str, json_string(e->element[k + 1]->str));
            if (it->celery && !it->poison && w->res.ready) {
                char started[256];
                snprintf(started, sizeof started, "{\"pid\": %d, \"hostname\": \"%s\"}",
                         (int)getpid(), w->name);
                char *m = celery_meta_json(it->req.id, "STARTED", started, SW_OK, NULL, NULL, NULL);
                cmdv v = meta_cmd(w, it->req.id, m);
                free(m);
                send_cmd(&w->res, &v, 1, SCR_CELERY_RESULT, NULL, NULL);
            }
            it->next = NULL;
            if (run_tail) run_tail->next = it;
            else run = it;
            run_tail = it;
        } else {
            log_line l;
            log_begin(&l, LOG_DEBUG, "job_not_started");
            log_str(&l, "job", it->req.id);
            log_str(&l, "entry", it->entry);
            log_str(&l, "reason", act);
            log_end(&l);
            untrack_free(w, it);
        }
        it = nx;
    }
    if (run) exec_submit(w->pool, run);
    maybe_read(w);
}

static void send_start(worker *w, item *batch, int n, int recover)
{
    cmdv v;
    script_begin(&v, SCR_START, 3 + 2 * n);
    cv_add(&v, w->k_stream);
    cv_add(&v, w->k_events);
    cv_add(&v, w->k_delayed);
    char k[400];
    for (item *it = batch; it; it = it->next) {
        rds_job_key(w->cfg, it->req.id, k, sizeof k);
        cv_add(&v, k);
        snprintf(k, sizeof k, "%s:{%s}:lock:session:%s", w->cfg->ns, w->cfg->queue, it->req.session_id);
        cv_add(&v, k);
    }
    cv_add(&v, GROUP);
    cv_add(&v, w->name);
    cv_addf(&v, "%d", w->cfg->lease_s * 1000);
    cv_addf(&v, "%lld", (long long)w->cfg->events_maxlen);
    cv_addf(&v, "%d", BUSY_DELAY_MS);
    cv_add(&v, recover ? "1" : "0");
    cv_addf(&v, "%d", n);
    for (item *it = batch; it; it = it->next) {
        it->max_attempts = it->req.max_attempts ? it->req.max_attempts : w->cfg->max_attempts;
        cv_add(&v, it->entry);
        cv_add(&v, it->req.id);
        cv_add(&v, it->req.type);
        cv_add(&v, it->type->session_lock ? "1" : "0");
        cv_addf(&v, "%d", cfg_max_deliveries(w->cfg, it->max_attempts));
        cv_addf(&v, "%d", it->attempt_base);
        if (it->celery) cv_addn(&v, it->raw, it->raw_len);
        else cv_add(&v, "");
    }
    send_cmd(&w->cmd, &v, 1, SCR_START, start_cb, batch);
}

/* ---- Celery results (DESIGN §5) -------------------------------------------
 * A Celery-origin item writes its result meta to the result backend before its
 * finish script acks it, so a crash in between repeats the write (guarded: a
 * ready state is never overwritten) rather than losing it. */

static void send_meta(worker *w, item *it);

static void meta_cb(worker *w, redisReply *r, void *ud)
{
    item *it = ud;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        if (r) log_msg(LOG_WARN, "celery_result_failed", "job", it->req.id, "error", r->str, NULL);
        it->next = w->meta_wait;
        w->meta_wait = it;
        if (r) {
            struct timeval tv = {1, 0};
            evtimer_add(w->t_finish_retry, &tv);
        }
        return;
    }
    free(it->meta);
    it->meta = NULL;
    queue_finish(w, it);
    flush_finish(w);
}

static cmdv meta_cmd(worker *w, const char *task_id, const char *meta)
{
    cmdv v;
    script_begin(&v, SCR_CELERY_RESULT, 1);
    cv_addf(&v, "celery-task-meta-%s", task_id);
    cv_add(&v, meta);
    cv_addf(&v, "%d", w->cfg->celery_result_expires_s);
    return v;
}

static void send_meta(worker *w, item *it)
{
    cmdv v = meta_cmd(w, it->req.id, it->meta);
    send_cmd(&w->res, &v, 1, SCR_CELERY_RESULT, meta_cb, it);
}

static void retry_meta(worker *w)
{
    item *l = w->meta_wait;
    w->meta_wait = NULL;
    while (l) {
        item *nx = l->next;
        send_meta(w, l);
        l = nx;
    }
}

/* The item's outcome is known: its Celery result first (if any), then finish. */
static void complete(worker *w, item *it)
{
    if (it->meta && w->celery_on) send_meta(w, it);
    else queue_finish(w, it);
}

static void set_meta(item *it, const char *state, const char *result_json, sw_code code,
                     const char *msg, const char *exc_type, const char *exc_module)
{
    free(it->meta);
    it->meta = celery_meta_json(it->req.id, state, result_json, code, msg, exc_type, exc_module);
    it->meta_state = state;
}

/* Result meta for a finished run of a Celery-origin item. */
static void meta_for_outcome(item *it)
{
    if (!it->celery) return;
    if (strcmp(it->outcome, "succeeded") == 0)
        set_meta(it, "SUCCESS", it->data, SW_OK, NULL, NULL, NULL);
    else if (strcmp(it->outcome, "retry") == 0)
        set_meta(it, "RETRY", NULL, it->err.code, it->err.msg, NULL, NULL);
    else if (strcmp(it->outcome, "dead") == 0)
        set_meta(it, "FAILURE", NULL, it->err.code, it->err.msg, NULL, NULL);
}

static void reject(worker *w, item *it, sw_code code, const char *msg)
{
    sw_errc(&it->err, code, "%s", msg);
    it->err.retryable = false;
    it->outcome = "reject";
    it->attempt = 1;
    free(it->data);
    it->data = err_json(&it->err);
    complete(w, it);
}

static void ack_deleted(worker *w, const char *entry)
{
    cmdv v;
    cv_init(&v);
    cv_add(&v, "XACK");
    cv_add(&v, w->k_stream);
    cv_add(&v, GROUP);
    cv_add(&v, entry);
    send_cmd(&w->cmd, &v, 0, 0, NULL, NULL);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A Celery message moved into the stream by the ingress: map it (worker/celery_msg.c).
 * Returns 1 when it should start now; 0 when it was rejected (FAILURE or REVOKED
 * result where the task id is known, then the dead stream) or deferred to its ETA. */
static int take_celery(worker *w, item *it, const char *raw, size_t len)
{
    celery_msg m;
    sw_err err;
    sw_err_clear(&err);
    memset(&m, 0, sizeof m);
    int rc = celery_parse(raw, len, &m, &err);
    it->celery = 1;
    if (rc < 0) {
        it->raw = xstrndup(raw, len); /* the dead entry keeps the message as received */
        it->raw_len = len;
        snprintf(it->req.id, sizeof it->req.id, "%s", m.task_id);
        snprintf(it->req.type, sizeof it->req.type, "%s", "celery");
        if (m.task_id[0])
            set_meta(it, "FAILURE", NULL, err.code, err.msg, m.exc_type[0] ? m.exc_type : NULL,
                     m.exc_module[0] ? m.exc_module : NULL);
        reject(w, it, err.code, err.msg);
        celery_msg_free(&m);
        return 0;
    }
    it->raw = m.payload; /* canonical payload, validated by celery_parse */
    it->raw_len = strlen(m.payload);
    m.payload = NULL;
    it->attempt_base = m.retries;
    sw_err perr;
    if (payload_parse(it->raw, it->raw_len, &it->req, &perr) < 0 ||
        !(it->type = job_lookup(it->req.type))) {
        set_meta(it, "FAILURE", NULL, SW_E_UNKNOWN_JOB_TYPE, "unknown task", "NotRegistered",
                 "celery.exceptions");
        reject(w, it, SW_E_UNKNOWN_JOB_TYPE, "unknown task");
        celery_msg_free(&m);
        return 0;
    }
    int64_t now = wall_ms();
    if (m.expires_ms > 0 && m.expires_ms <= now) {
        char msg[96];
        snprintf(msg, sizeof msg, "task expired %lld ms before it could start",
                 (long long)(now - m.expires_ms));
        set_meta(it, "REVOKED", NULL, SW_E_TIMEOUT, msg, NULL, NULL);
        reject(w, it, SW_E_TIMEOUT, msg);
        celery_msg_free(&m);
        return 0;
    }
    if (m.eta_ms > now) {
        it->outcome = "defer";
        it->delay_ms = m.eta_ms - now;
        it->attempt = m.retries;
        queue_finish(w, it);
        celery_msg_free(&m);
        return 0;
    }
    celery_msg_free(&m);
    return 1;
}

/* Turn stream entries ([id, [field, value, ...]] each) into items: rejects go to
 * the finish queue, valid jobs to one start script. Returns entries seen. */
static size_t take_entries(worker *w, redisReply *entries, int recover, char *last_id, size_t last_n,
                           int maybe_ours)
{
    item *batch = NULL, *tail = NULL;
    int n = 0;
    size_t seen = 0;
    for (size_t i = 0; entries && i < entries->elements; i++) {
        redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || !e->element[0]->str) continue;
        const char *id = e->element[0]->str;
        seen++;
        if (last_id) snprintf(last_id, last_n, "%s", id);
        if (maybe_ours && tracked(w, id)) continue; /* already ours and in flight */
        redisReply *f = e->element[1];
        if (f->type != REDIS_REPLY_ARRAY) { /* XDEL'd while pending */
            ack_deleted(w, id);
            continue;
        }
        item *it = xcalloc(1, sizeof *it);
        snprintf(it->entry, sizeof it->entry, "%s", id);
        track(w, it);
        redisReply *celery = NULL;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = f->element[k]->str;
            if (!name || !f->element[k + 1]->str) continue;
            if (strcmp(name, "job") == 0) {
                it->raw = xstrndup(f->element[k + 1]->str, f->element[k + 1]->len);
                it->raw_len = f->element[k + 1]->len;
                break;
            }
            if (strcmp(name, "celery") == 0) celery = f->element[k + 1];
        }
        sw_err err;
        sw_err_clear(&err);
        if (!it->raw && celery) {
            if (!take_celery(w, it, celery->str, celery->len)) continue;
            it->state = IT_STARTING;
            if (tail) tail->next = it;
            else batch = it;
            tail = it;
            if (++n == BATCH_MAX) {
                send_start(w, batch, n, recover);
                batch = tail = NULL;
                n = 0;
            }
        } else if (!it->raw) {
            reject(w, it, SW_E_INVALID_PAYLOAD, "stream entry has no 'job' field");
        } else if (payload_parse(it->raw, it->raw_len, &it->req, &err) < 0) {
            reject(w, it, err.code, err.msg);
        } else if (!(it->type = job_lookup(it->req.type))) {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown job type '%.64s'", it->req.type);
            if (it->req.celery) {
                it->celery = 1;
                set_meta(it, "FAILURE", NULL, SW_E_UNKNOWN_JOB_TYPE, msg, "NotRegistered",
                         "celery.exceptions");
            }
            reject(w, it, SW_E_UNKNOWN_JOB_TYPE, msg);
        } else {
            it->celery = it->req.celery;
            it->state = IT_STARTING;
            if (tail) tail->next = it;
            else batch = it;
            tail = it;
            if (++n == BATCH_MAX) {
                send_start(w, batch, n, recover);
                batch = tail = NULL;
                n = 0;
            }
        }
    }
    if (n) send_start(w, batch, n, recover);
    flush_finish(w);
    return seen;
}

/* ---- reading ------------------------------------------------------------- */

static int capacity(worker *w)
{
    int limit = w->cfg->concurrency + (w->ewma_ms < 20.0 ? w->cfg->prefetch : 0);
    return limit - w->inflight;
}

static void read_cb(worker *w, redisReply *r, void *ud)
{
    int recover = (int)(intptr_t)ud;
    w->reading = 0;
    if (!r) return; /* connection lost: the reconnect resumes */
    if (r->type == REDIS_REPLY_ERROR) {
        log_msg(LOG_WARN, "redis_read_failed", "error", r->str, NULL);
        if (strncmp(r->str, "NOGROUP", 7) == 0 && w->rd.ac) {
            cmdv v;
            cv_init(&v);
            cv_add(&v, "XGROUP");
            cv_add(&v, "CREATE");
            cv_add(&v, w->k_stream);
            cv_add(&v, GROUP);
            cv_add(&v, "0");
            cv_add(&v, "MKSTREAM");
            send_cmd(&w->rd, &v, 0, 0, group_created, NULL);
        }
        /* e.g. LOADING after a restart: try again shortly, not in a tight loop */
        struct timeval tv = {0, 200000};
        evtimer_add(w->t_read_retry, &tv);
        return;
    }
    size_t seen = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        redisReply *s = r->element[0]; /* [stream, entries] */
        if (s->type == REDIS_REPLY_ARRAY && s->elements == 2)
            /* only a re-read of our own pending list (id 0) can return entries we hold */
            seen = take_entries(w, s->element[1], recover, recover ? w->recover_from : NULL,
                                sizeof w->recover_from, recover);
    }
    if (recover && seen == 0) w->recover = 0; /* own pending list fully re-read */
    maybe_read(w);
}

static void read_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    maybe_read(arg);
}

static void maybe_read(worker *w)
{
    if (w->stopping || w->reading || !w->rd.ready || !w->cmd.ready) return;
    int cap = capacity(w);
    if (cap <= 0) return;
    if (cap > BATCH_MAX) cap = BATCH_MAX;
    cmdv v;
    cv_init(&v);
    cv_add(&v, "XREADGROUP");
    cv_add(&v, "GROUP");
    cv_add(&v, GROUP);
    cv_add(&v, w->name);
    cv_add(&v, "COUNT");
    cv_addf(&v, "%d", cap);
    int recover = w->recover;
    if (!recover) {
        cv_add(&v, "BLOCK");
        cv_addf(&v, "%d", BLOCK_MS);
    }
    cv_add(&v, "STREAMS");
    cv_add(&v, w->k_stream);
    cv_add(&v, recover ? w->recover_from : ">");
    w->reading = 1;
    send_cmd(&w->rd, &v, 0, 0, read_cb, (void *)(intptr_t)recover);
}

/* ---- timers: promote, renew, reclaim ------------------------------------- */

static void promote_cb(worker *w, redisReply *r, void *ud)
{
    (void)ud;
    int64_t next = 1000;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        long long moved = r->element[0]->integer, due = r->element[1]->integer,
                  now = r->element[2]->integer;
        if (moved >= BATCH_MAX) next = 0;
        else if (due >= 0) next = due - now < 1000 ? (due - now > 5 ? due - now : 5) : 1000;
    }
    if (w->stopping) return;
    struct timeval tv = {next / 1000, (next % 1000) * 1000};
    evtimer_add(w->t_promote, &tv);
}

static void promote_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    if (!w->cmd.ready) {
        promote_cb(w, NULL, NULL);
        return;
    }
    cmdv v;
    script_begin(&v, SCR_PROMOTE, 3);
    cv_add(&v, w->k_delayed);
    cv_add(&v, w->k_stream);
    cv_add(&v, w->k_events);
    cv_addf(&v, "%d", BATCH_MAX);
    cv_add(&v, w->job_prefix);
    cv_addf(&v, "%lld", (long long)w->cfg->events_maxlen);
    send_cmd(&w->cmd, &v, 1, SCR_PROMOTE, promote_cb, NULL);
}

typedef struct renew_batch {
    int n;
    char (*entries)[48];
} renew_batch;

static void renew_cb(worker *w, redisReply *r, void *ud)
{
    renew_batch *b = ud;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements && (int)i < b->n; i++) {
            if (r->element[i]->integer == 1) continue;
            for (item *it = w->all; it; it = it->next_all) {
                if (strcmp(it->entry, b->entries[i]) == 0 && it->state != IT_FINISHING) {
                    atomic_store(&it->cancel, 1);
                    log_msg(LOG_WARN, "job_lease_lost", "job", it->req.id, "entry", it->entry, NULL);
                }
            }
        }
    }
    free(b->entries);
    free(b);
}

static void renew_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    if (!w->cmd.ready) return;
    item *it = w->all;
    while (it) {
        renew_batch *b = xcalloc(1, sizeof *b);
        b->entries = xcalloc(BATCH_MAX, sizeof *b->entries);
        cmdv keys, args;
        cv_init(&keys);
        cv_init(&args);
        char k[400];
        for (; it && b->n < BATCH_MAX; it = it->next_all) {
            if (it->state == IT_STARTING || it->state == IT_FINISHING || !it->type) continue;
            rds_job_key(w->cfg, it->req.id, k, sizeof k);
            cv_add(&keys, k);
            snprintf(k, sizeof k, "%s:{%s}:lock:session:%s", w->cfg->ns, w->cfg->queue, it->req.session_id);
            cv_add(&keys, k);
            cv_add(&args, it->entry);
            cv_add(&args, it->req.id);
            snprintf(b->entries[b->n++], 48, "%s", it->entry);
        }
        if (b->n == 0) {
            cv_free(&keys);
            cv_free(&args);
            free(b->entries);
            free(b);
            break;
        }
        cmdv v;
        script_begin(&v, SCR_RENEW, 1 + keys.argc);
        cv_add(&v, w->k_stream);
        cv_cat(&v, &keys);
        cv_add(&v, GROUP);
        cv_add(&v, w->name);
        cv_addf(&v, "%d", w->cfg->lease_s * 1000);
        cv_addf(&v, "%d", b->n);
        cv_cat(&v, &args);
        cv_free(&keys);
        cv_free(&args);
        send_cmd(&w->cmd, &v, 1, SCR_RENEW, renew_cb, b);
    }
}

static void reclaim_cb(worker *w, redisReply *r, void *ud)
{
    (void)ud;
    w->reclaiming = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_msg(LOG_WARN, "redis_reclaim_failed", "error", r->str, NULL);
        return;
    }
    snprintf(w->reclaim_cursor, sizeof w->reclaim_cursor, "%s",
             r->element[0]->str ? r->element[0]->str : "0-0");
    size_t n = take_entries(w, r->element[1], 0, NULL, 0, 1);
    if (n > 0) log_msg(LOG_INFO, "jobs_reclaimed", "count", (n > 0 ? "some" : "0"), NULL);
}

static void reclaim_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    if (w->stopping || w->reclaiming || !w->cmd.ready) return;
    int cap = capacity(w);
    if (cap <= 0) return;
    cmdv v;
    cv_init(&v);
    cv_add(&v, "XAUTOCLAIM");
    cv_add(&v, w->k_stream);
    cv_add(&v, GROUP);
    cv_add(&v, w->name);
    cv_addf(&v, "%d", w->cfg->lease_s * 1000);
    cv_add(&v, w->reclaim_cursor);
    cv_add(&v, "COUNT");
    cv_addf(&v, "%d", cap > BATCH_MAX ? BATCH_MAX : cap);
    w->reclaiming = 1;
    send_cmd(&w->cmd, &v, 0, 0, reclaim_cb, NULL);
}

/* ---- Celery ingress ---------------------------------------------------------
 * Lua cannot block, so the ingress polls: one script pops up to a batch from the
 * kombu lists into the stream; after an empty poll the interval doubles from 1 ms
 * to at most 50 ms (DESIGN §5), which costs about 20 tiny scripts a second idle. */

static void ingress_cb(worker *w, redisReply *r, void *ud)
{
    (void)ud;
    w->ingressing = 0;
    long long moved = (r && r->type == REDIS_REPLY_INTEGER) ? r->integer : 0;
    if (r && r->type == REDIS_REPLY_ERROR) log_msg(LOG_WARN, "celery_ingress_failed", "error", r->str, NULL);
    if (moved > 0) w->ingress_delay_ms = 0;
    else w->ingress_delay_ms = w->ingress_delay_ms ? (w->ingress_delay_ms * 2 > 50 ? 50 : w->ingress_delay_ms * 2) : 1;
    if (w->stopping) return;
    struct timeval tv = {0, w->ingress_delay_ms * 1000};
    evtimer_add(w->t_ingress, &tv);
}

static void ingress_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    if (w->stopping || w->ingressing) return;
    if (!w->cmd.ready) {
        struct timeval tv = {0, 50000};
        evtimer_add(w->t_ingress, &tv);
        return;
    }
    cmdv v;
    script_begin(&v, SCR_CELERY_INGRESS, w->ingress_keys.argc);
    cv_cat(&v, &w->ingress_keys);
    cv_addf(&v, "%d", BATCH_MAX);
    w->ingressing = 1;
    send_cmd(&w->cmd, &v, 1, SCR_CELERY_INGRESS, ingress_cb, NULL);
}

/* Keys of the ingress script: the stream, then each priority step's list of
 * every queue, lowest step first. */
static int celery_setup(worker *w)
{
    const cfg *c = w->cfg;
    char err[200];
    const char *res = *c->celery_result_backend ? c->celery_result_backend : c->celery_broker_url;
    if (rds_url_parse(res, &w->res_url, err, sizeof err) < 0) return -1;
    cv_init(&w->ingress_keys);
    cv_add(&w->ingress_keys, w->k_stream);
    char *sep = celery_unescape(c->celery_priority_sep);
    char *queues = xstrdup(c->celery_queues);
    char **per_queue[64];
    int nq = 0;
    for (char *save = NULL, *q = strtok_r(queues, ",", &save); q && nq < 64; q = strtok_r(NULL, ",", &save)) {
        while (*q == ' ') q++;
        if (*q) per_queue[nq++] = celery_priority_lists(q, sep, c->celery_priority_steps);
    }
    for (int step = 0;; step++) {
        int any = 0;
        for (int i = 0; i < nq; i++) {
            int len = 0;
            while (per_queue[i][len]) len++;
            if (step < len) {
                cv_add(&w->ingress_keys, per_queue[i][step]);
                any = 1;
            }
        }
        if (!any) break;
    }
    for (int i = 0; i < nq; i++) celery_strv_free(per_queue[i]);
    free(queues);
    free(sep);
    w->celery_on = 1;
    w->res = (conn){.w = w, .url = &w->res_url, .name = "celery-results", .backoff_ms = 100};
    w->res.retry_ev = evtimer_new(w->base, retry_cb, &w->res);
    w->t_ingress = evtimer_new(w->base, ingress_timer, w);
    return 0;
}

/* ---- signals and drain --------------------------------------------------- */

static void check_exit(worker *w)
{
    if (w->stopping && w->inflight == 0) event_base_loopexit(w->base, NULL);
}

static void drain_timeout(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    char n[16];
    snprintf(n, sizeof n, "%d", w->inflight);
    log_msg(LOG_WARN, "drain_timeout", "left_pending", n, NULL);
    event_base_loopexit(w->base, NULL);
}

static void begin_drain(worker *w, int signo)
{
    if (w->stopping) { /* second signal: stop now */
        event_base_loopexit(w->base, NULL);
        return;
    }
    w->stopping = 1;
    log_msg(LOG_INFO, "draining", "signal", signo == SIGINT ? "SIGINT" : "SIGTERM", NULL);
    w->rd.closing = 1;
    if (w->rd.ac) {
        redisAsyncContext *ac = w->rd.ac;
        redisAsyncFree(ac); /* cancels the blocking read */
        if (w->rd.ac == ac) w->rd.ac = NULL;
    }
    /* jobs read ahead but not started go back to the stream for others */
    for (item *it = exec_take_queued(w->pool); it;) {
        item *nx = it->next;
        it->outcome = "release";
        queue_finish(w, it);
        it = nx;
    }
    flush_finish(w);
    struct timeval tv = {w->cfg->drain_timeout_s, 0};
    evtimer_add(w->t_drain, &tv);
    check_exit(w);
}

static void signal_cb(evutil_socket_t sig, short ev, void *arg)
{
    (void)ev;
    begin_drain(arg, (int)sig);
}

/* ---- lifetime ------------------------------------------------------------- */

worker *worker_new(const cfg *c)
{
    worker *w = xcalloc(1, sizeof *w);
    w->cfg = c;
    w->ewma_ms = 1000.0; /* assume slow jobs until seen otherwise: no read-ahead */
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    unsigned r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = (unsigned)getpid();
    snprintf(w->name, sizeof w->name, "%s:%d:%04x", host, (int)getpid(), r & 0xffff);
    rds_key(c, "stream", w->k_stream, sizeof w->k_stream);
    rds_key(c, "events", w->k_events, sizeof w->k_events);
    rds_key(c, "delayed", w->k_delayed, sizeof w->k_delayed);
    rds_key(c, "dead", w->k_dead, sizeof w->k_dead);
    rds_key(c, "job:", w->job_prefix, sizeof w->job_prefix);
    strcpy(w->reclaim_cursor, "0-0");
    strcpy(w->recover_from, "0");
    w->recover = 1; /* a restarted worker has no pending entries, but be uniform */
    evthread_use_pthreads();
    w->base = event_base_new();
    if (!w->base || pipe2(w->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
        log_msg(LOG_ERROR, "startup_failed", "error", "event loop or pipe", NULL);
        free(w);
        return NULL;
    }
    w->pool = exec_new(c, c->concurrency, w->pipefd[1]);
    if (!w->pool) {
        log_msg(LOG_ERROR, "startup_failed", "error", "cannot start executor threads", NULL);
        event_base_free(w->base);
        close(w->pipefd[0]);
        close(w->pipefd[1]);
        free(w);
        return NULL;
    }
    w->rd = (conn){.w = w, .url = &c->redis, .name = "reader", .backoff_ms = 100};
    w->cmd = (conn){.w = w, .url = &c->redis, .name = "command", .backoff_ms = 100};
    w->rd.retry_ev = evtimer_new(w->base, retry_cb, &w->rd);
    w->cmd.retry_ev = evtimer_new(w->base, retry_cb, &w->cmd);
    w->pipe_ev = event_new(w->base, w->pipefd[0], EV_READ | EV_PERSIST, pipe_cb, w);
    w->sig_term = evsignal_new(w->base, SIGTERM, signal_cb, w);
    w->sig_int = evsignal_new(w->base, SIGINT, signal_cb, w);
    w->t_promote = evtimer_new(w->base, promote_timer, w);
    w->t_renew = event_new(w->base, -1, EV_PERSIST, renew_timer, w);
    w->t_reclaim = event_new(w->base, -1, EV_PERSIST, reclaim_timer, w);
    w->t_watch = event_new(w->base, -1, EV_PERSIST, watch_cb, w);
    w->t_drain = evtimer_new(w->base, drain_timeout, w);
    w->t_finish_retry = evtimer_new(w->base, finish_retry_cb, w);
    w->t_read_retry = evtimer_new(w->base, read_retry_cb, w);
    if (*c->celery_broker_url && celery_setup(w) < 0) {
        log_msg(LOG_ERROR, "startup_failed", "error", "bad CELERY_RESULT_BACKEND", NULL);
        worker_free(w);
        return NULL;
    }
    return w;
}

int worker_run(worker *w)
{
    signal(SIGPIPE, SIG_IGN);
    event_add(w->pipe_ev, NULL);
    event_add(w->sig_term, NULL);
    event_add(w->sig_int, NULL);
    int64_t lease_ms = (int64_t)w->cfg->lease_s * 1000;
    int64_t renew_ms = lease_ms / 3 > 0 ? lease_ms / 3 : 1;
    int64_t reclaim_ms = lease_ms / 2 < 1000 ? 1000 : lease_ms / 2;
    struct timeval renew = {renew_ms / 1000, (renew_ms % 1000) * 1000};
    struct timeval reclaim = {reclaim_ms / 1000, (reclaim_ms % 1000) * 1000};
    struct timeval second = {1, 0}, soon = {0, 1000};
    event_add(w->t_renew, &renew);
    event_add(w->t_reclaim, &reclaim);
    event_add(w->t_watch, &second);
    evtimer_add(w->t_promote, &soon);
    log_msg(LOG_INFO, "worker_started", "consumer", w->name, "queue", w->cfg->queue, NULL);
    w->stats.consumer = w->name;
    w->stats.queue = w->cfg->queue;
    if (*w->cfg->http_addr && !(w->http = http_start(w->base, w->cfg->http_addr, &w->stats)))
        return 1;
    conn_connect(&w->rd);
    conn_connect(&w->cmd);
    if (w->celery_on) {
        conn_connect(&w->res);
        evtimer_add(w->t_ingress, &soon);
        log_msg(LOG_INFO, "celery_ingress_on", "queues", w->cfg->celery_queues, NULL);
    }
    event_base_dispatch(w->base);
    log_msg(LOG_INFO, "worker_stopped", "consumer", w->name, NULL);
    return w->exit_code;
}

static void release_consumer(worker *w)
{
    /* remove our consumer from the group when it holds nothing */
    sw_err err;
    redisContext *rc = rds_connect(&w->cfg->redis, 2000, &err);
    if (!rc) return;
    redisReply *r = redisCommand(rc, "XPENDING %s %s - + 1 %s", w->k_stream, GROUP, w->name);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 0) {
        redisReply *d = redisCommand(rc, "XGROUP DELCONSUMER %s %s %s", w->k_stream, GROUP, w->name);
        if (d) freeReplyObject(d);
    }
    if (r) freeReplyObject(r);
    redisFree(rc);
}

void worker_free(worker *w)
{
    if (!w) return;
    int busy = 0;
    if (w->pool) {
        exec_stop(w->pool);
        busy = exec_free(w->pool, 200) < 0;
    }
    if (busy) return; /* a job is still running: the process exits around it */
    if (w->inflight == 0) release_consumer(w);
    w->rd.closing = w->cmd.closing = w->res.closing = 1;
    if (w->rd.ac) redisAsyncFree(w->rd.ac);
    if (w->cmd.ac) redisAsyncFree(w->cmd.ac);
    if (w->res.ac) redisAsyncFree(w->res.ac);
    w->meta_wait = NULL; /* those items are on the in-flight list too */
    while (w->all) untrack_free(w, w->all);
    http_stop(w->http);
    if (w->celery_on) {
        cv_free(&w->ingress_keys);
        rds_url_free(&w->res_url);
    }
    struct event *evs[] = {w->rd.retry_ev, w->cmd.retry_ev, w->pipe_ev, w->sig_term, w->sig_int,
                           w->t_promote, w->t_renew, w->t_reclaim, w->t_watch, w->t_drain,
                           w->t_finish_retry, w->t_read_retry, w->res.retry_ev, w->t_ingress};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i]) event_free(evs[i]);
    event_base_free(w->base);
    close(w->pipefd[0]);
    close(w->pipefd[1]);
    free(w);
}
