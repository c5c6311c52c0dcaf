/* worker/exec.c — executor threads: run jobs off the loop thread.
 *
 * The loop submits items to the run queue; a thread takes one, builds the
 * job_ctx (deadline, cancel flag, per-thread resources, memo access), runs the
 * job type, turns the outcome into succeeded / retry (backoff with full jitter) /
 * dead, and moves the item to the done queue. The first item into an empty done
 * queue writes one byte to the loop's pipe, so a burst of completions costs one
 * wake-up. The memo write-through uses a per-thread blocking Redis connection.
 * Between jobs a thread may sweep store orphans (gc_between_jobs). */
#include "worker/exec.h"

#include <errno.h>
#include <hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/redact.h"
#include "common/rds.h"
#include "common/store.h"
#include "common/xmalloc.h"
#include "worker/enqueue.h"
#include "worker/jobproc.h"
#include "worker/scripts.h"

#define GC_BUDGET_MS 5000   /* one sweep between jobs stops after this (checked between requests) */
/* Priorities in the run queue: high, then default, then low, except that every
 * LOW_EVERY-th pick takes the lowest non-empty priority first, so under a steady
 * stream of high jobs default and low ones still get about 1/LOW_EVERY of the
 * threads (docs/queue.md "Priorities"). */
#ifndef LOW_EVERY /* worker/worker_priv.h's, for reads */
#define LOW_EVERY 4
#endif

struct exec_pool {
    const cfg *cfg;
    char consumer[160];  /* this worker's consumer name: memo writes are fenced on it */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item *run_head[PRIO_COUNT], *run_tail[PRIO_COUNT]; /* one FIFO per priority */
    unsigned picks;    /* items taken: every LOW_EVERY-th take serves the lowest first */
    item *done_head, *done_tail;
    int running;       /* items on threads */
    int stopping;
    int notify_fd;
    int nthreads;
    int exited;        /* threads that returned */
    pthread_t *threads;
    _Atomic int64_t gc_next_ms;  /* job_now_ms() before which no thread sweeps the store */
};

typedef struct thread_state {
    job_thread jt;     /* first: job_ctx.thread points here */
    exec_pool *pool;
    rds *rc;  /* memo writes, lazily connected */
    bool ran_process;  /* a job of this thread ran in a job process (worker/jobproc.h) */
} thread_state;

char *err_json(const sw_err *e)
{
    json_t *o = json_pack("{s:s,s:s,s:b}", "code", sw_code_name(e->code), "message", e->msg,
                          "retryable", e->retryable);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) abort();
    return s;
}

void item_free(item *it)
{
    if (!it) return;
    free(it->raw);
    payload_free(&it->req);
    json_decref(it->memo);
    free(it->data);
    free(it->meta);
    free(it);
}

static uint64_t rnd64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != sizeof v) v = (uint64_t)time(NULL) * 2654435761u;
    return v;
}

void item_fail(item *it, const cfg *c, const sw_err *e)
{
    it->err = *e;
    free(it->data);
    it->data = err_json(e);
    if (e->retryable && it->attempt < it->max_attempts) {
        /* full jitter: uniform in [0, min(cap, base * 2^(attempt-1))] */
        int64_t ceil_ms = c->retry_base_ms;
        for (int i = 1; i < it->attempt && ceil_ms < c->retry_max_ms; i++) ceil_ms *= 2;
        if (ceil_ms > c->retry_max_ms) ceil_ms = c->retry_max_ms;
        it->delay_ms = (int64_t)(rnd64() % (uint64_t)(ceil_ms + 1));
        it->outcome = OUT_RETRY;
        /* the failed event says when and within which cap the retry comes */
        json_t *o = json_pack("{s:s,s:s,s:b,s:I,s:I}", "code", sw_code_name(e->code), "message",
                              e->msg, "retryable", 1, "retry_in_ms", (json_int_t)it->delay_ms,
                              "retry_cap_ms", (json_int_t)ceil_ms);
        free(it->data);
        it->data = json_dumps(o, JSON_COMPACT);
        json_decref(o);
    } else {
        it->outcome = OUT_DEAD;
    }
}

/* ---- memo ------------------------------------------------------------- */

static const char *memo_get(job_ctx *ctx, const char *name)
{
    item *it = ctx->worker_priv;
    return json_string_value(json_object_get(it->memo, name));
}

static int memo_set(job_ctx *ctx, const char *name, const char *value, sw_err *err)
{
    item *it = ctx->worker_priv;
    thread_state *ts = (thread_state *)ctx->thread;
    char key[256], field[96];
    for (int tries = 0; tries < 2; tries++) {
        if (!ts->rc) {
            ts->rc = rds_connect(&ts->pool->cfg->redis, 5000, err);
            if (!ts->rc) return -1;
        }
        rds_job_key(ts->pool->cfg, it->req.id, key, sizeof key);
        snprintf(field, sizeof field, "m:%s", name);
        /* fenced like a finish: only while this worker still owns this delivery */
        redisReply *r = rds_command(
            ts->rc,
            "EVAL %s 1 %s %s %s %s %s",
            "local h = redis.call('HMGET', KEYS[1], 'worker', 'entry', 'status')\n"
            "if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] or h[3] ~= 'running' then return -1 end\n"
            "redis.call('HSET', KEYS[1], ARGV[3], ARGV[4]) return 1",
            key, ts->pool->consumer, it->entry, field, value);
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer < 0) {
            freeReplyObject(r);
            atomic_store(&it->cancel, 1);
            return sw_errc(err, SW_E_INTERNAL, "lease lost before recording job memo '%s'", name);
        }
        if (r && r->type != REDIS_REPLY_ERROR) {
            freeReplyObject(r);
            if (!it->memo) it->memo = json_object();
            json_object_set_new(it->memo, name, json_string(value));
            return 0;
        }
        if (r) freeReplyObject(r);
        rds_free(ts->rc);
        ts->rc = NULL;
    }
    return sw_errc(err, SW_E_INTERNAL, "cannot record job memo '%s' in Redis", name);
}

/* job_ctx.enqueue (the sweep job): worker/enqueue.c on this thread's connection. */
static int enqueue(job_ctx *ctx, const char *payload, sw_err *err)
{
    thread_state *ts = (thread_state *)ctx->thread;
    if (!ts->rc && !(ts->rc = rds_connect(&ts->pool->cfg->redis, 5000, err))) return -1;
    int rc = enq_payload(ts->rc, ts->pool->cfg, payload, NULL, NULL, NULL, err);
    if (rc < 0 && ts->rc->err) {
        rds_free(ts->rc);
        ts->rc = NULL;
    }
    return rc;
}

/* True when this worker knows it no longer owns the delivery: the renewal said so
 * (cancel flag), or the job hash, read now, names another worker or entry or is no
 * longer running. Unknown (Redis unreachable) is false: the caller goes on as before. */
static bool lease_lost(thread_state *ts, item *it)
{
    /* the flag alone says nothing when a producer cancelled: ask the hash */
    if (atomic_load(&it->cancel) && !atomic_load(&it->cancel_req)) return true;
    sw_err e;
    if (!ts->rc && !(ts->rc = rds_connect(&ts->pool->cfg->redis, 5000, &e))) return false;
    char key[256];
    rds_job_key(ts->pool->cfg, it->req.id, key, sizeof key);
    redisReply *r = rds_command(ts->rc, "HMGET %s worker entry status", key);
    bool lost = false;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        redisReply **v = r->element;
        lost = v[0]->type != REDIS_REPLY_STRING || strcmp(v[0]->str, ts->pool->consumer) != 0 ||
               v[1]->type != REDIS_REPLY_STRING || strcmp(v[1]->str, it->entry) != 0 ||
               v[2]->type != REDIS_REPLY_STRING || strcmp(v[2]->str, "running") != 0;
    } else if (!r) {
        rds_free(ts->rc);
        ts->rc = NULL;
    }
    if (r) freeReplyObject(r);
    return lost;
}

/* ---- progress ---------------------------------------------------------- */

/* job_ctx.progress: at most one `progress` event a second per job (docs/producers.md),
 * written from this thread on its own connection (a blocking round trip, once a
 * second, is nothing next to the archive I/O that reports it). Best effort: a
 * failure loses one event, never the job. */
static void progress(job_ctx *ctx, int64_t bytes, int64_t entries)
{
    item *it = ctx->worker_priv;
    thread_state *ts = (thread_state *)ctx->thread;
    int64_t now = job_now_ms();
    if (it->progress_ms && now - it->progress_ms < 1000) return;
    it->progress_ms = now;
    sw_err e;
    if (!ts->rc && !(ts->rc = rds_connect(&ts->pool->cfg->redis, 5000, &e))) return;
    char key[256], data[96], attempt[16];
    rds_key(ts->pool->cfg, "events", key, sizeof key);
    if (entries >= 0)
        snprintf(data, sizeof data, "{\"bytes\":%lld,\"entries\":%lld}", (long long)bytes,
                 (long long)entries);
    else
        snprintf(data, sizeof data, "{\"bytes\":%lld,\"entries\":null}", (long long)bytes);
    snprintf(attempt, sizeof attempt, "%d", it->attempt);
    const char *argv[] = {"EVAL", scr_source(SCR_PROGRESS), "1", key, it->req.id, it->req.type,
                          attempt, data, ts->pool->consumer};
    redisReply *r = rds_command_argv(ts->rc, 9, argv, NULL);
    if (!r) {
        rds_free(ts->rc);
        ts->rc = NULL;
    }
    if (r) freeReplyObject(r);
}

/* ---- running one item -------------------------------------------------- */

/* A producer cancelled the job (worker/lua/cancel.lua): whatever the attempt did
 * it ends `cancelled`, after the same undo as a job that ends dead. */
static void set_cancelled(item *it, const char *msg)
{
    sw_errf(&it->err, SW_E_INTERNAL, false, "%s", msg);
    free(it->data);
    char buf[160];
    snprintf(buf, sizeof buf, "{\"code\":\"cancelled\",\"message\":\"%s\",\"retryable\":false}",
             msg);
    it->data = xstrdup(buf);
    it->outcome = OUT_CANCEL;
}

static void run_item(thread_state *ts, item *it)
{
    const cfg *c = ts->pool->cfg;
    int timeout_s = it->req.timeout_s ? it->req.timeout_s : c->default_timeout_s;
    job_ctx ctx = {
        .cfg = c,
        .req = &it->req,
        .attempt = it->attempt,
        .deadline_ms = job_now_ms() + (int64_t)timeout_s * 1000,
        .cancel = &it->cancel,
        .thread = (job_thread *)ts, /* job_thread is the first member */
        .memo_get = memo_get,
        .memo_set = memo_set,
        .enqueue = enqueue,
        .progress = progress,
        .worker_priv = it,
    };
    sw_err err;
    sw_err_clear(&err);
    /* Secrets of this payload (docs/operations.md "Secrets"): nothing a job returns or says may carry
     * them on to the job hash, events, Celery results or logs. Results are redacted
     * by name and both results and messages scrubbed of the secret values. */
    redact_values secrets;
    redact_values_collect(it->req.args, &secrets);
    it->started_ms = job_now_ms();
    /* The return value decides, never err.code: a lower layer may have filled err for an
     * attempt it then retried with success (an S3 503 retried, a 412 adopted), and
     * reading that stale code failed jobs that had succeeded (bench/drills store-faults). */
    bool ran = false, failed = false;
    metrics_job_started(it->entry);
    if (atomic_load(&it->cancel_req)) {
        set_cancelled(it, "cancelled before it started");
    } else if (it->poison) {
        sw_errf(&err, SW_E_INTERNAL, false, "delivered %d times without finishing (poison)",
                it->deliveries);
        failed = true;
    } else {
        json_t *result = NULL;
        ran = true;
        bool proc = jobproc_wanted(&it->req);
        ts->ran_process |= proc;
        int rc = proc ? jobproc_run(&ctx, JP_RUN, it->memo, &result, &err)
                      : it->type->run(&ctx, &result, &err);
        if (rc == 0) {
            if (!result) result = json_object();
            json_t *shown = redact_json(result);
            redact_json_values(shown, &secrets);
            free(it->data);
            it->data = json_dumps(shown, JSON_COMPACT | JSON_ENCODE_ANY);
            json_decref(shown);
            metrics_job_result(it->type->name, result);
            json_decref(result);
            it->outcome = OUT_SUCCEEDED;
        } else {
            failed = true;
            json_decref(result);
            if (err.code == SW_OK) sw_errc(&err, SW_E_INTERNAL, "job failed without a reason");
            if (job_now_ms() >= ctx.deadline_ms && err.code != SW_E_TIMEOUT)
                sw_errc(&err, SW_E_TIMEOUT, "job exceeded its %d s timeout (%s)", timeout_s,
                        sw_code_name(err.code));
        }
    }
    if (failed) {
        redact_text_values(err.msg, sizeof err.msg, &secrets);
        item_fail(it, c, &err);
        /* stopped at a checkpoint because a producer cancelled it: undo like dead */
        if (atomic_load(&it->cancel_req) && it->outcome != OUT_CANCEL)
            set_cancelled(it, "cancelled while running");
    }
    bool undo = it->outcome == OUT_DEAD || (it->outcome == OUT_CANCEL && ran);
    /* A job about to end dead may need to undo (a restore rolls its port back);
     * that undo is retried until it succeeds or the worker stops. Not when the lease
     * is known lost: another worker owns the job now (its finish would be fenced out
     * anyway), and undoing here could roll back that worker's successful restore
     * (docs/store.md "Writes of a stale attempt"). */
    if (undo && it->type && it->type->on_dead && lease_lost(ts, it)) {
        log_msg(SW_LOG_WARN, "on_dead_skipped", "job", it->req.id, "reason", "lease lost", NULL);
    } else if (undo && it->type && it->type->on_dead) {
        int64_t backoff = 200;
        sw_err e2;
        while ((jobproc_wanted(&it->req) ? jobproc_run(&ctx, JP_ON_DEAD, it->memo, NULL, &e2)
                                         : it->type->on_dead(&ctx, &e2)) < 0) {
            log_line l;
            log_begin(&l, SW_LOG_WARN, "on_dead_retry");
            log_str(&l, "job", it->req.id);
            log_str(&l, "code", sw_code_name(e2.code));
            redact_text_values(e2.msg, sizeof e2.msg, &secrets);
            log_str(&l, "error", e2.msg);
            log_end(&l);
            if (atomic_load(&it->cancel) && !atomic_load(&it->cancel_req)) {
                it->outcome = OUT_ABANDON; /* leave pending: another worker redoes it */
                break;
            }
            struct timespec d = {backoff / 1000, (backoff % 1000) * 1000000L};
            nanosleep(&d, NULL);
            if (backoff < 5000) backoff *= 2;
        }
    }
    it->duration_ms = job_now_ms() - it->started_ms;
    redact_values_free(&secrets);
}

/* Store orphans (temp files, multipart uploads of killed writers; docs/store.md
 * "Orphans") are swept here, not in a timer of the loop: only a thread that ran a job in
 * a job process does it, in a job process of its own (worker/jobproc.h: the daemon never
 * opens the store), at most once per grace period per process (one thread claims
 * the slot), for the tenant of the job it just ran, after that job's outcome went
 * back to the loop, within GC_BUDGET_MS. Replicas sweeping the same prefix are
 * harmless: removing a temp file or aborting an upload twice is a no-op. */
static void gc_between_jobs(thread_state *ts, const char *tenant)
{
    exec_pool *p = ts->pool;
    int64_t now = job_now_ms(), next = atomic_load(&p->gc_next_ms);
    if (!ts->ran_process || now < next) return;
    int64_t grace_s = p->cfg->store_orphan_grace_s;
    if (!atomic_compare_exchange_strong(&p->gc_next_ms, &next, now + grace_s * 1000)) return;
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%s/", tenant);
    jobproc_gc(p->cfg, prefix, GC_BUDGET_MS); /* logs its store_gc line */
}

/* The queue to take from (under the mutex), or -1 when all are empty. */
static int pick_queue(exec_pool *p)
{
    int q = -1;
    if (++p->picks % LOW_EVERY == 0) {
        for (int i = PRIO_COUNT - 1; i >= 0 && q < 0; i--)
            if (p->run_head[i]) q = i;
    } else {
        for (int i = 0; i < PRIO_COUNT && q < 0; i++)
            if (p->run_head[i]) q = i;
    }
    if (q < 0) p->picks--; /* nothing taken: not a pick */
    return q;
}

static void *thread_main(void *arg)
{
    thread_state *ts = arg;
    exec_pool *p = ts->pool;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int q = -1;
        while (!p->stopping && (q = pick_queue(p)) < 0) pthread_cond_wait(&p->cv, &p->mu);
        item *it = p->stopping ? NULL : p->run_head[q];
        if (!it) { /* stopping: queued items stay with the loop, which owns them */
            p->exited++;
            pthread_mutex_unlock(&p->mu);
            break;
        }
        p->run_head[q] = it->next;
        if (!p->run_head[q]) p->run_tail[q] = NULL;
        it->next = NULL;
        it->state = IT_RUNNING;
        p->running++;
        pthread_mutex_unlock(&p->mu);

        run_item(ts, it);
        char tenant[64];
        snprintf(tenant, sizeof tenant, "%s", it->req.tenant_id);

        pthread_mutex_lock(&p->mu);
        p->running--;
        it->state = IT_DONE;
        int was_empty = p->done_head == NULL;
        if (p->done_tail) p->done_tail->next = it;
        else p->done_head = it;
        p->done_tail = it;
        bool stopping = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (was_empty) {
            char b = 1;
            ssize_t w = write(p->notify_fd, &b, 1);
            (void)w; /* a full pipe already means "wake up" */
        }
        if (*tenant && !stopping) gc_between_jobs(ts, tenant);
    }
    job_thread_free(&ts->jt);
    if (ts->rc) rds_free(ts->rc);
    free(ts);
    return NULL;
}

exec_pool *exec_new(const cfg *c, const char *consumer, int n, int notify_fd)
{
    exec_pool *p = xcalloc(1, sizeof *p);
    p->cfg = c;
    snprintf(p->consumer, sizeof p->consumer, "%s", consumer);
    p->notify_fd = notify_fd;
    p->nthreads = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = xcalloc((size_t)n, sizeof *p->threads);
    for (int i = 0; i < n; i++) {
        thread_state *ts = xcalloc(1, sizeof *ts);
        ts->pool = p;
        if (pthread_create(&p->threads[i], NULL, thread_main, ts) != 0) {
            free(ts);
            p->nthreads = i;
            exec_stop(p);
            exec_free(p, 1000);
            return NULL;
        }
    }
    return p;
}

void exec_submit(exec_pool *p, item *list)
{
    if (!list) return;
    int n = 0;
    pthread_mutex_lock(&p->mu);
    for (item *it = list, *nx; it; it = nx) {
        nx = it->next;
        it->next = NULL;
        it->state = IT_QUEUED;
        int q = it->sidx >= 0 && it->sidx < PRIO_COUNT ? it->sidx : PRIO_DEFAULT;
        if (p->run_tail[q]) p->run_tail[q]->next = it;
        else p->run_head[q] = it;
        p->run_tail[q] = it;
        n++;
    }
    if (n > 1) pthread_cond_broadcast(&p->cv);
    else pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

item *exec_take_done(exec_pool *p)
{
    pthread_mutex_lock(&p->mu);
    item *h = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    return h;
}

item *exec_take_queued(exec_pool *p)
{
    item *h = NULL, *t = NULL;
    pthread_mutex_lock(&p->mu);
    for (int q = 0; q < PRIO_COUNT; q++) {
        if (!p->run_head[q]) continue;
        if (t) t->next = p->run_head[q];
        else h = p->run_head[q];
        t = p->run_tail[q];
        p->run_head[q] = p->run_tail[q] = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    return h;
}

int exec_busy(exec_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->running;
    for (int q = 0; q < PRIO_COUNT; q++)
        for (item *it = p->run_head[q]; it; it = it->next) n++;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void exec_stop(exec_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

int exec_free(exec_pool *p, int wait_ms)
{
    if (!p) return 0;
    int64_t until = job_now_ms() + wait_ms;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int exited = p->exited;
        pthread_mutex_unlock(&p->mu);
        if (exited >= p->nthreads) break;
        if (job_now_ms() >= until) return -1;
        struct timespec d = {0, 5000000L};
        nanosleep(&d, NULL);
    }
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    /* items still on the done or run lists belong to the worker's in-flight list,
     * which frees them */
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
    return 0;
}
