/* worker/schedule.c — the lifecycle scheduler (worker/schedule.h).
 *
 * Leadership (two layers, docs/lifecycle.md "Scheduler"):
 *   1. A lock  snapworker:{Q}:schedule:lock = "<epoch>:<replica name>"  with a TTL
 *      (SNAPWORKER_SCHEDULE_LOCK_TTL_S), taken with SET PX when free; the epoch comes from
 *      INCR snapworker:{Q}:schedule:epoch, so every holder ever has a distinct value (the
 *      fencing token). The holder renews it every TTL/3; a replica that dies stops renewing
 *      and another takes over within one TTL.
 *   2. Every enqueue of the leader is the enqueue script with the token as its fence
 *      (worker/enqueue.h): it adds nothing unless the lock still holds exactly this token, so
 *      a leader paused past its TTL (GC, SIGSTOP, a slow disk) cannot enqueue once resumed.
 *   And the ids are deterministic (sweep:{tenant}:{epoch_s / period}): even two enqueues of
 *   one period add one job, since the script skips an id whose job hash exists.
 *
 * Why blocking Redis calls on the loop: a tick is three short scripts at most, each with a
 * 1 s timeout; after a failure the scheduler waits 5 s before it tries again, so a Redis
 * that is down costs the worker's loop at most ~1 s every 5 s (its own connections are down
 * then anyway). The async machinery of worker/conn.c is tied to struct worker, and
 * `snapworker schedule` has no worker. */
#include "worker/schedule.h"

#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "common/rds.h"
#include "common/xmalloc.h"
#include "worker/enqueue.h"

#define CALL_TIMEOUT_MS 1000
#define BACKOFF_MS 5000

/* KEYS[1] lock, KEYS[2] epoch. ARGV[1] replica name, ARGV[2] ttl ms, ARGV[3] the value this
 * replica holds ("" = none). Reply: the lock value when this replica leads (renewed or just
 * taken), nil when another one does. */
static const char LUA_LEAD[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then\n"
    "  if ARGV[3] ~= '' and v == ARGV[3] then\n"
    "    redis.call('PEXPIRE', KEYS[1], ARGV[2]) return v\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "local nv = tostring(redis.call('INCR', KEYS[2])) .. ':' .. ARGV[1]\n"
    "redis.call('SET', KEYS[1], nv, 'PX', ARGV[2])\n"
    "return nv\n";

/* KEYS[1] lock, ARGV[1] the value: compare-and-delete. */
static const char LUA_RELEASE[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

struct schedule {
    const cfg *cfg;
    struct event *tick;
    rds *rc;
    char name[160];            /* host:pid:rand */
    char token[200];           /* the lock value while leading, "" otherwise */
    char k_lock[256], k_epoch[256];
    int64_t retry_at_ms;       /* no Redis call before this (backoff) */
    long long sweep_slot, prune_slot; /* last period enqueued as leader, -1 = none */
    int tick_ms;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drop_conn(schedule *s)
{
    if (s->rc) rds_free(s->rc);
    s->rc = NULL;
    s->retry_at_ms = now_ms() + BACKOFF_MS;
}

/* 1 leading, 0 not, -1 Redis failed. */
static int lead(schedule *s)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", s->cfg->schedule_lock_ttl_s * 1000);
    const char *argv[] = {"EVAL", LUA_LEAD, "2", s->k_lock, s->k_epoch, s->name, ttl, s->token};
    redisReply *r = rds_command_argv(s->rc, 8, argv, NULL);
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        log_msg(SW_LOG_WARN, "schedule_redis_failed", "reason",
                !r ? s->rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply",
                NULL);
        if (r) freeReplyObject(r);
        return -1;
    }
    int leading = r->type == REDIS_REPLY_STRING;
    if (leading && strcmp(s->token, r->str) != 0) {
        snprintf(s->token, sizeof s->token, "%s", r->str);
        s->sweep_slot = s->prune_slot = -1;
        log_msg(SW_LOG_INFO, "schedule_leader", "token", s->token, NULL);
    } else if (!leading && s->token[0]) {
        log_msg(SW_LOG_INFO, "schedule_follower", "was", s->token, NULL);
        s->token[0] = '\0';
    }
    freeReplyObject(r);
    return leading;
}

/* Test hook (docs/lifecycle.md "Test hooks"): SNAPWORKER_TEST_STOP_BEFORE_ENQUEUE=TEXT stops
 * the whole process (SIGSTOP, as a VM pause would) right before the leader's fenced enqueue of
 * an id containing TEXT, i.e. after this tick won or renewed the lock, so a test can let
 * another replica take over and SIGCONT this one into its stale enqueue. */
static void test_stop_before_enqueue(const char *id)
{
    const char *t = getenv("SNAPWORKER_TEST_STOP_BEFORE_ENQUEUE");
    if (t && *t && strstr(id, t)) raise(SIGSTOP);
}

/* Enqueue 'type' for every tenant for period 'slot'. 0, or -1 (fence lost or Redis). */
static int enqueue_all(schedule *s, const char *type, long long slot)
{
    char *copy = xstrdup(s->cfg->tenants), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        char id[160];
        snprintf(id, sizeof id, "%s:%s:%lld", type, t, slot);
        json_t *p = json_pack("{s:i,s:s,s:s,s:s,s:{}}", "v", 1, "id", id, "type", type,
                              "tenant_id", t, "args");
        char *text = json_dumps(p, JSON_COMPACT);
        json_decref(p);
        sw_err err;
        bool fenced = false;
        test_stop_before_enqueue(id);
        int a = enq_payload(s->rc, s->cfg, text, s->k_lock, s->token, &fenced, &err);
        free(text);
        if (a < 0) {
            log_msg(SW_LOG_WARN, fenced ? "schedule_fence_lost" : "schedule_enqueue_failed", "job_id",
                    id, "token", s->token, "reason", err.msg, NULL);
            if (fenced) s->token[0] = '\0';
            rc = -1;
        } else if (a == 1) {
            log_msg(SW_LOG_INFO, "schedule_enqueued", "job_id", id, NULL);
        }
    }
    free(copy);
    return rc;
}

static void tick(schedule *s)
{
    if (now_ms() < s->retry_at_ms) return;
    if (!s->rc) {
        sw_err err;
        if (!(s->rc = rds_connect(&s->cfg->redis, CALL_TIMEOUT_MS, &err))) {
            log_msg(SW_LOG_WARN, "schedule_redis_failed", "reason", err.msg, NULL);
            s->retry_at_ms = now_ms() + BACKOFF_MS;
            return;
        }
    }
    int l = lead(s);
    if (l < 0) {
        drop_conn(s);
        return;
    }
    if (l == 0) return;
    long long now = (long long)time(NULL);
    long long sweep = now / s->cfg->schedule_period_s, prune = now / s->cfg->prune_period_s;
    if (sweep != s->sweep_slot) {
        if (enqueue_all(s, "sweep", sweep) == 0) s->sweep_slot = sweep;
        else if (s->rc->err) drop_conn(s);
    }
    if (s->rc && s->token[0] && prune != s->prune_slot) {
        if (enqueue_all(s, "prune", prune) == 0) s->prune_slot = prune;
        else if (s->rc->err) drop_conn(s);
    }
}

static void tick_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    schedule *s = arg;
    tick(s);
    struct timeval tv = {s->tick_ms / 1000, (s->tick_ms % 1000) * 1000};
    evtimer_add(s->tick, &tv);
}

schedule *schedule_new(struct event_base *base, const cfg *c)
{
    schedule *s = xcalloc(1, sizeof *s);
    s->cfg = c;
    s->sweep_slot = s->prune_slot = -1;
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    for (char *p = host; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_') *p = '-';
    unsigned r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = (unsigned)getpid();
    snprintf(s->name, sizeof s->name, "%s:%d:%04x", host, (int)getpid(), r & 0xffff);
    rds_key(c, "schedule:lock", s->k_lock, sizeof s->k_lock);
    rds_key(c, "schedule:epoch", s->k_epoch, sizeof s->k_epoch);
    /* renew well inside the TTL; look at the clock often enough not to skip a period */
    int ms = c->schedule_lock_ttl_s * 1000 / 3;
    if (ms > c->schedule_period_s * 1000 / 4) ms = c->schedule_period_s * 1000 / 4;
    s->tick_ms = ms < 200 ? 200 : ms;
    s->tick = evtimer_new(base, tick_cb, s);
    struct timeval soon = {0, 1000};
    evtimer_add(s->tick, &soon);
    log_msg(SW_LOG_INFO, "schedule_started", "replica", s->name, "tenants", c->tenants, NULL);
    return s;
}

void schedule_free(schedule *s)
{
    if (!s) return;
    if (s->rc && s->token[0]) { /* hand over now rather than after the TTL */
        const char *argv[] = {"EVAL", LUA_RELEASE, "1", s->k_lock, s->token};
        redisReply *r = rds_command_argv(s->rc, 5, argv, NULL);
        if (r) freeReplyObject(r);
    }
    if (s->rc) rds_free(s->rc);
    if (s->tick) event_free(s->tick);
    free(s);
}

static void stop_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    event_base_loopbreak(arg);
}

int schedule_main(const cfg *c)
{
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    if (!base) return 1;
    struct event *term = evsignal_new(base, SIGTERM, stop_cb, base);
    struct event *intr = evsignal_new(base, SIGINT, stop_cb, base);
    event_add(term, NULL);
    event_add(intr, NULL);
    schedule *s = schedule_new(base, c);
    event_base_dispatch(base);
    schedule_free(s);
    event_free(term);
    event_free(intr);
    event_base_free(base);
    log_msg(SW_LOG_INFO, "schedule_stopped", NULL);
    return 0;
}
