/* tests/unit/test_payload.c — payload v1 parsing and id validation (docs/contract.md §2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/ids.h"
#include "common/payload.h"
#include "common/xmalloc.h"

#define SB "2B2E6240-6F35-43EE-BC4E-41ADE6AE1AD4"
#define SS "52fbb8b7-179a-4c2e-a468-7125f9e86391"

static int parse(const char *json, job_req *r, sw_err *e)
{
    sw_err_clear(e);
    return payload_parse(json, strlen(json), r, e);
}

static void expect_invalid(const char *json, const char *needle)
{
    job_req r;
    sw_err e;
    assert_int_equal(parse(json, &r, &e), -1);
    assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
    assert_false(e.retryable);
    if (needle && !strstr(e.msg, needle)) fail_msg("message '%s' lacks '%s'", e.msg, needle);
    payload_free(&r);
}

static void a_valid_payload_is_parsed_and_ids_lowercased(void **state)
{
    (void)state;
    job_req r;
    sw_err e;
    assert_int_equal(parse("{\"v\":1,\"id\":\"job-1\",\"type\":\"noop\",\"tenant_id\":\"public\","
                           "\"sandbox_id\":\"" SB "\",\"session_id\":\"" SS "\",\"args\":{\"x\":1},"
                           "\"max_attempts\":3,\"timeout_s\":10,\"extra\":true}",
                           &r, &e),
                     0);
    assert_string_equal(r.id, "job-1");
    assert_string_equal(r.type, "noop");
    assert_string_equal(r.sandbox_id, "2b2e6240-6f35-43ee-bc4e-41ade6ae1ad4");
    assert_int_equal(r.max_attempts, 3);
    assert_int_equal(r.timeout_s, 10);
    assert_int_equal(json_integer_value(json_object_get(r.args, "x")), 1);
    payload_free(&r);
}

static void v_absent_means_one_and_args_default_to_empty(void **state)
{
    (void)state;
    job_req r;
    sw_err e;
    assert_int_equal(parse("{\"id\":\"a\",\"type\":\"t\",\"tenant_id\":\"x\",\"sandbox_id\":\"" SB
                           "\",\"session_id\":\"" SS "\"}",
                           &r, &e),
                     0);
    assert_true(json_is_object(r.args));
    assert_int_equal(json_object_size(r.args), 0);
    payload_free(&r);
}

static void malformed_payloads_are_invalid(void **state)
{
    (void)state;
    expect_invalid("not json", "not JSON");
    expect_invalid("[1,2]", "not a JSON object");
    expect_invalid("{\"type\":\"noop\"}", "'id'");
    expect_invalid("{\"id\":5}", "'id'");
    expect_invalid("{\"id\":\"a/b\"}", "'id'");
    expect_invalid("{\"id\":\"a\",\"v\":2,\"type\":\"noop\"}", "version");
    expect_invalid("{\"id\":\"a\",\"v\":\"1\",\"type\":\"noop\"}", "version");
    expect_invalid("{\"id\":\"a\",\"type\":3}", "'type'");
    expect_invalid("{\"id\":\"a\",\"type\":\"noop\",\"tenant_id\":\"../x\",\"sandbox_id\":\"" SB
                   "\",\"session_id\":\"" SS "\"}", "tenant_id");
    expect_invalid("{\"id\":\"a\",\"type\":\"noop\",\"tenant_id\":\"t\",\"sandbox_id\":\"../../etc\","
                   "\"session_id\":\"" SS "\"}", "sandbox_id");
    expect_invalid("{\"id\":\"a\",\"type\":\"noop\",\"tenant_id\":\"t\",\"sandbox_id\":\"" SB
                   "\",\"session_id\":\"" SS "x\"}", "session_id");
    expect_invalid("{\"id\":\"a\",\"type\":\"noop\",\"tenant_id\":\"t\",\"sandbox_id\":\"" SB
                   "\",\"session_id\":\"" SS "\",\"args\":[]}", "args");
    expect_invalid("{\"id\":\"a\",\"type\":\"noop\",\"tenant_id\":\"t\",\"sandbox_id\":\"" SB
                   "\",\"session_id\":\"" SS "\",\"max_attempts\":\"3\"}", "max_attempts");
    expect_invalid("{\"id\":\"a\",\"type\":\"noop\",\"tenant_id\":\"t\",\"sandbox_id\":\"" SB
                   "\",\"session_id\":\"" SS "\",\"max_attempts\":0}", "max_attempts");
}

static void the_id_is_kept_when_a_later_field_is_bad(void **state)
{
    (void)state;
    job_req r;
    sw_err e;
    assert_int_equal(parse("{\"id\":\"keep-me\",\"type\":\"noop\"}", &r, &e), -1);
    assert_string_equal(r.id, "keep-me");
    payload_free(&r);
}

static void a_payload_over_one_mebibyte_is_invalid(void **state)
{
    (void)state;
    size_t n = PAYLOAD_MAX_BYTES + 100;
    char *big = xmalloc(n + 1);
    memset(big, ' ', n);
    big[n] = '\0';
    memcpy(big, "{\"id\":\"a\"}", 10);
    job_req r;
    sw_err e;
    assert_int_equal(payload_parse(big, n, &r, &e), -1);
    assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
    assert_non_null(strstr(e.msg, "1 MiB"));
    payload_free(&r);
    free(big);
}

static void id_grammars(void **state)
{
    (void)state;
    assert_true(id_valid_job("A-z_0.9:x"));
    assert_false(id_valid_job(""));
    assert_false(id_valid_job("a b"));
    char long_id[130];
    memset(long_id, 'a', 129);
    long_id[129] = 0;
    assert_false(id_valid_job(long_id));
    long_id[128] = 0;
    assert_true(id_valid_job(long_id));
    assert_true(id_valid_tenant("public"));
    assert_false(id_valid_tenant("a.b"));
    assert_true(id_valid_uuid(SB));
    assert_false(id_valid_uuid("2b2e6240-6f35-43ee-bc4e-41ade6ae1ad"));
    assert_false(id_valid_uuid("2b2e6240_6f35-43ee-bc4e-41ade6ae1ad4"));
    assert_false(id_valid_uuid("2b2e6240-6f35-43ee-bc4e-41ade6ae1adg"));
}

static void uuid5_matches_python(void **state)
{
    (void)state;
    char out[SW_UUID_LEN + 1];
    /* python3 -c 'import uuid;print(uuid.uuid5(uuid.NAMESPACE_URL,"snapworker:job-1"))' */
    id_uuid5_url("snapworker:job-1", out);
    assert_string_equal(out, "765d1775-4562-5fe9-baea-dfd7b0d95c3f");
    id_uuid4(out);
    assert_true(id_valid_uuid(out));
    assert_int_equal(out[14], '4');
}

static void dump_round_trips(void **state)
{
    (void)state;
    job_req r, r2;
    sw_err e;
    assert_int_equal(parse("{\"id\":\"a\",\"type\":\"noop\",\"tenant_id\":\"t\",\"sandbox_id\":\"" SB
                           "\",\"session_id\":\"" SS "\",\"max_attempts\":2}",
                           &r, &e),
                     0);
    char *s = payload_dump(&r);
    assert_int_equal(payload_parse(s, strlen(s), &r2, &e), 0);
    assert_string_equal(r2.sandbox_id, r.sandbox_id);
    assert_int_equal(r2.max_attempts, 2);
    free(s);
    payload_free(&r);
    payload_free(&r2);
}

/* docs/lifecycle.md: sleep acts on a sandbox, sweep and prune on a tenant; nothing else may omit
 * an id, and a given id must still be a UUID. */
static void lifecycle_types_may_omit_their_unused_ids(void **state)
{
    (void)state;
    job_req r;
    sw_err e;
    assert_int_equal(parse("{\"id\":\"s1\",\"type\":\"sleep\",\"tenant_id\":\"t\","
                           "\"sandbox_id\":\"" SB "\"}", &r, &e), 0);
    assert_string_equal(r.session_id, "");
    char *d = payload_dump(&r);
    assert_null(strstr(d, "session_id"));
    free(d);
    payload_free(&r);
    assert_int_equal(parse("{\"id\":\"w1\",\"type\":\"sweep\",\"tenant_id\":\"t\"}", &r, &e), 0);
    assert_string_equal(r.sandbox_id, "");
    payload_free(&r);
    assert_int_equal(parse("{\"id\":\"p1\",\"type\":\"prune\",\"tenant_id\":\"t\"}", &r, &e), 0);
    payload_free(&r);
    expect_invalid("{\"id\":\"s2\",\"type\":\"sleep\",\"tenant_id\":\"t\"}", "sandbox_id");
    expect_invalid("{\"id\":\"n1\",\"type\":\"snapshot\",\"tenant_id\":\"t\","
                   "\"sandbox_id\":\"" SB "\"}", "session_id");
    expect_invalid("{\"id\":\"w2\",\"type\":\"sweep\",\"tenant_id\":\"t\","
                   "\"sandbox_id\":\"nope\"}", "sandbox_id");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_valid_payload_is_parsed_and_ids_lowercased),
        cmocka_unit_test(v_absent_means_one_and_args_default_to_empty),
        cmocka_unit_test(malformed_payloads_are_invalid),
        cmocka_unit_test(the_id_is_kept_when_a_later_field_is_bad),
        cmocka_unit_test(a_payload_over_one_mebibyte_is_invalid),
        cmocka_unit_test(id_grammars),
        cmocka_unit_test(uuid5_matches_python),
        cmocka_unit_test(dump_round_trips),
        cmocka_unit_test(lifecycle_types_may_omit_their_unused_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
