/* tests/unit/test_cfg.c — configuration: defaults, environment, flags, bad values,
 * URL parsing and redaction, key naming. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "common/err.h"
#include "common/rds.h"

static int load(cfg *c, int argc, char **argv, char *err)
{
    int argi = 1;
    bool help;
    return cfg_load(c, argc, argv, &argi, &help, err, 512);
}

static void clear_env(void)
{
    const char *vars[] = {"REDIS_URL", "SNAPWORKER_LEASE_S", "SNAPWORKER_QUEUE", "SNAPWORKER_STORE",
                          "SANDBOX_NEXTJS_PORT_START", "SANDBOX_NEXTJS_PORT_END",
                          "AWS_SECRET_ACCESS_KEY", "SNAPWORKER_WEBAPP_NPM_INSTALL",
                          "DATABASE_URL", "SANDBOX_BASE_PATH", "SANDBOX_NAMESPACE",
                          "SANDBOX_S3_BUCKET", "SNAPWORKER_WEBAPP_CMD", "SNAPWORKER_NAMESPACE",
                          "SNAPWORKER_DEMO_DATA_PATH", "SNAPWORKER_USER_FILES_PATH",
                          "SNAPWORKER_K8S_SANDBOX_CONTAINER", "SNAPWORKER_HTTP_TIMEOUT_S",
                          "SNAPWORKER_TENANTS", "SNAPWORKER_TENANT_SCHEMAS", NULL};
    for (int i = 0; vars[i]; i++) unsetenv(vars[i]);
}

static void defaults_are_the_documented_ones(void **state)
{
    (void)state;
    clear_env();
    cfg c;
    char err[512];
    char *argv[] = {(char *)"snapworker", NULL};
    assert_int_equal(load(&c, 1, argv, err), 0);
    assert_string_equal(c.redis.host, "127.0.0.1");
    assert_int_equal(c.redis.port, 6379);
    assert_string_equal(c.queue, "default");
    assert_int_equal(c.prefetch, 512);
    assert_int_equal(c.lease_s, 60);
    assert_int_equal(c.max_attempts, 5);
    assert_int_equal(cfg_max_deliveries(&c, 5), 7);
    assert_int_equal(c.port_start, 3010);
    assert_int_equal(c.port_end, 3100);
    assert_true(c.concurrency >= 1);
    assert_true(strncmp(c.store_url, "file:///", 8) == 0);
    assert_string_equal(c.opencode_disabled_tools, "question");
    assert_int_equal(c.max_restore_entries, 1000000);
    cfg_free(&c);
}

static void flags_win_over_the_environment(void **state)
{
    (void)state;
    clear_env();
    setenv("SNAPWORKER_LEASE_S", "30", 1);
    setenv("SNAPWORKER_QUEUE", "envq", 1);
    cfg c;
    char err[512];
    char *argv[] = {(char *)"snapworker", (char *)"--lease-s", (char *)"7", (char *)"--queue=flagq", (char *)"run", NULL};
    int argi = 1;
    bool help;
    assert_int_equal(cfg_load(&c, 5, argv, &argi, &help, err, sizeof err), 0);
    assert_int_equal(c.lease_s, 7);
    assert_string_equal(c.queue, "flagq");
    assert_int_equal(argi, 4); /* stopped at the subcommand */
    cfg_free(&c);
    clear_env();
}

static void bad_values_name_the_variable(void **state)
{
    (void)state;
    struct { const char *var, *val, *needle; } cases[] = {
        {"SNAPWORKER_LEASE_S", "abc", "SNAPWORKER_LEASE_S: expected an integer"},
        {"SNAPWORKER_LEASE_S", "0", "SNAPWORKER_LEASE_S"},
        {"REDIS_URL", "rediss://h:1?ssl_cert_reqs=sometimes", "REDIS_URL: ssl_cert_reqs: expected required"},
        {"REDIS_URL", "http://x", "REDIS_URL"},
        {"SNAPWORKER_STORE", "ftp://x", "SNAPWORKER_STORE"},
        {"SNAPWORKER_QUEUE", "a b", "SNAPWORKER_QUEUE: expected"},
        /* issue 10 item 7: values that were accepted but can never work */
        {"SNAPWORKER_NAMESPACE", "a/b", "SNAPWORKER_NAMESPACE: expected"},
        {"SANDBOX_BASE_PATH", "relative", "SANDBOX_BASE_PATH: expected an absolute path"},
        {"SANDBOX_BASE_PATH", "", "SANDBOX_BASE_PATH: expected an absolute path"},
        {"SNAPWORKER_DEMO_DATA_PATH", "demo", "SNAPWORKER_DEMO_DATA_PATH: expected an absolute"},
        {"SNAPWORKER_USER_FILES_PATH", "f/{sandbox_id}", "SNAPWORKER_USER_FILES_PATH: expected"},
        {"DATABASE_URL", "garbage://x", "DATABASE_URL: expected postgresql://"},
        {"DATABASE_URL", "host=x nosuchkeyword=1", "DATABASE_URL: expected"},
        {"DATABASE_URL", "host=x dbname", "DATABASE_URL: expected"},
        {"DATABASE_URL", "host=x password='unterminated", "DATABASE_URL: expected"},
        {"DATABASE_URL", "just-a-word", "DATABASE_URL: expected"},
        {"SNAPWORKER_STORE", "file://relative/path", "SNAPWORKER_STORE: expected file:///"},
        {"SNAPWORKER_STORE", "s3://Upper_Case", "SNAPWORKER_STORE: expected s3://BUCKET"},
        {"SNAPWORKER_STORE", "s3://ab", "SNAPWORKER_STORE: expected s3://BUCKET"},
        {"SNAPWORKER_STORE", "s3://a..b", "SNAPWORKER_STORE: expected s3://BUCKET"},
        {"SNAPWORKER_STORE", "s3://192.168.5.4", "SNAPWORKER_STORE: expected s3://BUCKET"},
        {"SNAPWORKER_STORE", "s3://-bucket/x", "SNAPWORKER_STORE: expected s3://BUCKET"},
        {"SANDBOX_S3_BUCKET", "My_Bucket", "SANDBOX_S3_BUCKET: expected a valid S3 bucket"},
        {"SNAPWORKER_WEBAPP_CMD", "", "SNAPWORKER_WEBAPP_CMD: expected a command line"},
        {"SNAPWORKER_WEBAPP_CMD", " \t ", "SNAPWORKER_WEBAPP_CMD: expected a command line"},
        {"SANDBOX_NAMESPACE", "Onyx_Sandboxes", "SANDBOX_NAMESPACE: expected a DNS-1123 label"},
        {"SANDBOX_NAMESPACE", "-x", "SANDBOX_NAMESPACE: expected a DNS-1123 label"},
        {"SANDBOX_NAMESPACE", "a.b", "SANDBOX_NAMESPACE: expected a DNS-1123 label"},
        {"SANDBOX_NAMESPACE",
         "a234567890123456789012345678901234567890123456789012345678901234",
         "SANDBOX_NAMESPACE: expected a DNS-1123 label"},
        {"SNAPWORKER_K8S_SANDBOX_CONTAINER", "Sandbox", "SNAPWORKER_K8S_SANDBOX_CONTAINER: expected"},
        {"SNAPWORKER_WEBAPP_NPM_INSTALL", "maybe", "SNAPWORKER_WEBAPP_NPM_INSTALL: expected true or false"},
        {"SANDBOX_NEXTJS_PORT_END", "3000", "SANDBOX_NEXTJS_PORT_END"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        clear_env();
        setenv(cases[i].var, cases[i].val, 1);
        cfg c;
        char err[512] = "";
        char *argv[] = {(char *)"snapworker", NULL};
        assert_int_equal(load(&c, 1, argv, err), -1);
        if (!strstr(err, cases[i].needle)) fail_msg("'%s' lacks '%s'", err, cases[i].needle);
        cfg_free(&c);
    }
    clear_env();
}

static void a_bad_secret_is_not_echoed(void **state)
{
    (void)state;
    clear_env();
    setenv("REDIS_URL", "redis://user:s3cret-pw@host:notaport/0", 1);
    cfg c;
    char err[512] = "";
    char *argv[] = {(char *)"snapworker", NULL};
    assert_int_equal(load(&c, 1, argv, err), -1);
    assert_null(strstr(err, "s3cret-pw"));
    assert_non_null(strstr(err, "REDIS_URL"));
    cfg_free(&c);
    clear_env();
}

static int load_env(const char *var, const char *val, char *err)
{
    clear_env();
    setenv(var, val, 1);
    cfg c;
    char *argv[] = {(char *)"snapworker", NULL};
    int rc = load(&c, 1, argv, err);
    cfg_free(&c);
    clear_env();
    return rc;
}

static void database_urls_are_checked_without_loading_libpq(void **state)
{
    (void)state;
    char err[512];
    const char *good[] = {
        "postgresql://postgres@127.0.0.1:5432/snapworker",
        "postgres://u:p@h/db?sslmode=require",
        "postgresql:///db?host=/var/run/postgresql",
        "host=127.0.0.1 port=5432 dbname=snapworker user=postgres",
        "host = h  dbname=x",
        "dbname='my db' password='it\\'s' connect_timeout=3",
        "service=mine",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (load_env("DATABASE_URL", good[i], err) != 0) fail_msg("'%s' refused: %s", good[i], err);
}

static void a_bad_database_url_never_shows_its_password(void **state)
{
    (void)state;
    char err[512];
    const char *bad[] = {
        "garbage://user:pw-S3CRET@host/db",
        "host=x password=pw-S3CRET bogus=1",
        "host=x password='pw-S3CRET and more' bogus=1",
        "mysql://u@h/db?password=pw-S3CRET",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(load_env("DATABASE_URL", bad[i], err), -1);
        assert_non_null(strstr(err, "DATABASE_URL: expected"));
        if (strstr(err, "S3CRET")) fail_msg("secret echoed: %s", err);
    }
}

static void s3_bucket_names_follow_the_naming_rules(void **state)
{
    (void)state;
    assert_true(cfg_s3_bucket_valid("onyx-sandbox-files"));
    assert_true(cfg_s3_bucket_valid("abc"));
    assert_true(cfg_s3_bucket_valid("my.bucket.1"));
    assert_true(cfg_s3_bucket_valid("1.2.3"));  /* three parts: not an IPv4 address */
    assert_false(cfg_s3_bucket_valid("ab"));
    assert_false(cfg_s3_bucket_valid(
        "a234567890123456789012345678901234567890123456789012345678901234"));
    assert_false(cfg_s3_bucket_valid("Bucket"));
    assert_false(cfg_s3_bucket_valid("my_bucket"));
    assert_false(cfg_s3_bucket_valid(".abc"));
    assert_false(cfg_s3_bucket_valid("abc-"));
    assert_false(cfg_s3_bucket_valid("a..b"));
    assert_false(cfg_s3_bucket_valid("10.0.0.1"));
    char err[512];
    assert_int_equal(load_env("SNAPWORKER_STORE", "s3://onyx-sandbox-files/pre/fix", err), 0);
    assert_int_equal(load_env("SNAPWORKER_STORE", "s3://", err), 0); /* SANDBOX_S3_BUCKET */
    assert_int_equal(load_env("SNAPWORKER_STORE", "file:///var/lib/store", err), 0);
}

static void s3_without_any_bucket_is_refused(void **state)
{
    (void)state;
    clear_env();
    cfg c;
    char err[512] = "";
    char *argv[] = {(char *)"snapworker", (char *)"--store", (char *)"s3://",
                    (char *)"--sandbox-s3-bucket", (char *)"", NULL};
    assert_int_equal(load(&c, 5, argv, err), -1);
    assert_non_null(strstr(err, "SNAPWORKER_STORE: expected s3://BUCKET"));
    cfg_free(&c);
}

/* Without tenant schemas the tables hold one tenant's data (the sandbox table has no tenant
 * column): several scheduler tenants would each sweep all of it, so that is refused naming
 * both variables (docs/lifecycle.md "Tenants without schemas"). */
static void several_tenants_need_tenant_schemas(void **state)
{
    (void)state;
    char err[512] = "";
    assert_int_equal(load_env("SNAPWORKER_TENANTS", "public,acme", err), -1);
    assert_non_null(strstr(err, "SNAPWORKER_TENANTS: expected one tenant unless "
                                "SNAPWORKER_TENANT_SCHEMAS=1"));
    assert_non_null(strstr(err, "'public,acme'"));
    assert_int_equal(load_env("SNAPWORKER_TENANTS", "acme", err), 0);
    assert_int_equal(load_env("SNAPWORKER_TENANTS", "acme,", err), 0); /* one tenant */
    cfg c;
    char *argv[] = {(char *)"snapworker", (char *)"--tenants", (char *)"public,acme", NULL};
    clear_env();
    assert_int_equal(load(&c, 3, argv, err), -1); /* a flag is checked the same way */
    cfg_free(&c);
    setenv("SNAPWORKER_TENANT_SCHEMAS", "1", 1);
    assert_int_equal(load(&c, 3, argv, err), 0);
    assert_string_equal(c.tenants, "public,acme");
    assert_true(c.tenant_schemas);
    cfg_free(&c);
    clear_env();
}

static void dns_labels(void **state)
{
    (void)state;
    assert_true(cfg_dns_label_valid("onyx-sandboxes"));
    assert_true(cfg_dns_label_valid("a"));
    assert_true(cfg_dns_label_valid("0abc9"));
    assert_false(cfg_dns_label_valid(""));
    assert_false(cfg_dns_label_valid("a-"));
    assert_false(cfg_dns_label_valid("A"));
    assert_false(cfg_dns_label_valid("a_b"));
    char err[512];
    assert_int_equal(load_env("SANDBOX_NAMESPACE", "team-1", err), 0);
}

/* The TLS, Sentinel and Cluster forms of docs/redis.md, and what each refuses. */
static void redis_tls_sentinel_cluster_urls_parse(void **state)
{
    (void)state;
    rds_url u;
    char err[300];
    assert_int_equal(rds_url_parse("rediss://:p%40w@cache.example:6380/2?ssl_ca_certs=%2Fetc%2Fca.pem"
                                   "&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=CERT_REQUIRED",
                                   &u, err, sizeof err), 0);
    assert_true(u.tls);
    assert_int_equal(u.mode, RDS_DIRECT);
    assert_string_equal(u.host, "cache.example");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_string_equal(u.password, "p@w");
    assert_string_equal(u.tls_ca, "/etc/ca.pem");
    assert_string_equal(u.tls_cert, "/c.pem");
    assert_string_equal(u.tls_key, "/k.pem");
    assert_int_equal(u.tls_verify, RDS_VERIFY_REQUIRED);
    assert_true(u.tls_check_hostname);
    rds_url_free(&u);
    assert_int_equal(rds_url_parse("rediss://h?ssl_cert_reqs=none&ssl_check_hostname=False&socket_timeout=5",
                                   &u, err, sizeof err), 0);
    assert_int_equal(u.tls_verify, RDS_VERIFY_NONE);
    assert_false(u.tls_check_hostname);
    rds_url_free(&u);

    assert_int_equal(rds_url_parse("redis+sentinel://:pw@s1:26379,s2,s3:26381/mymaster/3"
                                   "?sentinel_password=sp", &u, err, sizeof err), 0);
    assert_int_equal(u.mode, RDS_SENTINEL);
    assert_int_equal(u.nhosts, 3);
    assert_string_equal(u.hosts[1].host, "s2");
    assert_int_equal(u.hosts[1].port, 26379);
    assert_int_equal(u.hosts[2].port, 26381);
    assert_string_equal(u.master_name, "mymaster");
    assert_string_equal(u.sentinel_password, "sp");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.db, 3);
    rds_url b;
    assert_int_equal(rds_url_parse("sentinel://:pw@s9:1;sentinel://s8:2/3?master_name=mymaster",
                                   &b, err, sizeof err), 0);
    assert_int_equal(b.nhosts, 2);
    assert_int_equal(b.hosts[1].port, 2);
    assert_true(rds_url_same_db(&u, &b));
    rds_url_free(&b);
    rds_url_free(&u);

    assert_int_equal(rds_url_parse("rediss+cluster://n1:7000,n2:7001", &u, err, sizeof err), 0);
    assert_int_equal(u.mode, RDS_CLUSTER);
    assert_true(u.tls);
    assert_int_equal(u.nhosts, 2);
    rds_url_free(&u);

    static const struct { const char *url, *msg; } bad[] = {
        {"redis://h?ssl_ca_certs=/x", "need TLS"},
        {"rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs"},
        {"rediss://h?verify=1", "unknown option 'verify'"},
        {"redis+sentinel://s1,s2", "master's name"},
        {"sentinel://s1:1;sentinel://s2:2", "master_name"},
        {"redis+cluster://n1:7000/3", "database 0 only"},
        {"redis://h:99999", "expected redis://"},
        {"redis+cluster://n1,,n2", "expected redis://"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(rds_url_parse(bad[i].url, &u, err, sizeof err), -1);
        if (!strstr(err, bad[i].msg)) fail_msg("%s: '%s' lacks '%s'", bad[i].url, err, bad[i].msg);
    }
    char out[200];
    cfg_redact_url("sentinel://:a@s1:1;sentinel://:b@s2:2/0?master_name=m", out, sizeof out);
    assert_string_equal(out, "sentinel://:***@s1:1;sentinel://:***@s2:2/0?master_name=m");
    cfg_redact_conninfo("redis+sentinel://s1/m?sentinel_password=zz", out, sizeof out);
    assert_null(strstr(out, "zz"));
}

static void redis_urls_parse(void **state)
{
    (void)state;
    rds_url u;
    char err[200];
    assert_int_equal(rds_url_parse("redis://:pw@10.0.0.1:6380/3", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "10.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
    assert_string_equal(u.password, "pw");
    assert_null(u.username);
    rds_url_free(&u);
    assert_int_equal(rds_url_parse("unix:///tmp/r.sock?db=2", &u, err, sizeof err), 0);
    assert_string_equal(u.unix_path, "/tmp/r.sock");
    assert_int_equal(u.db, 2);
    rds_url_free(&u);
    assert_int_equal(rds_url_parse("redis://localhost", &u, err, sizeof err), 0);
    assert_int_equal(u.port, 6379);
    rds_url_free(&u);
    char out[200];
    cfg_redact_url("redis://user:pw@h:1/0", out, sizeof out);
    assert_string_equal(out, "redis://user:***@h:1/0");
}

static void keys_share_the_queue_hash_tag(void **state)
{
    (void)state;
    clear_env();
    cfg c;
    char err[512], k[256];
    char *argv[] = {(char *)"snapworker", (char *)"--queue", (char *)"q1", NULL};
    assert_int_equal(load(&c, 3, argv, err), 0);
    assert_string_equal(rds_key(&c, "stream", k, sizeof k), "snapworker:{q1}:stream");
    assert_string_equal(rds_job_key(&c, "j1", k, sizeof k), "snapworker:{q1}:job:j1");
    cfg_free(&c);
}

static void error_codes_have_stable_names(void **state)
{
    (void)state;
    /* every code: a distinct snake_case name that reads back as the same code, and a
     * CamelCase exception type for Celery */
    for (int i = 0; i < SW_CODE_COUNT; i++) {
        const char *n = sw_code_name((sw_code)i);
        assert_non_null(n);
        assert_true(strlen(n) > 1);
        for (const char *p = n; *p; p++) assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        for (int k = 0; k < i; k++) assert_string_not_equal(n, sw_code_name((sw_code)k));
        sw_code back;
        assert_true(sw_code_from_name(n, &back));
        assert_int_equal(back, i);
        if (i == SW_OK) continue;
        const char *t = sw_code_exc_type((sw_code)i);
        assert_non_null(t);
        assert_true(t[0] >= 'A' && t[0] <= 'Z');
    }
    assert_string_equal(sw_code_name(SW_E_STORAGE), "storage_error");
    assert_string_equal(sw_code_exc_type(SW_E_UNSAFE_ARCHIVE), "UnsafeArchive");
    assert_false(sw_code_retryable(SW_E_INVALID_PAYLOAD));
    assert_true(sw_code_retryable(SW_E_PORT_EXHAUSTED));
    sw_code c;
    assert_true(sw_code_from_name("archive_too_large", &c));
    assert_int_equal(c, SW_E_ARCHIVE_TOO_LARGE);
    assert_false(sw_code_from_name("nope", &c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_are_the_documented_ones),
        cmocka_unit_test(flags_win_over_the_environment),
        cmocka_unit_test(bad_values_name_the_variable),
        cmocka_unit_test(a_bad_secret_is_not_echoed),
        cmocka_unit_test(redis_urls_parse),
        cmocka_unit_test(redis_tls_sentinel_cluster_urls_parse),
        cmocka_unit_test(database_urls_are_checked_without_loading_libpq),
        cmocka_unit_test(a_bad_database_url_never_shows_its_password),
        cmocka_unit_test(s3_bucket_names_follow_the_naming_rules),
        cmocka_unit_test(s3_without_any_bucket_is_refused),
        cmocka_unit_test(several_tenants_need_tenant_schemas),
        cmocka_unit_test(dns_labels),
        cmocka_unit_test(keys_share_the_queue_hash_tag),
        cmocka_unit_test(error_codes_have_stable_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
