/* worker/enqueue.c — the idempotent, optionally fenced enqueue (worker/enqueue.h). */
#include "worker/enqueue.h"

#include <string.h>

#include "common/payload.h"
#include "common/rds.h"

static const char LUA_ENQUEUE[] =
    "if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
    "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
    "redis.call('HSET', KEYS[2], 'status', 'queued')\n"
    "redis.call('XADD', KEYS[3], '*', 'job', ARGV[2])\n"
    "return 1\n";

int enq_payload(redisContext *rc, const cfg *c, const char *payload, const char *fence_key,
                const char *fence_val, bool *fenced, sw_err *err)
{
    job_req req;
    char k_job[400], k_stream[256];
    if (fenced) *fenced = false;
    if (payload_parse(payload, strlen(payload), &req, err) != 0) {
        payload_free(&req);
        return -1;
    }
    rds_job_key(c, req.id, k_job, sizeof k_job);
    rds_key(c, "stream", k_stream, sizeof k_stream);
    payload_free(&req);
    const char *argv[] = {"EVAL", LUA_ENQUEUE, "3", fence_key ? fence_key : k_job, k_job,
                          k_stream, fence_val ? fence_val : "", payload};
    redisReply *r = redisCommandArgv(rc, 8, argv, NULL);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        sw_errf(err, SW_E_INTERNAL, true, "enqueue: %s",
                !r ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        if (r) freeReplyObject(r);
        return -1;
    }
    long long v = r->integer;
    freeReplyObject(r);
    if (v < 0) {
        if (fenced) *fenced = true;
        return sw_errf(err, SW_E_INTERNAL, true, "enqueue: scheduler lock no longer ours");
    }
    return (int)v;
}
