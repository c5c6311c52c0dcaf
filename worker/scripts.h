/* worker/scripts.h — the Lua scripts that make each queue transition atomic.
 * Owns: script sources and their SHA1s (for EVALSHA with EVAL fallback).
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
    SCR_COUNT
} scr_id;

const char *scr_source(scr_id id);   /* static Lua text */
const char *scr_sha(scr_id id);      /* 40 hex chars, computed once (thread-safe) */

#endif
