/* worker/enqueue.h — add a job to the queue idempotently from Redis-synchronous code: the
 * executor threads (job_ctx.enqueue, used by `sweep`) and the scheduler (worker/schedule.c).
 * Owns: running the producers' enqueue script (worker/lua/enqueue.lua: idempotent on the id,
 * priority streams, delays) with the scheduler's fence in front of it.
 *
 * KEYS: the enqueue script's five (job hash, stream:high, stream, stream:low, delayed), then
 * the fence key (the scheduler's lock; the job hash when unfenced). ARGV: the payload, then
 * the fence value the lock must still hold ("" = unfenced). All keys share the {Q} hash tag.
 * Reply: the enqueue script's {added, status, where}, or -1 when the fence no longer holds
 * (nothing added). */
#ifndef SW_WORKER_ENQUEUE_H
#define SW_WORKER_ENQUEUE_H
#include <hiredis.h>

#include "common/cfg.h"
#include "common/rds.h"
#include "common/err.h"

/* Validate 'payload' (payload_parse) and run the script on 'rc' (blocking). 1 added, 0
 * already known, -1 with err: SW_E_INVALID_PAYLOAD, SW_E_INTERNAL (Redis; then rc->err may be
 * set and the caller reconnects), or SW_E_INTERNAL "fence lost" with *fenced = true (may be
 * NULL). fence_key/fence_val NULL = unfenced. */
int enq_payload(rds *rc, const cfg *c, const char *payload, const char *fence_key,
                const char *fence_val, bool *fenced, sw_err *err);

#endif
