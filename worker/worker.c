/* worker/worker.c — the daemon's event loop (libevent + hiredis async).
 *
 * Owns: the worker's lifetime, the in-flight list, reading (XREADGROUP with
 * back-pressure), the start and finish batches, signals and the graceful drain.
 * Connections are in worker/conn.c, timers in worker/sched.c, Celery in
 * worker/celery.c, job execution in worker/exec.c, and every queue transition is
 * one Lua script (worker/lua/, loaded by worker/scripts.c).
 *
 *   XREADGROUP ─► decode/validate ─► start script ─► executors ─► done pipe
 *        ▲               │ reject                                      │
 *        └── capacity ◄──┴──────────────── finish script ◄─────────────┘
 *
 * hiredis 0.14 has no async timeouts and no reconnect: a watchdog frees a
 * connection whose reply is overdue, and a timer reconnects with a new context.
 * After any loss the worker first re-reads its own pending entries (id 0). */
#include "worker/worker.h"

#include <async.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <malloc.h>
#include <hiredis.h>
#include <pthread.h>
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
#include "worker/worker_priv.h"
#include "worker/schedule.h"


/* ---- in-flight list ---------------------------------------------------- */

void wk_track(worker *w, item *it)
{
    it->prev_all = NULL;
    it->next_all = w->all;
    if (w->all) w->all->prev_all = it;
    w->all = it;
    w->inflight++;
}

void wk_untrack_free(worker *w, item *it)
{
    if (it->prev_all) it->prev_all->next_all = it->next_all;
    else w->all = it->next_all;
    if (it->next_all) it->next_all->prev_all = it->prev_all;
    w->inflight--;
    item_free(it);
}

int wk_tracked(worker *w, int sidx, const char *entry)
{
    for (item *it = w->all; it; it = it->next_all)
        if (it->sidx == sidx && strcmp(it->entry, entry) == 0) return 1;
    return 0;
}

/* ---- finishing ----------------------------------------------------------- */

/* The log line of a finished job: its message and level follow from the outcome. */
static void log_outcome(item *it, finish_result res)
{
    log_level lvl = SW_LOG_INFO;
    const char *msg = "job_succeeded";
    job_outcome o = it->outcome;
    int ran = 1, failed = 0; /* duration_ms is logged for runs, code/error for failures */
    switch (o) {
    case OUT_NONE:
    case OUT_SUCCEEDED: break;
    case OUT_RETRY: lvl = SW_LOG_WARN; msg = "job_failed"; failed = 1; break;
    case OUT_DEAD: lvl = SW_LOG_ERROR; msg = "job_dead"; failed = 1; break;
    case OUT_REJECT: lvl = SW_LOG_ERROR; msg = "job_dead"; failed = 1; ran = 0; break;
    case OUT_RELEASE: msg = "job_released"; ran = 0; break;
    case OUT_DEFER:
    case OUT_DEFER_AT: msg = "job_deferred"; ran = 0; break;
    case OUT_CANCEL: lvl = SW_LOG_WARN; msg = "job_cancelled"; break;
    case OUT_ABANDON:
    case OUT_COUNT: msg = "job_abandoned"; break; /* never finished: not reached */
    }
    if (res == FINISH_LOST) { /* fenced out: the outcome was not written */
        lvl = SW_LOG_WARN;
        msg = "job_lease_lost";
    }
    log_line l;
    log_begin(&l, lvl, msg);
    log_str(&l, "job", it->req.id[0] ? it->req.id : NULL);
    log_str(&l, "type", it->req.type[0] ? it->req.type : NULL);
    log_str(&l, "entry", it->entry);
    log_int(&l, "attempt", it->attempt);
    if (ran) log_int(&l, "duration_ms", it->duration_ms);
    if (failed) {
        log_str(&l, "code", sw_code_name(it->err.code));
        log_str(&l, "error", it->err.msg);
    }
    if (o == OUT_RETRY || o == OUT_DEFER) log_int(&l, "delay_ms", it->delay_ms);
    if (o == OUT_DEFER_AT) log_int(&l, "due_ms", it->delay_ms);
    if (o == OUT_DEFER_AT || o == OUT_CANCEL || it->sidx != PRIO_DEFAULT)
        log_str(&l, "priority", payload_prio_name(it->sidx));
    if (it->meta_state) log_str(&l, "celery_state", it->meta_state);
    log_end(&l);
}

/* How the finish of 'o' is counted (worker stats and metrics). */
static metrics_outcome counted_as(job_outcome o, finish_result res)
{
    if (res == FINISH_LOST) return MO_LEASE_LOST;
    switch (o) {
    case OUT_SUCCEEDED: return MO_SUCCEEDED;
    case OUT_RETRY: return MO_FAILED;
    case OUT_DEAD: return MO_DEAD;
    case OUT_REJECT: return MO_REJECTED;
    case OUT_RELEASE: return MO_RELEASED;
    case OUT_DEFER:
    case OUT_DEFER_AT: return MO_DEFERRED;
    case OUT_CANCEL: return MO_CANCELLED;
    case OUT_ABANDON: return MO_ABANDONED;
    case OUT_NONE:
    case OUT_COUNT: break;
    }
    return MO_OTHER;
}

static void count_outcome(worker_stats *s, metrics_outcome m)
{
    switch (m) {
    case MO_LEASE_LOST: s->lease_lost++; break;
    case MO_SUCCEEDED: s->succeeded++; break;
    case MO_FAILED: s->failed++; break;
    case MO_DEAD: s->dead++; break;
    case MO_REJECTED: s->rejected++; break;
    case MO_RELEASED: s->released++; break;
    case MO_DEFERRED: s->deferred++; break;
    case MO_CANCELLED: s->dead++; break; /* terminal without success; ops counts */
    default: break;
    }
}

static void finish_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    wk_flush_finish(w);
    if (w->hook && w->hook->flush) w->hook->flush(w);
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

static void finish_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    item *batch = ud;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r) log_msg(SW_LOG_ERROR, "finish_script_failed", "error", r->str ? r->str : "?", NULL);
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
        finish_result res = scr_finish_result(r, i);
        metrics_outcome m = counted_as(it->outcome, res);
        log_outcome(it, res);
        count_outcome(&w->stats, m);
        metrics_job_done(it->type ? it->type->name : NULL, m, it->duration_ms);
        wk_untrack_free(w, it);
        it = nx;
        i++;
    }
    wk_flush_finish(w);
    wk_maybe_read(w);
    wk_check_exit(w);
}

static void add_finish_args(worker *w, cmdv *keys, cmdv *args, item *it)
{
    cv_addcat(keys, w->job_prefix, it->req.id[0] ? it->req.id : "-");
    cv_addcat(keys, w->lock_prefix, it->req.session_id[0] ? it->req.session_id : "-");
    cv_add(keys, w->k_streams[it->sidx]);
    cv_add(args, it->entry);
    cv_add(args, it->req.id);
    cv_add(args, it->req.type);
    cv_add(args, scr_outcome_arg(it->outcome)); /* the only place an outcome is a word */
    cv_addll(args, it->attempt);
    cv_add(args, it->data ? it->data : "{}");
    cv_add(args, it->type && it->type->session_lock ? "1" : "0");
    if (it->outcome == OUT_SUCCEEDED) return; /* no delay, no payload copy */
    cv_addll(args, it->delay_ms);
    if (it->raw) cv_addn(args, it->raw, it->raw_len);
    else cv_add(args, "");
}

void wk_flush_finish(worker *w)
{
    if (w->hook && w->hook->flush) w->hook->flush(w);
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
        conn_script_begin(&v, SCR_FINISH, 3 + keys.argc);
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
        conn_script(&w->cmd, &v, SCR_FINISH, finish_cb, batch);
    }
}

/* Every item whose outcome is known passes here: an attached hook (Celery) may hold
 * it to write its result first; then its finish is queued. */
void wk_complete(worker *w, item *it)
{
    if (w->hook && w->hook->complete && w->hook->complete(w, it)) return;
    wk_queue_finish(w, it);
}

void wk_queue_finish(worker *w, item *it)
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
        if (it->outcome == OUT_ABANDON) {
            wk_untrack_free(w, it);
        } else {
            wk_complete(w, it);
        }
        it = nx;
    }
    wk_flush_finish(w);
    wk_check_exit(w);
}

/* ---- starting ------------------------------------------------------------ */

static void start_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    item *batch = ud;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        /* unknown whether the script ran: drop locally; the entries stay pending
         * for this consumer and are re-read (id 0) after the reconnect */
        if (r) log_msg(SW_LOG_ERROR, "start_script_failed", "error", r->str ? r->str : "?", NULL);
        for (item *it = batch; it;) {
            item *nx = it->next;
            wk_untrack_free(w, it);
            it = nx;
        }
        wk_recover_all(w);
        struct timeval tv = {0, 200000};
        evtimer_add(w->t_read_retry, &tv);
        return;
    }
    size_t pos = 0;
    item *run = NULL, *run_tail = NULL;
    for (item *it = batch; it;) {
        item *nx = it->next;
        start_reply s;
        if (scr_start_reply_next(r, &pos, &s) != 1) /* short or malformed: leave it pending */
            s = (start_reply){.action = START_SKIP};
        switch (s.action) {
        case START_RUN:
        case START_POISON:
            it->attempt = s.attempt;
            it->deliveries = s.deliveries;
            it->poison = s.action == START_POISON;
            if (s.nmemo && !it->memo) it->memo = json_object();
            for (size_t k = 0; k < s.nmemo; k++)
                json_object_set_new(it->memo, s.memo[2 * k]->str, json_string(s.memo[2 * k + 1]->str));
            it->next = NULL;
            if (run_tail) run_tail->next = it;
            else run = it;
            run_tail = it;
            break;
        case START_ENDED:
            wk_celery_replay(w, it, s.ended, s.ended_data);
            /* fall through */
        case START_SKIP:
        case START_DUP:
        case START_BUSY:
        case START_COUNT: {
            log_line l;
            log_begin(&l, SW_LOG_DEBUG, "job_not_started");
            log_str(&l, "job", it->req.id);
            log_str(&l, "entry", it->entry);
            log_str(&l, "reason", scr_start_action_name(s.action));
            log_end(&l);
            wk_untrack_free(w, it);
            break;
        }
        }
        it = nx;
    }
    if (run && w->stopping) {
        /* SIGTERM came while the start script was in flight: hand them back */
        for (item *it = run; it;) {
            item *nx = it->next;
            it->outcome = OUT_RELEASE;
            wk_queue_finish(w, it);
            it = nx;
        }
        wk_flush_finish(w);
    } else if (run) {
        int64_t now = job_now_ms();
        for (item *it = run; it; it = it->next) it->submitted_ms = now;
        exec_submit(w->pool, run);
    }
    wk_maybe_read(w);
}

static void send_start(worker *w, item *batch, int n, int recover)
{
    cmdv v;
    conn_script_begin(&v, SCR_START, 2 + 3 * n);
    cv_add(&v, w->k_events);
    cv_add(&v, w->k_delayed);
    for (item *it = batch; it; it = it->next) {
        cv_addcat(&v, w->job_prefix, it->req.id);
        cv_addcat(&v, w->lock_prefix, it->req.session_id);
        cv_add(&v, w->k_streams[it->sidx]);
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
        cv_addll(&v, cfg_max_deliveries(w->cfg, it->max_attempts));
        cv_addll(&v, it->attempt_base);
        if (it->celery) cv_addn(&v, it->raw, it->raw_len);
        else cv_add(&v, "");
    }
    conn_script(&w->cmd, &v, SCR_START, start_cb, batch);
}

void wk_reject(worker *w, item *it, sw_code code, const char *msg)
{
    sw_errc(&it->err, code, "%s", msg);
    it->err.retryable = false;
    it->outcome = OUT_REJECT;
    it->attempt = 1;
    free(it->data);
    it->data = err_json(&it->err);
    wk_complete(w, it);
}

static void ack_deleted(worker *w, int sidx, const char *entry)
{
    cmdv v;
    cv_init(&v);
    cv_add(&v, "XACK");
    cv_add(&v, w->k_streams[sidx]);
    cv_add(&v, GROUP);
    cv_add(&v, entry);
    conn_send(&w->cmd, &v, NULL, NULL);
}

/* Redis's clock now, estimated from the last promote tick (0 before the first). */
static int64_t redis_now_ms(worker *w)
{
    return w->redis_ms ? w->redis_ms + (job_now_ms() - w->redis_at_ms) : 0;
}

/* A job to run later (docs/producers.md): its payload's run_at_ms, or delay_ms counted from
 * the entry's id (the Redis time of its XADD). An entry with a `due` field came from
 * the delayed zset (or was released, or requeued): its delay was served. Returns 1
 * when the item was deferred (outcome defer_at, the payload rewritten with run_at_ms
 * so that the delay is not counted again), 0 to run it now. */
static int defer_if_early(worker *w, item *it, int served)
{
    if (served || (it->req.run_at_ms == 0 && it->req.delay_ms == 0)) return 0;
    int64_t added = strtoll(it->entry, NULL, 10);
    int64_t now = redis_now_ms(w);
    if (now < added) now = added;
    int64_t due = it->req.run_at_ms ? it->req.run_at_ms : added + it->req.delay_ms;
    if (due <= now) return 0;
    if (it->req.delay_ms) {
        json_t *o = json_loadb(it->raw, it->raw_len, 0, NULL);
        if (o) {
            json_object_del(o, "delay_ms");
            json_object_set_new(o, "run_at_ms", json_integer(due));
            char *s = json_dumps(o, JSON_COMPACT);
            json_decref(o);
            if (s) {
                free(it->raw);
                it->raw = s;
                it->raw_len = strlen(s);
            }
        }
    }
    it->outcome = OUT_DEFER_AT;
    it->delay_ms = due;
    it->attempt = 0;
    wk_queue_finish(w, it);
    return 1;
}

/* Turn stream entries ([id, [field, value, ...]] each) of stream 'sidx' into items:
 * rejects go to the finish queue, valid jobs to one start script. Returns entries seen. */
size_t wk_take_entries(worker *w, int sidx, redisReply *entries, int recover, char *last_id,
                       size_t last_n, int maybe_ours)
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
        if (maybe_ours && wk_tracked(w, sidx, id)) continue; /* already ours and in flight */
        redisReply *f = e->element[1];
        if (f->type != REDIS_REPLY_ARRAY) { /* XDEL'd while pending */
            ack_deleted(w, sidx, id);
            continue;
        }
        item *it = xcalloc(1, sizeof *it);
        snprintf(it->entry, sizeof it->entry, "%s", id);
        it->sidx = sidx;
        wk_track(w, it);
        redisReply *celery = NULL, *oversize = NULL;
        const char *bytes = NULL, *task_id = NULL;
        int served = 0;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = f->element[k]->str;
            if (!name || !f->element[k + 1]->str) continue;
            if (name[0] == 'd' && strcmp(name, "due") == 0) served = 1;
            if (strcmp(name, "job") == 0) {
                it->raw = xstrndup(f->element[k + 1]->str, f->element[k + 1]->len);
                it->raw_len = f->element[k + 1]->len;
                break;
            }
            if (strcmp(name, "celery") == 0) celery = f->element[k + 1];
            else if (strcmp(name, "celery_oversize") == 0) oversize = f->element[k + 1];
            else if (strcmp(name, "bytes") == 0) bytes = f->element[k + 1]->str;
            else if (strcmp(name, "task_id") == 0) task_id = f->element[k + 1]->str;
        }
        sw_err err;
        sw_err_clear(&err);
        int runnable = 0;
        if (!it->raw && oversize) {
            wk_take_celery_oversize(w, it, oversize->str, oversize->len, bytes, task_id);
        } else if (!it->raw && celery) {
            runnable = wk_take_celery(w, it, celery->str, celery->len);
        } else if (!it->raw) {
            wk_reject(w, it, SW_E_INVALID_PAYLOAD, "stream entry has no 'job' field");
        } else if (payload_parse(it->raw, it->raw_len, &it->req, &err) < 0) {
            wk_reject(w, it, err.code, err.msg);
        } else if (!(it->type = job_lookup(it->req.type))) {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown job type '%.64s'", it->req.type);
            if (it->req.celery) {
                it->celery = 1;
                wk_set_meta(it, "FAILURE", NULL, SW_E_UNKNOWN_JOB_TYPE, msg, "NotRegistered",
                            "celery.exceptions");
            }
            wk_reject(w, it, SW_E_UNKNOWN_JOB_TYPE, msg);
        } else if (it->req.celery) {
            it->celery = !it->req.celery_ignore_result;
            it->attempt_base = it->req.celery_retries;
            runnable = !wk_celery_expired(w, it); /* expired while deferred: REVOKED */
        } else {
            runnable = !defer_if_early(w, it, served);
        }
        if (!runnable) continue;
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
    if (n) send_start(w, batch, n, recover);
    wk_flush_finish(w);
    return seen;
}

/* ---- reading ------------------------------------------------------------- */

int wk_capacity(worker *w)
{
    /* Read ahead only while jobs are quick, and then about READ_AHEAD_MS of work
     * (at most SNAPWORKER_PREFETCH jobs): a read-ahead job is marked running when
     * read, so this bounds how early that can be (docs/queue.md). */
    int ahead = 0;
    if (w->ewma_ms < 20.0) {
        double per_job_ms = w->ewma_ms > 0.05 ? w->ewma_ms : 0.05;
        double n = READ_AHEAD_MS * w->cfg->concurrency / per_job_ms;
        ahead = n < w->cfg->prefetch ? (int)n : w->cfg->prefetch;
    }
    return w->cfg->concurrency + ahead - w->inflight;
}

int wk_stream_index(worker *w, const char *key)
{
    for (int i = 0; i < PRIO_COUNT; i++)
        if (strcmp(w->k_streams[i], key) == 0) return i;
    return -1;
}

void wk_recover_all(worker *w)
{
    w->recover = 1;
    for (int i = 0; i < PRIO_COUNT; i++) strcpy(w->recover_from[i], "0");
}

/* The reply holds one [stream, entries] per stream that had any, in the order asked
 * (high, default, low), so higher priorities reach the start script first. */
static void read_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    int recover = (int)((intptr_t)ud & 1), asked = (int)(((intptr_t)ud >> 1) & 7),
        count = (int)((intptr_t)ud >> 4);
    w->reading = 0;
    if (!r) return; /* connection lost: the reconnect resumes */
    if (r->type == REDIS_REPLY_ERROR) {
        log_msg(SW_LOG_WARN, "redis_read_failed", "error", r->str, NULL);
        if (strncmp(r->str, "NOGROUP", 7) == 0 && w->rd.ready) wk_create_group(w);
        /* e.g. LOADING after a restart: try again shortly, not in a tight loop */
        struct timeval tv = {0, 200000};
        evtimer_add(w->t_read_retry, &tv);
        return;
    }
    size_t seen = 0;
    int full = 0; /* bit per stream that returned its whole COUNT */
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
        redisReply *s = r->element[k]; /* [stream, entries] */
        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 || !s->element[0]->str) continue;
        int sidx = wk_stream_index(w, s->element[0]->str);
        if (sidx < 0) continue;
        /* only a re-read of our own pending list (id 0) can return entries we hold */
        size_t n = wk_take_entries(w, sidx, s->element[1], recover,
                                   recover ? w->recover_from[sidx] : NULL,
                                   sizeof w->recover_from[sidx], recover);
        seen += n;
        if ((int)n >= count) full |= 1 << sidx;
    }
    if (!recover) w->full_mask = (w->full_mask & ~asked) | full;
    if (recover && seen == 0) w->recover = 0; /* own pending lists fully re-read */
    wk_maybe_read(w);
}

static void read_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    wk_maybe_read(arg);
}

/* One XREADGROUP over the priority streams: one round trip per batch, as with one
 * stream. Weighted: while a stream is backlogged (it filled its COUNT when last
 * read), streams of lower priority are left out of the read, except on every
 * LOW_EVERY-th read, which takes all three; so higher priorities are read first and
 * lower ones still progress. COUNT applies to each stream, so the room is shared
 * among the backlogged streams read: a batch stays about 'cap' long. In the run queue
 * (worker/exec.c) higher priorities go first too, with the same every-4th rule
 * (docs/queue.md "Priorities"). */
void wk_maybe_read(worker *w)
{
    if (w->stopping || w->reading || !w->rd.ready || !w->cmd.ready) return;
    int cap = wk_capacity(w);
    if (cap <= 0) return;
    if (cap > BATCH_MAX) cap = BATCH_MAX;
    int recover = w->recover;
    int mask = (1 << PRIO_COUNT) - 1; /* the streams to read */
    if (!recover && w->full_mask && ++w->reads % LOW_EVERY != 0) {
        int top = 0;
        while (!(w->full_mask & (1 << top))) top++;
        mask = (1 << (top + 1)) - 1; /* high .. the first backlogged one */
    }
    int nfull = __builtin_popcount((unsigned)(w->full_mask & mask));
    int count = recover || nfull <= 1 ? cap : (cap + nfull - 1) / nfull;
    cmdv v;
    cv_init(&v);
    cv_add(&v, "XREADGROUP");
    cv_add(&v, "GROUP");
    cv_add(&v, GROUP);
    cv_add(&v, w->name);
    cv_add(&v, "COUNT");
    cv_addf(&v, "%d", count);
    /* a read that leaves streams out never blocks: should the backlogged ones be empty
     * now, it returns at once, clears their bits, and the next read takes all three */
    if (!recover && mask == (1 << PRIO_COUNT) - 1) {
        cv_add(&v, "BLOCK");
        cv_addf(&v, "%d", BLOCK_MS);
    }
    cv_add(&v, "STREAMS");
    for (int i = 0; i < PRIO_COUNT; i++)
        if (mask & (1 << i)) cv_add(&v, w->k_streams[i]);
    for (int i = 0; i < PRIO_COUNT; i++)
        if (mask & (1 << i)) cv_add(&v, recover ? w->recover_from[i] : ">");
    w->reading = 1;
    conn_send(&w->rd, &v, read_cb, (void *)(intptr_t)(recover | (mask << 1) | (count << 4)));
}

/* ---- signals and drain --------------------------------------------------- */

void wk_check_exit(worker *w)
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
    log_msg(SW_LOG_WARN, "drain_timeout", "left_pending", n, NULL);
    event_base_loopexit(w->base, NULL);
}

static void begin_drain(worker *w, int signo)
{
    if (w->stopping) { /* second signal: stop now */
        event_base_loopexit(w->base, NULL);
        return;
    }
    w->stopping = 1;
    log_msg(SW_LOG_INFO, "draining", "signal", signo == SIGINT ? "SIGINT" : "SIGTERM", NULL);
    /* a replica that is going away hands the scheduler lock over now (compare-and-delete),
     * not after its jobs (or the drain timeout, after which worker_free is cut short) */
    schedule_free(w->schedule);
    w->schedule = NULL;
    conn_close(&w->rd); /* cancels the blocking read */
    /* jobs read ahead but not started go back to the stream for others */
    for (item *it = exec_take_queued(w->pool); it;) {
        item *nx = it->next;
        it->outcome = OUT_RELEASE;
        wk_queue_finish(w, it);
        it = nx;
    }
    wk_flush_finish(w);
    struct timeval tv = {w->cfg->drain_timeout_s, 0};
    evtimer_add(w->t_drain, &tv);
    wk_check_exit(w);
}

static void signal_cb(evutil_socket_t sig, short ev, void *arg)
{
    (void)ev;
    begin_drain(arg, (int)sig);
}

/* ---- connections: what their readiness and loss mean (worker/conn.c) ------ */

static void script_loaded(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
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
    log_msg(SW_LOG_WARN, "redis_script_load_failed", "script", scr_name(sid), "error",
            r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply", NULL);
}

/* SCRIPT LOAD every script on each connect of the command connection (a restarted
 * Redis has none); queued ahead of every call on that connection, so EVALSHA finds
 * them. The SHA1 is the same on any server; until the first replies arrive, calls
 * go out as EVAL. */
void wk_load_scripts(worker *w)
{
    w->reload_scripts = 0;
    for (int i = 0; i < SCR_COUNT; i++) {
        cmdv v;
        cv_init(&v);
        cv_add(&v, "SCRIPT");
        cv_add(&v, "LOAD");
        cv_add(&v, scr_source((scr_id)i));
        conn_send(&w->cmd, &v, script_loaded, (void *)(intptr_t)i);
    }
}

static void group_created(void *owner, redisReply *r, void *ud)
{
    (void)owner;
    (void)ud;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
        log_msg(SW_LOG_ERROR, "redis_group_create_failed", "error", r->str, NULL);
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
        conn_send(&w->rd, &v, group_created, NULL);
    }
}

static void policy_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    (void)ud;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 || w->warned_policy) return;
    w->warned_policy = 1;
    const char *pol = r->element[1]->str ? r->element[1]->str : "";
    if (strcmp(pol, "noeviction") != 0)
        log_msg(SW_LOG_WARN, "redis_maxmemory_policy", "policy", pol, "hint",
                "not noeviction: evicted keys are lost jobs", NULL);
}

/* The reader (re)connected: the group first, then read. */
static void reader_ready(conn *c, void *owner)
{
    (void)c;
    worker *w = owner;
    wk_create_group(w);
    wk_maybe_read(w);
}

/* The command connection (re)connected: scripts first (so EVALSHA finds them), the
 * eviction-policy check once, then the finishes that waited, then read. */
static void command_ready(conn *c, void *owner)
{
    worker *w = owner;
    wk_load_scripts(w);
    if (!w->warned_policy) {
        cmdv v;
        cv_init(&v);
        cv_add(&v, "CONFIG");
        cv_add(&v, "GET");
        cv_add(&v, "maxmemory-policy");
        conn_send(c, &v, policy_cb, NULL);
    }
    wk_flush_finish(w);
    wk_maybe_read(w);
}

/* Any connection lost: re-read our own pending entries first when reading resumes
 * (nothing read before the drop is forgotten); a closing reader ends the drain. */
void wk_conn_lost(conn *c, void *owner, const char *why, int was_ready)
{
    worker *w = owner;
    wk_recover_all(w);
    if (c == &w->rd) w->reading = 0;
    if (!c->closing && !w->stopping)
        log_msg(was_ready ? SW_LOG_WARN : SW_LOG_DEBUG, "redis_connection_lost", "conn", c->name,
                "reason", why, NULL);
    if (c->closing) wk_check_exit(w); /* only the reader closes at a drain */
}

static const conn_hooks reader_hooks = {.on_ready = reader_ready, .on_lost = wk_conn_lost};
static const conn_hooks command_hooks = {.on_ready = command_ready, .on_lost = wk_conn_lost};

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
    for (char *p = host; *p; p++) /* the name goes into JSON unescaped: keep it plain */
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_') *p = '-';
    snprintf(w->name, sizeof w->name, "%s:%d:%04x", host, (int)getpid(), r & 0xffff);
    rds_key(c, "stream", w->k_stream, sizeof w->k_stream);
    rds_key(c, "stream:high", w->k_streams[PRIO_HIGH], sizeof w->k_streams[PRIO_HIGH]);
    rds_key(c, "stream", w->k_streams[PRIO_DEFAULT], sizeof w->k_streams[PRIO_DEFAULT]);
    rds_key(c, "stream:low", w->k_streams[PRIO_LOW], sizeof w->k_streams[PRIO_LOW]);
    rds_key(c, "events", w->k_events, sizeof w->k_events);
    rds_key(c, "delayed", w->k_delayed, sizeof w->k_delayed);
    rds_key(c, "dead", w->k_dead, sizeof w->k_dead);
    rds_key(c, "job:", w->job_prefix, sizeof w->job_prefix);
    rds_key(c, "lock:session:", w->lock_prefix, sizeof w->lock_prefix);
    for (int i = 0; i < PRIO_COUNT; i++) strcpy(w->reclaim_cursor[i], "0-0");
    wk_recover_all(w); /* a restarted worker has no pending entries, but be uniform */
    evthread_use_pthreads();
    /* One malloc arena for every thread: the main heap, which malloc_trim shrinks from its
     * top as well as in its middle. glibc gives a new thread an arena of its own while
     * there are fewer than M_ARENA_MAX, so with 2 the loop thread (run_loop) got the second
     * one, whose top malloc_trim never shrinks: 1.9-2.1 MiB idle after a burst, against
     * 1.8 MiB with one. The threads allocate from their own caches (tcache); the arena's
     * lock is taken when one misses. */
    mallopt(M_ARENA_MAX, 1);
    w->base = event_base_new();
    if (!w->base || pipe2(w->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
        log_msg(SW_LOG_ERROR, "startup_failed", "error", "event loop or pipe", NULL);
        if (w->base) event_base_free(w->base);
        free(w);
        return NULL;
    }
    w->pool = exec_new(c, w->name, c->concurrency, w->pipefd[1]);
    if (!w->pool) {
        log_msg(SW_LOG_ERROR, "startup_failed", "error", "cannot start executor threads", NULL);
        event_base_free(w->base);
        close(w->pipefd[0]);
        close(w->pipefd[1]);
        free(w);
        return NULL;
    }
    conn_init(&w->rd, w->base, &c->redis, "reader", BLOCK_MS, &reader_hooks, w);
    conn_init(&w->cmd, w->base, &c->redis, "command", 0, &command_hooks, w);
    w->pipe_ev = event_new(w->base, w->pipefd[0], EV_READ | EV_PERSIST, pipe_cb, w);
    w->sig_term = evsignal_new(w->base, SIGTERM, signal_cb, w);
    w->sig_int = evsignal_new(w->base, SIGINT, signal_cb, w);
    w->t_promote = evtimer_new(w->base, wk_promote_timer, w);
    w->t_renew = event_new(w->base, -1, EV_PERSIST, wk_renew_timer, w);
    w->t_reclaim = event_new(w->base, -1, EV_PERSIST, wk_reclaim_timer, w);
    w->t_watch = event_new(w->base, -1, EV_PERSIST, wk_watch_timer, w);
    w->t_drain = evtimer_new(w->base, drain_timeout, w);
    w->t_finish_retry = evtimer_new(w->base, finish_retry_cb, w);
    w->t_read_retry = evtimer_new(w->base, read_retry_cb, w);
    if (*c->celery_broker_url && wk_celery_setup(w) < 0) {
        log_msg(SW_LOG_ERROR, "startup_failed", "error", "bad CELERY_RESULT_BACKEND", NULL);
        worker_free(w);
        return NULL;
    }
    return w;
}

static void *loop_main(void *arg)
{
    worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

/* The event loop runs on a thread of its own, which is replaced when the worker goes idle
 * after work. glibc keeps, per thread, a cache of freed blocks (tcache: up to 7 of each
 * size class up to 1 KiB) that only the thread's exit gives back. After a burst of 30,000
 * noop jobs the loop thread's held ~190 KiB in ~380 blocks strewn over the heap the burst
 * had grown, each keeping its page from malloc_trim: +0.5 MiB of idle RssAnon. So the 1 s
 * tick (worker/sched.c) asks for a new loop thread (loop_renew) and breaks the loop; the
 * old thread exits (its cache goes back to the heap), the heap is trimmed, and a new thread
 * dispatches the same event base: events, timers and connections live in the base, and
 * nothing of the loop is bound to its thread. Without a thread the loop runs here. */
static void run_loop(worker *w)
{
    for (;;) {
        w->loop_renew = 0;
        pthread_t th;
        if (pthread_create(&th, NULL, loop_main, w) == 0) pthread_join(th, NULL);
        else event_base_dispatch(w->base);
        if (!w->loop_renew) return;
        malloc_trim(0);
    }
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
    log_msg(SW_LOG_INFO, "worker_started", "consumer", w->name, "queue", w->cfg->queue, NULL);
    w->stats.consumer = w->name;
    w->stats.queue = w->cfg->queue;
    w->stats.cfg = w->cfg;
    if (*w->cfg->http_addr &&
        !(w->http = http_start(w->base, w->cfg->http_addr, w->cfg->http_max_connections,
                               w->cfg->http_timeout_s, &w->stats)))
        return 1;
    conn_connect(&w->rd);
    conn_connect(&w->cmd);
    if (w->celery_on) {
        conn_connect(&w->res);
        conn_connect(&w->ctl);
        evtimer_add(w->t_ingress, &soon);
        log_msg(SW_LOG_INFO, "celery_ingress_on", "queues", w->cfg->celery_queues, NULL);
    }
    if (w->cfg->schedule) w->schedule = schedule_new(w->base, w->cfg);
    run_loop(w);
    log_msg(SW_LOG_INFO, "worker_stopped", "consumer", w->name, NULL);
    return w->exit_code;
}

static void release_consumer(worker *w)
{
    /* remove our consumer from the group when it holds nothing */
    sw_err err;
    rds *rc = rds_connect(&w->cfg->redis, 2000, &err);
    if (!rc) return;
    for (int i = 0; i < PRIO_COUNT; i++) {
        redisReply *r = rds_command(rc, "XPENDING %s %s - + 1 %s", w->k_streams[i], GROUP, w->name);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 0) {
            redisReply *d =
                rds_command(rc, "XGROUP DELCONSUMER %s %s %s", w->k_streams[i], GROUP, w->name);
            if (d) freeReplyObject(d);
        }
        if (r) freeReplyObject(r);
    }
    rds_free(rc);
}

int worker_free(worker *w)
{
    if (!w) return 0;
    int busy = 0;
    if (w->pool) {
        exec_stop(w->pool);
        busy = exec_free(w->pool, 200) < 0;
    }
    if (busy) return -1; /* a job is still running: the process exits around it */
    if (w->inflight == 0) release_consumer(w);
    conn_free(&w->rd);
    conn_free(&w->cmd);
    if (w->celery_on) {
        conn_free(&w->res);
        conn_free(&w->ctl);
    }
    w->meta_wait = NULL; /* those items are on the in-flight list too */
    while (w->all) wk_untrack_free(w, w->all);
    http_stop(w->http);
    schedule_free(w->schedule);
    if (w->celery_on) {
        cv_free(&w->ingress_keys);
        rds_url_free(&w->res_url);
        rds_url_free(&w->ctl_url);
    }
    struct event *evs[] = {w->pipe_ev,   w->sig_term, w->sig_int,        w->t_promote,
                           w->t_renew,   w->t_reclaim, w->t_watch,         w->t_drain,
                           w->t_finish_retry, w->t_read_retry, w->t_ingress};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i]) event_free(evs[i]);
    event_base_free(w->base);
    close(w->pipefd[0]);
    close(w->pipefd[1]);
    free(w);
    return 0;
}
