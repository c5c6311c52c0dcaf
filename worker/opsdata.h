/* worker/opsdata.h — what operators see of a queue, read from Redis with the blocking
 * hiredis API: queue figures (depth, pending, delayed, dead, lag, oldest age, consumers,
 * throughput), jobs listed by state, one job with its events, dead-letter actions.
 * Shared by `snapworker stats` / `snapworker ls` (worker/cli_stats.c) and the HTTP
 * listener's /metrics, /api and /ui (worker/http.c, worker/http_api.c).
 *
 * Nothing returned holds a secret: payload arguments are never copied out, and
 * results, errors and event data go through common/redact.h (docs/operations.md
 * "Secrets in payloads"). Every function returns a new JSON reference (caller
 * json_decref()s) or NULL with err filled (SW_E_INTERNAL, retryable: Redis failed). */
#ifndef SW_WORKER_OPSDATA_H
#define SW_WORKER_OPSDATA_H
#include <hiredis.h>
#include <jansson.h>
#include <stdbool.h>

#include "common/cfg.h"
#include "common/rds.h"
#include "common/err.h"

/* The three streams of a queue, highest priority first (docs/queue.md). */
#define OPS_NSTREAMS 3
extern const char *const ops_stream_suffix[OPS_NSTREAMS];   /* "stream:high", "stream", "stream:low" */
extern const char *const ops_priority_name[OPS_NSTREAMS];   /* "high", "default", "low" */

/* Figures of queue 'queue' read now: {"name","depth","pending","lag","delayed","dead",
 * "oldest_age_s","streams":{"high","default","low"},"consumers":[{"name","pending",
 * "idle_ms"}],"live_workers","throughput_1m","at_ms"}. */
json_t *ops_queue_figures(rds *rc, const cfg *c, const char *queue, sw_err *err);

/* The same, shared by every replica: served from the key {ns}:{Q}:stats when it is
 * younger than 'max_age_ms'; else one caller (SET NX on {ns}:{Q}:stats:lock) reads the
 * figures and stores them, the others keep using the previous copy, so Redis is read
 * about once per 'max_age_ms' however many replicas scrape. Adds "age_ms". */
json_t *ops_queue_figures_shared(rds *rc, const cfg *c, const char *queue,
                                 int max_age_ms, sw_err *err);

/* Jobs of queue 'queue' in 'state' (queued | running | delayed | dead | failed |
 * succeeded | cancelled), newest first where there is an order, at most 'limit';
 * 'type' (NULL = any) filters by job type. An array of
 * {"id","type","status","priority","attempt","worker","ts","error":{code,message},
 *  "progress":{...},"dead_id","due_ms","idle_ms"} (fields present when known). */
json_t *ops_list(rds *rc, const cfg *c, const char *queue, const char *state,
                 const char *type, int limit, sw_err *err);
bool ops_state_valid(const char *state);

/* One job: {"job": the redacted hash (or null), "events": [oldest first]}; NULL with
 * SW_E_INVALID_PAYLOAD when 'id' is not a valid job id. */
json_t *ops_job(rds *rc, const cfg *c, const char *queue, const char *id, sw_err *err);

/* Dead-letter actions. requeue: {"requeued":ID,"entry":NEW}; SW_E_INVALID_PAYLOAD when
 * the id is malformed or no such entry. purge: 'id' NULL = the whole dead stream,
 * else that one entry: {"purged":N}. */
json_t *ops_dead_requeue(rds *rc, const cfg *c, const char *queue, const char *id,
                         sw_err *err);
json_t *ops_dead_purge(rds *rc, const cfg *c, const char *queue, const char *id,
                       sw_err *err);
bool ops_stream_id_valid(const char *s);   /* "MS-SEQ", digits */

#endif
