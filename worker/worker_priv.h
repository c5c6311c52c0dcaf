/* worker/worker_priv.h — what the worker's own files share: struct worker, its
 * Redis connections, and the wk_ functions one part calls in another.
 * Only worker/{worker,sched,celery}.c include it; everything else sees
 * worker/worker.h. Every wk_ function runs on the event-loop thread.
 *
 *   worker.c  lifetime, reading, start/finish batches, drain, the in-flight list,
 *             what a connection's readiness or loss means (worker/conn.c's hooks)
 *   sched.c   timers: promote delayed jobs, renew leases, reclaim idle entries, the 1 s
 *             watch tick (watchdog, cancel poll, gauges, a new loop thread and malloc_trim)
 *   celery.c  Celery ingress and results, attached through a wk_hook
 * worker/conn.c (one connection) is below all of them and calls none.
 */
#ifndef SW_WORKER_WORKER_PRIV_H
#define SW_WORKER_WORKER_PRIV_H
#include <async.h>
#include <event2/event.h>
#include <hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/err.h"
#include "worker/cmdv.h"
#include "worker/conn.h"
#include "worker/exec.h"
#include "worker/http.h"
#include "worker/scripts.h"
#include "worker/worker.h"

#define GROUP "snapworker"
#define BLOCK_MS 5000
#define BATCH_MAX 256
#define READ_AHEAD_MS 50.0 /* read-ahead: about this much work per worker */
#define BUSY_DELAY_MS 250
#define LOW_EVERY 4   /* every 4th read / run-queue pick serves lower priorities first */

/* An add-on attached to the worker's core path (Celery: worker/celery.c). The core
 * calls these at fixed points and knows nothing of what they do; any may be NULL. */
typedef struct wk_hook {
    /* An item's outcome is known: 1 when the hook took it (it queues the finish itself
     * later, wk_queue_finish), 0 to have it finished now. */
    int (*complete)(worker *w, item *it);
    void (*flush)(worker *w); /* send what waits: before finishes are sent, and on retry */
    void (*tick)(worker *w);  /* the 1 s watch tick */
} wk_hook;

struct worker {
    const cfg *cfg;
    struct event_base *base;
    conn rd, cmd;
    conn res;                      /* Celery result backend (celery_on only) */
    conn ctl;                      /* Celery control: SUBSCRIBEd to the pidbox (celery_on) */
    rds_url ctl_url;               /* the broker (CELERY_BROKER_URL), parsed */
    char ctl_channel[48];          /* "/<db>.celery.pidbox" */
    char celery_node[200];         /* this worker's Celery name: "snapworker@<host>" */
    int celery_on;
    const wk_hook *hook;           /* Celery's, or NULL */
    rds_url res_url;
    cmdv ingress_keys;             /* stream, stream:low + kombu lists in pop order */
    char ingress_route[256];       /* per list: the stream it feeds ('0' high .. '2' low) */
    struct event *t_ingress;
    int ingress_delay_ms;          /* poll backoff, 0..50 ms */
    int ingressing;
    item *meta_wait;               /* items whose result write must be retried */
    char name[160];                /* consumer name: host:pid:rand */
    char k_stream[200], k_events[200], k_delayed[200], k_dead[200], job_prefix[200];
    char k_streams[PRIO_COUNT][200]; /* stream:high, stream (= k_stream), stream:low */
    char lock_prefix[200];         /* ns:{queue}:lock:session: */
    exec_pool *pool;
    int pipefd[2];
    struct event *pipe_ev, *sig_term, *sig_int, *t_promote, *t_renew, *t_reclaim, *t_watch,
        *t_drain, *t_finish_retry, *t_read_retry;
    item *all;                     /* in-flight list (prev_all/next_all) */
    int inflight;
    item *finish_q, *finish_tail;  /* done, waiting for a finish script */
    int reading;
    int recover;                   /* re-read own pending entries first */
    char recover_from[PRIO_COUNT][48];
    int reclaiming;                /* XAUTOCLAIM calls outstanding (one per stream) */
    char reclaim_cursor[PRIO_COUNT][48];
    int full_mask;                 /* bit i: stream i filled its COUNT when last read */
    unsigned reads;                /* XREADGROUPs sent (every LOW_EVERY-th reads all streams) */
    int polling_cancel;            /* a poll_cancel call is outstanding */
    int64_t redis_ms, redis_at_ms; /* Redis TIME seen by the last promote, job_now_ms() then */
    int stopping;
    double ewma_ms;                /* recent job duration, for read-ahead */
    int warned_policy;
    int reload_scripts;            /* a SCRIPT LOAD failed: the 1 s tick retries */
    int script_load_warned;        /* logged this streak of SCRIPT LOAD failures */
    int exit_code;
    worker_stats stats;            /* served by worker/http.c */
    uint64_t trimmed_at;           /* jobs done at the last malloc_trim */
    int loop_renew;                /* the loop stopped for a new loop thread (worker.c run_loop) */
    http_srv *http;
    struct schedule *schedule;     /* SNAPWORKER_SCHEDULE=1: the lifecycle scheduler (schedule.c);
                                      NULL once the drain began (the lock handed over) */
};


/* ---- sched.c ---- */
void wk_promote_timer(evutil_socket_t fd, short ev, void *arg);
void wk_renew_timer(evutil_socket_t fd, short ev, void *arg);
void wk_reclaim_timer(evutil_socket_t fd, short ev, void *arg);
void wk_watch_timer(evutil_socket_t fd, short ev, void *arg); /* 1 s tick: watchdog + gauges */

/* ---- celery.c ---- */
int wk_celery_setup(worker *w);                         /* 0, or -1 on a bad result URL */
/* Map a `celery` stream entry into it: 1 = start it now, 0 = handled (rejected/deferred). */
int wk_take_celery(worker *w, item *it, const char *raw, size_t len);
/* A `celery_oversize` entry (the ingress cut a message over CELERY_MAX_RAW_BYTES):
 * FAILURE when task_id is a valid id, then dead with invalid_payload; 'prefix' is kept. */
void wk_take_celery_oversize(worker *w, item *it, const char *prefix, size_t len,
                             const char *bytes, const char *task_id);
cmdv wk_meta_cmd(worker *w, const char *task_id, const char *meta); /* result-write script */
void wk_set_meta(item *it, const char *state, const char *result_json, sw_code code,
                 const char *msg, const char *exc_type, const char *exc_module);
int wk_celery_expired(worker *w, item *it);             /* 1: expired, REVOKED and rejected */
/* Rewrite the final result of an ended job seen again (its status, data JSON). */
void wk_celery_replay(worker *w, item *it, ended_status status, const char *data);

/* ---- worker.c ---- */
void wk_track(worker *w, item *it);                     /* add to the in-flight list */
void wk_untrack_free(worker *w, item *it);              /* remove and free */
int wk_tracked(worker *w, int sidx, const char *entry); /* 1 when the entry is in flight */
void wk_complete(worker *w, item *it);                  /* outcome known: hook, then finish */
void wk_queue_finish(worker *w, item *it);              /* queue the finish script */
void wk_flush_finish(worker *w);                        /* send queued finishes in batches */
void wk_reject(worker *w, item *it, sw_code code, const char *msg); /* dead without running */
/* Turn stream entries into items (rejects, one start script); returns entries seen. */
size_t wk_take_entries(worker *w, int sidx, redisReply *entries, int recover, char *last_id,
                       size_t last_n, int maybe_ours);
void wk_recover_all(worker *w);                         /* re-read own pending entries (id 0) */
int wk_stream_index(worker *w, const char *key);        /* PRIO_*, or -1 */
int wk_capacity(worker *w);                             /* how many more jobs to take */
void wk_maybe_read(worker *w);                          /* issue XREADGROUP if there is room */
void wk_check_exit(worker *w);                          /* leave the loop when drained */
void wk_load_scripts(worker *w);                        /* SCRIPT LOAD all (command conn) */
void wk_create_group(worker *w);                        /* XGROUP CREATE ... MKSTREAM (reader) */
/* The reader's and command connection's hooks; also what a Celery conn's loss means. */
void wk_conn_lost(conn *c, void *owner, const char *why, int was_ready);

#endif
