/* worker/enqueue.h — add a job to the queue idempotently from Redis-synchronous code: the
 * executor threads (job_ctx.enqueue, used by `sweep`) and the scheduler (worker/schedule.c).
 * Owns: the enqueue script below. Kept in its own file so the job-control enqueue script
 * (priorities, delays) can replace it in one place.
 *
 * KEYS[1] fence (the scheduler's lock; any key when unfenced), KEYS[2] job hash
 * snapworker:{Q}:job:<id>, KEYS[3] stream snapworker:{Q}:stream. ARGV[1] the fence value the
 * lock must still hold ("" = unfenced), ARGV[2] the payload. Reply: 1 added (hash status
 * queued + XADD), 0 the job hash exists (queued, running or ended within the job TTL: nothing
 * added), -1 the fence no longer holds (nothing added). All keys share the {Q} hash tag. */
#ifndef SW_WORKER_ENQUEUE_H
#define SW_WORKER_ENQUEUE_H
#include <hiredis.h>

#include "common/cfg.h"
#include "common/err.h"

/* Validate 'payload' (payload_parse) and run the script on 'rc' (blocking). 1 added, 0
 * already known, -1 with err: SW_E_INVALID_PAYLOAD, SW_E_INTERNAL (Redis; then rc->err may be
 * set and the caller reconnects), or SW_E_INTERNAL "fence lost" with *fenced = true (may be
 * NULL). fence_key/fence_val NULL = unfenced. */
int enq_payload(redisContext *rc, const cfg *c, const char *payload, const char *fence_key,
                const char *fence_val, bool *fenced, sw_err *err);

#endif
