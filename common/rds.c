/* common/rds.c — blocking Redis connect and key naming.
 *
 *   snapworker:{Q}:stream        jobs not yet finished (consumer group "snapworker")
 *   snapworker:{Q}:delayed       zset: payload -> due ms (Redis TIME)
 *   snapworker:{Q}:dead          stream of jobs that failed for good
 *   snapworker:{Q}:events        stream (and PUBLISH channel) of transitions
 *   snapworker:{Q}:job:<id>      hash: state of one job
 *   snapworker:{Q}:lock:session:<uuid>   per-session mutual exclusion
 */
#include "common/rds.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>

redisContext *rds_connect(const rds_url *u, int timeout_ms, sw_err *err)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = u->unix_path ? redisConnectUnixWithTimeout(u->unix_path, tv)
                                   : redisConnectWithTimeout(u->host, u->port, tv);
    redisReply *r = NULL;
    if (!c || c->err) {
        sw_errc(err, SW_E_INTERNAL, "cannot connect to Redis at %s:%d: %s",
                u->unix_path ? u->unix_path : u->host, u->unix_path ? 0 : u->port,
                c ? c->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(c, tv);
    if (u->password) {
        r = u->username ? redisCommand(c, "AUTH %s %s", u->username, u->password)
                        : redisCommand(c, "AUTH %s", u->password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            sw_errc(err, SW_E_INTERNAL, "Redis AUTH failed: %s",
                    r ? "credentials refused" : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
        r = NULL;
    }
    if (u->db) {
        r = redisCommand(c, "SELECT %d", u->db);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            sw_errc(err, SW_E_INTERNAL, "Redis SELECT %d failed: %s", u->db,
                    r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    return c;
fail:
    if (r) freeReplyObject(r);
    if (c) redisFree(c);
    return NULL;
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
