/* jobs/noop.c — the diagnostic job: health probes, benchmarks and tests.
 * args: sleep_ms, fail ("transient" | "permanent"), fail_attempts (N).
 * Sleeping honours the cancel flag and the deadline, so a drain or a timeout
 * ends it promptly. */
#include <time.h>

#include "jobs/job.h"
#include "jobs/jobs.h"

int job_noop_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    json_t *args = ctx->req->args;
    json_int_t sleep_ms = json_integer_value(json_object_get(args, "sleep_ms"));
    const char *fail = json_string_value(json_object_get(args, "fail"));
    json_int_t fail_attempts = json_integer_value(json_object_get(args, "fail_attempts"));

    int64_t until = job_now_ms() + (sleep_ms > 0 ? sleep_ms : 0);
    while (job_now_ms() < until) {
        if (job_cancelled(ctx))
            return sw_errc(err, SW_E_TIMEOUT, "noop cancelled after its deadline or a stop");
        int64_t left = until - job_now_ms();
        struct timespec ts = {0, (left > 20 ? 20 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (fail && strcmp(fail, "permanent") == 0)
        return sw_errf(err, SW_E_INTERNAL, false, "noop asked to fail permanently");
    if (fail && strcmp(fail, "transient") == 0)
        return sw_errf(err, SW_E_INTERNAL, true, "noop asked to fail transiently");
    if (fail_attempts > 0 && ctx->attempt <= fail_attempts)
        return sw_errf(err, SW_E_INTERNAL, true, "noop failing attempt %d of the first %lld",
                       ctx->attempt, (long long)fail_attempts);
    *result = json_pack("{s:b}", "ok", 1);
    return 0;
}
