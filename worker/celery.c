/* worker/celery.c — Celery compatibility in the worker (docs/celery.md).
 * Owns: the ingress timer (kombu lists -> stream, one script), the mapping of a
 * `celery` stream entry into a job (deferral to its ETA, REVOKED when expired,
 * FAILURE when malformed), result writes to the Celery result backend, which
 * happen before the job's finish script acks it, and Celery's revoke broadcast
 * (a pub/sub connection; each revoked id runs the cancel script). Message parsing
 * and the result meta format are in worker/celery_msg.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/ids.h"
#include "common/log.h"
#include "common/rds.h"
#include "common/xmalloc.h"
#include "worker/worker_priv.h"
#include "worker/celery_msg.h"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Celery results (docs/celery.md) -------------------------------------------
 * A Celery-origin item writes its result meta to the result backend before its
 * finish script acks it, so a crash in between repeats the write (guarded: a
 * ready state is never overwritten) rather than losing it. */


/* Result writes are batched: one script call for up to 256 items, then their
 * finish scripts. A batch that could not be written goes back to the queue. */
static void meta_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    item *batch = ud;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r) log_msg(SW_LOG_WARN, "celery_result_failed", "error", r->str ? r->str : "?", NULL);
        item *last = batch;
        while (last->next) last = last->next;
        last->next = w->meta_wait;
        w->meta_wait = batch;
        if (r) {
            struct timeval tv = {1, 0};
            evtimer_add(w->t_finish_retry, &tv);
        }
        return;
    }
    for (item *it = batch; it;) {
        item *nx = it->next;
        free(it->meta);
        it->meta = NULL;
        wk_queue_finish(w, it);
        it = nx;
    }
    wk_flush_finish(w);
}

/* A result-write call for one meta (the caller adds nothing). */
cmdv wk_meta_cmd(worker *w, const char *task_id, const char *meta)
{
    cmdv v;
    conn_script_begin(&v, SCR_CELERY_RESULT, 1);
    cv_addf(&v, "celery-task-meta-%s", task_id);
    cv_addf(&v, "%d", w->cfg->celery_result_expires_s);
    cv_add(&v, meta);
    return v;
}

/* Send one call writing the metas of 'list' (linked by next, n items). */
static void send_metas(worker *w, item *list, int n, conn_reply_fn fn)
{
    cmdv keys, metas, v;
    cv_init(&keys);
    cv_init(&metas);
    for (item *it = list; it; it = it->next) {
        cv_addf(&keys, "celery-task-meta-%s", it->req.id);
        cv_add(&metas, it->meta);
    }
    conn_script_begin(&v, SCR_CELERY_RESULT, n);
    cv_cat(&v, &keys);
    cv_addf(&v, "%d", w->cfg->celery_result_expires_s);
    cv_cat(&v, &metas);
    cv_free(&keys);
    cv_free(&metas);
    conn_script(&w->res, &v, SCR_CELERY_RESULT, fn, fn ? list : NULL);
}

/* Send queued result writes, batched (the hook's flush). */
static void retry_meta(worker *w)
{
    while (w->meta_wait && w->res.ready) {
        item *batch = w->meta_wait, *tail = batch;
        int n = 1;
        while (tail->next && n < 256) {
            tail = tail->next;
            n++;
        }
        w->meta_wait = tail->next;
        tail->next = NULL;
        send_metas(w, batch, n, meta_cb);
    }
}


void wk_set_meta(item *it, const char *state, const char *result_json, sw_code code,
                     const char *msg, const char *exc_type, const char *exc_module)
{
    free(it->meta);
    it->meta = celery_meta_json(it->req.id, state, result_json, code, msg, exc_type, exc_module);
    it->meta_state = state;
}

/* An expired task (headers.expires passed) is not run: REVOKED, then dead with
 * `timeout`. Checked when the message arrives and again when a deferred one is due.
 * Returns 1 when the item was handled so. */
int wk_celery_expired(worker *w, item *it)
{
    int64_t now = wall_ms();
    if (it->req.celery_expires_ms <= 0 || it->req.celery_expires_ms > now) return 0;
    char msg[96];
    snprintf(msg, sizeof msg, "task expired %lld ms before it could start",
             (long long)(now - it->req.celery_expires_ms));
    if (it->celery) wk_set_meta(it, "REVOKED", NULL, SW_E_TIMEOUT, "expired", NULL, NULL);
    wk_reject(w, it, SW_E_TIMEOUT, msg);
    return 1;
}

/* A delivery of a Celery job that already ended: write its final result again (the
 * write is skipped when a ready state is there), closing the window where a crash
 * came between the job hash and the result. */
void wk_celery_replay(worker *w, item *it, ended_status status, const char *data)
{
    if (!it->celery || !w->res.ready) return;
    char *m;
    if (status == ENDED_CANCELLED) { /* cancelled before it started (cancel.lua) */
        m = celery_meta_json(it->req.id, "REVOKED", NULL, SW_E_INTERNAL, "revoked", NULL, NULL);
    } else if (status == ENDED_SUCCEEDED) {
        m = celery_meta_json(it->req.id, "SUCCESS", data, SW_OK, NULL, NULL, NULL);
    } else {
        json_t *e = json_loads(data, 0, NULL);
        sw_code code = SW_E_INTERNAL;
        sw_code_from_name(json_string_value(json_object_get(e, "code")), &code);
        const char *msg = json_string_value(json_object_get(e, "message"));
        m = celery_meta_json(it->req.id, "FAILURE", NULL, code, msg ? msg : "", NULL, NULL);
        json_decref(e);
    }
    cmdv v = wk_meta_cmd(w, it->req.id, m);
    free(m);
    conn_script(&w->res, &v, SCR_CELERY_RESULT, NULL, NULL);
}

/* STARTED is informational (Celery itself writes it only with task_track_started),
 * so it is written for jobs still running STARTED_AFTER_MS after they were handed to
 * a thread, from the 1 s tick: a burst of quick jobs then costs no extra writes. */
#define STARTED_AFTER_MS 500

static void started_due(worker *w)
{
    if (!w->res.ready) return;
    int64_t now = job_now_ms();
    char started[256];
    snprintf(started, sizeof started, "{\"pid\": %d, \"hostname\": \"%s\"}", (int)getpid(),
             w->name);
    cmdv keys, metas, v;
    cv_init(&keys);
    cv_init(&metas);
    for (item *it = w->all; it && keys.argc < 256; it = it->next_all) {
        if (!it->celery || it->poison || it->started_meta || it->state != IT_RUNNING ||
            now - it->submitted_ms < STARTED_AFTER_MS)
            continue;
        it->started_meta = 1;
        char *m = celery_meta_json(it->req.id, "STARTED", started, SW_OK, NULL, NULL, NULL);
        cv_addf(&keys, "celery-task-meta-%s", it->req.id);
        cv_add(&metas, m);
        free(m);
    }
    if (keys.argc > 0) {
        conn_script_begin(&v, SCR_CELERY_RESULT, keys.argc);
        cv_cat(&v, &keys);
        cv_addf(&v, "%d", w->cfg->celery_result_expires_s);
        cv_cat(&v, &metas);
        conn_script(&w->res, &v, SCR_CELERY_RESULT, NULL, NULL);
    }
    cv_free(&keys);
    cv_free(&metas);
}

/* Result meta for a finished run of a Celery-origin item. */
static void meta_for_outcome(item *it)
{
    if (!it->celery) return;
    switch (it->outcome) {
    case OUT_SUCCEEDED: wk_set_meta(it, "SUCCESS", it->data, SW_OK, NULL, NULL, NULL); break;
    case OUT_RETRY: wk_set_meta(it, "RETRY", NULL, it->err.code, it->err.msg, NULL, NULL); break;
    case OUT_DEAD: wk_set_meta(it, "FAILURE", NULL, it->err.code, it->err.msg, NULL, NULL); break;
    case OUT_CANCEL: wk_set_meta(it, "REVOKED", NULL, SW_E_INTERNAL, "revoked", NULL, NULL); break;
    default: break; /* rejects carry the meta they were given; release/defer write none */
    }
}



/* A Celery message moved into the stream by the ingress: map it (worker/celery_msg.c).
 * Returns 1 when it should start now; 0 when it was rejected (FAILURE or REVOKED
 * result where the task id is known, then the dead stream) or deferred to its ETA. */
int wk_take_celery(worker *w, item *it, const char *raw, size_t len)
{
    celery_msg m;
    sw_err err;
    sw_err_clear(&err);
    memset(&m, 0, sizeof m);
    int rc = celery_parse_map(raw, len, w->cfg->celery_task_map, &m, &err);
    it->celery = 1;
    if (rc < 0 && len > CELERY_MAX_RAW_BYTES) {
        /* refused unread; the id by the ingress script's rule, the dead entry its prefix */
        char id[129], bytes[32];
        bool have = celery_scan_task_id(raw, len, id, sizeof id);
        snprintf(bytes, sizeof bytes, "%zu", len);
        celery_msg_free(&m);
        wk_take_celery_oversize(w, it, raw, len > PAYLOAD_MAX_BYTES ? PAYLOAD_MAX_BYTES : len,
                                bytes, have ? id : NULL);
        return 0;
    }
    if (rc < 0) {
        it->raw = xstrndup(raw, len); /* the dead entry keeps the message as received */
        it->raw_len = len;
        snprintf(it->req.id, sizeof it->req.id, "%s", m.task_id);
        snprintf(it->req.type, sizeof it->req.type, "%s", "celery");
        if (m.task_id[0])
            wk_set_meta(it, "FAILURE", NULL, err.code, m.exc_message[0] ? m.exc_message : err.msg,
                        m.exc_type[0] ? m.exc_type : NULL, m.exc_module[0] ? m.exc_module : NULL);
        wk_reject(w, it, err.code, err.msg);
        celery_msg_free(&m);
        return 0;
    }
    it->raw = m.payload; /* canonical payload, validated by celery_parse */
    it->raw_len = strlen(m.payload);
    m.payload = NULL;
    it->attempt_base = m.retries;
    it->req = m.req; /* parsed and validated by celery_parse: take it */
    memset(&m.req, 0, sizeof m.req);
    if (!(it->type = job_lookup(it->req.type))) {
        wk_set_meta(it, "FAILURE", NULL, SW_E_UNKNOWN_JOB_TYPE, m.task, "NotRegistered",
                    "celery.exceptions");
        wk_reject(w, it, SW_E_UNKNOWN_JOB_TYPE, "unknown task");
        celery_msg_free(&m);
        return 0;
    }
    it->celery = !it->req.celery_ignore_result;
    if (wk_celery_expired(w, it)) {
        celery_msg_free(&m);
        return 0;
    }
    int64_t now = wall_ms();
    if (m.eta_ms > now) {
        it->outcome = OUT_DEFER;
        it->delay_ms = m.eta_ms - now;
        it->attempt = m.retries;
        wk_queue_finish(w, it);
        celery_msg_free(&m);
        return 0;
    }
    celery_msg_free(&m);
    return 1;
}


/* An oversize message, cut by the ingress script (worker/lua/celery_ingress.lua): not parsed. Its
 * task gets FAILURE (InvalidPayload) when the script could read the id, and the kept
 * prefix goes to the dead stream like any malformed message (docs/contract.md §4). */
void wk_take_celery_oversize(worker *w, item *it, const char *prefix, size_t len,
                             const char *bytes, const char *task_id)
{
    it->celery = 1;
    it->raw = xstrndup(prefix, len);
    it->raw_len = len;
    snprintf(it->req.type, sizeof it->req.type, "%s", "celery");
    if (task_id && id_valid_job(task_id)) snprintf(it->req.id, sizeof it->req.id, "%s", task_id);
    char msg[160];
    snprintf(msg, sizeof msg, "celery message is %s bytes, over the %d MiB limit",
             bytes && *bytes ? bytes : "too many", CELERY_MAX_RAW_BYTES >> 20);
    if (it->req.id[0]) wk_set_meta(it, "FAILURE", NULL, SW_E_INVALID_PAYLOAD, msg, NULL, NULL);
    wk_reject(w, it, SW_E_INVALID_PAYLOAD, msg);
}

/* ---- Celery ingress ---------------------------------------------------------
 * Lua cannot block, so the ingress polls: one script pops up to a batch from the
 * kombu lists into the stream; after an empty poll the interval doubles from 1 ms
 * to at most 50 ms (docs/celery.md), which costs about 20 tiny scripts a second idle. */

static void ingress_cb(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    (void)ud;
    w->ingressing = 0;
    long long moved = (r && r->type == REDIS_REPLY_INTEGER) ? r->integer : 0;
    if (r && r->type == REDIS_REPLY_ERROR) log_msg(SW_LOG_WARN, "celery_ingress_failed", "error", r->str, NULL);
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
    conn_script_begin(&v, SCR_CELERY_INGRESS, w->ingress_keys.argc);
    cv_cat(&v, &w->ingress_keys);
    cv_addf(&v, "%d", BATCH_MAX);
    cv_addf(&v, "%d", CELERY_MAX_RAW_BYTES);
    cv_addf(&v, "%d", PAYLOAD_MAX_BYTES); /* what a dead entry keeps of it anyway */
    cv_add(&v, w->ingress_route);
    w->ingressing = 1;
    conn_script(&w->cmd, &v, SCR_CELERY_INGRESS, ingress_cb, NULL);
}

/* ---- Celery control: revoke (docs/celery.md "Revoke") ------------------------------
 * kombu delivers app.control broadcasts by PUBLISH on "/<db>.celery.pidbox"; a connection
 * of its own SUBSCRIBEs there. A revoke that selects this worker runs the cancel script
 * (worker/lua/cancel.lua) for each task id, which is the job id: a job not started never
 * runs, a running one stops at its next checkpoint, and the Celery result becomes REVOKED
 * when the worker drops or ends it. Every replica receives the broadcast and cancels; the
 * script is idempotent, so that costs one "ended" reply per extra replica. Pub/sub keeps
 * nothing: a revoke published while no replica is subscribed is lost. */

static void revoke_cb(void *owner, redisReply *r, void *ud)
{
    (void)owner;
    char *id = ud;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING)
        log_msg(SW_LOG_INFO, "celery_revoked", "job", id, "result", r->element[0]->str,
                "previous", r->element[1]->str, NULL);
    else /* the operator can still run `snapworker cancel ID` */
        log_msg(SW_LOG_WARN, "celery_revoke_failed", "job", id, "error",
                r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply from Redis", NULL);
    free(id);
}

/* The cancel script for one task id, on the queue's command connection. */
static void revoke_one(worker *w, const char *id)
{
    if (!id_valid_job(id)) return; /* the parser checked it; it becomes a key here */
    cmdv v;
    conn_script_begin(&v, SCR_CANCEL, 6);
    cv_addcat(&v, w->job_prefix, id);
    cv_add(&v, w->k_delayed);
    cv_add(&v, w->k_events);
    for (int i = 0; i < PRIO_COUNT; i++) cv_add(&v, w->k_streams[i]); /* high, default, low */
    cv_add(&v, id);
    cv_addf(&v, "%d", w->cfg->job_ttl_s);
    conn_script(&w->cmd, &v, SCR_CANCEL, revoke_cb, xstrdup(id));
}

/* One pidbox broadcast. Anything but a revoke for us (ping, inspect, another worker's
 * destination) is ignored; a malformed one is logged and the subscription goes on. */
static void ctl_message(conn *c, void *owner, redisReply *r)
{
    (void)c;
    worker *w = owner;
    redisReply *data = r->element[2];
    if (data->type != REDIS_REPLY_STRING) return;
    celery_pidbox p;
    sw_err err;
    if (celery_pidbox_parse(data->str, data->len, w->celery_node, &p, &err) < 0) {
        log_msg(SW_LOG_WARN, "celery_control_invalid", "method", p.method[0] ? p.method : NULL,
                "error", err.msg, NULL);
    } else if (!p.ids) {
        log_msg(SW_LOG_DEBUG, "celery_control_ignored", "method", p.method,
                "reason", p.for_us ? "not a revoke" : "addressed to other workers", NULL);
    } else {
        char n[16], bad[16];
        snprintf(n, sizeof n, "%d", p.nids);
        snprintf(bad, sizeof bad, "%d", p.invalid);
        log_msg(p.invalid ? SW_LOG_WARN : SW_LOG_INFO, "celery_revoke", "tasks", n,
                "invalid_ids_ignored", p.invalid ? bad : NULL, "terminate",
                p.terminate ? "true" : "false", NULL);
        for (int i = 0; i < p.nids; i++) revoke_one(w, p.ids[i]);
    }
    celery_pidbox_free(&p);
}

static void ctl_subscribed(void *owner, redisReply *r, void *ud)
{
    worker *w = owner;
    (void)ud;
    if (!r) return; /* lost: the next connect subscribes again */
    if (r->type == REDIS_REPLY_ARRAY)
        log_msg(SW_LOG_INFO, "celery_control_subscribed", "channel", w->ctl_channel, NULL);
    else
        log_msg(SW_LOG_WARN, "celery_control_subscribe_failed", "channel", w->ctl_channel,
                "error", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply", NULL);
}

/* The control connection (re)connected: subscribe (what was published meanwhile is gone). */
static void ctl_ready(conn *c, void *owner)
{
    worker *w = owner;
    cmdv v;
    cv_init(&v);
    cv_add(&v, "SUBSCRIBE");
    cv_add(&v, w->ctl_channel);
    conn_send(c, &v, ctl_subscribed, NULL);
}

/* Unlike the queue's connections, a lost subscription leaves nothing to re-read. */
static void ctl_lost(conn *c, void *owner, const char *why, int was_ready)
{
    worker *w = owner;
    if (!c->closing && !w->stopping)
        log_msg(was_ready ? SW_LOG_WARN : SW_LOG_DEBUG, "redis_connection_lost", "conn", c->name,
                "reason", why, NULL);
}

static const conn_hooks control_hooks = {
    .on_ready = ctl_ready, .on_lost = ctl_lost, .on_message = ctl_message};

/* A subscribed connection is silent while nobody publishes, so a dead server would go
 * unnoticed: a PING when nothing is pending lets the watchdog see an overdue reply. */
static void ctl_tick(worker *w)
{
    conn_watch(&w->ctl);
    if (!w->ctl.ready || rtr_pending(w->ctl.tr) > 0) return;
    cmdv v;
    cv_init(&v);
    cv_add(&v, "PING");
    conn_send(&w->ctl, &v, NULL, NULL);
}

/* The channel kombu publishes broadcasts on, and the name a destination list must hold. */
static int ctl_setup(worker *w)
{
    char err[200];
    if (rds_url_parse(w->cfg->celery_broker_url, &w->ctl_url, err, sizeof err) < 0) return -1;
    snprintf(w->ctl_channel, sizeof w->ctl_channel, "/%d.celery.pidbox", w->ctl_url.db);
    size_t host = strcspn(w->name, ":"); /* w->name is host:pid:rand */
    snprintf(w->celery_node, sizeof w->celery_node, "snapworker@%.*s", (int)host, w->name);
    conn_init(&w->ctl, w->base, &w->ctl_url, "celery-control", 0, &control_hooks, w);
    return 0;
}

/* ---- attaching to the worker -------------------------------------------------- */

/* The hook's complete: an item's outcome is known. Its Celery result (if any) goes to
 * the result backend first; meta_cb queues its finish once written. */
static int complete(worker *w, item *it)
{
    meta_for_outcome(it);
    if (!it->meta) return 0;
    it->next = NULL; /* appended: results keep the order of completion */
    item **p = &w->meta_wait;
    while (*p) p = &(*p)->next;
    *p = it;
    return 1;
}

static void flush(worker *w)
{
    if (w->meta_wait) retry_meta(w);
}

static void tick(worker *w)
{
    conn_watch(&w->res);
    ctl_tick(w);
    started_due(w);
}

static const wk_hook celery_hook = {.complete = complete, .flush = flush, .tick = tick};

/* The result backend (re)connected: the writes that waited go out. */
static void results_ready(conn *c, void *owner)
{
    (void)c;
    retry_meta(owner);
}

static const conn_hooks results_hooks = {.on_ready = results_ready, .on_lost = wk_conn_lost};

/* Keys of the ingress script: the stream, then each priority step's list of
 * every queue, lowest step first. */
int wk_celery_setup(worker *w)
{
    const cfg *c = w->cfg;
    char err[200];
    const char *res = *c->celery_result_backend ? c->celery_result_backend : c->celery_broker_url;
    if (rds_url_parse(res, &w->res_url, err, sizeof err) < 0) return -1;
    if (ctl_setup(w) < 0) {
        rds_url_free(&w->res_url);
        return -1;
    }
    cv_init(&w->ingress_keys);
    for (int i = 0; i < PRIO_COUNT; i++) cv_add(&w->ingress_keys, w->k_streams[i]);
    char *sep = celery_unescape(c->celery_priority_sep);
    char *queues = xstrdup(c->celery_queues);
    char **per_queue[64];
    int nq = 0;
    for (char *save = NULL, *q = strtok_r(queues, ",", &save); q && nq < 64; q = strtok_r(NULL, ",", &save)) {
        while (*q == ' ') q++;
        if (*q) per_queue[nq++] = celery_priority_lists(q, sep, c->celery_priority_steps);
    }
    int nroute = 0;
    for (int step = 0;; step++) {
        int any = 0;
        for (int i = 0; i < nq; i++) {
            int len = 0;
            while (per_queue[i][len]) len++;
            if (step < len) {
                cv_add(&w->ingress_keys, per_queue[i][step]);
                /* the step's position in thirds: kombu's 0,3,6,9 -> high high default low;
                 * Onyx's 0..4 (default 2) -> high high default default low */
                if (nroute < (int)sizeof w->ingress_route - 1)
                    w->ingress_route[nroute++] = (char)('0' + step * 3 / len);
                any = 1;
            }
        }
        if (!any) break;
    }
    for (int i = 0; i < nq; i++) celery_strv_free(per_queue[i]);
    w->ingress_route[nroute] = '\0';
    free(queues);
    free(sep);
    w->celery_on = 1;
    conn_init(&w->res, w->base, &w->res_url, "celery-results", 0, &results_hooks, w);
    w->hook = &celery_hook;
    w->t_ingress = evtimer_new(w->base, ingress_timer, w);
    return 0;
}

