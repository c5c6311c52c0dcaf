/* tests/unit/test_redact.c — secrets hidden from people (common/redact.h, docs/operations.md "Secrets in payloads"):
 * the name rule, nested objects, arrays of objects, non-string values, the original
 * untouched, broken and cut JSON text, by-value scrubbing, jansson error texts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/redact.h"

static void the_name_rule_matches_key_secret_token_password_in_any_case(void **state)
{
    (void)state;
    const char *yes[] = {"api_key", "apiKey", "KEY", "aws_secret_access_key", "Secret",
                         "refresh_token", "TOKENS", "password", "db_PassWord", "monkey"};
    const char *no[] = {"provider", "model_name", "api_base", "tok", "pass", "sandbox_id", ""};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!redact_name_is_secret(yes[i])) fail_msg("%s should be secret", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (redact_name_is_secret(no[i])) fail_msg("%s should not be secret", no[i]);
    assert_false(redact_name_is_secret(NULL));
}

static json_t *parse(const char *s)
{
    json_error_t je;
    json_t *v = json_loads(s, 0, &je);
    if (!v) fail_msg("bad fixture: %s", je.text);
    return v;
}

static void assert_json(json_t *got, const char *want_text)
{
    json_t *want = parse(want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("got %s", g);
    }
    json_decref(want);
}

static void nested_objects_arrays_and_any_value_type_are_hidden_and_the_original_kept(void **state)
{
    (void)state;
    const char *text =
        "{\"id\":\"j1\",\"args\":{\"llm_config\":{\"provider\":\"openai\",\"api_key\":\"sk-live-1\","
        "\"api_base\":null},\"nextjs_port\":3010,"
        "\"servers\":[{\"name\":\"a\",\"Token\":12345},{\"name\":\"b\",\"password\":{\"x\":1}}],"
        "\"secret_list\":[\"s1\",\"s2\"],\"private_key\":null,\"keep\":true}}";
    json_t *orig = parse(text);
    json_t *before = json_deep_copy(orig);
    json_t *r = redact_json(orig);
    assert_json(r,
                "{\"id\":\"j1\",\"args\":{\"llm_config\":{\"provider\":\"openai\",\"api_key\":\"***\","
                "\"api_base\":null},\"nextjs_port\":3010,"
                "\"servers\":[{\"name\":\"a\",\"Token\":\"***\"},{\"name\":\"b\",\"password\":\"***\"}],"
                "\"secret_list\":\"***\",\"private_key\":\"***\",\"keep\":true}}");
    assert_true(json_equal(orig, before)); /* untouched */
    json_decref(r);
    json_decref(orig);
    json_decref(before);
    assert_null(redact_json(NULL));
    json_t *s = json_string("plain");
    json_t *rs = redact_json(s);
    assert_string_equal(json_string_value(rs), "plain");
    json_decref(s);
    json_decref(rs);
}

static void json_text_is_redacted_when_it_parses(void **state)
{
    (void)state;
    const char *t = "{\"args\":{\"llm_config\":{\"api_key\":\"sk-live-2\"}}}";
    char *s = redact_json_text(t, strlen(t), NULL);
    assert_null(strstr(s, "sk-live-2"));
    assert_non_null(strstr(s, "\"api_key\":\"***\""));
    free(s);
}

static void broken_and_cut_json_text_is_scanned_and_the_value_hidden(void **state)
{
    (void)state;
    const char *cases[] = {
        /* cut inside the secret string (a dead entry keeps the first 1 MiB) */
        "{\"id\":\"x\",\"args\":{\"llm_config\":{\"api_key\":\"sk-live-3-and-more",
        /* not JSON (bare value) but with names */
        "{\"api_key\": sk-live-3, \"a\": 1}",
        /* escaped name, nested value cut */
        "{\"api_\\u006bey\": {\"v\": \"sk-live-3\", ",
        /* a number value, trailing garbage */
        "{\"password\":123sk-live-3} trailing",
        /* an escaped quote inside the secret */
        "[{\"token\":\"sk-\\\"live-3\\\"\"}, oops",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = redact_json_text(cases[i], strlen(cases[i]), NULL);
        if (strstr(s, "live-3")) fail_msg("case %zu leaks: %s", i, s);
        if (!strstr(s, "***")) fail_msg("case %zu not marked: %s", i, s);
        free(s);
    }
    /* text with no secret comes back unchanged */
    const char *plain = "not json {\"a\": \"b\"";
    char *s = redact_json_text(plain, strlen(plain), NULL);
    assert_string_equal(s, plain);
    free(s);
}

static void extra_names_hide_a_celery_body(void **state)
{
    (void)state;
    const char *also[] = {"body", NULL};
    const char *t = "{\"body\":\"eyJhcGlfa2V5Ijoic2stbGl2ZSJ9\",\"headers\":{\"id\":\"t1\"";
    char *s = redact_json_text(t, strlen(t), also);
    assert_null(strstr(s, "eyJ"));
    assert_non_null(strstr(s, "\"t1\""));
    free(s);
}

static void values_of_secret_members_are_scrubbed_from_text(void **state)
{
    (void)state;
    json_t *args = parse("{\"llm_config\":{\"api_key\":\"sk-live-4\",\"provider\":\"openai\"},"
                         "\"creds\":{\"password\":{\"inner\":\"hunter22\"}},\"token\":\"abc\"}");
    redact_values rv;
    redact_values_collect(args, &rv);
    assert_int_equal(rv.n, 2); /* "abc" is too short to scrub safely */
    char msg[128] = "auth failed for sk-live-4 (openai), retry with hunter22; sk-live-4";
    redact_text_values(msg, sizeof msg, &rv);
    assert_string_equal(msg, "auth failed for *** (openai), retry with ***; ***");
    json_t *res = parse("{\"log\":[\"key sk-live-4 refused\"],\"provider\":\"openai\"}");
    redact_json_values(res, &rv);
    assert_json(res, "{\"log\":[\"key *** refused\"],\"provider\":\"openai\"}");
    json_decref(res);
    redact_values_free(&rv);
    json_decref(args);
}

static void jansson_errors_lose_the_quoted_input(void **state)
{
    (void)state;
    json_error_t je;
    json_t *v = json_loads("{\"api_key\": \"sk-live-5", 0, &je); /* cut inside the value */
    assert_null(v);
    assert_non_null(strstr(je.text, "sk-live-5")); /* what jansson says */
    char out[160];
    redact_json_error(je.text, out, sizeof out);
    assert_null(strstr(out, "sk-live"));
    assert_true(strlen(out) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_name_rule_matches_key_secret_token_password_in_any_case),
        cmocka_unit_test(nested_objects_arrays_and_any_value_type_are_hidden_and_the_original_kept),
        cmocka_unit_test(json_text_is_redacted_when_it_parses),
        cmocka_unit_test(broken_and_cut_json_text_is_scanned_and_the_value_hidden),
        cmocka_unit_test(extra_names_hide_a_celery_body),
        cmocka_unit_test(values_of_secret_members_are_scrubbed_from_text),
        cmocka_unit_test(jansson_errors_lose_the_quoted_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
