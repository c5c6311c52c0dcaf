/* tests/unit/test_db.c — the PostgreSQL layer's pure logic, no server:
 * migration file names and ordering, the embedded migrations themselves, secret
 * scrubbing and target description of DATABASE_URL, and the checks every db_ call
 * makes before it would connect (ids, external mode, empty range). The statements
 * themselves are exercised against a real server in tests/integration/test_30_db.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "common/db.h"
#include "common/embedded.h"

/* ---- migration names -------------------------------------------------- */

static void text_arrays_quote_every_element_and_escape_quotes_and_backslashes(void **state)
{
    (void)state;
    const char *v[] = {"public/snapshots/a b/1.tar.gz", "we\"ird\\key,{x}", ""};
    char *a = db_text_array(v, 3);
    assert_string_equal(a, "{\"public/snapshots/a b/1.tar.gz\",\"we\\\"ird\\\\key,{x}\",\"\"}");
    free(a);
    a = db_text_array(v, 0);
    assert_string_equal(a, "{}");
    free(a);
}

static void migration_names_give_version_and_name(void **state)
{
    (void)state;
    int v = 0;
    char name[64];
    assert_true(db_migration_parse("migrations/001_init.sql", &v, name, sizeof name));
    assert_int_equal(v, 1);
    assert_string_equal(name, "001_init");
    assert_true(db_migration_parse("migrations/12_more.sql", &v, name, sizeof name));
    assert_int_equal(v, 12);
    assert_string_equal(name, "12_more");
    assert_true(db_migration_parse("migrations/0003.sql", &v, name, sizeof name) == false);
}

static void files_that_are_not_migrations_are_refused(void **state)
{
    (void)state;
    int v = 0;
    char name[64], tiny[6];
    static const char *const bad[] = {
        "jobs/templates/001_x.sql", "migrations/init.sql", "migrations/000_zero.sql",
        "migrations/001_init.txt", "migrations/sub/001_x.sql", "migrations/001init.sql",
        "migrations/.sql", "migrations/99999999_huge.sql", "001_init.sql", NULL};
    for (int i = 0; bad[i]; i++) assert_false(db_migration_parse(bad[i], &v, name, sizeof name));
    assert_false(db_migration_parse(NULL, &v, name, sizeof name));
    assert_false(db_migration_parse("migrations/001_init.sql", &v, tiny, sizeof tiny));
}

static void migrations_are_ordered_by_number_not_by_name(void **state)
{
    (void)state;
    static const embedded_file files[] = {
        {"jobs/templates/AGENTS.md", "x", 1}, {"migrations/10_ten.sql", "ten", 3},
        {"migrations/2_two.sql", "two", 3},   {"migrations/9_nine.sql", "nine", 4},
        {"migrations/README", "r", 1},        {NULL, NULL, 0}};
    db_migration out[8];
    char why[128] = "";
    int n = db_migrations_collect(files, out, 8, why, sizeof why);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].version, 2);
    assert_int_equal(out[1].version, 9);
    assert_int_equal(out[2].version, 10);
    assert_string_equal(out[2].name, "10_ten");
    assert_string_equal(out[2].sql, "ten");
}

static void two_migrations_with_one_version_are_refused(void **state)
{
    (void)state;
    static const embedded_file files[] = {
        {"migrations/001_a.sql", "a", 1}, {"migrations/1_b.sql", "b", 1}, {NULL, NULL, 0}};
    db_migration out[4];
    char why[128] = "";
    assert_int_equal(db_migrations_collect(files, out, 4, why, sizeof why), -1);
    assert_non_null(strstr(why, "version 1"));
    static const embedded_file many[] = {
        {"migrations/1_a.sql", "a", 1}, {"migrations/2_b.sql", "b", 1}, {NULL, NULL, 0}};
    assert_int_equal(db_migrations_collect(many, out, 1, why, sizeof why), -1);
}

/* The shipped migrations: 001 first, no transaction control of their own (the runner wraps
 * each in one), the three Onyx tables, and no user table or foreign key to one. */
static void shipped_migrations_create_the_onyx_tables_only(void **state)
{
    (void)state;
    db_migration out[64];
    char why[128] = "";
    int n = db_migrations_collect(embedded_files, out, 64, why, sizeof why);
    assert_true(n >= 1);
    assert_int_equal(out[0].version, 1);
    assert_string_equal(out[0].name, "001_init");
    for (int i = 0; i < n; i++) {
        assert_null(strstr(out[i].sql, "\nBEGIN"));
        assert_null(strstr(out[i].sql, "\nCOMMIT"));
        assert_null(strstr(out[i].sql, "CONCURRENTLY"));
        assert_null(strstr(out[i].sql, "REFERENCES \"user\""));
        assert_null(strstr(out[i].sql, "TABLE IF NOT EXISTS \"user\""));
    }
    assert_non_null(strstr(out[0].sql, "CREATE TABLE IF NOT EXISTS build_session"));
    assert_non_null(strstr(out[0].sql, "CREATE TABLE IF NOT EXISTS sandbox"));
    assert_non_null(strstr(out[0].sql, "CREATE TABLE IF NOT EXISTS snapshot"));
    assert_non_null(strstr(out[0].sql, "ON DELETE CASCADE"));
}

/* ---- secrets ------------------------------------------------------------ */

static void scrub_replaces_every_copy_of_the_password(void **state)
{
    (void)state;
    char msg[128] = "auth for sekr3t failed\n\tretry sekr3t\n";
    db_scrub(msg, sizeof msg, "sekr3t");
    assert_string_equal(msg, "auth for *** failed retry ***");
    char plain[64] = "line one\nline two\n";
    db_scrub(plain, sizeof plain, NULL);
    assert_string_equal(plain, "line one line two");
    char empty[8] = "";
    db_scrub(empty, sizeof empty, "");
    assert_string_equal(empty, "");
}

static void scrub_never_overflows_a_small_buffer(void **state)
{
    (void)state;
    char msg[8] = "ab";
    strcpy(msg, "pw pw p");
    db_scrub(msg, sizeof msg, "pw");
    assert_true(strlen(msg) < sizeof msg);
    assert_null(strstr(msg, "pw"));
}

static void url_description_names_the_target_but_not_the_password(void **state)
{
    (void)state;
    char out[128];
    char *pw = NULL;
    db_describe_url("postgresql://bob:sekr3t@db.example:6543/onyx?sslmode=disable", out,
                    sizeof out, &pw);
    assert_string_equal(out, "db.example:6543/onyx");
    assert_string_equal(pw, "sekr3t");
    free(pw);
    db_describe_url("host=10.0.0.1 dbname=snap user=u password='p w'", out, sizeof out, &pw);
    assert_string_equal(out, "10.0.0.1:5432/snap");
    assert_string_equal(pw, "p w");
    free(pw);
    db_describe_url("postgresql://u:p%40ss@h/d", out, sizeof out, &pw);
    assert_string_equal(out, "h:5432/d");
    assert_string_equal(pw, "p@ss"); /* decoded, so the scrubber finds what libpq would echo */
    free(pw);
    db_describe_url("postgresql://h", out, sizeof out, &pw);
    assert_null(pw);
    assert_null(strstr(out, "sekr3t"));
    db_describe_url("host=x broken='", out, sizeof out, &pw);
    assert_string_equal(out, "?");
    assert_null(pw);
}

/* ---- checks before any connection ------------------------------------- */

typedef struct fixture {
    cfg c;
    char url[96], managed[16], backend[16];
} fixture;

static db *new_db(fixture *f, const char *managed, int start, int end)
{
    memset(f, 0, sizeof *f);
    /* port 1 on loopback: any call that did connect would fail with database_error */
    strcpy(f->url, "postgresql://u:sekr3t@127.0.0.1:1/none?connect_timeout=1");
    strcpy(f->managed, managed);
    strcpy(f->backend, "local");
    f->c.database_url = f->url;
    f->c.db_managed = f->managed;
    f->c.sandbox_backend = f->backend;
    f->c.port_start = start;
    f->c.port_end = end;
    return db_new(&f->c);
}

static void ids_are_checked_before_any_query(void **state)
{
    (void)state;
    fixture f;
    db *d = new_db(&f, "self", 3010, 3100);
    sw_err err = {0};
    int port = 7;
    char path[1024];
    bool found = true;
    assert_int_equal(db_session_port(d, "../etc", &port, &err), -1);
    assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
    assert_false(err.retryable);
    assert_int_equal(port, -1);
    assert_int_equal(db_port_allocate(d, "x", &port, &err), -1);
    assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
    assert_int_equal(db_session_ensure(d, "0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11", "bob", &err), -1);
    assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
    assert_int_equal(db_snapshot_insert(d, "nope", "0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11", "p",
                                        1, &err), -1);
    assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
    assert_int_equal(db_snapshot_latest(d, "", path, sizeof path, NULL, &found, &err), -1);
    assert_false(found);
    assert_int_equal(db_port_restore(d, "'; DROP TABLE x; --", 1, 2, &err), -1);
    assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
    db_free(d);
    db_free(NULL);
}

static void an_unreachable_server_is_a_retryable_database_error_without_the_password(void **s)
{
    (void)s;
    fixture f;
    db *d = new_db(&f, "self", 3010, 3100);
    sw_err err = {0};
    int port = 0;
    assert_int_equal(db_session_port(d, "0B6F6A0E-6A43-4C43-9C3E-3C1F7F0F2F11", &port, &err), -1);
    assert_int_equal(err.code, SW_E_DATABASE);
    assert_true(err.retryable);
    assert_non_null(strstr(err.msg, "127.0.0.1:1/none"));
    assert_null(strstr(err.msg, "sekr3t"));
    db_free(d);
}

static void an_unparseable_url_is_refused_without_quoting_it(void **state)
{
    (void)state;
    fixture f;
    db *d = new_db(&f, "self", 3010, 3100);
    db_free(d);
    strcpy(f.url, "postgresql://u:p%zzsecret@h/d");
    d = db_new(&f.c);
    sw_err err = {0};
    int port = 0;
    assert_int_equal(db_session_port(d, "0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11", &port, &err), -1);
    assert_int_equal(err.code, SW_E_DATABASE);
    assert_false(err.retryable);
    assert_null(strstr(err.msg, "zzsecret"));
    db_free(d);
}

static void external_schema_is_never_migrated(void **state)
{
    (void)state;
    fixture f;
    db *d = new_db(&f, "external", 3010, 3100);
    sw_err err = {0};
    int applied = 5;
    assert_true(db_external(d));
    assert_int_equal(db_migrate_run(d, NULL, NULL, &applied, &err), -1);
    assert_int_equal(applied, 0);
    assert_int_equal(err.code, SW_E_DATABASE);
    assert_false(err.retryable);
    assert_non_null(strstr(err.msg, "external"));
    db_free(d);
}

static void an_empty_port_range_is_exhausted_at_once(void **state)
{
    (void)state;
    fixture f;
    db *d = new_db(&f, "self", 3010, 3010);
    sw_err err = {0};
    int port = 0;
    assert_int_equal(db_port_allocate(d, "0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11", &port, &err), -1);
    assert_int_equal(err.code, SW_E_PORT_EXHAUSTED);
    assert_true(err.retryable);
    assert_int_equal(port, -1);
    db_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(migration_names_give_version_and_name),
        cmocka_unit_test(files_that_are_not_migrations_are_refused),
        cmocka_unit_test(migrations_are_ordered_by_number_not_by_name),
        cmocka_unit_test(two_migrations_with_one_version_are_refused),
        cmocka_unit_test(shipped_migrations_create_the_onyx_tables_only),
        cmocka_unit_test(scrub_replaces_every_copy_of_the_password),
        cmocka_unit_test(scrub_never_overflows_a_small_buffer),
        cmocka_unit_test(url_description_names_the_target_but_not_the_password),
        cmocka_unit_test(ids_are_checked_before_any_query),
        cmocka_unit_test(an_unreachable_server_is_a_retryable_database_error_without_the_password),
        cmocka_unit_test(an_unparseable_url_is_refused_without_quoting_it),
        cmocka_unit_test(external_schema_is_never_migrated),
        cmocka_unit_test(an_empty_port_range_is_exhausted_at_once),
        cmocka_unit_test(text_arrays_quote_every_element_and_escape_quotes_and_backslashes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
