/* common/payload.h — the job payload v1 of docs/contract.md §2: parse and validate.
 * Owns: the grammar of a payload (fields, types, id formats, size limit). It does
 * not know which job types exist (the jobs/ table does: unknown_job_type).
 *
 *   {"v":1,"id":"…","type":"…","tenant_id":"…","sandbox_id":"<uuid>",
 *    "session_id":"<uuid>","args":{…},"max_attempts":5,"timeout_s":900}
 */
#ifndef SW_COMMON_PAYLOAD_H
#define SW_COMMON_PAYLOAD_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "common/ids.h"

#define PAYLOAD_MAX_BYTES (1024 * 1024)

typedef struct job_req {
    char id[129];                      /* idempotency key; "" when unparseable */
    char type[33];                     /* "snapshot", "restore", "regenerate", "noop" */
    char tenant_id[64];
    char sandbox_id[SW_UUID_LEN + 1];  /* lowercased; "" when absent (sweep, prune) */
    char session_id[SW_UUID_LEN + 1];  /* lowercased; "" when absent (sleep, sweep, prune) */
    json_t *args;                      /* owned object (never NULL once parsed) */
    int max_attempts;                  /* 0 = not given */
    int timeout_s;                     /* 0 = not given */
    bool celery;                       /* "origin": "celery": results go to Celery's backend */
    bool celery_ignore_result;         /* "ignore_result": true: write no Celery result */
    int celery_retries;                /* "retries": Celery's headers.retries (attempt base) */
    int64_t celery_expires_ms;         /* "expires_ms": epoch ms after which it is REVOKED */
    int prio;                          /* "priority": PRIO_HIGH | PRIO_DEFAULT (absent) | PRIO_LOW */
    int64_t run_at_ms;                 /* "run_at_ms": epoch ms, Redis clock; 0 = not given */
    int64_t delay_ms;                  /* "delay_ms": from when it was added; 0 = not given */
} job_req;

/* Priorities (docs/producers.md), also the index of the stream a worker reads them from. */
enum { PRIO_HIGH = 0, PRIO_DEFAULT = 1, PRIO_LOW = 2, PRIO_COUNT = 3 };
const char *payload_prio_name(int prio); /* "high", "default", "low" */

/* Parse 'len' bytes of JSON into 'r' (zeroed first). Returns 0, or -1 with
 * invalid_payload in 'err'; r->id is filled whenever the id itself was valid,
 * so a dead entry can name the job. Free with payload_free() in both cases. */
int payload_parse(const char *json, size_t len, job_req *r, sw_err *err);
void payload_free(job_req *r);
/* Serialize 'r' back into a canonical payload (caller frees). */
char *payload_dump(const job_req *r);

#endif
