/* worker/sched.c — the worker's timers on Redis: promote due delayed jobs, renew
 * the leases of running jobs, reclaim entries idle past the lease (XAUTOCLAIM).
 * Owns: timer cadence and the batching of renewals. The scripts themselves are in
 * worker/scripts.c; what a reclaimed entry becomes is decided by wk_take_entries. */
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
    wk_script_begin(&v, SCR_PROMOTE, 3);
    cv_add(&v, w->k_delayed);
    cv_add(&v, w->k_stream);
    cv_add(&v, w->k_events);
    cv_addf(&v, "%d", BATCH_MAX);
    cv_add(&v, w->job_prefix);
    cv_addf(&v, "%lld", (long long)w->cfg->events_maxlen);
    wk_send(&w->cmd, &v, 1, SCR_PROMOTE, promote_cb, NULL);
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

void wk_renew_timer(evutil_socket_t fd, short ev, void *arg)
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
        for (; it && b->n < BATCH_MAX; it = it->next_all) {
            if (it->state == IT_STARTING || it->state == IT_FINISHING || !it->type) continue;
            cv_addcat(&keys, w->job_prefix, it->req.id);
            cv_addcat(&keys, w->lock_prefix, it->req.session_id);
            cv_add(&args, it->entry);
            cv_add(&args, it->req.id);
            cv_add(&args, it->type->session_lock ? "1" : "0");
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
        wk_script_begin(&v, SCR_RENEW, 1 + keys.argc);
        cv_add(&v, w->k_stream);
        cv_cat(&v, &keys);
        cv_add(&v, GROUP);
        cv_add(&v, w->name);
        cv_addf(&v, "%d", w->cfg->lease_s * 1000);
        cv_addf(&v, "%d", b->n);
        cv_cat(&v, &args);
        cv_free(&keys);
        cv_free(&args);
        wk_send(&w->cmd, &v, 1, SCR_RENEW, renew_cb, b);
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
    size_t n = wk_take_entries(w, r->element[1], 0, NULL, 0, 1);
    metrics_count(MC_RECLAIMED, n);
    if (n > 0) log_msg(LOG_INFO, "jobs_reclaimed", "count", (n > 0 ? "some" : "0"), NULL);
}

void wk_reclaim_timer(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    worker *w = arg;
    if (w->stopping || w->reclaiming || !w->cmd.ready) return;
    int cap = wk_capacity(w);
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
    wk_send(&w->cmd, &v, 0, 0, reclaim_cb, NULL);
}

