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

#include <hiredis.h>
#include <stddef.h>

/* ---- the words the scripts speak, as enums --------------------------------
 * The worker moves these through switches; the strings exist only where a script
 * argument is built or a reply decoded, in scripts.c, through one name table each. */

/* What becomes of a job: the finish script's `outcome` argument (worker/lua/finish.lua). */
typedef enum job_outcome {
    OUT_NONE,      /* not decided yet (never sent) */
    OUT_SUCCEEDED, /* result written, TTL, event */
    OUT_RETRY,     /* retryable error: delayed zset, due in delay_ms */
    OUT_DEAD,      /* dead stream, after the type's on_dead undo */
    OUT_REJECT,    /* refused without running: malformed, unknown type, expired */
    OUT_RELEASE,   /* handed back unrun (drain, or a start answered while stopping) */
    OUT_DEFER,     /* parked unrun, due in delay_ms (a Celery ETA) */
    OUT_DEFER_AT,  /* parked unrun, due at delay_ms (absolute ms, Redis clock) */
    OUT_CANCEL,    /* a producer cancelled it (worker/lua/cancel.lua) */
    OUT_ABANDON,   /* never sent: left pending for another worker (worker/exec.c) */
    OUT_COUNT
} job_outcome;

/* The finish script's word for 'o' ("succeeded", "retry", ...); NULL for OUT_NONE and
 * OUT_ABANDON, which are never sent. Static. */
const char *scr_outcome_arg(job_outcome o);

/* What the start script decided for one delivered entry (worker/lua/start.lua). */
typedef enum start_action {
    START_RUN,     /* marked running: run it */
    START_POISON,  /* delivered too often: marked running, end it dead unrun */
    START_ENDED,   /* already ended: terminal event re-emitted, acked */
    START_SKIP,    /* running under a live lease on this very entry: nothing done */
    START_DUP,     /* another entry of the job runs or waits: this one acked */
    START_BUSY,    /* its session is locked by another job: parked in the delayed zset */
    START_COUNT
} start_action;

const char *scr_start_action_name(start_action a); /* "run", ... for logs; static */

/* A terminal status the start script reports for START_ENDED. */
typedef enum ended_status { ENDED_SUCCEEDED, ENDED_DEAD, ENDED_CANCELLED } ended_status;

/* One job of a start reply, decoded. Borrowed from the reply: valid while it is. */
typedef struct start_reply {
    start_action action;
    int attempt;                  /* 1-based once started; 0 before */
    int deliveries;               /* starts, reclaims included */
    size_t nmemo;                 /* START_RUN/POISON: memo pairs in 'memo' */
    redisReply *const *memo;      /* name, value, name, value, ... (2 * nmemo) */
    ended_status ended;           /* START_ENDED: the job's terminal status */
    const char *ended_data;       /* START_ENDED: its result or error JSON */
} start_reply;

/* Decode the job at '*pos' of the start script's flat reply 'r' into 'out' and advance
 * '*pos'. Returns 1 when decoded, 0 at the end of the reply, -1 when malformed (then
 * '*pos' is moved to the end: the rest stays pending and is reclaimed). */
int scr_start_reply_next(const redisReply *r, size_t *pos, start_reply *out);

/* The finish script's answer for one job. */
typedef enum finish_result { FINISH_OK, FINISH_LOST } finish_result;
/* Job 'i' of a finish reply; anything but "ok" (missing, malformed) is FINISH_LOST. */
finish_result scr_finish_result(const redisReply *r, size_t i);

/* The renew script's answer for one job (worker/lua/renew.lua). */
typedef enum renew_result { RENEW_LOST, RENEW_OK, RENEW_CANCEL } renew_result;
renew_result scr_renew_result(const redisReply *r, size_t i); /* anything but 1 or 2: LOST */

/* Key 'i' of a poll_cancel reply: 1 when a cancel was asked, else 0. */
int scr_cancel_asked(const redisReply *r, size_t i);

/* The promote script's reply (worker/lua/promote.lua). */
typedef struct promote_reply {
    long long moved;              /* members moved into the streams */
    long long next_due_ms;        /* the next member's due time, or -1 when none */
    long long now_ms;             /* Redis TIME when it ran */
} promote_reply;
int scr_promote_reply(const redisReply *r, promote_reply *out); /* 0, or -1 if malformed */

/* The text sent for a script: worker/lua/<name>.lua, prefixed with worker/lua/prelude.lua
 * when its header names the prelude. Borrowed, static; any thread. */
const char *scr_source(scr_id id);
const char *scr_name(scr_id id);     /* "start", "finish", ... (the file's name) for logs */
/* The SHA1 Redis reported for a script (SCRIPT LOAD), or NULL before it answered;
 * callers then send EVAL with the source. Event-loop thread only. */
const char *scr_sha(scr_id id);
int scr_learn_sha(scr_id id, const char *sha, size_t len); /* 0, or -1 if not a SHA1 */

#endif
