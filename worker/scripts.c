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
