/* worker/sched.c — the worker's timers: promote due delayed jobs, renew the leases
 * of running jobs, reclaim entries idle past the lease (XAUTOCLAIM), and the 1 s watch
 * tick (connection watchdog, cancel poll, gauges, a new loop thread and malloc_trim after
 * work, an attached hook's tick).
 * Owns: timer cadence and the batching of renewals. The scripts themselves are in
 * worker/lua/; what a reclaimed entry becomes is decided by wk_take_entries. */
#include <errno.h>
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

#include <stdatomic.h>

/* ---- timers: promote, renew, reclaim ------------------------------------- */

/* The promote tick sleeps until the next due member, but at most this long: a member
 * parked by a producer (worker/lua/enqueue.lua) or another replica is not known here,
 * and a delayed job must start within ~100 ms of its due time (docs/producers.md). Ten tiny
 * scripts a second cost Redis a few µs each. */
#define PROMOTE_IDLE_MS 90

static void promote_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    (void)ud;
    int64_t next = PROMOTE_IDLE_MS;
    promote_reply p;
    if (scr_promote_reply(r, &p) == 0) {
        w->redis_ms = p.now_ms; /* Redis's clock, for payloads due at run_at_ms */
        w->redis_at_ms = job_now_ms();
        int64_t wait = p.next_due_ms - p.now_ms;
        if (p.moved >= BATCH_MAX) next = 0;
        else if (p.next_due_ms >= 0 && wait < PROMOTE_IDLE_MS) next = wait > 5 ? wait : 5;
    }
    if (w->stopping) return;
    struct timeval tv = {next / 1000, (next % 1000) * 1000};
    evtimer_add(w->t_promote, &tv);
}

void wk_promote_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    if (!w->cmd.ready) {
        promote_cb(w, NULL, NULL);
        return;
    }
    cmdv v;
    conn_script_begin(&v, SCR_PROMOTE, 5);
    cv_add(&v, w->k_delayed);
    for (int i = 0; i < PRIO_COUNT; i++) cv_add(&v, w->k_streams[i]);
    cv_add(&v, w->k_events);
    cv_addf(&v, "%d", BATCH_MAX);
    cv_add(&v, w->job_prefix);
    cv_addf(&v, "%lld", (long long)w->cfg->events_maxlen);
    conn_script(&w->cmd, &v, SCR_PROMOTE, promote_cb, NULL);
}

typedef struct renew_batch {
    int n;
    char (*entries)[48];
    int *sidx;
} renew_batch;

static renew_batch *batch_new(void)
{
    renew_batch *b = xcalloc(1, sizeof *b);
    b->entries = xcalloc(BATCH_MAX, sizeof *b->entries);
    b->sidx = xcalloc(BATCH_MAX, sizeof *b->sidx);
    return b;
}

static void batch_free(renew_batch *b)
{
    free(b->entries);
    free(b->sidx);
    free(b);
}

/* A producer asked to cancel this job: it stops at its next checkpoint and ends
 * `cancelled` (worker/exec.c), or before it starts when still queued here. */
static void cancel_asked(item *it)
{
    if (atomic_exchange(&it->cancel_req, 1)) return;
    atomic_store(&it->cancel, 1);
    log_msg(SW_LOG_INFO, "job_cancel_requested", "job", it->req.id, "entry", it->entry, NULL);
}

static void renew_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    renew_batch *b = ud;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements && (int)i < b->n; i++) {
            renew_result v = scr_renew_result(r, i);
            if (v == RENEW_OK) continue;
            for (item *it = w->all; it; it = it->next_all) {
                if (it->sidx != b->sidx[i] || strcmp(it->entry, b->entries[i]) != 0 ||
                    it->state == IT_FINISHING)
                    continue;
                if (v == RENEW_CANCEL) {
                    cancel_asked(it);
                } else {
                    atomic_store(&it->cancel, 1);
                    log_msg(SW_LOG_WARN, "job_lease_lost", "job", it->req.id, "entry", it->entry, NULL);
                }
            }
        }
    }
    batch_free(b);
}

static void poll_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    renew_batch *b = ud;
    w->polling_cancel = 0;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements && (int)i < b->n; i++) {
        if (!scr_cancel_asked(r, i)) continue;
        for (item *it = w->all; it; it = it->next_all)
            if (it->sidx == b->sidx[i] && strcmp(it->entry, b->entries[i]) == 0 &&
                (it->state == IT_QUEUED || it->state == IT_RUNNING))
                cancel_asked(it);
    }
    batch_free(b);
}

/* Every second: were any of the jobs this worker runs (or holds read ahead)
 * cancelled? One HGET per job in one script; nothing is sent while idle. A hot
 * path of quick jobs pays at most one small call a second. */
static void poll_cancel(worker *w)
{
    if (w->polling_cancel || !w->cmd.ready || !w->all) return;
    renew_batch *b = batch_new();
    cmdv keys;
    cv_init(&keys);
    for (item *it = w->all; it && b->n < BATCH_MAX; it = it->next_all) {
        if ((it->state != IT_QUEUED && it->state != IT_RUNNING) || !it->type ||
            atomic_load(&it->cancel_req))
            continue;
        cv_addcat(&keys, w->job_prefix, it->req.id);
        b->sidx[b->n] = it->sidx;
        snprintf(b->entries[b->n++], 48, "%s", it->entry);
    }
    if (b->n == 0) {
        cv_free(&keys);
        batch_free(b);
        return;
    }
    cmdv v;
    conn_script_begin(&v, SCR_POLL_CANCEL, keys.argc);
    cv_cat(&v, &keys);
    cv_free(&keys);
    w->polling_cancel = 1;
    conn_script(&w->cmd, &v, SCR_POLL_CANCEL, poll_cb, b);
}

void wk_renew_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    if (!w->cmd.ready) return;
    item *it = w->all;
    while (it) {
        renew_batch *b = batch_new();
        cmdv keys, args;
        cv_init(&keys);
        cv_init(&args);
        for (; it && b->n < BATCH_MAX; it = it->next_all) {
            if (it->state == IT_STARTING || it->state == IT_FINISHING || !it->type) continue;
            cv_addcat(&keys, w->job_prefix, it->req.id);
            cv_addcat(&keys, w->lock_prefix, it->req.session_id);
            cv_add(&keys, w->k_streams[it->sidx]);
            cv_add(&args, it->entry);
            cv_add(&args, it->req.id);
            cv_add(&args, it->type->session_lock ? "1" : "0");
            b->sidx[b->n] = it->sidx;
            snprintf(b->entries[b->n++], 48, "%s", it->entry);
        }
        if (b->n == 0) {
            cv_free(&keys);
            cv_free(&args);
            batch_free(b);
            break;
        }
        cmdv v;
        conn_script_begin(&v, SCR_RENEW, keys.argc);
        cv_cat(&v, &keys);
        cv_add(&v, GROUP);
        cv_add(&v, w->name);
        cv_addf(&v, "%d", w->cfg->lease_s * 1000);
        cv_addf(&v, "%d", b->n);
        cv_cat(&v, &args);
        cv_free(&keys);
        cv_free(&args);
        conn_script(&w->cmd, &v, SCR_RENEW, renew_cb, b);
    }
}

static void reclaim_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    int sidx = (int)(intptr_t)ud;
    if (w->reclaiming > 0) w->reclaiming--;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_msg(SW_LOG_WARN, "redis_reclaim_failed", "error", r->str, NULL);
        return;
    }
    snprintf(w->reclaim_cursor[sidx], sizeof w->reclaim_cursor[sidx], "%s",
             r->element[0]->str ? r->element[0]->str : "0-0");
    size_t n = wk_take_entries(w, sidx, r->element[1], 0, NULL, 0, 1);
    metrics_count(MC_RECLAIMED, n);
    if (n > 0)
        log_msg(SW_LOG_INFO, "jobs_reclaimed", "count", "some", "priority", payload_prio_name(sidx),
                NULL);
}

/* XAUTOCLAIM takes one stream: one call per priority stream, each with its cursor. */
void wk_reclaim_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    if (w->stopping || w->reclaiming || !w->cmd.ready) return;
    int cap = wk_capacity(w);
    if (cap <= 0) return;
    for (int i = 0; i < PRIO_COUNT; i++) {
        cmdv v;
        cv_init(&v);
        cv_add(&v, "XAUTOCLAIM");
        cv_add(&v, w->k_streams[i]);
        cv_add(&v, GROUP);
        cv_add(&v, w->name);
        cv_addf(&v, "%d", w->cfg->lease_s * 1000);
        cv_add(&v, w->reclaim_cursor[i]);
        cv_add(&v, "COUNT");
        cv_addf(&v, "%d", cap > BATCH_MAX ? BATCH_MAX : cap);
        w->reclaiming++;
        conn_send(&w->cmd, &v, reclaim_cb, (void *)(intptr_t)i);
    }
}

/* ---- the 1 s watch tick ------------------------------------------------------ */

void wk_watch_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    conn_watch(&w->rd);
    conn_watch(&w->cmd);
    if (w->hook && w->hook->tick) w->hook->tick(w); /* Celery: its connection, STARTED */
    poll_cancel(w);
    if (w->reload_scripts && w->cmd.ready) wk_load_scripts(w);
    /* back to idle after work: give freed heap back to the OS (idle RSS target). The loop
     * stops after this callback; worker.c's run_loop trims the heap and goes on on a new
     * thread, without the old one's cache of freed blocks. */
    uint64_t done = w->stats.succeeded + w->stats.failed + w->stats.dead + w->stats.rejected;
    if (w->inflight == 0 && done != w->trimmed_at && !w->stopping) {
        w->trimmed_at = done;
        w->loop_renew = 1;
        event_base_loopbreak(w->base);
    }
    w->stats.inflight = w->inflight;
    w->stats.redis_up = w->rd.ready && w->cmd.ready;
    w->stats.draining = w->stopping;
    metrics_loop_tick(w->inflight, w->stats.redis_up, w->stopping);
}
