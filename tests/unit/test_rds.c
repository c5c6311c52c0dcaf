/* tests/unit/test_rds.c — the pure parts of the Redis client (common/rds.c): Cluster key
 * slots against what a real redis-server 7 answers to CLUSTER KEYSLOT, and the parsing
 * of MOVED/ASK redirections. The connections themselves are tested against real servers
 * (tests/integration/test_48_redis_tls.py, test_49_sentinel.py, test_4a_cluster.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/rds.h"

static unsigned slot(const char *k)
{
    return rds_keyslot(k, strlen(k));
}

static void key_slots_match_the_server(void **state)
{
    (void)state;
    /* CLUSTER KEYSLOT on redis-server 7.0.15 */
    assert_int_equal(slot("snapworker:{default}:stream"), 5718);
    assert_int_equal(slot("snapworker:{default}:jobs"), 5718);
    assert_int_equal(slot("default"), 5718);
    assert_int_equal(slot("foo"), 12182);
    assert_int_equal(slot("{user1000}.following"), 3443);
    assert_int_equal(slot("a{}b"), 13694); /* an empty tag: the whole key is hashed */
    /* the first '{' and the first '}' after it make the tag */
    assert_int_equal(slot("x{default}{other}"), 5718);
    assert_int_equal(slot("{"), rds_keyslot("{", 1));
    assert_true(slot("") < 16384);
}

static void redirections_are_parsed(void **state)
{
    (void)state;
    char host[64];
    int port = 0;
    assert_int_equal(rds_parse_redirect("MOVED 5718 127.0.0.1:24660", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 24660);
    assert_int_equal(rds_parse_redirect("ASK 1 redis-2.example:6379", host, sizeof host, &port), 0);
    assert_string_equal(host, "redis-2.example");
    assert_int_equal(port, 6379);
    assert_int_equal(rds_parse_redirect("MOVED 5718", host, sizeof host, &port), -1);
    assert_int_equal(rds_parse_redirect("MOVED 5718 host", host, sizeof host, &port), -1);
    assert_int_equal(rds_parse_redirect("MOVED 5718 :1", host, sizeof host, &port), -1);
    assert_int_equal(rds_parse_redirect("MOVED 5718 h:0", host, sizeof host, &port), -1);
    assert_int_equal(rds_parse_redirect("MOVED 5718 h:99999", host, sizeof host, &port), -1);
    char tiny[4];
    assert_int_equal(rds_parse_redirect("MOVED 1 longhostname:1", tiny, sizeof tiny, &port), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_slots_match_the_server),
        cmocka_unit_test(redirections_are_parsed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
