/* tests/fuzz/fuzz_payload.c — libFuzzer harness for the job payload parser
 * (common/payload.c, ids in common/ids.c): any bytes as a Redis stream entry's payload.
 * Invariants beyond the sanitizers:
 *  - a failure is always invalid_payload, permanent, with a message, and r->id is either
 *    "" or an id that passes id_valid_job (the dead stream names the job by it);
 *  - an accepted payload has a valid id, a type of at most 32 valid characters, a valid
 *    tenant, lowercase canonical UUIDs, an args object, limits in range;
 *  - payload_dump of an accepted payload parses again to the same fields. */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "common/ids.h"
#include "common/payload.h"
#include "tests/fuzz/fuzz.h"

static void check_uuid_lower(const char *u)
{
    CHECK(id_valid_uuid(u));
    for (const char *p = u; *p; p++) CHECK(!isupper((unsigned char)*p));
}

/* The lifecycle types may leave ids out (docs/lifecycle.md): `sleep` the session,
 * `sweep` and `prune` both. An id that is there is a lowercase UUID for every type. */
static void check_id(const char *type, const char *u, bool may_omit)
{
    if (u[0] == '\0') {
        CHECK(may_omit);
        (void)type;
        return;
    }
    check_uuid_lower(u);
}

static void check_accepted(const job_req *r)
{
    CHECK(id_valid_job(r->id));
    CHECK(id_valid_job(r->type) && strlen(r->type) <= 32);
    CHECK(id_valid_tenant(r->tenant_id));
    bool tenant_job = !strcmp(r->type, "sweep") || !strcmp(r->type, "prune");
    check_id(r->type, r->sandbox_id, tenant_job);
    check_id(r->type, r->session_id, tenant_job || !strcmp(r->type, "sleep"));
    CHECK(json_is_object(r->args));
    CHECK(r->max_attempts >= 0 && r->max_attempts <= 1000);
    CHECK(r->timeout_s >= 0 && r->timeout_s <= 7 * 86400);
    CHECK(r->celery_retries >= 0 && r->celery_retries < 1000);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    job_req r;
    sw_err err;
    sw_err_clear(&err);
    if (payload_parse((const char *)data, size, &r, &err) != 0) {
        CHECK(err.code == SW_E_INVALID_PAYLOAD && !err.retryable && err.msg[0]);
        CHECK(r.id[0] == '\0' || id_valid_job(r.id));
        payload_free(&r);
        return 0;
    }
    CHECK(err.code == SW_OK);
    check_accepted(&r);

    char *dump = payload_dump(&r);
    job_req again;
    sw_err e2;
    sw_err_clear(&e2);
    CHECK(payload_parse(dump, strlen(dump), &again, &e2) == 0);
    CHECK(!strcmp(again.id, r.id) && !strcmp(again.type, r.type));
    CHECK(!strcmp(again.tenant_id, r.tenant_id));
    CHECK(!strcmp(again.sandbox_id, r.sandbox_id) && !strcmp(again.session_id, r.session_id));
    CHECK(json_equal(again.args, r.args));
    CHECK(again.max_attempts == r.max_attempts && again.timeout_s == r.timeout_s);
    CHECK(again.celery == r.celery);
    payload_free(&again);
    free(dump);
    payload_free(&r);
    return 0;
}
