/* jobs/noop.c — the diagnostic job: health probes, benchmarks and tests.
 * args: sleep_ms, fail ("transient" | "permanent"), fail_attempts (N); any other value of
 * these is invalid_payload, naming the field.
 * Sleeping honours the cancel flag and the deadline, so a drain or a timeout
 * ends it promptly. */
#include <time.h>

#include "jobs/job.h"
#include "jobs/jobs.h"

/* Every arg is checked before anything runs: a typo ("fail": "permanant") or a
 * negative sleep would otherwise quietly succeed and hide the probe's intent. */
static int noop_args(const json_t *args, json_int_t *sleep_ms, const char **fail,
                     json_int_t *fail_attempts, sw_err *err)
{
    json_t *v = json_object_get(args, "sleep_ms");
    *sleep_ms = 0;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > 7LL * 86400 * 1000)
            return sw_errc(err, SW_E_INVALID_PAYLOAD,
                           "args.sleep_ms: expected an integer from 0 to 604800000");
        *sleep_ms = json_integer_value(v);
    }
    v = json_object_get(args, "fail");
    *fail = NULL;
    if (v && !json_is_null(v)) {
        const char *f = json_string_value(v);
        if (!f || (strcmp(f, "transient") != 0 && strcmp(f, "permanent") != 0))
            return sw_errc(err, SW_E_INVALID_PAYLOAD,
                           "args.fail: expected \"transient\", \"permanent\" or null");
        *fail = f;
    }
    v = json_object_get(args, "fail_attempts");
    *fail_attempts = 0;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000)
            return sw_errc(err, SW_E_INVALID_PAYLOAD,
                           "args.fail_attempts: expected an integer from 0 to 1000");
        *fail_attempts = json_integer_value(v);
    }
    return 0;
}

int job_noop_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    json_int_t sleep_ms = 0, fail_attempts = 0;
    const char *fail = NULL;
    if (noop_args(ctx->req->args, &sleep_ms, &fail, &fail_attempts, err) < 0) return -1;

    int64_t until = job_now_ms() + sleep_ms;
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
