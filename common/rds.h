/* common/rds.h — synchronous Redis helpers (hiredis 0.14 blocking API) shared by
 * the CLI and executor threads: connect from an rds_url (AUTH, SELECT, timeout)
 * and queue key names. The event-loop (async) side lives in worker/. */
#ifndef SW_COMMON_RDS_H
#define SW_COMMON_RDS_H
#include <hiredis.h>
#include <stddef.h>

#include "common/cfg.h"
#include "common/err.h"

/* Connect, AUTH and SELECT; NULL with SW_E_INTERNAL (retryable) on failure.
 * Caller frees with redisFree(). timeout_ms applies to connect and each command. */
redisContext *rds_connect(const rds_url *u, int timeout_ms, sw_err *err);
/* "ns:{queue}:suffix" into out (size n); returns out. */
char *rds_key(const cfg *c, const char *suffix, char *out, size_t n);
/* "ns:{queue}:job:" + id into out. */
char *rds_job_key(const cfg *c, const char *job_id, char *out, size_t n);

#endif
