/* worker/enqueue.c — the idempotent, optionally fenced enqueue (worker/enqueue.h). */
#include "worker/enqueue.h"

#include <pthread.h>
#include <string.h>

#include "common/embedded.h"
#include "common/xmalloc.h"

#include "common/payload.h"
#include "common/rds.h"

/* The fence goes in front of the producers' own enqueue script (worker/lua/enqueue.lua,
 * the one the CLI and the Python client run), so there is one enqueue rule: KEYS[6] is the
 * fence key and ARGV[2] the value it must still hold ("" = unfenced); KEYS[1..5] and ARGV[1]
 * are the enqueue script's. Built once, on first use (the embedded file never changes). */
static const char FENCE_PREFIX[] =
    "if ARGV[2] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[2] then return -1 end\n";

static pthread_once_t script_once = PTHREAD_ONCE_INIT;
static char *script;

static void script_build(void)
{
    size_t len = 0;
    const char *body = embedded_get("worker/lua/enqueue.lua", &len);
    if (!body) return;
    script = xasprintf("%s%.*s", FENCE_PREFIX, (int)len, body);
}

int enq_payload(rds *rc, const cfg *c, const char *payload, const char *fence_key,
                const char *fence_val, bool *fenced, sw_err *err)
{
    job_req req;
    char k_job[400], k_high[256], k_def[256], k_low[256], k_delayed[256];
    if (fenced) *fenced = false;
    if (payload_parse(payload, strlen(payload), &req, err) != 0) {
        payload_free(&req);
        return -1;
    }
    rds_job_key(c, req.id, k_job, sizeof k_job);
    payload_free(&req);
    rds_key(c, "stream:high", k_high, sizeof k_high);
    rds_key(c, "stream", k_def, sizeof k_def);
    rds_key(c, "stream:low", k_low, sizeof k_low);
    rds_key(c, "delayed", k_delayed, sizeof k_delayed);
    pthread_once(&script_once, script_build);
    if (!script) return sw_errf(err, SW_E_INTERNAL, false, "enqueue: script not embedded");
    const char *argv[] = {"EVAL", script, "6", k_job, k_high, k_def, k_low, k_delayed,
                          fence_key ? fence_key : k_job, payload, fence_val ? fence_val : ""};
    redisReply *r = rds_command_argv(rc, 11, argv, NULL);
    long long v = -2;
    if (r && r->type == REDIS_REPLY_INTEGER) v = r->integer;               /* the fence */
    else if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
             r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer;                                        /* {added, ...} */
    if (v == -2) {
        sw_errf(err, SW_E_INTERNAL, true, "enqueue: %s",
                !r ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        if (r) freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    if (v < 0) {
        if (fenced) *fenced = true;
        return sw_errf(err, SW_E_INTERNAL, true, "enqueue: scheduler lock no longer ours");
    }
    return (int)v;
}
