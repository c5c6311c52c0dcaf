/* tests/unit/test_jobwire.c — the frames of the job process channel (worker/jobwire.h):
 * what one side sends the other reads whole, one frame at a time, however the bytes are
 * split; a bad length or a frame that is not a JSON object is an error, not a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker/jobwire.h"

static void pair(int sv[2], int nonblock_reader)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    if (nonblock_reader) fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
}

static void blocking_round_trip_and_eof(void **state)
{
    (void)state;
    int sv[2];
    pair(sv, 0);
    json_t *m = json_pack("{s:s,s:I,s:s}", "t", "progress", "bytes", (json_int_t)1 << 40, "u",
                          "ünïcode \"quoted\"");
    assert_int_equal(jw_send(sv[1], m), 0);
    assert_int_equal(jw_send(sv[1], m), 0);
    close(sv[1]);
    json_t *got = NULL;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(jw_recv(sv[0], &got), 1);
        assert_true(json_equal(got, m));
        json_decref(got);
    }
    assert_int_equal(jw_recv(sv[0], &got), 0); /* clean end of file */
    json_decref(m);
    close(sv[0]);
}

static void the_reader_reassembles_frames_split_anywhere(void **state)
{
    (void)state;
    int sv[2];
    pair(sv, 1);
    /* two frames written byte by byte: no frame appears before its last byte */
    const char *a = "{\"t\":\"started\",\"ns\":12}", *b = "{\"t\":\"done\",\"rc\":0}";
    char buf[128];
    size_t n = 0;
    const char *fr[] = {a, b};
    for (int i = 0; i < 2; i++) {
        size_t l = strlen(fr[i]);
        buf[n++] = (char)(l >> 24);
        buf[n++] = (char)(l >> 16);
        buf[n++] = (char)(l >> 8);
        buf[n++] = (char)l;
        memcpy(buf + n, fr[i], l);
        n += l;
    }
    jw_reader r = {0};
    json_t *m = NULL;
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(write(sv[1], buf + i, 1), 1);
        assert_int_equal(jw_fill(&r, sv[0]), 0);
        int rc;
        while ((rc = jw_next(&r, &m)) == 1) {
            seen++;
            assert_string_equal(json_string_value(json_object_get(m, "t")),
                                seen == 1 ? "started" : "done");
            assert_true(i == (seen == 1 ? 4 + strlen(a) - 1 : n - 1));
            json_decref(m);
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(seen, 2);
    close(sv[1]);
    assert_int_equal(jw_fill(&r, sv[0]), 0);
    assert_true(r.eof);
    jw_reader_free(&r);
    close(sv[0]);
}

static void bad_frames_are_errors(void **state)
{
    (void)state;
    jw_reader r = {0};
    json_t *m = NULL;
    /* a length over the cap */
    r.buf = malloc(8);
    r.cap = 8;
    memcpy(r.buf, "\x7f\xff\xff\xff", 4);
    r.len = 4;
    assert_int_equal(jw_next(&r, &m), -1);
    /* a JSON array, not an object */
    memcpy(r.buf, "\x00\x00\x00\x02[]", 6);
    r.len = 6;
    assert_int_equal(jw_next(&r, &m), -1);
    jw_reader_free(&r);
    /* the blocking side: a frame cut short by the peer's close */
    int sv[2];
    pair(sv, 0);
    assert_int_equal(write(sv[1], "\x00\x00\x00\x10{\"t\"", 8), 8);
    close(sv[1]);
    assert_int_equal(jw_recv(sv[0], &m), -1);
    close(sv[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blocking_round_trip_and_eof),
        cmocka_unit_test(the_reader_reassembles_frames_split_anywhere),
        cmocka_unit_test(bad_frames_are_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
