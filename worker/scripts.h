/* worker/scripts.h — the Lua scripts that make each queue transition atomic.
 * Owns: script sources and the SHA1s Redis reported (EVALSHA, EVAL fallback).
 * All keys of a queue share the hash tag {Q}, so every script touches one slot. */
#ifndef SW_WORKER_SCRIPTS_H
#define SW_WORKER_SCRIPTS_H

typedef enum scr_id {
    SCR_START,
    SCR_FINISH,
    SCR_PROMOTE,
    SCR_RENEW,
    SCR_REQUEUE_DEAD,
    SCR_CELERY_INGRESS,
    SCR_CELERY_RESULT,
    SCR_POLL_CANCEL,
    SCR_PROGRESS,
    SCR_ENQUEUE,        /* worker/lua/enqueue.lua: producers (CLI, clients/python) */
    SCR_CANCEL,         /* worker/lua/cancel.lua: `snapworker cancel`, producers */
    SCR_COUNT
} scr_id;

#include <stddef.h>

const char *scr_source(scr_id id);   /* static Lua text (embedded file for enqueue/cancel) */
const char *scr_name(scr_id id);     /* "start", "finish", ... for logs */
/* The SHA1 Redis reported for a script (SCRIPT LOAD), or NULL before it answered;
 * callers then send EVAL with the source. Event-loop thread only. */
const char *scr_sha(scr_id id);
int scr_learn_sha(scr_id id, const char *sha, size_t len); /* 0, or -1 if not a SHA1 */

#endif
