/* worker/ready.c — readiness checks on their own thread.
 *
 * Why a thread: a PostgreSQL connect to a host that drops packets waits for its
 * connect_timeout (5 s), longer than a kubelet probe's default 1 s timeout. The checks
 * run here and /readyz answers from the last result (at most READY_INTERVAL_MS old).
 * PostgreSQL and the store are checked only when needed: a queue of noop jobs runs
 * without a database (docs/operations.md "Readiness"). Errors shown are the codes'
 * messages, which never carry a password (common/db.c scrubs it). */
#include "worker/ready.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/db.h"
#include "common/metrics.h"
#include "common/rds.h"
#include "common/store.h"
#include "common/xmalloc.h"

struct ready_probe {
    const cfg *cfg;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    json_t *last;        /* under mu */
    int64_t last_ms;     /* monotonic, under mu */
    rds *rc;    /* probe thread only */
    db *d;
    store *st;
};

static bool wants(const cfg *c, const char *what, int used)
{
    const char *l = c->ready_checks ? c->ready_checks : "auto";
    if (!strcmp(l, "auto")) return !strcmp(what, "redis") || used;
    size_t n = strlen(what);
    for (const char *p = l; (p = strstr(p, what)); p += n)
        if ((p == l || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return true;
    return false;
}

static const char *check_redis(ready_probe *p, char *msg, size_t n)
{
    sw_err e;
    if (!p->rc && !(p->rc = rds_connect(&p->cfg->redis, 1000, &e))) {
        snprintf(msg, n, "%s", e.msg);
        return msg;
    }
    redisReply *r = rds_command(p->rc, "PING");
    bool ok = r && (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING);
    if (!ok) snprintf(msg, n, "%s", r && r->str ? r->str : (p->rc->errstr[0] ? p->rc->errstr : "no reply"));
    if (r) freeReplyObject(r);
    if (!r) {
        rds_free(p->rc);
        p->rc = NULL;
    }
    return ok ? "ok" : msg;
}

static const char *check_pg(ready_probe *p, char *msg, size_t n)
{
    sw_err e;
    sw_err_clear(&e);
    int v = 0;
    if (!p->d) p->d = db_new(p->cfg);
    if (db_schema_version(p->d, &v, &e) == 0) return "ok";
    snprintf(msg, n, "%s: %s", sw_code_name(e.code), e.msg);
    return msg;
}

static const char *check_store(ready_probe *p, char *msg, size_t n)
{
    sw_err e;
    sw_err_clear(&e);
    if (!p->st && !(p->st = store_open(p->cfg, &e))) {
        snprintf(msg, n, "%s: %s", sw_code_name(e.code), e.msg);
        return msg;
    }
    store_info info;
    if (store_head(p->st, "snapworker-readyz-probe", &info, &e) == 0 ||
        e.code == SW_E_SNAPSHOT_NOT_FOUND)
        return "ok";
    snprintf(msg, n, "%s: %s", sw_code_name(e.code), e.msg);
    return msg;
}

static json_t *round_of_checks(ready_probe *p)
{
    metrics_loop lp;
    metrics_loop_read(&lp);
    json_t *checks = json_object();
    char m1[300], m2[300], m3[300];
    const char *reason = NULL;
    const char *r = check_redis(p, m1, sizeof m1);
    json_object_set_new(checks, "redis", json_string(r));
    if (strcmp(r, "ok") != 0) reason = "redis";
    if (wants(p->cfg, "postgres", lp.pg_used)) {
        const char *s = check_pg(p, m2, sizeof m2);
        json_object_set_new(checks, "postgres", json_string(s));
        if (strcmp(s, "ok") != 0 && !reason) reason = "postgres";
    }
    if (wants(p->cfg, "store", lp.store_used)) {
        const char *s = check_store(p, m3, sizeof m3);
        json_object_set_new(checks, "store", json_string(s));
        if (strcmp(s, "ok") != 0 && !reason) reason = "store";
    }
    if (!reason && lp.draining) reason = "draining";
    json_t *o = json_pack("{s:b,s:o}", "ready", reason == NULL, "checks", checks);
    if (reason) {
        const char *detail = json_string_value(json_object_get(checks, reason));
        char *why = xasprintf("%s: %s", reason, detail ? detail : "stopping, running jobs finish");
        json_object_set_new(o, "reason", json_string(why));
        free(why);
    }
    return o;
}

static void *probe_main(void *arg)
{
    ready_probe *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        pthread_mutex_unlock(&p->mu);
        json_t *o = round_of_checks(p);
        pthread_mutex_lock(&p->mu);
        json_decref(p->last);
        p->last = o;
        p->last_ms = metrics_mono_ms();
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += READY_INTERVAL_MS / 1000;
        while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (p->rc) rds_free(p->rc);
    db_free(p->d);
    store_close(p->st);
    return NULL;
}

ready_probe *ready_start(const cfg *c)
{
    ready_probe *p = xcalloc(1, sizeof *p);
    p->cfg = c;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->th, NULL, probe_main, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return NULL;
    }
    return p;
}

void ready_stop(ready_probe *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    json_decref(p->last);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

json_t *ready_get(ready_probe *p)
{
    pthread_mutex_lock(&p->mu);
    json_t *o = p->last ? json_deep_copy(p->last) : NULL;
    int64_t at = p->last_ms;
    pthread_mutex_unlock(&p->mu);
    if (!o) return json_pack("{s:b,s:s}", "ready", 0, "reason", "starting: first checks running");
    metrics_loop lp;
    metrics_loop_read(&lp);
    if (lp.draining && json_is_true(json_object_get(o, "ready"))) {
        json_object_set_new(o, "ready", json_false());
        json_object_set_new(o, "reason", json_string("draining: stopping, running jobs finish"));
    }
    int64_t age = metrics_mono_ms() - at;
    if (age > READY_STALE_MS && json_is_true(json_object_get(o, "ready"))) {
        /* a check hangs (a half-open connection to a server that went away): not ready */
        json_object_set_new(o, "ready", json_false());
        json_object_set_new(o, "reason", json_string("stalled: the last checks did not finish"));
    }
    json_object_set_new(o, "age_ms", json_integer(age));
    return o;
}
