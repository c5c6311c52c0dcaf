/* tests/unit/test_cmdv.c — the worker's argv builder and its RESP encoding, and the
 * script SHA table learned from SCRIPT LOAD. The RESP bytes are checked against
 * hiredis's own formatter, which is what the worker used before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hiredis.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "worker/cmdv.h"
#include "worker/scripts.h"

static void resp_matches_hiredis(void **state)
{
    (void)state;
    cmdv v;
    cv_init(&v);
    cv_add(&v, "EVALSHA");
    cv_add(&v, "");
    cv_addn(&v, "a\0b\r\n", 5); /* binary-safe */
    cv_addll(&v, 0);
    cv_addll(&v, -42);
    cv_addll(&v, LLONG_MIN);
    cv_addll(&v, LLONG_MAX);
    cv_addcat(&v, "snapworker:{q}:job:", "b17");
    for (int i = 0; i < 300; i++) cv_addll(&v, i * 1000003LL); /* grows the buffers */
    size_t len = 0;
    char *mine = cv_resp(&v, &len);
    char *ref = NULL;
    long long rlen = redisFormatCommandArgv(&ref, v.argc, cv_argv(&v), v.lens);
    assert_true(rlen > 0);
    assert_int_equal(len, (size_t)rlen);
    assert_memory_equal(mine, ref, len);
    assert_int_equal(mine[len], '\0'); /* hiredis peeks one byte past the first argument */
    assert_memory_equal(mine, "*308\r\n$7\r\nEVALSHA\r\n$0\r\n\r\n$5\r\na\0b\r\n\r\n$1\r\n0\r\n", 40);
    free(mine);
    redisFreeCommand(ref);
    cv_free(&v);
}

static void numbers_and_concatenation_are_exact(void **state)
{
    (void)state;
    cmdv v;
    cv_init(&v);
    cv_addll(&v, -42);
    cv_addll(&v, LLONG_MIN);
    cv_addll(&v, 1764971234567LL);
    cv_addcat(&v, "abc", "");
    cv_addcat(&v, "", "xyz");
    const char **a = cv_argv(&v);
    assert_string_equal(a[0], "-42");
    assert_string_equal(a[1], "-9223372036854775808");
    assert_string_equal(a[2], "1764971234567");
    assert_string_equal(a[3], "abc");
    assert_int_equal(v.lens[3], 3);
    assert_string_equal(a[4], "xyz");
    cv_free(&v);
}

static void script_shas_are_learned_only_when_valid(void **state)
{
    (void)state;
    assert_null(scr_sha(SCR_PROMOTE));
    assert_int_equal(scr_learn_sha(SCR_PROMOTE, "xyz", 3), -1);
    assert_int_equal(scr_learn_sha(SCR_PROMOTE, "ABCDEF0123456789abcdef0123456789abcdef01", 40), -1);
    assert_null(scr_sha(SCR_PROMOTE));
    assert_int_equal(scr_learn_sha(SCR_PROMOTE, "0123456789abcdef0123456789abcdef01234567", 40), 0);
    assert_string_equal(scr_sha(SCR_PROMOTE), "0123456789abcdef0123456789abcdef01234567");
    assert_null(scr_sha(SCR_START));
    assert_string_equal(scr_name(SCR_FINISH), "finish");
    assert_non_null(strstr(scr_source(SCR_START), "redis.call('HSET'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resp_matches_hiredis),
        cmocka_unit_test(numbers_and_concatenation_are_exact),
        cmocka_unit_test(script_shas_are_learned_only_when_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
