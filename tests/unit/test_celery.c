/* tests/unit/test_celery.c — Celery wire formats (worker/celery_msg.h) against bytes written by
 * the real Celery 5.2.6 / kombu 5.2.4: list entries captured after app.send_task(...) and
 * result metas written by Celery's own Redis backend (tests/fixtures-gen/gen_celery.py,
 * committed under tests/unit/fixtures/celery/, with expect.json computed by Celery's own
 * ISO-8601 helpers). Runs from the repository root so the fixtures are found by relative path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/ids.h"
#include "common/payload.h"
#include "common/xmalloc.h"
#include "worker/celery_msg.h"

#define FIX "tests/unit/fixtures/celery/"
#define SB "2B2E6240-6F35-43EE-BC4E-41ADE6AE1AD4"
#define SS "52fbb8b7-179a-4c2e-a468-7125f9e86391"

/* ------------------------------------------------------------------ helpers */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open fixture %s (run from the repository root)", path);
    size_t cap = 4096, n = 0, got;
    char *buf = xmalloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n < 2) buf = xrealloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

/* Parse fixture msg_<name>.json into 'm'; returns celery_parse's result. */
static int parse_fixture(const char *name, celery_msg *m, sw_err *e)
{
    char path[256];
    size_t len;
    snprintf(path, sizeof path, FIX "msg_%s.json", name);
    char *raw = read_file(path, &len);
    int rc = celery_parse(raw, len, m, e);
    free(raw);
    return rc;
}

static json_t *expect_all(void)
{
    json_error_t je;
    json_t *v = json_load_file(FIX "expect.json", 0, &je);
    if (!v) fail_msg("expect.json: %s", je.text);
    return v;
}

/* The payload of a parsed message as JSON (owned), after checking it passes payload_parse. */
static json_t *payload_of(const celery_msg *m)
{
    assert_non_null(m->payload);
    job_req r;
    sw_err e;
    assert_int_equal(payload_parse(m->payload, strlen(m->payload), &r, &e), 0);
    payload_free(&r);
    return json_loads(m->payload, 0, NULL);
}

static void expect_invalid(const char *name, const char *task_id, const char *needle)
{
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture(name, &m, &e), -1);
    assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
    assert_false(e.retryable);
    assert_null(m.payload);
    assert_string_equal(m.task_id, task_id);
    assert_string_equal(m.exc_type, "InvalidPayload");
    assert_string_equal(m.exc_module, "snapworker");
    assert_string_equal(m.exc_message, e.msg);
    if (needle && !strstr(e.msg, needle)) fail_msg("%s: message '%s' lacks '%s'", name, e.msg, needle);
    celery_msg_free(&m);
}

static char *b64(const char *s)
{
    size_t n = strlen(s);
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

/* A hand-made envelope: headers JSON text and body JSON text (base64-encoded here). */
static int parse_made(const char *headers, const char *body, celery_msg *m, sw_err *e)
{
    char *enc = b64(body);
    char *raw = xasprintf("{\"body\": \"%s\", \"content-encoding\": \"utf-8\", \"content-type\": "
                          "\"application/json\", \"headers\": %s, \"properties\": "
                          "{\"body_encoding\": \"base64\", \"correlation_id\": \"corr-1\"}}",
                          enc, headers);
    int rc = celery_parse(raw, strlen(raw), m, e);
    free(enc);
    free(raw);
    return rc;
}

#define KW "[[], {\"sandbox_id\": \"" SB "\", \"session_id\": \"" SS "\"}, {}]"
#define HDR(extra) "{\"task\": \"snapworker.noop\", \"id\": \"t-1\"" extra "}"

/* ------------------------------------------------------------------ parsing real messages */

static void kwargs_become_the_canonical_payload_fields(void **state)
{
    (void)state;
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture("kwargs", &m, &e), 0);
    assert_string_equal(m.task_id, "c-kwargs-1");
    assert_string_equal(m.task, "snapworker.noop");
    assert_int_equal(m.eta_ms, 0);
    assert_int_equal(m.expires_ms, 0);
    assert_int_equal(m.retries, 0);
    assert_false(m.ignore_result);
    json_t *p = payload_of(&m);
    assert_int_equal(json_integer_value(json_object_get(p, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(p, "id")), "c-kwargs-1");
    assert_string_equal(json_string_value(json_object_get(p, "type")), "noop");
    assert_string_equal(json_string_value(json_object_get(p, "tenant_id")), "acme");
    assert_string_equal(json_string_value(json_object_get(p, "sandbox_id")), SB);
    assert_string_equal(json_string_value(json_object_get(p, "session_id")), SS);
    json_t *want = json_pack("{s:i}", "sleep_ms", 5);
    assert_true(json_equal(json_object_get(p, "args"), want));
    json_decref(want);
    assert_int_equal(json_integer_value(json_object_get(p, "max_attempts")), 3);
    assert_int_equal(json_integer_value(json_object_get(p, "timeout_s")), 30);
    assert_string_equal(json_string_value(json_object_get(p, "origin")), "celery");
    assert_int_equal(json_integer_value(json_object_get(p, "retries")), 0);
    assert_null(json_object_get(p, "expires_ms"));
    assert_null(json_object_get(p, "ignore_result"));
    json_decref(p);
    celery_msg_free(&m);
    celery_msg_free(&m); /* idempotent */
    celery_msg_free(NULL);
}

static void kwargs_outside_the_known_set_are_merged_into_args(void **state)
{
    (void)state;
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture("extra_kwargs", &m, &e), 0);
    json_t *p = payload_of(&m);
    assert_string_equal(json_string_value(json_object_get(p, "type")), "restore");
    assert_string_equal(json_string_value(json_object_get(p, "tenant_id")), "public");
    json_t *want = json_loads("{\"start_webapp\": false, \"nextjs_port\": 3010, \"llm_config\": "
                              "{\"provider\": \"openai\", \"model_name\": \"gpt-5\", \"api_key\": "
                              "\"sk-x\"}, \"use_demo_data\": false}",
                              0, NULL);
    assert_true(json_equal(json_object_get(p, "args"), want));
    json_decref(want);
    json_decref(p);
    celery_msg_free(&m);
}

static void a_kwarg_given_twice_with_different_values_is_invalid(void **state)
{
    (void)state;
    expect_invalid("conflict_kwargs", "c-conflict-1", "nextjs_port");
}

static void a_single_object_argument_is_used_as_the_kwargs(void **state)
{
    (void)state;
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture("obj_arg", &m, &e), 0);
    assert_string_equal(m.task_id, "0B6F6A0E-6A43-4C43-9C3E-3C1F7F0F2F12"); /* as given */
    json_t *p = payload_of(&m);
    assert_string_equal(json_string_value(json_object_get(p, "type")), "snapshot");
    json_t *args = json_object_get(p, "args");
    assert_string_equal(json_string_value(json_object_get(args, "snapshot_id")),
                        "0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11");
    assert_string_equal(json_string_value(json_object_get(args, "label")), "\xc3\xa9");
    json_decref(p);
    celery_msg_free(&m);
}

static void positional_arguments_are_invalid_and_keep_the_task_id(void **state)
{
    (void)state;
    expect_invalid("positional", "c-pos-1", "positional");
}

static void countdown_and_eta_give_epoch_ms_as_celery_reads_them(void **state)
{
    (void)state;
    json_t *all = expect_all(), *ex = json_object_get(all, "messages");
    static const char *const names[] = {"countdown", "eta_offset", "eta_naive", "eta_negative"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        celery_msg m;
        sw_err e;
        assert_int_equal(parse_fixture(names[i], &m, &e), 0);
        int64_t want = json_integer_value(json_object_get(json_object_get(ex, names[i]), "eta_ms"));
        assert_true(want > 0);
        if (m.eta_ms != want) fail_msg("%s: eta_ms %lld, Celery says %lld", names[i],
                                       (long long)m.eta_ms, (long long)want);
        celery_msg_free(&m);
    }
    json_decref(all);
    /* literals, independent of the generator: 2030-01-02T03:04:05.678901+05:30 */
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture("eta_offset", &m, &e), 0);
    assert_int_equal(m.eta_ms, INT64_C(1893533645678));
    celery_msg_free(&m);
    assert_int_equal(parse_fixture("eta_naive", &m, &e), 0); /* 2030-01-02T03:04:05, UTC */
    assert_int_equal(m.eta_ms, INT64_C(1893553445000));
    celery_msg_free(&m);
}

static void expires_is_read_and_carried_in_the_payload(void **state)
{
    (void)state;
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture("expires_past", &m, &e), 0); /* 2001-02-03T04:05:06+00:00 */
    assert_int_equal(m.expires_ms, INT64_C(981173106000));
    json_t *p = payload_of(&m);
    assert_int_equal(json_integer_value(json_object_get(p, "expires_ms")), INT64_C(981173106000));
    json_decref(p);
    celery_msg_free(&m);
    json_t *all = expect_all();
    assert_int_equal(parse_fixture("expires_rel", &m, &e), 0);
    assert_int_equal(m.expires_ms, json_integer_value(json_object_get(
                                       json_object_get(json_object_get(all, "messages"),
                                                       "expires_rel"),
                                       "expires_ms")));
    celery_msg_free(&m);
    json_decref(all);
}

static void retries_timelimit_and_ignore_result_are_read(void **state)
{
    (void)state;
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture("retries", &m, &e), 0);
    assert_int_equal(m.retries, 3);
    json_t *p = payload_of(&m);
    assert_int_equal(json_integer_value(json_object_get(p, "retries")), 3);
    json_decref(p);
    celery_msg_free(&m);

    assert_int_equal(parse_fixture("time_limit", &m, &e), 0); /* time_limit=12.5 */
    p = payload_of(&m);
    assert_int_equal(json_integer_value(json_object_get(p, "timeout_s")), 13);
    json_decref(p);
    celery_msg_free(&m);

    assert_int_equal(parse_fixture("ignore_result", &m, &e), 0);
    assert_true(m.ignore_result);
    p = payload_of(&m);
    assert_true(json_is_true(json_object_get(p, "ignore_result")));
    json_decref(p);
    celery_msg_free(&m);
}

static void an_unknown_task_name_is_not_registered_and_keeps_its_id(void **state)
{
    (void)state;
    static const char *const cases[][3] = {{"unknown_task", "c-unknown-1", "snapworker.bake"},
                                           {"foreign_task", "c-foreign-1", "proj.tasks.add"}};
    for (size_t i = 0; i < 2; i++) {
        celery_msg m;
        sw_err e;
        assert_int_equal(parse_fixture(cases[i][0], &m, &e), -1);
        assert_int_equal(e.code, SW_E_UNKNOWN_JOB_TYPE);
        assert_string_equal(m.task_id, cases[i][1]);
        assert_string_equal(m.task, cases[i][2]);
        assert_string_equal(m.exc_type, "NotRegistered");
        assert_string_equal(m.exc_module, "celery.exceptions");
        assert_string_equal(m.exc_message, cases[i][2]); /* Celery: NotRegistered(name) */
        assert_non_null(strstr(e.msg, cases[i][2]));
        assert_null(m.payload);
        celery_msg_free(&m);
    }
}

static void malformed_messages_are_invalid_payload_with_the_id_when_known(void **state)
{
    (void)state;
    expect_invalid("not_json", "", "not JSON");
    expect_invalid("wrong_encoding", "c-wrong-enc", "body_encoding");
    expect_invalid("body_not_base64", "c-not-b64", "base64");
    expect_invalid("pickle", "c-pickle", "content-type");
    expect_invalid("protocol_v1", "c-v1", "protocol v1");
    expect_invalid("bad_id", "", "headers.id");
    expect_invalid("bad_sandbox", "c-badsb", "sandbox_id");
    expect_invalid("missing_session", "c-nosession", "session_id");
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture("protocol_v1", &m, &e), -1);
    assert_string_equal(m.task, "snapworker.noop");
    celery_msg_free(&m);
}

static void a_body_without_body_encoding_is_the_json_text_itself(void **state)
{
    (void)state;
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_fixture("plain_body", &m, &e), 0);
    assert_string_equal(m.task_id, "c-plain-body");
    celery_msg_free(&m);
}

static void every_fixture_matches_what_celery_put_in_it(void **state)
{
    (void)state;
    json_t *all = expect_all();
    json_t *msgs = json_object_get(all, "messages"), *ex;
    const char *name;
    int n = 0;
    json_object_foreach(msgs, name, ex) {
        celery_msg m;
        sw_err e;
        int rc = parse_fixture(name, &m, &e);
        const char *tid = json_string_value(json_object_get(ex, "task_id"));
        assert_string_equal(m.task_id, tid && id_valid_job(tid) ? tid : "");
        assert_true(rc == 0 ? m.payload != NULL : m.payload == NULL && m.exc_type[0]);
        if (rc == 0) {
            assert_int_equal(m.eta_ms, json_integer_value(json_object_get(ex, "eta_ms")));
            assert_int_equal(m.expires_ms, json_integer_value(json_object_get(ex, "expires_ms")));
            assert_int_equal(m.retries, json_integer_value(json_object_get(ex, "retries")));
            json_t *body = json_object_get(ex, "body"), *p = payload_of(&m);
            json_t *kw = json_array_get(body, 1);
            if (json_is_object(kw) && json_object_size(kw)) {
                assert_true(json_equal(json_object_get(p, "sandbox_id"),
                                       json_object_get(kw, "sandbox_id")));
            }
            json_decref(p);
        }
        celery_msg_free(&m);
        n++;
    }
    assert_true(n >= 25);
    json_decref(all);
}

/* ------------------------------------------------------------------ hand-made edge cases */

static void header_and_body_edge_cases(void **state)
{
    (void)state;
    static const struct {
        const char *headers, *body;
        int rc;
        const char *needle;
    } cases[] = {
        {HDR(""), KW, 0, NULL},
        {HDR(", \"eta\": \"\", \"expires\": null, \"retries\": null"), KW, 0, NULL},
        {HDR(", \"eta\": \"2030-01-02T03:04:05Z\""), KW, 0, NULL},
        {HDR(", \"eta\": \"2024-02-29 00:00:00.5-0130\""), KW, 0, NULL},
        {HDR(", \"eta\": \"2030-01-02\""), KW, 0, NULL},
        {HDR(", \"eta\": \"2023-02-29T00:00:00\""), KW, -1, "headers.eta"},
        {HDR(", \"eta\": \"2030-01-02T03:04:05+00:00 junk\""), KW, -1, "headers.eta"},
        {HDR(", \"eta\": \"2030-01-02T24:00:00\""), KW, -1, "headers.eta"},
        {HDR(", \"eta\": \"tomorrow\""), KW, -1, "headers.eta"},
        {HDR(", \"eta\": 1700000000"), KW, -1, "headers.eta"},
        {HDR(", \"expires\": \"2030-13-01T00:00:00\""), KW, -1, "headers.expires"},
        {HDR(", \"retries\": -1"), KW, -1, "retries"},
        {HDR(", \"retries\": \"2\""), KW, -1, "retries"},
        {HDR(", \"timelimit\": 5"), KW, -1, "timelimit"},
        {HDR(", \"timelimit\": [null, 2]"), KW, 0, NULL},
        {"{\"task\": \"snapworker.noop\"}", KW, -1, "headers.id"},
        {"{\"task\": 7, \"id\": \"t-1\"}", KW, -1, "headers.task"},
        {"{\"task\": \"snapworker.\", \"id\": \"t-1\"}", KW, -1, "not registered"},
        {"{\"task\": \"snapworker.noopx\", \"id\": \"t-1\"}", KW, -1, "not registered"},
        {"{\"task\": \"snapworker\", \"id\": \"t-1\"}", KW, -1, "not registered"},
        {HDR(""), "{\"a\": 1}", -1, "protocol v2"},
        {HDR(""), "[[], {}]", -1, "missing field"},
        {HDR(""), "[[], [], {}]", -1, "kwargs"},
        {HDR(""), "[{}, {}, {}]", -1, "args"},
        {HDR(""), "[[{\"sandbox_id\": \"" SB "\"}], {\"session_id\": \"" SS "\"}, {}]", -1,
         "not both"},
        {HDR(""), "[[], {\"sandbox_id\": \"" SB "\", \"session_id\": \"" SS "\", \"args\": 3}]",
         -1, "'args'"},
        {HDR(""), "[[], {\"sandbox_id\": \"" SB "\", \"session_id\": \"" SS
                  "\", \"tenant_id\": \"../x\"}]", -1, "tenant_id"},
        {HDR(""), "[[], {\"sandbox_id\": \"" SB "\", \"session_id\": \"" SS
                  "\", \"max_attempts\": \"3\"}]", -1, "max_attempts"},
        {HDR(""), "[[], {\"sandbox_id\": \"" SB "\", \"session_id\": \"" SS
                  "\", \"tenant_id\": null, \"args\": null, \"x\": 1}]", 0, NULL},
        {HDR(""), "not json", -1, "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        celery_msg m;
        sw_err e;
        int rc = parse_made(cases[i].headers, cases[i].body, &m, &e);
        if (rc != cases[i].rc)
            fail_msg("case %zu (%s %s): rc %d, want %d (%s)", i, cases[i].headers, cases[i].body,
                     rc, cases[i].rc, e.msg);
        if (cases[i].needle && !strstr(e.msg, cases[i].needle))
            fail_msg("case %zu: message '%s' lacks '%s'", i, e.msg, cases[i].needle);
        celery_msg_free(&m);
    }
    /* the values behind a few of them */
    celery_msg m;
    sw_err e;
    assert_int_equal(parse_made(HDR(", \"eta\": \"2024-02-29 00:00:00.5-0130\""), KW, &m, &e), 0);
    assert_int_equal(m.eta_ms, INT64_C(1709170200500)); /* 2024-02-29T01:30:00.5Z */
    celery_msg_free(&m);
    assert_int_equal(parse_made(HDR(", \"timelimit\": [null, 2]"), KW, &m, &e), 0);
    assert_non_null(strstr(m.payload, "\"timeout_s\":2"));
    celery_msg_free(&m);
    /* headers.id absent: correlation_id names the task for its FAILURE result */
    assert_int_equal(parse_made("{\"task\": \"snapworker.noop\"}", "[]", &m, &e), -1);
    assert_string_equal(m.task_id, "corr-1");
    celery_msg_free(&m);
    /* a NULL err is allowed */
    assert_int_equal(parse_made(HDR(""), "[1]", &m, NULL), -1);
    assert_string_equal(m.exc_type, "InvalidPayload");
    celery_msg_free(&m);
}

static void envelopes_that_are_not_objects_or_too_big_are_refused(void **state)
{
    (void)state;
    static const char *const raws[] = {"", "null", "[]", "\"x\"", "{}", "{\"headers\": 1}",
                                       ("{\"headers\": {\"task\": \"snapworker.noop\", \"id\": "
                                        "\"a\"}, \"content-type\": \"application/json\", \"body\": 5}")};
    for (size_t i = 0; i < sizeof raws / sizeof raws[0]; i++) {
        celery_msg m;
        sw_err e;
        assert_int_equal(celery_parse(raws[i], strlen(raws[i]), &m, &e), -1);
        assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
        celery_msg_free(&m);
    }
    celery_msg m;
    sw_err e;
    assert_int_equal(celery_parse("{}", (size_t)CELERY_MAX_RAW_BYTES + 1, &m, &e), -1);
    assert_non_null(strstr(e.msg, "limit"));
    /* base64 edge cases: bad padding placement, bad length */
    static const char *const bodies[] = {"W10", "W1=0", "=W10", "W10=W10=", "W1 0"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char *raw = xasprintf("{\"body\": \"%s\", \"content-type\": \"application/json\", "
                              "\"headers\": " HDR("") ", \"properties\": "
                              "{\"body_encoding\": \"base64\"}}",
                              bodies[i]);
        assert_int_equal(celery_parse(raw, strlen(raw), &m, &e), -1);
        assert_non_null(strstr(e.msg, "base64"));
        assert_string_equal(m.task_id, "t-1");
        free(raw);
        celery_msg_free(&m);
    }
}

/* Every prefix and a sweep of byte flips of every real message: no crash, no leak, and a
 * failure always says what to write. Mostly for the ASan/UBSan run. */
static void truncated_or_corrupted_messages_never_crash(void **state)
{
    (void)state;
    json_t *all = expect_all();
    const char *name;
    json_t *ex;
    json_object_foreach(json_object_get(all, "messages"), name, ex) {
        char path[256];
        size_t len;
        snprintf(path, sizeof path, FIX "msg_%s.json", name);
        char *raw = read_file(path, &len);
        for (size_t cut = 0; cut < len; cut += 1 + cut / 64) {
            celery_msg m;
            if (celery_parse(raw, cut, &m, NULL) < 0) assert_true(m.exc_type[0] != '\0');
            celery_msg_free(&m);
        }
        char *copy = xmalloc(len + 1);
        for (size_t i = 0; i < len; i += 7) {
            memcpy(copy, raw, len);
            copy[i] = (char)(copy[i] ^ (0x21 + (char)(i % 90)));
            celery_msg m;
            (void)celery_parse(copy, len, &m, NULL);
            celery_msg_free(&m);
        }
        free(copy);
        free(raw);
    }
    json_decref(all);
}

/* ------------------------------------------------------------------ result metas */

/* Replace the value of "date_done" with X so two metas compare byte for byte otherwise. */
static char *mask_date(const char *meta, char *date, size_t n)
{
    const char *k = strstr(meta, "\"date_done\": ");
    assert_non_null(k);
    const char *v = k + strlen("\"date_done\": "), *end;
    if (strncmp(v, "null", 4) == 0) {
        end = v + 4;
    } else {
        assert_true(*v == '"');
        end = strchr(v + 1, '"') + 1;
    }
    snprintf(date, n, "%.*s", (int)(end - v), v);
    return xasprintf("%.*sX%s", (int)(v - meta), meta, end);
}

static void check_date(const char *date, bool ready)
{
    if (!ready) {
        assert_string_equal(date, "null");
        return;
    }
    /* "YYYY-MM-DDTHH:MM:SS[.ffffff]" within a minute of now */
    size_t n = strlen(date);
    assert_true(n == 21 || n == 28);
    int y, mo, d, h, mi, s;
    assert_int_equal(sscanf(date, "\"%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &s), 6);
    if (n == 28) assert_true(date[20] == '.' && isdigit((unsigned char)date[26]));
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = s};
    long diff = (long)(timegm(&tm) - time(NULL));
    assert_true(diff > -60 && diff < 60);
}

static void compare_meta(const char *fixture, const char *status, const char *result_json,
                         sw_code code, const char *message, const char *type_ovr,
                         const char *module_ovr)
{
    char path[256], d1[64], d2[64];
    snprintf(path, sizeof path, FIX "meta_%s.json", fixture);
    char *want = read_file(path, NULL);
    json_t *w = json_loads(want, 0, NULL);
    const char *tid = json_string_value(json_object_get(w, "task_id"));
    char *got = celery_meta_json(tid, status, result_json, code, message, type_ovr, module_ovr);
    assert_non_null(got);
    char *mw = mask_date(want, d1, sizeof d1), *mg = mask_date(got, d2, sizeof d2);
    if (strcmp(mw, mg) != 0) fail_msg("%s:\n celery: %s\n    ours: %s", fixture, mw, mg);
    assert_true((strcmp(d1, "null") == 0) == (strcmp(d2, "null") == 0));
    check_date(d2, celery_state_ready(status));
    json_decref(w);
    free(mw);
    free(mg);
    free(got);
    free(want);
}

static void metas_are_byte_identical_to_celerys_own_backend(void **state)
{
    (void)state;
    compare_meta("success", "SUCCESS", "{\"ok\":true}", SW_OK, NULL, NULL, NULL);
    compare_meta("started", "STARTED", "{\"pid\":4242,\"hostname\":\"celery@host\"}", SW_OK,
                 NULL, NULL, NULL);
    compare_meta("retry", "RETRY", NULL, SW_E_STORAGE, "PUT k: HTTP 503", NULL, NULL);
    compare_meta("failure", "FAILURE", NULL, SW_E_INTERNAL, "noop failed: \xc3\xa9", NULL, NULL);
    compare_meta("not_registered", "FAILURE", NULL, SW_E_UNKNOWN_JOB_TYPE, "snapworker.bake",
                 "NotRegistered", "celery.exceptions");
    compare_meta("revoked", "REVOKED", NULL, SW_E_TIMEOUT, "expired", NULL, NULL);
}

static void a_result_is_rewritten_the_way_python_json_dumps_writes_it(void **state)
{
    (void)state;
    /* the result as jansson would hand it over (compact, its own escapes and float digits) */
    char *want = read_file(FIX "meta_success_rich.json", NULL);
    json_t *w = json_loads(want, 0, NULL);
    char *compact = json_dumps(json_object_get(w, "result"), JSON_COMPACT | JSON_ENCODE_ANY);
    compare_meta("success_rich", "SUCCESS", compact, SW_OK, NULL, NULL, NULL);
    free(compact);
    json_decref(w);
    free(want);
    /* scalars and awkward reals */
    static const char *const pairs[][2] = {
        {"3", "3"}, {"\"x\"", "\"x\""}, {"null", "null"}, {"[]", "[]"}, {"0.5", "0.5"},
        {"1e22", "1e+22"}, {"123456789012345678", "123456789012345678"},
        {"1.7976931348623157e308", "1.7976931348623157e+308"}, {"5e-324", "5e-324"},
        {"-1.0", "-1.0"}, {"0.000123", "0.000123"}, {"1234.5", "1234.5"},
        {"[\"\\u0000\\u001f\\u2028\"]", "[\"\\u0000\\u001f\\u2028\"]"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char *got = celery_meta_json("t", "SUCCESS", pairs[i][0], SW_OK, NULL, NULL, NULL);
        assert_non_null(got);
        char *want2 = xasprintf("{\"status\": \"SUCCESS\", \"result\": %s, ", pairs[i][1]);
        if (strncmp(got, want2, strlen(want2)) != 0) fail_msg("%s -> %s", pairs[i][0], got);
        free(want2);
        free(got);
    }
}

static void metas_refuse_bad_input_and_handle_odd_messages(void **state)
{
    (void)state;
    assert_null(celery_meta_json("t", "PENDING", NULL, SW_OK, NULL, NULL, NULL));
    assert_null(celery_meta_json("t", NULL, NULL, SW_OK, NULL, NULL, NULL));
    assert_null(celery_meta_json("bad/id", "SUCCESS", NULL, SW_OK, NULL, NULL, NULL));
    assert_null(celery_meta_json(NULL, "SUCCESS", NULL, SW_OK, NULL, NULL, NULL));
    assert_null(celery_meta_json("t", "SUCCESS", "{nope", SW_OK, NULL, NULL, NULL));
    char *s = celery_meta_json("t", "SUCCESS", NULL, SW_OK, NULL, NULL, NULL);
    assert_non_null(strstr(s, "\"result\": null, "));
    free(s);
    s = celery_meta_json("t", "STARTED", NULL, SW_OK, NULL, NULL, NULL);
    assert_non_null(strstr(s, "\"result\": {}, "));
    assert_non_null(strstr(s, "\"date_done\": null, "));
    free(s);
    s = celery_meta_json("t", "FAILURE", NULL, SW_E_UNSAFE_ARCHIVE, NULL, NULL, NULL);
    assert_non_null(strstr(s, "{\"exc_type\": \"UnsafeArchive\", \"exc_message\": [], "
                              "\"exc_module\": \"snapworker\"}"));
    free(s);
    s = celery_meta_json("t", "FAILURE", NULL, SW_E_STORAGE, "bad \xff byte", NULL, NULL);
    assert_non_null(strstr(s, "\"exc_message\": [\"bad ? byte\"]"));
    free(s);
    assert_true(celery_state_ready("SUCCESS") && celery_state_ready("FAILURE") &&
                celery_state_ready("REVOKED"));
    assert_false(celery_state_ready("STARTED") || celery_state_ready("RETRY") ||
                 celery_state_ready(NULL));
}

/* ------------------------------------------------------------------ lists and escapes */

static void check_strv(char **v, const char *const *want, size_t n)
{
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(v[i]);
        assert_string_equal(v[i], want[i]);
    }
    assert_null(v[n]);
    celery_strv_free(v);
}

static void priority_lists_are_named_as_kombu_names_them(void **state)
{
    (void)state;
    static const char *const dflt[] = {"snapworker", "snapworker\x06\x16" "3",
                                       "snapworker\x06\x16" "6", "snapworker\x06\x16" "9"};
    check_strv(celery_priority_lists("snapworker", "\x06\x16", "0,3,6,9"), dflt, 4);
    static const char *const onyx[] = {"celery", "celery:1", "celery:2", "celery:3", "celery:4"};
    check_strv(celery_priority_lists("celery", ":", "0,1,2,3,4"), onyx, 5);
    /* kombu puts priority 0 on the bare queue only: steps without 0 have no bare list */
    static const char *const no0[] = {"q|1", "q|2"};
    check_strv(celery_priority_lists("q", "|", "1,2"), no0, 2);
    static const char *const one[] = {"q"};
    check_strv(celery_priority_lists("q", "", "0"), one, 1);
    /* the list each captured priority message really went to */
    json_t *all = expect_all(), *msgs = json_object_get(all, "messages");
    char **v = celery_priority_lists("snapworker", "\x06\x16", "0,3,6,9");
    assert_string_equal(v[2], json_string_value(json_object_get(
                                  json_object_get(msgs, "priority_default"), "list")));
    assert_string_equal(v[0], json_string_value(json_object_get(
                                  json_object_get(msgs, "kwargs"), "list")));
    celery_strv_free(v);
    v = celery_priority_lists("snapworker", ":", "0,1,2,3,4");
    assert_string_equal(v[2], json_string_value(json_object_get(
                                  json_object_get(msgs, "priority_onyx"), "list")));
    celery_strv_free(v);
    json_decref(all);
    static const char *const bad[] = {"", "a", "3,1", "0,,1", "0,", ",0", "256", "0;1", " 0",
                                      "1,1", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (celery_priority_lists("q", ":", bad[i])) fail_msg("steps '%s' accepted", bad[i]);
    assert_null(celery_priority_lists(NULL, ":", "0"));
    assert_null(celery_priority_lists("q", NULL, "0"));
    celery_strv_free(NULL);
}

static void config_escapes_decode_to_raw_bytes(void **state)
{
    (void)state;
    static const char *const ok[][2] = {
        {"\\x06\\x16", "\x06\x16"}, {":", ":"}, {"", ""}, {"a\\nb\\t\\\\", "a\nb\t\\"},
        {"\\006\\26", "\x06\x16"}, {"\\x7", "\x07"}, {"\\xfF", "\xff"}, {"\\'\\\"\\?", "'\"?"},
        {"\\a\\b\\f\\v\\r", "\a\b\f\v\r"}, {"\\x0610", "\x06" "10"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *s = celery_unescape(ok[i][0]);
        assert_non_null(s);
        assert_string_equal(s, ok[i][1]);
        free(s);
    }
    static const char *const bad[] = {"\\", "a\\", "\\x", "\\xg", "\\q", "\\0", "\\x00", "\\400"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (celery_unescape(bad[i])) fail_msg("'%s' accepted", bad[i]);
    assert_null(celery_unescape(NULL));
}

/* issue 10 item 8: an oversize message is not parsed, but its task id is still found */
static void the_task_id_of_an_oversize_message_is_found_by_a_scan(void **state)
{
    (void)state;
    char id[129];
    const char *kombu = "{\"body\": \"W1tdLCB7fV0=\", \"content-encoding\": \"utf-8\", "
                        "\"headers\": {\"lang\": \"py\", \"task\": \"snapworker.noop\", "
                        "\"id\": \"t-123\", \"root_id\": \"r\"}, "
                        "\"properties\": {\"correlation_id\": \"c-9\"}}";
    assert_true(celery_scan_task_id(kombu, strlen(kombu), id, sizeof id));
    assert_string_equal(id, "t-123");
    /* no headers.id: correlation_id; an invalid id is skipped */
    const char *corr = "{\"headers\": {\"id\": \"bad id/..\"}, "
                       "\"properties\": {\"correlation_id\":\"c-9\"}}";
    assert_true(celery_scan_task_id(corr, strlen(corr), id, sizeof id));
    assert_string_equal(id, "c-9");
    const char *none = "{\"body\": \"xx\", \"headers\": {}}";
    assert_false(celery_scan_task_id(none, strlen(none), id, sizeof id));
    assert_string_equal(id, "");
    /* cut inside the value: nothing read past the end */
    const char *cut = "{\"headers\": {\"id\": \"abc";
    assert_false(celery_scan_task_id(cut, strlen(cut), id, sizeof id));
}

/* issue 10 item 4: a dead Celery envelope is shown with its body decoded and redacted */
static void a_celery_envelope_is_shown_with_its_body_redacted(void **state)
{
    (void)state;
    /* base64 of [[], {"llm_config": {"api_key": "sk-live-9"}}, {}] */
    const char *body64 = "W1tdLCB7ImxsbV9jb25maWciOiB7ImFwaV9rZXkiOiAic2stbGl2ZS05In19LCB7fV0=";
    char raw[512];
    snprintf(raw, sizeof raw,
             "{\"body\": \"%s\", \"headers\": {\"id\": \"t1\"}, "
             "\"properties\": {\"body_encoding\": \"base64\"}}", body64);
    char *shown = celery_redact_raw(raw, strlen(raw));
    assert_null(strstr(shown, "sk-live-9"));
    assert_null(strstr(shown, body64));
    assert_non_null(strstr(shown, "api_key"));
    assert_non_null(strstr(shown, "t1"));
    free(shown);
    /* cut: the body is hidden whole */
    shown = celery_redact_raw(raw, 40);
    assert_null(strstr(shown, "W1td"));
    free(shown);
    /* a canonical payload (not an envelope) is redacted by name */
    const char *p = "{\"id\":\"j\",\"args\":{\"llm_config\":{\"api_key\":\"sk-live-9\"}}}";
    shown = celery_redact_raw(p, strlen(p));
    assert_null(strstr(shown, "sk-live-9"));
    free(shown);
}

/* ------------------------------------------------------------------ pidbox broadcasts */

#define PIDBOX "tests/unit/fixtures/celery_pidbox/"

static json_t *pidbox_expect(void)
{
    json_error_t je;
    json_t *v = json_load_file(PIDBOX "expect.json", 0, &je);
    if (!v) fail_msg("celery_pidbox/expect.json: %s", je.text);
    return v;
}

static int parse_pidbox(const char *name, const char *node, celery_pidbox *p, sw_err *e)
{
    char path[256];
    size_t len;
    snprintf(path, sizeof path, PIDBOX "pidbox_%s.json", name);
    char *raw = read_file(path, &len);
    int rc = celery_pidbox_parse(raw, len, node, p, e);
    free(raw);
    return rc;
}

/* Each broadcast app.control published (gen_pidbox.py) is read as kombu's Node.handle_message
 * and celery's revoke handler read it: method, selection, ids, terminate. */
static void every_pidbox_broadcast_is_read_as_kombu_and_celery_read_it(void **state)
{
    (void)state;
    json_t *all = pidbox_expect();
    const char *node = json_string_value(json_object_get(all, "node"));
    const char *name;
    json_t *ex;
    int n = 0;
    json_object_foreach(json_object_get(all, "messages"), name, ex) {
        celery_pidbox p;
        sw_err e;
        int rc = parse_pidbox(name, node, &p, &e);
        n++;
        if (json_is_true(json_object_get(ex, "invalid_message"))) {
            if (rc != -1) fail_msg("%s: accepted", name);
            assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
            assert_null(p.ids);
            celery_pidbox_free(&p);
            continue;
        }
        if (rc != 0) fail_msg("%s: %s", name, e.msg);
        assert_string_equal(p.method, json_string_value(json_object_get(ex, "method")));
        if (p.for_us != json_is_true(json_object_get(ex, "for_us"))) fail_msg("%s: for_us", name);
        json_t *ids = json_object_get(ex, "ids");
        bool revoke = p.for_us && !strcmp(p.method, "revoke");
        if (revoke) assert_non_null(p.ids);
        else assert_null(p.ids);
        assert_int_equal(p.nids, (int)json_array_size(ids));
        for (int i = 0; i < p.nids; i++)
            assert_string_equal(p.ids[i], json_string_value(json_array_get(ids, (size_t)i)));
        if (p.ids) assert_null(p.ids[p.nids]);
        assert_int_equal(p.invalid, (int)json_integer_value(json_object_get(ex, "invalid")));
        if (p.terminate != json_is_true(json_object_get(ex, "terminate"))) fail_msg("%s: terminate", name);
        celery_pidbox_free(&p);
    }
    assert_true(n >= 18);
    json_decref(all);
}

/* The same broadcasts for a worker of another name: destinations and patterns leave it out. */
static void a_destination_or_pattern_naming_another_worker_leaves_us_out(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        bool for_us;
    } cases[] = {{"revoke_dest_us", false}, {"revoke_glob_us", false}, {"revoke_pcre_us", false},
                 {"revoke_one", true}, {"revoke_dest_empty", true}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        celery_pidbox p;
        assert_int_equal(parse_pidbox(cases[i].name, "celery@fixhost", &p, NULL), 0);
        if (p.for_us != cases[i].for_us) fail_msg("%s", cases[i].name);
        assert_true(!p.ids == !cases[i].for_us);
        celery_pidbox_free(&p);
    }
    /* the name is compared whole, not as a substring as Python's `in` on a string would */
    celery_pidbox p;
    assert_int_equal(parse_pidbox("revoke_dest_us", "snapworker@fix", &p, NULL), 0);
    assert_false(p.for_us);
    celery_pidbox_free(&p);
}

static void pidbox_messages_that_are_cut_or_corrupted_never_crash(void **state)
{
    (void)state;
    json_t *all = pidbox_expect();
    const char *node = json_string_value(json_object_get(all, "node"));
    const char *name;
    json_t *ex;
    json_object_foreach(json_object_get(all, "messages"), name, ex) {
        char path[256];
        size_t len;
        snprintf(path, sizeof path, PIDBOX "pidbox_%s.json", name);
        char *raw = read_file(path, &len);
        char *copy = xmalloc(len + 1);
        for (size_t cut = 0; cut < len; cut++) {
            celery_pidbox p;
            if (celery_pidbox_parse(raw, cut, node, &p, NULL) < 0) assert_null(p.ids);
            celery_pidbox_free(&p);
        }
        for (size_t i = 0; i < len; i += 3) {
            memcpy(copy, raw, len);
            copy[i] = (char)(copy[i] ^ (0x21 + (char)(i % 90)));
            celery_pidbox p;
            (void)celery_pidbox_parse(copy, len, node, &p, NULL);
            for (int k = 0; k < p.nids; k++) assert_true(id_valid_job(p.ids[k]));
            celery_pidbox_free(&p);
        }
        free(copy);
        free(raw);
    }
    json_decref(all);
    celery_pidbox p;
    char *big = xmalloc(CELERY_PIDBOX_MAX_BYTES + 2);
    memset(big, ' ', CELERY_PIDBOX_MAX_BYTES + 1);
    assert_int_equal(celery_pidbox_parse(big, CELERY_PIDBOX_MAX_BYTES + 1, node, &p, NULL), -1);
    celery_pidbox_free(&p);
    free(big);
    celery_pidbox_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kwargs_become_the_canonical_payload_fields),
        cmocka_unit_test(kwargs_outside_the_known_set_are_merged_into_args),
        cmocka_unit_test(a_kwarg_given_twice_with_different_values_is_invalid),
        cmocka_unit_test(a_single_object_argument_is_used_as_the_kwargs),
        cmocka_unit_test(positional_arguments_are_invalid_and_keep_the_task_id),
        cmocka_unit_test(countdown_and_eta_give_epoch_ms_as_celery_reads_them),
        cmocka_unit_test(expires_is_read_and_carried_in_the_payload),
        cmocka_unit_test(retries_timelimit_and_ignore_result_are_read),
        cmocka_unit_test(an_unknown_task_name_is_not_registered_and_keeps_its_id),
        cmocka_unit_test(malformed_messages_are_invalid_payload_with_the_id_when_known),
        cmocka_unit_test(a_body_without_body_encoding_is_the_json_text_itself),
        cmocka_unit_test(every_fixture_matches_what_celery_put_in_it),
        cmocka_unit_test(header_and_body_edge_cases),
        cmocka_unit_test(envelopes_that_are_not_objects_or_too_big_are_refused),
        cmocka_unit_test(truncated_or_corrupted_messages_never_crash),
        cmocka_unit_test(metas_are_byte_identical_to_celerys_own_backend),
        cmocka_unit_test(a_result_is_rewritten_the_way_python_json_dumps_writes_it),
        cmocka_unit_test(metas_refuse_bad_input_and_handle_odd_messages),
        cmocka_unit_test(priority_lists_are_named_as_kombu_names_them),
        cmocka_unit_test(config_escapes_decode_to_raw_bytes),
        cmocka_unit_test(the_task_id_of_an_oversize_message_is_found_by_a_scan),
        cmocka_unit_test(a_celery_envelope_is_shown_with_its_body_redacted),
        cmocka_unit_test(every_pidbox_broadcast_is_read_as_kombu_and_celery_read_it),
        cmocka_unit_test(a_destination_or_pattern_naming_another_worker_leaves_us_out),
        cmocka_unit_test(pidbox_messages_that_are_cut_or_corrupted_never_crash),
    };
    return cmocka_run_group_tests_name("celery", tests, NULL, NULL);
}
