/* tests/fuzz/fuzz_celery.c — libFuzzer harness for the Celery ingress decoder
 * (worker/celery_msg.c): any bytes as a kombu message LPUSHed on a Celery list, and as a
 * job result handed to the result-backend meta writer.
 * Invariants beyond the sanitizers:
 *  - celery_parse: a failure is invalid_payload or unknown_job_type with no payload and the
 *    exc_* fields filled; success gives a canonical payload that payload_parse accepts again,
 *    whose id is the task id, a valid job id; the task id is "" or valid in both cases;
 *  - celery_meta_json with the bytes as result_json: NULL exactly when they are not JSON;
 *    otherwise the meta is JSON again and its "result" equals the input value (the Python
 *    json.dumps emulation loses nothing);
 *  - celery_pidbox_parse (the bytes as a control broadcast): a failure holds no ids; a
 *    success holds ids only for a revoke, each a valid job id, NULL-terminated;
 *  - celery_unescape never grows the text and never yields a NUL.
 * job_lookup is the one symbol taken from jobs/ (which would pull in every job): it is
 * replaced here by the same table of names as jobs/job.c. */
#include <jansson.h>
#include <string.h>

#include "common/ids.h"
#include "common/payload.h"
#include "jobs/job.h"
#include "tests/fuzz/fuzz.h"
#include "worker/celery_msg.h"

const job_type *job_lookup(const char *name)
{
    static const job_type types[] = {{"noop"}, {"snapshot"}, {"restore"}, {"regenerate"}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i].name, name)) return &types[i];
    return NULL;
}

static void check_parse(const uint8_t *data, size_t size)
{
    celery_msg m;
    sw_err err;
    int rc = celery_parse((const char *)data, size, &m, &err);
    CHECK(m.task_id[0] == '\0' || id_valid_job(m.task_id));
    if (rc != 0) {
        CHECK(err.code == SW_E_INVALID_PAYLOAD || err.code == SW_E_UNKNOWN_JOB_TYPE);
        CHECK(!m.payload && m.exc_type[0] && m.exc_module[0]);
        celery_msg_free(&m);
        return;
    }
    CHECK(err.code == SW_OK && m.payload && m.retries >= 0);
    CHECK(!strcmp(m.req.id, m.task_id) && job_lookup(m.req.type));
    job_req r;
    sw_err e2;
    CHECK(payload_parse(m.payload, strlen(m.payload), &r, &e2) == 0);
    CHECK(!strcmp(r.id, m.task_id) && !strcmp(r.type, m.req.type) && r.celery);
    CHECK(json_equal(r.args, m.req.args));
    payload_free(&r);
    celery_msg_free(&m);
}

static void check_meta(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) return;
    char *in = fuzz_cstr(data, size);
    json_t *want = json_loads(in, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    char *meta = celery_meta_json("fuzz-1", "SUCCESS", in, SW_OK, NULL, NULL, NULL);
    CHECK(!want == !meta);
    if (meta) {
        json_error_t je;
        json_t *got = json_loads(meta, JSON_ALLOW_NUL, &je);
        if (!got) fprintf(stderr, "meta is not JSON (%s): %s\n", je.text, meta);
        CHECK(got);
        CHECK(json_equal(json_object_get(got, "result"), want));
        CHECK(!strcmp(json_string_value(json_object_get(got, "task_id")), "fuzz-1"));
        json_decref(got);
    }
    free(meta);
    json_decref(want);
    free(in);
}

static void check_pidbox(const uint8_t *data, size_t size)
{
    celery_pidbox p;
    sw_err err;
    int rc = celery_pidbox_parse((const char *)data, size, "snapworker@fuzz", &p, &err);
    if (rc < 0) CHECK(!p.ids && err.code == SW_E_INVALID_PAYLOAD);
    if (p.ids) {
        CHECK(rc == 0 && p.for_us && !strcmp(p.method, "revoke") && !p.ids[p.nids]);
        for (int i = 0; i < p.nids; i++) CHECK(id_valid_job(p.ids[i]));
    }
    celery_pidbox_free(&p);
}

static void check_unescape(const uint8_t *data, size_t size)
{
    char *in = fuzz_cstr(data, size);
    char *out = celery_unescape(in);
    if (out) CHECK(strlen(out) <= strlen(in));
    free(out);
    free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_parse(data, size);
    check_meta(data, size);
    check_pidbox(data, size);
    check_unescape(data, size);
    return 0;
}
