/* worker/scripts.h — the Lua scripts that make each queue transition atomic.
 * Owns: the texts sent for the scripts of worker/lua/ (embedded at build time) and the
 * SHA1s Redis reported for them (EVALSHA, EVAL fallback). Each script's KEYS/ARGV and
 * reply are at the top of its file. All keys of a queue share the hash tag {Q}, so
 * every script touches one slot. */
#ifndef SW_WORKER_SCRIPTS_H
#define SW_WORKER_SCRIPTS_H

typedef enum scr_id {
    SCR_START,          /* worker/lua/start.lua */
    SCR_FINISH,         /* worker/lua/finish.lua */
    SCR_PROMOTE,        /* worker/lua/promote.lua */
    SCR_RENEW,          /* worker/lua/renew.lua */
    SCR_REQUEUE_DEAD,   /* worker/lua/requeue_dead.lua */
    SCR_CELERY_INGRESS, /* worker/lua/celery_ingress.lua */
    SCR_CELERY_RESULT,  /* worker/lua/celery_result.lua */
    SCR_POLL_CANCEL,    /* worker/lua/poll_cancel.lua */
    SCR_PROGRESS,       /* worker/lua/progress.lua */
    SCR_ENQUEUE,        /* worker/lua/enqueue.lua: producers (CLI, clients/python) */
    SCR_CANCEL,         /* worker/lua/cancel.lua: `snapworker cancel`, producers */
    SCR_COUNT
} scr_id;

#include <stddef.h>

/* The text sent for a script: worker/lua/<name>.lua, prefixed with worker/lua/prelude.lua
 * when its header names the prelude. Borrowed, static; any thread. */
const char *scr_source(scr_id id);
const char *scr_name(scr_id id);     /* "start", "finish", ... (the file's name) for logs */
/* The SHA1 Redis reported for a script (SCRIPT LOAD), or NULL before it answered;
 * callers then send EVAL with the source. Event-loop thread only. */
const char *scr_sha(scr_id id);
int scr_learn_sha(scr_id id, const char *sha, size_t len); /* 0, or -1 if not a SHA1 */

#endif
