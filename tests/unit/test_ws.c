/* tests/unit/test_ws.c — the WebSocket codec (common/ws.h) and the Status decoding of the
 * Kubernetes client (common/k8s_priv.h) without a socket: handshake text and accept check,
 * response heads in pieces, masked frames, length boundaries, frames split anywhere, many
 * per chunk, fragmentation with control frames in between, every protocol error, the
 * message cap, close codes, and metav1.Status bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/k8s_priv.h"
#include "common/ws.h"
#include "common/xmalloc.h"

/* ------------------------------------------------------------------ helpers */

/* An unmasked server frame into out; returns its size. */
static size_t srv_frame(unsigned char *out, bool fin, int op, const void *p, size_t n)
{
    size_t o = 0;
    out[o++] = (unsigned char)((fin ? 0x80 : 0) | op);
    if (n < 126) {
        out[o++] = (unsigned char)n;
    } else if (n <= 0xFFFF) {
        out[o++] = 126;
        out[o++] = (unsigned char)(n >> 8);
        out[o++] = (unsigned char)n;
    } else {
        out[o++] = 127;
        for (int s = 56; s >= 0; s -= 8) out[o++] = (unsigned char)((uint64_t)n >> s);
    }
    if (n) memcpy(out + o, p, n);
    return o + n;
}

/* Decode all of p[0..n) in one decoder; the messages' opcodes and bytes are appended to
 * ops[] and data (each message's payload followed by '|'). Returns the message count, or
 * -1 on the first error. */
static int decode_all(ws_decoder *d, const unsigned char *p, size_t n, int *ops, char *data,
                      size_t *data_len)
{
    int count = 0;
    while (n > 0) {
        size_t used = 0;
        ws_msg m;
        sw_err e;
        sw_err_clear(&e);
        int rc = ws_decode(d, p, n, &used, &m, &e);
        if (rc < 0) {
            assert_int_equal(e.code, SW_E_BACKEND);
            return -1;
        }
        assert_true(used <= n);
        p += used;
        n -= used;
        if (rc == 1) {
            if (ops) ops[count] = m.opcode;
            if (data) {
                memcpy(data + *data_len, m.data, m.len);
                *data_len += m.len;
                data[(*data_len)++] = '|';
            }
            count++;
        } else {
            assert_int_equal(n, 0);
        }
    }
    return count;
}

static unsigned char *pattern(size_t n)
{
    unsigned char *p = xmalloc(n ? n : 1);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        p[i] = (unsigned char)x;
    }
    return p;
}

/* ------------------------------------------------------------------ handshake */

/* RFC 6455 §1.3: "the server would ... return ... s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" (checked
 * against Python hashlib too). */
static void accept_matches_the_rfc_6455_example(void **state)
{
    (void)state;
    char out[WS_ACCEPT_LEN + 1];
    ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", out);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void keys_are_base64_of_16_random_bytes(void **state)
{
    (void)state;
    char a[WS_KEY_LEN + 1], b[WS_KEY_LEN + 1];
    assert_int_equal(ws_make_key(a, NULL), 0);
    assert_int_equal(ws_make_key(b, NULL), 0);
    assert_int_equal(strlen(a), 24);
    assert_string_equal(a + 22, "==");
    assert_string_not_equal(a, b);
}

static void upgrade_request_sends_one_protocol_line(void **state)
{
    (void)state;
    char *q = ws_upgrade_request("10.0.0.1:6443", "/api/v1/namespaces/ns/pods/p/exec?command=ls",
                                 "Authorization: Bearer T0KEN", "dGhlIHNhbXBsZSBub25jZQ==",
                                 "v5.channel.k8s.io, v4.channel.k8s.io");
    assert_non_null(strstr(q, "GET /api/v1/namespaces/ns/pods/p/exec?command=ls HTTP/1.1\r\n"));
    assert_int_equal(strncmp(q, "GET ", 4), 0);
    assert_non_null(strstr(q, "\r\nHost: 10.0.0.1:6443\r\n"));
    assert_non_null(strstr(q, "\r\nAuthorization: Bearer T0KEN\r\n"));
    assert_non_null(strstr(q, "\r\nUpgrade: websocket\r\n"));
    assert_non_null(strstr(q, "\r\nConnection: Upgrade\r\n"));
    assert_non_null(strstr(q, "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    assert_non_null(strstr(q, "\r\nSec-WebSocket-Version: 13\r\n"));
    const char *pl = strstr(q, "Sec-WebSocket-Protocol:");
    assert_non_null(pl);
    assert_null(strstr(pl + 1, "Sec-WebSocket-Protocol:"));
    assert_non_null(strstr(q, "\r\nSec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n"));
    assert_string_equal(q + strlen(q) - 4, "\r\n\r\n");
    free(q);
    q = ws_upgrade_request("h:443", "/", NULL, "k", "v5.channel.k8s.io");
    assert_null(strstr(q, "Authorization"));
    free(q);
}

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define HEAD_101                                         \
    "HTTP/1.1 101 Switching Protocols\r\n"               \
    "upgrade: WebSocket\r\n"                             \
    "CONNECTION: keep-alive, Upgrade\r\n"                \
    "Sec-Websocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" \
    "sec-websocket-protocol: v5.channel.k8s.io\r\n"      \
    "\r\n"

static void head_arrives_with_the_first_frame_bytes(void **state)
{
    (void)state;
    unsigned char buf[512];
    size_t hl = strlen(HEAD_101);
    memcpy(buf, HEAD_101, hl);
    static const unsigned char ready[] = {1};
    static const unsigned char out[] = {1, 'h', 'i'};
    size_t n = hl + srv_frame(buf + hl, true, WS_OP_BINARY, ready, 1);
    n += srv_frame(buf + n, true, WS_OP_BINARY, out, 3);
    ws_head h;
    ws_head_init(&h);
    size_t used = 0;
    sw_err e;
    assert_int_equal(ws_head_feed(&h, buf, n, &used, &e), 1);
    assert_int_equal(used, hl);
    assert_int_equal(h.status, 101);
    assert_string_equal(h.protocol, "v5.channel.k8s.io");
    assert_int_equal(ws_head_verify(&h, KEY, &e), 0);
    ws_decoder d;
    ws_decoder_init(&d, 1024);
    char data[64];
    size_t dl = 0;
    assert_int_equal(decode_all(&d, buf + used, n - used, NULL, data, &dl), 2);
    assert_memory_equal(data, "\x01|\x01hi|", dl);
    ws_decoder_free(&d);
    ws_head_free(&h);
}

static void head_fed_one_byte_at_a_time(void **state)
{
    (void)state;
    const char *t = HEAD_101 "\x82\x01\x01";
    size_t n = strlen(t), hl = strlen(HEAD_101);
    ws_head h;
    ws_head_init(&h);
    sw_err e;
    size_t i, used = 0;
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
        rc = ws_head_feed(&h, t + i, 1, &used, &e);
        assert_true(rc >= 0);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(i, hl);   /* done on the head's last byte */
    assert_int_equal(used, 1);
    assert_int_equal(ws_head_verify(&h, KEY, &e), 0);
    ws_head_free(&h);
}

static void head_with_a_wrong_accept_is_refused(void **state)
{
    (void)state;
    const char *t = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
    ws_head h;
    ws_head_init(&h);
    sw_err e;
    size_t used;
    assert_int_equal(ws_head_feed(&h, t, strlen(t), &used, &e), 1);
    assert_int_equal(ws_head_verify(&h, KEY, &e), -1);
    assert_int_equal(e.code, SW_E_BACKEND);
    assert_non_null(strstr(e.msg, "Accept"));
    ws_head_free(&h);
    t = "HTTP/1.1 101 Switching Protocols\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    ws_head_init(&h);
    assert_int_equal(ws_head_feed(&h, t, strlen(t), &used, &e), 1);
    assert_int_equal(ws_head_verify(&h, KEY, &e), -1);
    ws_head_free(&h);
}

static void refused_upgrade_with_an_empty_403(void **state)
{
    (void)state;
    const char *t = "HTTP/1.1 403 Forbidden\r\n\r\n";
    ws_head h;
    ws_head_init(&h);
    sw_err e;
    size_t used;
    assert_int_equal(ws_head_feed(&h, t, strlen(t), &used, &e), 0);   /* body until EOF */
    assert_int_equal(used, strlen(t));
    assert_int_equal(ws_head_eof(&h, &e), 1);
    assert_int_equal(h.status, 403);
    assert_int_equal(h.body_len, 0);
    assert_int_equal(ws_head_verify(&h, KEY, &e), -1);
    ws_head_free(&h);
}

static void refused_upgrade_keeps_its_status_body(void **state)
{
    (void)state;
    const char *body = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
                       "\"message\":\"pods \\\"x\\\" not found\",\"reason\":\"NotFound\",\"code\":404}";
    char t[1024];
    snprintf(t, sizeof t, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    ws_head h;
    ws_head_init(&h);
    sw_err e;
    size_t used;
    size_t split = strlen(t) - 10;
    assert_int_equal(ws_head_feed(&h, t, split, &used, &e), 0);
    assert_int_equal(ws_head_feed(&h, t + split, 10, &used, &e), 1);
    assert_int_equal(h.status, 404);
    assert_string_equal(h.body, body);
    char m[256];
    k8s_http_error_msg("pods x", h.status, h.body, h.body_len, m, sizeof m);
    assert_string_equal(m, "pods x: 404 NotFound: pods \"x\" not found");
    ws_head_free(&h);

    /* chunked, in two chunks of the transfer coding */
    const char *c = "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    ws_head_init(&h);
    assert_int_equal(ws_head_feed(&h, c, strlen(c) - 5, &used, &e), 0);
    assert_int_equal(ws_head_feed(&h, c + strlen(c) - 5, 5, &used, &e), 1);
    assert_string_equal(h.body, "hello world");
    ws_head_free(&h);
}

/* A chunk-size line counts only once it is whole: a size cut short by the end of the
 * bytes so far ("0000" of "00001f") must not read as the last chunk, and blank lines
 * before a size are not skipped (found by fuzz_ws: strtoull skipped them and read a
 * partial size, so the body depended on how the bytes arrived). */
static void chunk_sizes_count_only_when_their_line_is_whole(void **state)
{
    (void)state;
    const char *c = "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "0000000000005;ext=1\r\nhello\r\n0\r\n\r\n";
    size_t hd = strlen(c) - strlen("0000000000005;ext=1\r\nhello\r\n0\r\n\r\n");
    sw_err e;
    size_t used;
    for (size_t split = hd; split <= strlen(c); split++) {
        ws_head h;
        ws_head_init(&h);
        int rc = ws_head_feed(&h, c, split, &used, &e);
        if (rc == 0) rc = ws_head_feed(&h, c + split, strlen(c) - split, &used, &e);
        assert_int_equal(rc, 1);
        assert_string_equal(h.body, "hello");
        ws_head_free(&h);
    }

    /* blank lines, then a size past 2^60: not a size line, so the body waits for EOF */
    const char *bad = "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "\n\n0000013661046060852008276\n5\r\n`h!\r\n";
    ws_head h;
    ws_head_init(&h);
    assert_int_equal(ws_head_feed(&h, bad, strlen(bad) - 30, &used, &e), 0);
    assert_int_equal(ws_head_feed(&h, bad + strlen(bad) - 30, 30, &used, &e), 0);
    assert_int_equal(ws_head_eof(&h, &e), 1);
    assert_int_equal(h.body_len, 0);
    ws_head_free(&h);

    /* an over-long size line is refused rather than wrapped */
    const char *big = "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "10000000000000005\r\nhello\r\n0\r\n\r\n";
    ws_head_init(&h);
    assert_int_equal(ws_head_feed(&h, big, strlen(big), &used, &e), 0);
    assert_int_equal(h.body_len, 0);
    ws_head_free(&h);
}

static void refused_upgrade_body_is_bounded(void **state)
{
    (void)state;
    const char *hd = "HTTP/1.1 500 Internal Server Error\r\n\r\n";
    size_t n = strlen(hd) + 200000;
    char *t = xmalloc(n);
    memcpy(t, hd, strlen(hd));
    memset(t + strlen(hd), 'x', n - strlen(hd));
    ws_head h;
    ws_head_init(&h);
    sw_err e;
    size_t used;
    assert_int_equal(ws_head_feed(&h, t, n, &used, &e), 1);
    assert_int_equal(used, n);
    assert_int_equal(h.body_len, WS_BODY_MAX);
    ws_head_free(&h);
    free(t);
}

static void oversized_or_broken_heads_are_errors(void **state)
{
    (void)state;
    char *t = xmalloc(WS_HEAD_MAX + 100);
    memcpy(t, "HTTP/1.1 101 OK\r\n", 17);
    memset(t + 17, 'a', WS_HEAD_MAX + 83);
    ws_head h;
    ws_head_init(&h);
    sw_err e;
    size_t used;
    assert_int_equal(ws_head_feed(&h, t, WS_HEAD_MAX + 100, &used, &e), -1);
    assert_non_null(strstr(e.msg, "larger"));
    ws_head_free(&h);
    free(t);
    ws_head_init(&h);
    assert_int_equal(ws_head_feed(&h, "SSH-2.0-x\r\n\r\n", 13, &used, &e), -1);
    ws_head_free(&h);
    ws_head_init(&h);
    assert_int_equal(ws_head_feed(&h, "HTTP/1.1 101", 12, &used, &e), 0);
    assert_int_equal(ws_head_eof(&h, &e), -1);
    ws_head_free(&h);
}

/* ------------------------------------------------------------------ frames out */

static void client_frames_are_masked_with_the_given_key(void **state)
{
    (void)state;
    static const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    unsigned char out[64];
    size_t n = ws_frame_encode(out, WS_OP_TEXT, "Hello", 5, mask);
    /* RFC 6455 §5.7: a masked "Hello" */
    static const unsigned char want[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                         0x7f, 0x9f, 0x4d, 0x51, 0x58};
    assert_int_equal(n, sizeof want);
    assert_memory_equal(out, want, sizeof want);
    /* and unmasking with the key gives the payload back */
    ws_mask(out + 6, 5, out + 2, 0);
    assert_memory_equal(out + 6, "Hello", 5);
    /* a random key differs between frames and still round-trips */
    unsigned char a[64], b[64];
    ws_frame_encode(a, WS_OP_BINARY, "abcdefgh", 8, NULL);
    ws_frame_encode(b, WS_OP_BINARY, "abcdefgh", 8, NULL);
    assert_true(a[1] & 0x80);
    assert_memory_not_equal(a + 2, b + 2, 4);
    ws_mask(a + 6, 8, a + 2, 0);
    assert_memory_equal(a + 6, "abcdefgh", 8);
    /* masking in pieces at any offset equals masking at once */
    unsigned char whole[11], parts[11];
    memcpy(whole, "0123456789a", 11);
    memcpy(parts, whole, 11);
    ws_mask(whole, 11, mask, 0);
    ws_mask(parts, 3, mask, 0);
    ws_mask(parts + 3, 8, mask, 3);
    assert_memory_equal(whole, parts, 11);
}

static void lengths_use_7_16_and_64_bits_at_the_boundaries(void **state)
{
    (void)state;
    static const struct { size_t n, hdr; } cases[] = {
        {0, 6}, {125, 6}, {126, 8}, {127, 8}, {65535, 8}, {65536, 14}, {70000, 14}};
    static const unsigned char mask[4] = {1, 2, 3, 4};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t n = cases[c].n;
        unsigned char *p = pattern(n), *out = xmalloc(n + WS_FRAME_HDR_MAX);
        size_t fl = ws_frame_encode(out, WS_OP_BINARY, p, n, mask);
        assert_int_equal(fl, n + cases[c].hdr);
        unsigned l7 = out[1] & 0x7F;
        assert_int_equal(l7, n < 126 ? n : n <= 65535 ? 126 : 127);
        uint64_t got = l7;
        if (l7 == 126) got = ((uint64_t)out[2] << 8) | out[3];
        if (l7 == 127) {
            got = 0;
            for (int i = 2; i < 10; i++) got = (got << 8) | out[i];
        }
        assert_int_equal(got, n);
        ws_mask(out + cases[c].hdr, n, out + cases[c].hdr - 4, 0);
        assert_memory_equal(out + cases[c].hdr, p, n);

        /* the same sizes from the server decode back */
        unsigned char *sf = xmalloc(n + WS_FRAME_HDR_MAX);
        size_t sl = srv_frame(sf, true, WS_OP_BINARY, p, n);
        assert_int_equal(sl, n + cases[c].hdr - 4);
        ws_decoder d;
        ws_decoder_init(&d, 1 << 20);
        size_t used;
        ws_msg m;
        assert_int_equal(ws_decode(&d, sf, sl, &used, &m, NULL), 1);
        assert_int_equal(used, sl);
        assert_int_equal(m.len, n);
        if (n) assert_memory_equal(m.data, p, n);
        ws_decoder_free(&d);
        free(sf);
        free(p);
        free(out);
    }
}

/* ------------------------------------------------------------------ frames in */

static void a_frame_split_at_every_byte_offset_decodes(void **state)
{
    (void)state;
    unsigned char *p = pattern(300);
    unsigned char f[400];
    size_t n = srv_frame(f, true, WS_OP_BINARY, p, 300);   /* 16-bit length */
    for (size_t cut = 0; cut <= n; cut++) {
        ws_decoder d;
        ws_decoder_init(&d, 4096);
        size_t used = 0;
        ws_msg m;
        int rc = ws_decode(&d, f, cut, &used, &m, NULL);
        assert_int_equal(used, cut);
        if (cut < n) {
            assert_int_equal(rc, 0);
            rc = ws_decode(&d, f + cut, n - cut, &used, &m, NULL);
            assert_int_equal(used, n - cut);
        }
        assert_int_equal(rc, 1);
        assert_int_equal(m.opcode, WS_OP_BINARY);
        assert_int_equal(m.len, 300);
        assert_memory_equal(m.data, p, 300);
        ws_decoder_free(&d);
    }
    /* and fed one byte at a time */
    ws_decoder d;
    ws_decoder_init(&d, 4096);
    int msgs = 0;
    for (size_t i = 0; i < n; i++) {
        size_t used;
        ws_msg m;
        int rc = ws_decode(&d, f + i, 1, &used, &m, NULL);
        assert_int_equal(used, 1);
        msgs += rc;
        if (rc) assert_memory_equal(m.data, p, 300);
    }
    assert_int_equal(msgs, 1);
    ws_decoder_free(&d);
    free(p);
}

static void many_frames_in_one_chunk(void **state)
{
    (void)state;
    unsigned char buf[1024];
    size_t n = 0;
    n += srv_frame(buf + n, true, WS_OP_BINARY, "\x01", 1);
    n += srv_frame(buf + n, true, WS_OP_BINARY, "\x01out", 4);
    n += srv_frame(buf + n, true, WS_OP_PING, "p", 1);
    n += srv_frame(buf + n, true, WS_OP_BINARY, "\x02" "err", 4);
    n += srv_frame(buf + n, true, WS_OP_BINARY, "", 0);
    n += srv_frame(buf + n, true, WS_OP_CLOSE, "\x03\xe8", 2);
    ws_decoder d;
    ws_decoder_init(&d, 4096);
    int ops[8];
    char data[128];
    size_t dl = 0;
    assert_int_equal(decode_all(&d, buf, n, ops, data, &dl), 6);
    assert_int_equal(ops[0], WS_OP_BINARY);
    assert_int_equal(ops[2], WS_OP_PING);
    assert_int_equal(ops[4], WS_OP_BINARY);
    assert_int_equal(ops[5], WS_OP_CLOSE);
    assert_memory_equal(data, "\x01|\x01out|p|\x02" "err||\x03\xe8|", dl);
    ws_decoder_free(&d);
}

static void fragmented_message_with_a_ping_in_between(void **state)
{
    (void)state;
    unsigned char buf[256];
    size_t n = 0;
    n += srv_frame(buf + n, false, WS_OP_BINARY, "\x01" "ab", 3);
    n += srv_frame(buf + n, true, WS_OP_PING, "x", 1);
    n += srv_frame(buf + n, false, WS_OP_CONT, "cd", 2);
    n += srv_frame(buf + n, true, WS_OP_PONG, "", 0);
    n += srv_frame(buf + n, false, WS_OP_CONT, "", 0);
    n += srv_frame(buf + n, true, WS_OP_CONT, "ef", 2);
    ws_decoder d;
    ws_decoder_init(&d, 4096);
    int ops[8];
    char data[64];
    size_t dl = 0;
    assert_int_equal(decode_all(&d, buf, n, ops, data, &dl), 3);
    assert_int_equal(ops[0], WS_OP_PING);
    assert_int_equal(ops[1], WS_OP_PONG);
    assert_int_equal(ops[2], WS_OP_BINARY);
    assert_memory_equal(data, "x||\x01" "abcdef|", dl);
    ws_decoder_free(&d);
}

/* One malformed input must be refused, and the decoder stays failed. */
static void refused(const unsigned char *f, size_t n, size_t max_msg, const char *why)
{
    ws_decoder d;
    ws_decoder_init(&d, max_msg);
    int rc = decode_all(&d, f, n, NULL, NULL, NULL);
    if (rc != -1) fail_msg("accepted: %s", why);
    size_t used;
    ws_msg m;
    assert_int_equal(ws_decode(&d, (const unsigned char *)"\x82\x00", 2, &used, &m, NULL), -1);
    ws_decoder_free(&d);
}

static void protocol_errors_are_refused(void **state)
{
    (void)state;
    unsigned char f[512];
    unsigned char big[126];
    memset(big, 'x', sizeof big);
    refused(f, srv_frame(f, true, WS_OP_PING, big, 126), 4096, "ping of 126 bytes");
    refused(f, srv_frame(f, false, WS_OP_PING, "a", 1), 4096, "fragmented ping");
    refused(f, srv_frame(f, false, WS_OP_CLOSE, "", 0), 4096, "fragmented close");
    size_t n = srv_frame(f, true, WS_OP_BINARY, "abcd", 4);
    f[1] |= 0x80;   /* masked: needs 4 key bytes; keep the length honest */
    memmove(f + 6, f + 2, 4);
    memset(f + 2, 0, 4);
    refused(f, n + 4, 4096, "masked server frame");
    n = srv_frame(f, true, WS_OP_BINARY, "a", 1);
    f[0] |= 0x40;
    refused(f, n, 4096, "RSV1");
    refused(f, srv_frame(f, true, 0x3, "a", 1), 4096, "opcode 3");
    refused(f, srv_frame(f, true, 0xB, "", 0), 4096, "opcode 11");
    refused(f, srv_frame(f, true, WS_OP_CONT, "a", 1), 4096, "continuation without a message");
    n = srv_frame(f, false, WS_OP_BINARY, "a", 1);
    n += srv_frame(f + n, true, WS_OP_TEXT, "b", 1);
    refused(f, n, 4096, "new message inside a fragmented one");
    static const unsigned char nonmin[] = {0x82, 126, 0, 5, 'a', 'b', 'c', 'd', 'e'};
    refused(nonmin, sizeof nonmin, 4096, "16-bit length below 126");
}

static void oversize_messages_are_refused(void **state)
{
    (void)state;
    unsigned char *p = pattern(1001);
    unsigned char f[2100];
    refused(f, srv_frame(f, true, WS_OP_BINARY, p, 1001), 1000, "one frame over the cap");
    size_t n = srv_frame(f, false, WS_OP_BINARY, p, 600);
    n += srv_frame(f + n, true, WS_OP_CONT, p, 600);
    refused(f, n, 1000, "fragments adding up over the cap");
    /* a 64-bit length of 2^40 is refused from its header alone */
    static const unsigned char huge[] = {0x82, 127, 0, 0, 1, 0, 0, 0, 0, 0};
    refused(huge, sizeof huge, 1 << 20, "2^40 bytes announced");
    /* exactly at the cap is fine */
    ws_decoder d;
    ws_decoder_init(&d, 1000);
    assert_int_equal(decode_all(&d, f, srv_frame(f, true, WS_OP_BINARY, p, 1000), NULL, NULL, NULL), 1);
    ws_decoder_free(&d);
    free(p);
}

static void close_codes_are_parsed(void **state)
{
    (void)state;
    char reason[16];
    assert_int_equal(ws_close_code((const unsigned char *)"\x03\xe8", 2, reason, sizeof reason), 1000);
    assert_string_equal(reason, "");
    assert_int_equal(ws_close_code((const unsigned char *)"\x03\xe9going", 7, reason, sizeof reason), 1001);
    assert_string_equal(reason, "going");
    assert_int_equal(ws_close_code((const unsigned char *)"\x0f\xa0" "0123456789abcdefgh", 20, reason, 8), 4000);
    assert_string_equal(reason, "0123456");
    assert_int_equal(ws_close_code(NULL, 0, NULL, 0), WS_CLOSE_NONE);
    assert_int_equal(ws_close_code((const unsigned char *)"\x03", 1, NULL, 0), -1);
    assert_int_equal(ws_close_code((const unsigned char *)"\x03\xe7", 2, NULL, 0), -1);   /* 999 */
    assert_int_equal(ws_close_code((const unsigned char *)"\x03\xed", 2, NULL, 0), -1);   /* 1005 */
    assert_int_equal(ws_close_code((const unsigned char *)"\x03\xee", 2, NULL, 0), -1);   /* 1006 */
    assert_int_equal(ws_close_code((const unsigned char *)"\x03\xf3", 2, NULL, 0), 1011);
    assert_int_equal(ws_close_code((const unsigned char *)"\x07\xd0", 2, NULL, 0), -1);   /* 2000 */
}

/* ------------------------------------------------------------------ Status */

static k8s_status_kind st(const char *s, int *code, long *http, char *msg)
{
    *code = -7;
    return k8s_exec_status(s, strlen(s), code, http, msg, 200);
}

static void exec_status_success_and_exit_codes(void **state)
{
    (void)state;
    int code;
    long http;
    char msg[200];
    assert_int_equal(st("{\"metadata\":{},\"status\":\"Success\"}", &code, &http, msg), K8S_ST_SUCCESS);
    assert_int_equal(code, 0);
    assert_int_equal(st("{\"metadata\":{},\"status\":\"Failure\",\"message\":\"command terminated with "
                        "non-zero exit code: error executing command [sh -c exit 3], exit code 3\","
                        "\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":[{\"reason\":\"ExitCode\","
                        "\"message\":\"3\"}]}}", &code, &http, msg), K8S_ST_EXIT);
    assert_int_equal(code, 3);
    /* causes in any order: the ExitCode one is found */
    assert_int_equal(st("{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":["
                        "{\"reason\":\"Other\",\"message\":\"9\"},{\"message\":\"x\"},"
                        "{\"reason\":\"ExitCode\",\"message\":\"255\"}]}}", &code, &http, msg), K8S_ST_EXIT);
    assert_int_equal(code, 255);
    /* an exit code outside 0..255 is not one */
    assert_int_equal(st("{\"status\":\"Failure\",\"message\":\"m\",\"reason\":\"NonZeroExitCode\","
                        "\"details\":{\"causes\":[{\"reason\":\"ExitCode\",\"message\":\"256\"}]}}",
                        &code, &http, msg), K8S_ST_FAILURE);
    assert_string_equal(msg, "m");
}

static void exec_status_failures_garbage_and_nothing(void **state)
{
    (void)state;
    int code;
    long http;
    char msg[200];
    assert_int_equal(st("{\"metadata\":{},\"status\":\"Failure\",\"message\":\"Internal error occurred: "
                        "error executing command in container: not running\",\"reason\":\"InternalError\","
                        "\"details\":{\"causes\":[{\"message\":\"not running\"}]},\"code\":500}",
                        &code, &http, msg), K8S_ST_FAILURE);
    assert_string_equal(msg, "Internal error occurred: error executing command in container: not running");
    assert_int_equal(http, 500);
    assert_int_equal(st("{\"status\":\"Failure\",\"reason\":\"Forbidden\"}", &code, &http, msg), K8S_ST_FAILURE);
    assert_string_equal(msg, "Forbidden");
    assert_int_equal(http, 0);
    assert_int_equal(st("not json", &code, &http, msg), K8S_ST_GARBAGE);
    assert_int_equal(st("{\"status\":\"Running\"}", &code, &http, msg), K8S_ST_GARBAGE);
    assert_int_equal(st("[1,2]", &code, &http, msg), K8S_ST_GARBAGE);
    assert_int_equal(st("{\"status\":\"Succ", &code, &http, msg), K8S_ST_GARBAGE);
    assert_int_equal(st("", &code, &http, msg), K8S_ST_NONE);
    assert_int_equal(st(" \r\n", &code, &http, msg), K8S_ST_NONE);
    assert_int_equal(code, -7);   /* untouched when there is no exit code */
    /* control characters in a server message are not passed on */
    assert_int_equal(st("{\"status\":\"Failure\",\"message\":\"a\\nb\\u001b[31m\"}", &code, &http, msg),
                     K8S_ST_FAILURE);
    assert_string_equal(msg, "a?b?[31m");
}

static void rest_error_bodies_become_messages(void **state)
{
    (void)state;
    char m[256];
    const char *nf = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
                     "\"message\":\"pods \\\"sandbox-1234abcd\\\" not found\",\"reason\":\"NotFound\","
                     "\"details\":{\"name\":\"sandbox-1234abcd\",\"kind\":\"pods\"},\"code\":404}";
    k8s_http_error_msg("pods sandbox-1234abcd", 404, nf, strlen(nf), m, sizeof m);
    assert_string_equal(m, "pods sandbox-1234abcd: 404 NotFound: pods \"sandbox-1234abcd\" not found");
    const char *c = "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Precondition failed: UID in "
                    "precondition: 1, UID in object meta: 2\",\"reason\":\"Conflict\",\"code\":409}";
    k8s_http_error_msg("pods p", 409, c, strlen(c), m, sizeof m);
    assert_string_equal(m, "pods p: 409 Conflict: Precondition failed: UID in precondition: 1, UID in object meta: 2");
    const char *u = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
                    "\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}";
    k8s_http_error_msg("services s", 401, u, strlen(u), m, sizeof m);
    assert_string_equal(m, "services s: 401 Unauthorized: Unauthorized");
    k8s_http_error_msg("pods p", 400, "Upgrade request required\n", 25, m, sizeof m);
    assert_string_equal(m, "pods p: HTTP 400: Upgrade request required");
    k8s_http_error_msg("pods p", 503, NULL, 0, m, sizeof m);
    assert_string_equal(m, "pods p: HTTP 503");
    k8s_http_error_msg("pods p", 502, "{\"kind\":\"Pod\"}", 14, m, sizeof m);
    assert_string_equal(m, "pods p: HTTP 502: {\"kind\":\"Pod\"}");
    assert_true(k8s_http_retryable(503));
    assert_true(k8s_http_retryable(429));
    assert_false(k8s_http_retryable(404));
    assert_false(k8s_http_retryable(401));
}

/* Regression, found by tests/fuzz/fuzz_k8s_status.c: the Status "reason" reached the
 * message with its control characters (DEL here, a newline would forge a log line). */
static void rest_error_reason_control_characters_are_replaced(void **state)
{
    (void)state;
    char m[256];
    const char *b = "{\"kind\": \"Status\", \"atus\": \"Fail`ure\", \"message\": \"pods \\\"x\\\" "
                    "notond\", \"reason\": \"NotFound\x7f\x7f\", \"detailode\": 404}";
    k8s_http_error_msg("pods x", 404, b, strlen(b), m, sizeof m);
    assert_string_equal(m, "pods x: 404 NotFound??: pods \"x\" notond");
    const char *nl = "{\"kind\":\"Status\",\"reason\":\"Bad\\nINFO forged\",\"message\":\"\"}";
    k8s_http_error_msg("pods x", 400, nl, strlen(nl), m, sizeof m);
    assert_string_equal(m, "pods x: 400 Bad?INFO forged");
}

static void object_names_are_validated(void **state)
{
    (void)state;
    assert_true(k8s_valid_name("sandbox-0b6f6a0e"));
    assert_true(k8s_valid_name("a.b-c"));
    assert_false(k8s_valid_name(""));
    assert_false(k8s_valid_name(NULL));
    assert_false(k8s_valid_name("../x"));
    assert_false(k8s_valid_name("a/b"));
    assert_false(k8s_valid_name("Upper"));
    assert_false(k8s_valid_name("a?b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accept_matches_the_rfc_6455_example),
        cmocka_unit_test(keys_are_base64_of_16_random_bytes),
        cmocka_unit_test(upgrade_request_sends_one_protocol_line),
        cmocka_unit_test(head_arrives_with_the_first_frame_bytes),
        cmocka_unit_test(head_fed_one_byte_at_a_time),
        cmocka_unit_test(head_with_a_wrong_accept_is_refused),
        cmocka_unit_test(refused_upgrade_with_an_empty_403),
        cmocka_unit_test(refused_upgrade_keeps_its_status_body),
        cmocka_unit_test(chunk_sizes_count_only_when_their_line_is_whole),
        cmocka_unit_test(refused_upgrade_body_is_bounded),
        cmocka_unit_test(oversized_or_broken_heads_are_errors),
        cmocka_unit_test(client_frames_are_masked_with_the_given_key),
        cmocka_unit_test(lengths_use_7_16_and_64_bits_at_the_boundaries),
        cmocka_unit_test(a_frame_split_at_every_byte_offset_decodes),
        cmocka_unit_test(many_frames_in_one_chunk),
        cmocka_unit_test(fragmented_message_with_a_ping_in_between),
        cmocka_unit_test(protocol_errors_are_refused),
        cmocka_unit_test(oversize_messages_are_refused),
        cmocka_unit_test(close_codes_are_parsed),
        cmocka_unit_test(exec_status_success_and_exit_codes),
        cmocka_unit_test(exec_status_failures_garbage_and_nothing),
        cmocka_unit_test(rest_error_bodies_become_messages),
        cmocka_unit_test(rest_error_reason_control_characters_are_replaced),
        cmocka_unit_test(object_names_are_validated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
