/* worker/rtr.h — one Redis connection on the event loop: a libevent bufferevent (plain
 * TCP, unix socket, or TLS through bufferevent_openssl) with hiredis's reply parser.
 * Commands go out already formatted as RESP; replies come back in order to the callback
 * given with each command (a FIFO). It knows nothing of Sentinel, Cluster, reconnects or
 * timeouts: worker/conn.c builds those on top (docs/redis.md).
 * Why not hiredis's async API: hiredis 0.14 has no TLS, and its reply parser is all we
 * need of it (docs/decisions.md). Event-loop thread only. */
#ifndef SW_WORKER_RTR_H
#define SW_WORKER_RTR_H
#include <event2/event.h>
#include <hiredis.h>
#include <stddef.h>

#include "common/cfg.h"

typedef struct rtr rtr;

/* A reply (borrowed until the callback returns), or NULL when it cannot come. */
typedef void (*rtr_reply_fn)(rtr *t, redisReply *r, void *priv);
/* up = 1: connected (and the TLS handshake verified). up = 0: the connection failed or
 * was lost ('why' says how, never a secret); every pending reply callback has already
 * run with NULL. After up = 0 the owner must rtr_free(t) (it may do so right here). */
typedef void (*rtr_event_fn)(rtr *t, int up, const char *why, void *ud);

/* Start connecting to host:port (or unix_path) with the TLS settings of 'u' (borrowed).
 * Commands may be sent at once: they leave when the connection is up. NULL with 'why'
 * (size n) when it cannot even start (a bad TLS file, an unresolvable host). */
rtr *rtr_open(struct event_base *base, const rds_url *u, const char *host, int port,
              const char *unix_path, rtr_event_fn ev, void *ud, char *why, size_t n);
/* Queue one RESP command; fn (may be NULL) gets its reply. 0, or -1 when the
 * connection is already gone (fn is not called). */
int rtr_send(rtr *t, const char *resp, size_t len, rtr_reply_fn fn, void *priv);
/* On a SUBSCRIBEd connection: each published message (a ["message", channel, data] array)
 * goes to fn instead of the reply queue, since it answers no command; replies to commands
 * (SUBSCRIBE's confirmation, PING's ["pong", ""]) keep their order. NULL fn: none. */
void rtr_on_message(rtr *t, rtr_reply_fn fn, void *priv);
/* Close: pending callbacks run with NULL now; no event callback. Safe inside any
 * callback of this rtr. NULL-safe. */
void rtr_free(rtr *t);
int rtr_pending(const rtr *t);   /* replies still expected */
int rtr_is_up(const rtr *t);     /* connected */
const char *rtr_host(const rtr *t);
int rtr_port(const rtr *t);

#endif
