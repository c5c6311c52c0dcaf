/* common/rds.c — the blocking Redis client (common/rds.h) and key naming.
 *
 *   snapworker:{Q}:stream        jobs not yet finished (consumer group "snapworker")
 *   snapworker:{Q}:delayed       zset: payload -> due ms (Redis TIME)
 *   snapworker:{Q}:dead          stream of jobs that failed for good
 *   snapworker:{Q}:events        stream (and PUBLISH channel) of transitions
 *   snapworker:{Q}:job:<id>      hash: state of one job
 *   snapworker:{Q}:lock:session:<uuid>   per-session mutual exclusion
 *
 * Every key of a queue carries the hash tag {Q}, so on a Cluster they all live in one
 * slot and a client of one queue talks to one node.
 *
 * The socket is blocking with SO_RCVTIMEO/SO_SNDTIMEO (so a TLS read or write is bounded
 * too); connect is non-blocking with poll for its own timeout. */
#include "common/rds.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/tls.h"
#include "common/xmalloc.h"

#define REDIRECTS_MAX 16
#define TRYAGAIN_MS 50       /* a multi-key call during a slot migration waits this long */
#define TRYAGAIN_MAX 200     /* ... at most this many times (10 s) */

static int set_err(rds *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(rds *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
    va_end(ap);
    c->err = code;
    return -1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void set_io_timeout(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* A connected socket to host:port (or the unix path) within timeout_ms, or -1. */
static int dial(rds *c, const char *host, int port, const char *unix_path)
{
    if (unix_path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(unix_path) >= sizeof sa.sun_path) return set_err(c, RDS_ERR_IO, "socket path too long");
        memcpy(sa.sun_path, unix_path, strlen(unix_path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return set_err(c, RDS_ERR_IO, "%s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            int e = errno;
            close(fd);
            return set_err(c, RDS_ERR_IO, "%s", strerror(e));
        }
        set_io_timeout(fd, c->timeout_ms);
        return fd;
    }
    char ps[8];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, ps, &hints, &res);
    if (gai) return set_err(c, RDS_ERR_IO, "cannot resolve '%s': %s", host, gai_strerror(gai));
    int fd = -1, last = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
            if (errno == EINPROGRESS) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                int so = 0;
                socklen_t sl = sizeof so;
                int pr = poll(&p, 1, c->timeout_ms);
                if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0) goto connected;
                last = pr == 0 ? ETIMEDOUT : so ? so : errno;
            } else {
                last = errno;
            }
            close(fd);
            fd = -1;
            continue;
        }
    connected:
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    }
    freeaddrinfo(res);
    if (fd < 0) return set_err(c, RDS_ERR_IO, "%s", strerror(last ? last : ECONNREFUSED));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    set_io_timeout(fd, c->timeout_ms);
    return fd;
}

static void drop(rds *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->rd) redisReaderFree(c->rd);
    c->rd = NULL;
}

static int write_all(rds *c, const char *p, size_t n)
{
    while (n) {
        ssize_t w;
        if (c->ssl) {
            ERR_clear_error();
            int k = SSL_write(c->ssl, p, n > 1 << 30 ? 1 << 30 : (int)n);
            if (k <= 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return set_err(c, RDS_ERR_TIMEOUT, "write timed out");
                char why[200];
                tls_explain(c->ssl, 0, why, sizeof why);
                return set_err(c, RDS_ERR_IO, "TLS write failed: %s", why);
            }
            w = k;
        } else {
            w = send(c->fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return set_err(c, RDS_ERR_TIMEOUT, "write timed out");
                return set_err(c, RDS_ERR_IO, "%s", strerror(errno));
            }
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read some bytes into the reader; -1 with c->err set (RDS_ERR_TIMEOUT when none came). */
static int fill(rds *c)
{
    char buf[16384];
    ssize_t n;
    for (;;) {
        if (c->ssl) {
            ERR_clear_error();
            errno = 0;
            int k = SSL_read(c->ssl, buf, sizeof buf);
            if (k > 0) {
                n = k;
                break;
            }
            int se = SSL_get_error(c->ssl, k);
            if (se == SSL_ERROR_ZERO_RETURN) return set_err(c, RDS_ERR_EOF, "Server closed the connection");
            if ((se == SSL_ERROR_WANT_READ || se == SSL_ERROR_SYSCALL) &&
                (errno == EAGAIN || errno == EWOULDBLOCK))
                return set_err(c, RDS_ERR_TIMEOUT, "read timed out");
            if (se == SSL_ERROR_SYSCALL && errno == EINTR) continue;
            if (se == SSL_ERROR_SYSCALL && errno == 0 && ERR_peek_error() == 0)
                return set_err(c, RDS_ERR_EOF, "Server closed the connection");
            char why[200];
            tls_explain(c->ssl, 0, why, sizeof why);
            return set_err(c, RDS_ERR_IO, "TLS read failed: %s", why);
        }
        n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0) break;
        if (n == 0) return set_err(c, RDS_ERR_EOF, "Server closed the connection");
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return set_err(c, RDS_ERR_TIMEOUT, "read timed out");
        return set_err(c, RDS_ERR_IO, "%s", strerror(errno));
    }
    if (redisReaderFeed(c->rd, buf, (size_t)n) != REDIS_OK)
        return set_err(c, RDS_ERR_PROTOCOL, "protocol error: %s", c->rd->errstr);
    return 0;
}

static int get_reply(rds *c, redisReply **out)
{
    *out = NULL;
    for (;;) {
        void *r = NULL;
        if (redisReaderGetReply(c->rd, &r) != REDIS_OK)
            return set_err(c, RDS_ERR_PROTOCOL, "protocol error: %s", c->rd->errstr);
        if (r) {
            *out = r;
            return 0;
        }
        if (fill(c) < 0) return -1;
    }
}

/* One formatted command and its reply, no redirection. */
static redisReply *roundtrip(rds *c, const char *cmd, size_t len)
{
    if (c->err) return NULL;
    redisReply *r;
    if (write_all(c, cmd, len) < 0 || get_reply(c, &r) < 0) return NULL;
    return r;
}

static redisReply *simple(rds *c, int argc, const char **argv)
{
    char *cmd;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    if (len < 0) {
        set_err(c, RDS_ERR_PROTOCOL, "out of memory");
        return NULL;
    }
    redisReply *r = roundtrip(c, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return r;
}

/* Open the connection to host:port: socket, TLS handshake, AUTH (user/pass), SELECT db. */
static int open_server(rds *c, const char *host, int port, const char *unix_path, const char *user,
                       const char *pass, int db)
{
    drop(c);
    c->err = 0;
    c->errstr[0] = '\0';
    snprintf(c->host, sizeof c->host, "%s", unix_path ? unix_path : host);
    c->port = unix_path ? 0 : port;
    c->fd = dial(c, host, port, unix_path);
    if (c->fd < 0) return -1;
    c->rd = redisReaderCreate();
    if (c->u->tls && !unix_path) {
        sw_err e;
        SSL_CTX *ctx = tls_ctx(c->u, &e);
        if (!ctx) return set_err(c, RDS_ERR_IO, "%s", e.msg);
        c->ssl = tls_session(ctx, c->u, host, &e);
        if (!c->ssl) return set_err(c, RDS_ERR_IO, "%s", e.msg);
        SSL_set_fd(c->ssl, c->fd);
        ERR_clear_error();
        errno = 0;
        if (SSL_connect(c->ssl) != 1) {
            char why[200];
            if (errno == EAGAIN || errno == EWOULDBLOCK) snprintf(why, sizeof why, "TLS handshake timed out");
            else tls_explain(c->ssl, 0, why, sizeof why);
            return set_err(c, RDS_ERR_IO, "%s", why);
        }
    }
    if (pass) {
        const char *argv[3] = {"AUTH", user ? user : pass, pass};
        redisReply *r = simple(c, user ? 3 : 2, argv);
        if (!r) return -1;
        bool bad = r->type == REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (bad) return set_err(c, RDS_ERR_IO, "AUTH failed: credentials refused");
    }
    if (db) {
        char dbs[16];
        snprintf(dbs, sizeof dbs, "%d", db);
        const char *argv[2] = {"SELECT", dbs};
        redisReply *r = simple(c, 2, argv);
        if (!r) return -1;
        if (r->type == REDIS_REPLY_ERROR) {
            set_err(c, RDS_ERR_IO, "SELECT %d failed: %s", db, r->str);
            freeReplyObject(r);
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

/* Sentinel: ask each sentinel for the master, connect, and confirm with ROLE. A master
 * that calls itself a replica (a failover in progress) is skipped; the round repeats
 * until the connect timeout has passed. */
static int open_sentinel_master(rds *c)
{
    const rds_url *u = c->u;
    char why[768] = "no sentinel answered";
    int rounds = c->timeout_ms / 250 + 1;
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < u->nhosts; i++) {
            const rds_host *s = &u->hosts[i];
            if (open_server(c, s->host, s->port, NULL, NULL, u->sentinel_password, 0) < 0) {
                snprintf(why, sizeof why, "sentinel %s:%d: %s", s->host, s->port, c->errstr);
                continue;
            }
            const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", u->master_name};
            redisReply *r = simple(c, 3, argv);
            char mhost[256];
            int mport = 0;
            if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
                snprintf(mhost, sizeof mhost, "%s", r->element[0]->str);
                mport = atoi(r->element[1]->str);
            } else {
                snprintf(why, sizeof why, "sentinel %s:%d does not know master '%s'%s%s", s->host,
                         s->port, u->master_name, r && r->type == REDIS_REPLY_ERROR ? ": " : "",
                         r && r->type == REDIS_REPLY_ERROR ? r->str : "");
            }
            if (r) freeReplyObject(r);
            if (!mport) continue;
            if (open_server(c, mhost, mport, NULL, u->username, u->password, u->db) < 0) {
                snprintf(why, sizeof why, "master '%s' at %s:%d: %s", u->master_name, mhost, mport, c->errstr);
                continue;
            }
            const char *role[1] = {"ROLE"};
            r = simple(c, 1, role);
            bool master = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                          r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "master");
            if (r) freeReplyObject(r);
            if (master) return 0;
            snprintf(why, sizeof why, "%s:%d, named master '%s' by sentinel %s:%d, is not a master",
                     mhost, mport, u->master_name, s->host, s->port);
        }
        if (round + 1 < rounds) sleep_ms(250);
    }
    drop(c);
    return set_err(c, RDS_ERR_IO, "%s", why);
}

static int open_any(rds *c)
{
    const rds_url *u = c->u;
    if (u->mode == RDS_SENTINEL) return open_sentinel_master(c);
    if (u->mode == RDS_CLUSTER) {
        for (int i = 0; i < u->nhosts; i++)
            if (open_server(c, u->hosts[i].host, u->hosts[i].port, NULL, u->username, u->password, 0) == 0)
                return 0;
        return -1;
    }
    return open_server(c, u->host, u->port, u->unix_path, u->username, u->password, u->db);
}

rds *rds_connect(const rds_url *u, int timeout_ms, sw_err *err)
{
    rds *c = xcalloc(1, sizeof *c);
    c->u = u;
    c->timeout_ms = timeout_ms;
    c->fd = -1;
    if (open_any(c) < 0) {
        if (u->mode == RDS_SENTINEL)
            sw_errc(err, SW_E_INTERNAL, "cannot connect to Redis through Sentinel: %s", c->errstr);
        else
            sw_errc(err, SW_E_INTERNAL, "cannot connect to Redis at %s%s%.0d: %s", c->host,
                    c->port ? ":" : "", c->port, c->errstr);
        rds_free(c);
        return NULL;
    }
    return c;
}

void rds_free(rds *c)
{
    if (!c) return;
    drop(c);
    free(c);
}

static bool is_err(const redisReply *r, const char *prefix)
{
    return r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, prefix, strlen(prefix));
}

/* Send a formatted command, following the redirections of a Cluster and a demoted
 * Sentinel master (docs/redis.md). */
static redisReply *command(rds *c, const char *cmd, size_t len)
{
    int tryagain = 0;
    for (int hop = 0; hop <= REDIRECTS_MAX; hop++) {
        redisReply *r = roundtrip(c, cmd, len);
        if (!r) return NULL;
        if (c->u->mode == RDS_SENTINEL && is_err(r, "READONLY") && hop == 0) {
            /* the master was demoted: the write was refused, so it is safe to resend */
            freeReplyObject(r);
            if (open_sentinel_master(c) < 0) return NULL;
            continue;
        }
        if (c->u->mode != RDS_CLUSTER) return r;
        char host[256];
        int port;
        if (is_err(r, "MOVED ") && rds_parse_redirect(r->str, host, sizeof host, &port) == 0) {
            freeReplyObject(r);
            if (open_server(c, host, port, NULL, c->u->username, c->u->password, 0) < 0) return NULL;
            continue;
        }
        if (is_err(r, "ASK ") && rds_parse_redirect(r->str, host, sizeof host, &port) == 0) {
            /* once, to the importing node, preceded by ASKING; this connection stays */
            freeReplyObject(r);
            rds *t = xcalloc(1, sizeof *t);
            t->u = c->u;
            t->timeout_ms = c->timeout_ms;
            t->fd = -1;
            const char *asking[1] = {"ASKING"};
            redisReply *a = NULL;
            if (open_server(t, host, port, NULL, c->u->username, c->u->password, 0) == 0 &&
                (a = simple(t, 1, asking)) != NULL)
                r = roundtrip(t, cmd, len);
            else
                r = NULL;
            if (a) freeReplyObject(a);
            if (!r) set_err(c, RDS_ERR_IO, "ASK redirection to %s:%d: %s", host, port, t->errstr);
            rds_free(t);
            if (r && is_err(r, "TRYAGAIN") && ++tryagain < TRYAGAIN_MAX) {
                freeReplyObject(r);
                sleep_ms(TRYAGAIN_MS);
                hop = -1;
                continue;
            }
            return r;
        }
        if (is_err(r, "TRYAGAIN") && ++tryagain < TRYAGAIN_MAX) {
            freeReplyObject(r);
            sleep_ms(TRYAGAIN_MS);
            hop = -1;   /* a migration in progress: not a redirection */
            continue;
        }
        return r;
    }
    set_err(c, RDS_ERR_PROTOCOL, "too many redirections");
    return NULL;
}

redisReply *rds_vcommand(rds *c, const char *fmt, va_list ap)
{
    char *cmd;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    if (len < 0) {
        set_err(c, RDS_ERR_PROTOCOL, "bad command format");
        return NULL;
    }
    redisReply *r = command(c, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return r;
}

redisReply *rds_command(rds *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = rds_vcommand(c, fmt, ap);
    va_end(ap);
    return r;
}

redisReply *rds_command_argv(rds *c, int argc, const char **argv, const size_t *argvlen)
{
    char *cmd;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        set_err(c, RDS_ERR_PROTOCOL, "out of memory");
        return NULL;
    }
    redisReply *r = command(c, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return r;
}

int rds_send(rds *c, const char *fmt, ...)
{
    if (c->err) return -1;
    va_list ap;
    va_start(ap, fmt);
    char *cmd;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) return set_err(c, RDS_ERR_PROTOCOL, "bad command format");
    int rc = write_all(c, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return rc;
}

int rds_read(rds *c, int timeout_ms, redisReply **r)
{
    *r = NULL;
    if (c->err) return REDIS_ERR;
    void *reply = NULL;
    if (redisReaderGetReply(c->rd, &reply) != REDIS_OK) {
        set_err(c, RDS_ERR_PROTOCOL, "protocol error: %s", c->rd->errstr);
        return REDIS_ERR;
    }
    if (reply) {
        *r = reply;
        return REDIS_OK;
    }
    set_io_timeout(c->fd, timeout_ms);
    int rc = get_reply(c, r);
    set_io_timeout(c->fd, c->timeout_ms);
    return rc == 0 ? REDIS_OK : REDIS_ERR;
}

/* CRC16/XMODEM (polynomial 0x1021), as Redis Cluster hashes keys. */
static unsigned crc16(const char *p, size_t n)
{
    unsigned crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (unsigned)(unsigned char)p[i] << 8;
        for (int b = 0; b < 8; b++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
        crc &= 0xffff;
    }
    return crc;
}

unsigned rds_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        const char *close = memchr(open + 1, '}', (size_t)(key + len - open - 1));
        if (close && close > open + 1) return crc16(open + 1, (size_t)(close - open - 1)) & 16383;
    }
    return crc16(key, len) & 16383;
}

int rds_parse_redirect(const char *msg, char *host, size_t n, int *port)
{
    const char *sp = strchr(msg, ' ');
    if (!sp) return -1;
    const char *addr = strchr(sp + 1, ' ');
    if (!addr) return -1;
    addr++;
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= n) return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 1 || p > 65535) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (int)p;
    return 0;
}

char *rds_key(const cfg *c, const char *suffix, char *out, size_t n)
{
    snprintf(out, n, "%s:{%s}:%s", c->ns, c->queue, suffix);
    return out;
}

char *rds_job_key(const cfg *c, const char *job_id, char *out, size_t n)
{
    snprintf(out, n, "%s:{%s}:job:%s", c->ns, c->queue, job_id);
    return out;
}
