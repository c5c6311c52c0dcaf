/* common/rds.h — the blocking Redis client of the CLI, the HTTP endpoint's readers,
 * the scheduler and executor threads, and queue key names.
 * hiredis 0.14 parses replies (redisReader) and formats commands; the connection is
 * ours, so it can be plain TCP, a unix socket or TLS (common/tls.h), and can find its
 * server through Sentinel or follow a Cluster's redirections (docs/redis.md):
 *   Sentinel  the master is asked of each sentinel in turn, then confirmed with ROLE; a
 *             READONLY reply (the master was demoted) rediscovers and resends once.
 *   Cluster   MOVED reconnects to the slot's owner and resends; ASK sends ASKING and
 *             the command to the importing node once; TRYAGAIN waits and resends.
 * The event-loop side lives in worker/conn.c. One rds per thread. */
#ifndef SW_COMMON_RDS_H
#define SW_COMMON_RDS_H
#include <hiredis.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stddef.h>

#include "common/cfg.h"
#include "common/err.h"

/* rds.err: 0, or why the connection is unusable (rds.errstr says more) */
enum { RDS_ERR_IO = 1, RDS_ERR_PROTOCOL, RDS_ERR_TIMEOUT, RDS_ERR_EOF };

typedef struct rds {
    int err;                  /* sticky once set: free and connect again */
    char errstr[256];
    /* private */
    const rds_url *u;
    int timeout_ms;
    int fd;
    SSL *ssl;
    redisReader *rd;
    char host[256];           /* the server this connection reached */
    int port;
} rds;

/* Connect (TLS, Sentinel discovery, AUTH, SELECT as the URL says); NULL with
 * SW_E_INTERNAL (retryable) naming the server and the reason. timeout_ms applies to
 * connect and to each reply. Free with rds_free. */
rds *rds_connect(const rds_url *u, int timeout_ms, sw_err *err);
void rds_free(rds *c);
/* One command and its reply (printf-like formats as hiredis: %s %b %d %lld); NULL when
 * no reply came (c->err, c->errstr say why). Free the reply with freeReplyObject. */
redisReply *rds_command(rds *c, const char *fmt, ...);
redisReply *rds_vcommand(rds *c, const char *fmt, va_list ap);
redisReply *rds_command_argv(rds *c, int argc, const char **argv, const size_t *argvlen);
/* Read the next pushed reply (a subscription's message) within timeout_ms: REDIS_OK with
 * *r set; REDIS_ERR with c->err = RDS_ERR_TIMEOUT when nothing came (then c->err may be
 * cleared and the call repeated), or another error. */
int rds_read(rds *c, int timeout_ms, redisReply **r);
/* Send a command without reading its reply (SUBSCRIBE): 0 or -1. */
int rds_send(rds *c, const char *fmt, ...);

/* The Cluster hash slot of a key (CRC16/XMODEM of its {hash tag}, mod 16384). */
unsigned rds_keyslot(const char *key, size_t len);
/* Parse "MOVED 5718 host:port" / "ASK 5718 host:port" into host (size n) and port. */
int rds_parse_redirect(const char *msg, char *host, size_t n, int *port);

/* "ns:{queue}:suffix" into out (size n); returns out. */
char *rds_key(const cfg *c, const char *suffix, char *out, size_t n);
/* "ns:{queue}:job:" + id into out. */
char *rds_job_key(const cfg *c, const char *job_id, char *out, size_t n);

#endif
