/* tests/unit/test_aws_creds.c — the AWS credentials chain without servers
 * (common/aws_creds.h, docs/store.md "Credentials"): the STS XML and the container/IMDS
 * JSON parsers (good answers, error answers, missing and bad fields, entities), the
 * refresh schedule and usability margin, the source order, the configuration checks of
 * awsc_provider_new, static keys handed out as they are, and fetch failures that name
 * their source without a secret (an unreadable token file, an STS nobody answers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/aws_creds.h"
#include "common/store.h"

static const char STS_OK[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    "<AssumeRoleWithWebIdentityResult>"
    "<SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>"
    "<AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>"
    "<Credentials><SessionToken>FQoG&amp;tok+/=</SessionToken>"
    "<SecretAccessKey>wJalr/K7MDENG</SecretAccessKey>"
    "<Expiration>2030-01-02T03:04:05Z</Expiration><AccessKeyId>ASIAEXAMPLE</AccessKeyId></Credentials>"
    "<Audience>sts.amazonaws.com</Audience></AssumeRoleWithWebIdentityResult>"
    "<ResponseMetadata><RequestId>x</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>";

static void sts_answers_parse_into_credentials_and_errors_into_their_code(void **state)
{
    (void)state;
    awsc_creds c;
    char code[96];
    assert_int_equal(awsc_parse_sts(STS_OK, strlen(STS_OK), &c, code, sizeof code), 0);
    assert_string_equal(c.access_key, "ASIAEXAMPLE");
    assert_string_equal(c.secret_key, "wJalr/K7MDENG");
    assert_string_equal(c.token, "FQoG&tok+/=");               /* entities decoded */
    assert_int_equal(c.expires_at, store_s3_parse_time("2030-01-02T03:04:05Z"));
    assert_int_equal(c.source, AWSC_WEB_IDENTITY);
    awsc_creds_clear(&c);
    assert_null(c.secret_key);

    const char *denied = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                         "<Message>Not authorized</Message></Error></ErrorResponse>";
    assert_int_equal(awsc_parse_sts(denied, strlen(denied), &c, code, sizeof code), -1);
    assert_string_equal(code, "AccessDenied");
    assert_null(c.access_key);
    assert_int_equal(awsc_parse_sts(NULL, 0, &c, code, sizeof code), -1);
    assert_int_equal(awsc_parse_sts("<html/>", 7, &c, code, sizeof code), -1);
    /* each field missing or bad in turn */
    const char *drop[] = {"<AccessKeyId>ASIAEXAMPLE</AccessKeyId>", "<SecretAccessKey>wJalr/K7MDENG</SecretAccessKey>",
                          "<SessionToken>FQoG&amp;tok+/=</SessionToken>",
                          "<Expiration>2030-01-02T03:04:05Z</Expiration>"};
    const char *name[] = {"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"};
    for (size_t i = 0; i < 4; i++) {
        char buf[2048];
        const char *at = strstr(STS_OK, drop[i]);
        snprintf(buf, sizeof buf, "%.*s%s", (int)(at - STS_OK), STS_OK, at + strlen(drop[i]));
        assert_int_equal(awsc_parse_sts(buf, strlen(buf), &c, code, sizeof code), -1);
        assert_non_null(strstr(code, name[i]));
        assert_null(c.access_key);
        assert_null(strstr(code, "wJalr"));
    }
}

static void container_and_imds_json_parse_and_bad_answers_say_why_without_the_secret(void **state)
{
    (void)state;
    awsc_creds c;
    char why[120];
    const char *imds = "{\"Code\":\"Success\",\"LastUpdated\":\"2030-01-01T00:00:00Z\",\"Type\":\"AWS-HMAC\","
                       "\"AccessKeyId\":\"ASIAIMDS\",\"SecretAccessKey\":\"s3cr3t\",\"Token\":\"tok\","
                       "\"Expiration\":\"2030-01-01T06:00:00Z\"}";
    assert_int_equal(awsc_parse_json(imds, strlen(imds), &c, why, sizeof why), 0);
    assert_string_equal(c.access_key, "ASIAIMDS");
    assert_string_equal(c.secret_key, "s3cr3t");
    assert_string_equal(c.token, "tok");
    assert_int_equal(c.expires_at, store_s3_parse_time("2030-01-01T06:00:00Z"));
    awsc_creds_clear(&c);
    const char *ecs = "{\"AccessKeyId\":\"ASIAECS\",\"SecretAccessKey\":\"s3cr3t\",\"Token\":\"t\","
                      "\"Expiration\":\"2030-01-01T06:00:00.000Z\",\"RoleArn\":\"arn:x\"}";
    assert_int_equal(awsc_parse_json(ecs, strlen(ecs), &c, why, sizeof why), 0);
    assert_string_equal(c.access_key, "ASIAECS");
    awsc_creds_clear(&c);
    const char *noexp = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s3cr3t\"}";   /* no token, no expiry */
    assert_int_equal(awsc_parse_json(noexp, strlen(noexp), &c, why, sizeof why), 0);
    assert_null(c.token);
    assert_int_equal(c.expires_at, 0);
    awsc_creds_clear(&c);
    const struct { const char *body, *says; } bad[] = {
        {"not json", "not a JSON object"},
        {"[1]", "not a JSON object"},
        {"{\"Code\":\"Failed\",\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s3cr3t\"}", "Failed"},
        {"{\"SecretAccessKey\":\"s3cr3t\"}", "AccessKeyId"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"\"}", "SecretAccessKey"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s3cr3t\",\"Expiration\":\"soon\"}", "Expiration"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s3cr3t\",\"Expiration\":5}", "Expiration"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(awsc_parse_json(bad[i].body, strlen(bad[i].body), &c, why, sizeof why), -1);
        if (!strstr(why, bad[i].says)) fail_msg("case %zu: '%s' lacks '%s'", i, why, bad[i].says);
        assert_null(strstr(why, "s3cr3t"));
        assert_null(c.access_key);
    }
}

static void refresh_comes_five_minutes_before_expiry_or_at_half_life(void **state)
{
    (void)state;
    assert_int_equal(awsc_refresh_at(1000, 1000 + 3600), 1000 + 3600 - 300);   /* an hour: 5 min */
    assert_int_equal(awsc_refresh_at(1000, 1000 + 600), 1000 + 300);           /* 10 min: either */
    assert_int_equal(awsc_refresh_at(1000, 1000 + 60), 1000 + 30);             /* short: half-life */
    assert_int_equal(awsc_refresh_at(1000, 1000 + 15), 1000 + 7);
    assert_int_equal(awsc_refresh_at(1000, 1000), 1000);                       /* already due */
    assert_int_equal(awsc_refresh_at(1000, 900), 1000);
    assert_true(awsc_refresh_at(1000, 0) == INT64_MAX);                        /* never expires */
    /* usable until the margin before expiry; a refresh is always due before that for
     * lifetimes above twice the margin */
    assert_true(awsc_usable(1000, 0));
    assert_true(awsc_usable(1000, 1000 + AWSC_EXPIRY_MARGIN_S + 1));
    assert_false(awsc_usable(1000, 1000 + AWSC_EXPIRY_MARGIN_S));
    assert_false(awsc_usable(1000, 999));
    for (int64_t life = 2 * AWSC_EXPIRY_MARGIN_S + 1; life < 8000; life += 37)
        assert_true(awsc_usable(awsc_refresh_at(0, life), life));
}

static void the_sources_are_tried_in_the_sdk_order(void **state)
{
    (void)state;
    awsc_env e;
    memset(&e, 0, sizeof e);
    assert_int_equal(awsc_pick(&e), AWSC_IMDS);
    e.imds_disabled = true;
    assert_int_equal(awsc_pick(&e), AWSC_NONE);
    e.container_relative_uri = "/v2/credentials/x";
    assert_int_equal(awsc_pick(&e), AWSC_CONTAINER);
    e.token_file = "/var/run/token";
    e.role_arn = "arn:aws:iam::1:role/r";
    assert_int_equal(awsc_pick(&e), AWSC_WEB_IDENTITY);
    e.access_key = "AKID";
    e.secret_key = "s";
    assert_int_equal(awsc_pick(&e), AWSC_STATIC);
    e.access_key = "";                       /* empty counts as unset, but one key is "static" */
    assert_int_equal(awsc_pick(&e), AWSC_STATIC);
    e.secret_key = "";
    assert_int_equal(awsc_pick(&e), AWSC_WEB_IDENTITY);
    assert_string_equal(awsc_source_name(AWSC_WEB_IDENTITY), "web identity");
}

static void incomplete_or_unsafe_configurations_are_refused_at_open(void **state)
{
    (void)state;
    sw_err err = {0};
    awsc_env e;
    memset(&e, 0, sizeof e);
    e.secret_key = "sekret-value";
    assert_null(awsc_provider_new(&e, &err));
    assert_non_null(strstr(err.msg, "AWS_ACCESS_KEY_ID"));
    assert_null(strstr(err.msg, "sekret-value"));
    assert_false(err.retryable);
    memset(&e, 0, sizeof e);
    e.role_arn = "arn:aws:iam::1:role/r";
    assert_null(awsc_provider_new(&e, &err));
    assert_non_null(strstr(err.msg, "AWS_WEB_IDENTITY_TOKEN_FILE"));
    e.token_file = "/nonexistent/token";
    e.sts_endpoint = "ftp://sts";
    assert_null(awsc_provider_new(&e, &err));
    assert_non_null(strstr(err.msg, "AWS_ENDPOINT_URL_STS"));
    memset(&e, 0, sizeof e);
    e.container_full_uri = "http://10.0.0.5/creds";        /* plain http off the box: refused */
    assert_null(awsc_provider_new(&e, &err));
    assert_non_null(strstr(err.msg, "container"));
    const char *fine[] = {"https://creds.example/x", "http://127.0.0.1:8080/creds", "http://localhost/c",
                          "http://169.254.170.23/v1/credentials", "http://[::1]:9/x"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        e.container_full_uri = fine[i];
        awsc_provider *p = awsc_provider_new(&e, &err);
        if (!p) fail_msg("%s refused: %s", fine[i], err.msg);
        assert_int_equal(awsc_provider_source(p), AWSC_CONTAINER);
        awsc_provider_free(p);
    }
    e.container_full_uri = "http://localhost.evil.example/c";
    assert_null(awsc_provider_new(&e, &err));
    memset(&e, 0, sizeof e);
    e.imds_disabled = true;
    assert_null(awsc_provider_new(&e, &err));
    assert_non_null(strstr(err.msg, "no AWS credentials"));
    awsc_provider_free(NULL);
}

static void static_keys_are_handed_out_as_they_are_and_never_invalidated(void **state)
{
    (void)state;
    sw_err err = {0};
    awsc_env e;
    memset(&e, 0, sizeof e);
    e.access_key = "AKID";
    e.secret_key = "sekret";
    e.session_token = "tok";
    awsc_provider *p = awsc_provider_new(&e, &err);
    assert_non_null(p);
    awsc_creds c;
    assert_int_equal(awsc_get(p, &c, &err), 0);
    assert_string_equal(c.access_key, "AKID");
    assert_string_equal(c.secret_key, "sekret");
    assert_string_equal(c.token, "tok");
    assert_int_equal(c.expires_at, 0);
    assert_int_equal(c.source, AWSC_STATIC);
    assert_false(awsc_invalidate(p, "AKID"));
    awsc_creds_clear(&c);
    awsc_creds_clear(NULL);
    awsc_provider_free(p);
}

static void fetch_failures_name_their_source_and_hold_no_secret(void **state)
{
    (void)state;
    sw_err err = {0};
    awsc_env e;
    memset(&e, 0, sizeof e);
    e.role_arn = "arn:aws:iam::123456789012:role/unit";
    e.token_file = "/nonexistent/web-identity-token";
    e.sts_endpoint = "http://127.0.0.1:1";
    awsc_provider *p = awsc_provider_new(&e, &err);
    assert_non_null(p);
    awsc_creds c;
    assert_int_equal(awsc_get(p, &c, &err), -1);            /* the token file is missing */
    assert_non_null(strstr(err.msg, "web identity"));
    assert_non_null(strstr(err.msg, "/nonexistent/web-identity-token"));
    assert_false(err.retryable);
    assert_null(c.access_key);
    awsc_provider_free(p);

    char path[] = "/tmp/sw-awsc-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "eyJ.secret-jwt.sig\n", 19), 19);
    close(fd);
    e.token_file = path;
    e.role_arn = "arn:aws:iam::123456789012:role/unit2";    /* another source: a fresh cache */
    p = awsc_provider_new(&e, &err);
    assert_int_equal(awsc_get(p, &c, &err), -1);            /* nobody answers: transient */
    assert_non_null(strstr(err.msg, "web identity: STS"));
    assert_true(err.retryable);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_null(strstr(err.msg, "secret-jwt"));
    assert_false(awsc_invalidate(p, "ASIANOTCACHED"));
    awsc_provider_free(p);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sts_answers_parse_into_credentials_and_errors_into_their_code),
        cmocka_unit_test(container_and_imds_json_parse_and_bad_answers_say_why_without_the_secret),
        cmocka_unit_test(refresh_comes_five_minutes_before_expiry_or_at_half_life),
        cmocka_unit_test(the_sources_are_tried_in_the_sdk_order),
        cmocka_unit_test(incomplete_or_unsafe_configurations_are_refused_at_open),
        cmocka_unit_test(static_keys_are_handed_out_as_they_are_and_never_invalidated),
        cmocka_unit_test(fetch_failures_name_their_source_and_hold_no_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
