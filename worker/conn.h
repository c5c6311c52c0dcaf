/* worker/conn.h — one Redis connection of the worker (worker/rtr.c on libevent, plain or
 * TLS) that keeps itself alive: connect (AUTH, SELECT), send with the EVALSHA -> EVAL
 * fallback on NOSCRIPT, reconnect with backoff and jitter, a watchdog for overdue
 * replies, and the server's identity as docs/redis.md says: a Sentinel master found and
 * confirmed (ROLE), followed after a failover; a Cluster slot owner followed through
 * MOVED, ASK and TRYAGAIN.
 * It knows nothing of what is sent: its owner (worker/worker.c, worker/celery.c) hears
 * of it through these callbacks, each given the owner's pointer:
 *   on_ready    connected (again): queue setup commands (SUBSCRIBE), resend what waited
 *   on_reply    per call: the reply, or NULL when it cannot come (lost, refused)
 *   on_lost     the context is gone; a reconnect is scheduled unless the conn is closing
 *   on_message  optional: a message published to a channel the owner SUBSCRIBEd to
 * Event-loop thread only. */
#ifndef SW_WORKER_CONN_H
#define SW_WORKER_CONN_H
#include <event2/event.h>
#include <hiredis.h>
#include <stdint.h>

#include "common/rds.h"
#include "worker/cmdv.h"
#include "worker/rtr.h"
#include "worker/scripts.h"

#define CONN_REPLY_TIMEOUT_MS 10000 /* a reply later than this (+ extra) frees the context */

typedef struct conn conn;

/* A reply callback: r is NULL when the reply cannot come; borrowed until it returns. */
typedef void (*conn_reply_fn)(void *owner, redisReply *r, void *ud);

typedef struct conn_hooks {
    void (*on_ready)(conn *c, void *owner);
    /* 'why' says what happened; 'was_ready': it had connected (a real loss). */
    void (*on_lost)(conn *c, void *owner, const char *why, int was_ready);
    /* NULL, or: a ["message", channel, data] array (borrowed until it returns). A message
     * published while the connection was down is not seen: pub/sub keeps nothing. */
    void (*on_message)(conn *c, void *owner, redisReply *r);
} conn_hooks;

struct conn {
    void *owner;                /* given to every callback */
    const conn_hooks *hooks;
    struct event_base *base;
    const rds_url *url;         /* where it connects (borrowed) */
    const char *name;           /* for logs: "reader", "command", ... (static) */
    int extra_timeout_ms;       /* added to the reply timeout (a blocking read's BLOCK) */
    rtr *tr;                    /* the server; NULL between a loss and the next connect */
    int ready;                  /* connected, handshake (AUTH, SELECT, ROLE) answered */
    int closing;                /* do not reconnect */
    int handshake;              /* handshake replies still expected */
    int64_t progress_ms;        /* last reply, or first send after idle (monotonic) */
    int64_t connect_ms;         /* when the current connect started */
    int backoff_ms;             /* next reconnect delay, 100 ms doubling to 5 s */
    struct event *retry_ev;     /* the reconnect timer */
    /* Sentinel: 'sen' asks sentinels[sen_idx] for the master; it stays open and is asked
     * again every second while connected, so a failover is followed at once. */
    rtr *sen;
    int sen_idx;
    int sen_asking;             /* a get-master-addr-by-name is outstanding */
    char master_host[256];      /* the master now in use (Sentinel), or the slot owner */
    int master_port;            /* (Cluster; 0 = not known yet: a seed node) */
    int seed_idx;               /* Cluster: the seed node tried next */
    rtr *ask;                   /* Cluster: the importing node of an ASK redirection */
    struct call *retry_q;       /* Cluster: calls answered TRYAGAIN, resent shortly */
    struct event *retry_call_ev;
    char last_fail[160];        /* the last connect failure logged (logged again on change) */
};

/* Set up 'c' (not connected yet; conn_connect starts it). 'url', 'name' and 'hooks'
 * are borrowed for the conn's life. */
void conn_init(conn *c, struct event_base *base, const rds_url *url, const char *name,
               int extra_timeout_ms, const conn_hooks *hooks, void *owner);
void conn_connect(conn *c);   /* no-op when connected or closing */
/* Stop for good: no reconnect; the context is freed (pending callbacks see NULL, then
 * on_lost runs). NULL-safe on a conn never set up. */
void conn_close(conn *c);
void conn_free(conn *c);      /* conn_close, then release the timer; the struct is the caller's */
/* Free the context when a reply is overdue or its connect hangs (the 1 s tick). */
void conn_watch(conn *c);

/* Send 'args' (taken). fn(owner, NULL, ud) runs when it cannot be sent; fn may be NULL. */
void conn_send(conn *c, cmdv *args, conn_reply_fn fn, void *ud);
/* Start a script call in 'v': EVALSHA sha numkeys, or EVAL text numkeys until Redis
 * reported the SHA; the caller adds keys and arguments, then conn_script() sends it. */
void conn_script_begin(cmdv *v, scr_id sid, int nkeys);
/* Send a call begun with conn_script_begin; NOSCRIPT is answered by resending as EVAL. */
void conn_script(conn *c, cmdv *args, scr_id sid, conn_reply_fn fn, void *ud);

#endif
