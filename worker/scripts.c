/* worker/scripts.c — the Lua scripts of the queue's state machine, as the worker sends them.
 * Owns: which file each script is (worker/lua/<name>.lua, embedded at build time by
 * tools/embed), the text sent for it, and the SHA1s Redis reported for those texts.
 * The scripts themselves, each opening with its KEYS/ARGV/reply contract, are the files;
 * docs/queue.md tells the life of a job through them.
 *
 * Job hash  snapworker:{Q}:job:<id>
 *   status       queued | running | retrying | succeeded | dead | cancelled
 *   type, attempt (1-based), worker (consumer name), entry (stream id being run),
 *   lease_until (ms, Redis TIME; meaningful while running), deliveries (starts,
 *   incl. reclaims), result / error (JSON), updated_ms, m:<name> (job memo)
 * Whether a job holds its session lock follows from its type (job_type.session_lock),
 * so the worker passes that flag to every script instead of storing it.
 *
 * Cost model (measured, docs/benchmarks.md): on the hot path Redis spends most of
 * its time moving strings across the Lua boundary (each KEYS/ARGV element, each
 * redis.call argument and each reply element costs ~0.15-0.3 us), so the scripts
 * keep per-job arguments, hash fields and reply elements few and flat.
 *
 * The prelude (worker/lua/prelude.lua: TIME, emit, hgetall, ...) is its own file,
 * prepended at load time to every script whose header names it, rather than copied
 * into each: one text to review. The composed text is built once and is exactly what
 * SCRIPT LOAD hashes and EVAL sends, so the SHA is always that of the text sent. */
#include "worker/scripts.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/embedded.h"
#include "common/xmalloc.h"

/* The script's file is worker/lua/<name>.lua. */
static const char *const names[SCR_COUNT] = {
    [SCR_START] = "start",
    [SCR_FINISH] = "finish",
    [SCR_PROMOTE] = "promote",
    [SCR_RENEW] = "renew",
    [SCR_REQUEUE_DEAD] = "requeue_dead",
    [SCR_CELERY_INGRESS] = "celery_ingress",
    [SCR_CELERY_RESULT] = "celery_result",
    [SCR_POLL_CANCEL] = "poll_cancel",
    [SCR_PROGRESS] = "progress",
    [SCR_ENQUEUE] = "enqueue",
    [SCR_CANCEL] = "cancel",
};

#define PRELUDE_FILE "worker/lua/prelude.lua"
#define PRELUDE_MARK "\n-- prelude: " PRELUDE_FILE "\n"

static const char *texts[SCR_COUNT]; /* composed once (compose()), never freed */
static pthread_once_t composed = PTHREAD_ONCE_INIT;

/* Read from the event loop and from executor threads (progress), hence pthread_once. */
static void compose(void)
{
    size_t plen = 0;
    const char *prelude = embedded_get(PRELUDE_FILE, &plen);
    for (int i = 0; i < SCR_COUNT; i++) {
        char path[64];
        size_t len = 0;
        snprintf(path, sizeof path, "worker/lua/%s.lua", names[i]);
        const char *body = embedded_get(path, &len);
        if (!body || (strstr(body, PRELUDE_MARK) && !prelude)) {
            texts[i] = "return redis.error_reply('ERR script not embedded')";
        } else if (strstr(body, PRELUDE_MARK)) {
            char *t = xmalloc(plen + len + 1);
            memcpy(t, prelude, plen);
            memcpy(t + plen, body, len + 1);
            texts[i] = t;
        } else {
            texts[i] = body;
        }
    }
}

const char *scr_source(scr_id id)
{
    pthread_once(&composed, compose);
    return texts[id];
}

const char *scr_name(scr_id id) { return names[id]; }

/* SHA1s as Redis reported them (SCRIPT LOAD on connect). Not computed here: the
 * first libcrypto call maps ~4 MiB (docs/decisions.md), and Redis knows the hash. */
static char shas[SCR_COUNT][41];

const char *scr_sha(scr_id id) { return shas[id][0] ? shas[id] : NULL; }

int scr_learn_sha(scr_id id, const char *sha, size_t len)
{
    if (id < 0 || id >= SCR_COUNT || len != 40) return -1;
    for (size_t i = 0; i < len; i++)
        if (!((sha[i] >= '0' && sha[i] <= '9') || (sha[i] >= 'a' && sha[i] <= 'f'))) return -1;
    memcpy(shas[id], sha, 40);
    shas[id][40] = '\0';
    return 0;
}

/* ---- the scripts' words: one name table each --------------------------------- */

static const char *const outcome_args[OUT_COUNT] = {
    [OUT_SUCCEEDED] = "succeeded", [OUT_RETRY] = "retry",       [OUT_DEAD] = "dead",
    [OUT_REJECT] = "reject",       [OUT_RELEASE] = "release",   [OUT_DEFER] = "defer",
    [OUT_DEFER_AT] = "defer_at",   [OUT_CANCEL] = "cancel",
};

const char *scr_outcome_arg(job_outcome o)
{
    return o >= 0 && o < OUT_COUNT ? outcome_args[o] : NULL;
}

static const char *const start_actions[START_COUNT] = {
    [START_RUN] = "run",   [START_POISON] = "poison", [START_ENDED] = "ended",
    [START_SKIP] = "skip", [START_DUP] = "dup",       [START_BUSY] = "busy",
};

const char *scr_start_action_name(start_action a)
{
    return a >= 0 && a < START_COUNT ? start_actions[a] : "?";
}

static int start_action_of(const char *s, start_action *out)
{
    for (int a = 0; a < START_COUNT; a++)
        if (strcmp(s, start_actions[a]) == 0) {
            *out = (start_action)a;
            return 0;
        }
    return -1;
}

static const char *const ended_names[] = {[ENDED_SUCCEEDED] = "succeeded", [ENDED_DEAD] = "dead",
                                          [ENDED_CANCELLED] = "cancelled"};

/* The flat reply (worker/lua/start.lua): per job action, attempt, deliveries, npairs,
 * then npairs (name, value) pairs, all strings but the three integers. */
int scr_start_reply_next(const redisReply *r, size_t *pos, start_reply *out)
{
    size_t i = *pos;
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements) return 0;
    redisReply *const *e = r->element + i;
    size_t left = r->elements - i;
    memset(out, 0, sizeof *out);
    if (left < 4 || e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_INTEGER ||
        e[2]->type != REDIS_REPLY_INTEGER || e[3]->type != REDIS_REPLY_INTEGER ||
        e[3]->integer < 0 || (size_t)e[3]->integer > (left - 4) / 2 ||
        start_action_of(e[0]->str, &out->action) < 0)
        goto malformed;
    size_t npairs = (size_t)e[3]->integer;
    for (size_t k = 0; k < 2 * npairs; k++)
        if (e[4 + k]->type != REDIS_REPLY_STRING) goto malformed;
    out->attempt = (int)e[1]->integer;
    out->deliveries = (int)e[2]->integer;
    if (out->action == START_ENDED) {
        int found = 0;
        for (int s = 0; npairs == 1 && s < (int)(sizeof ended_names / sizeof *ended_names); s++)
            if (strcmp(e[4]->str, ended_names[s]) == 0) {
                out->ended = (ended_status)s;
                found = 1;
            }
        if (!found) goto malformed;
        out->ended_data = e[5]->str;
    } else if (out->action == START_RUN || out->action == START_POISON) {
        out->nmemo = npairs;
        out->memo = e + 4;
    }
    *pos = i + 4 + 2 * npairs;
    return 1;
malformed:
    *pos = r->elements;
    return -1;
}

finish_result scr_finish_result(const redisReply *r, size_t i)
{
    if (r && r->type == REDIS_REPLY_ARRAY && i < r->elements && r->element[i]->str &&
        strcmp(r->element[i]->str, "ok") == 0)
        return FINISH_OK;
    return FINISH_LOST;
}

static long long int_at(const redisReply *r, size_t i)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements ||
        r->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    return r->element[i]->integer;
}

renew_result scr_renew_result(const redisReply *r, size_t i)
{
    switch (int_at(r, i)) {
    case 1: return RENEW_OK;
    case 2: return RENEW_CANCEL;
    default: return RENEW_LOST;
    }
}

int scr_cancel_asked(const redisReply *r, size_t i) { return int_at(r, i) == 1; }

int scr_promote_reply(const redisReply *r, promote_reply *out)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) return -1;
    for (size_t i = 0; i < 3; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER) return -1;
    out->moved = r->element[0]->integer;
    out->next_due_ms = r->element[1]->integer;
    out->now_ms = r->element[2]->integer;
    return 0;
}
