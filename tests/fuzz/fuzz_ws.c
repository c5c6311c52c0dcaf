/* tests/fuzz/fuzz_ws.c — libFuzzer harness for the WebSocket client codec (common/ws.c):
 * the upgrade response head parser (ws_head_feed/ws_head_eof) and the frame decoder
 * (ws_decode), as k8s_exec.c drives them over bytes from the API server.
 * Input: byte 0 picks a split point, byte 1 the mode (bit 7: a response head followed by
 * frames; else frames only) and max_msg (bits 0-1); the rest is the server's bytes.
 * Invariants beyond the sanitizers:
 *  - the bytes fed in one piece or in two pieces split anywhere give the same result:
 *    the same head fields, body and end of head; the same messages (opcode and bytes) in
 *    the same order, and a protocol error at the same point;
 *  - ws_decode takes no more than it was given, takes everything when it returns 0,
 *    always makes progress, keeps messages within max_msg and control frames within 125
 *    bytes, and refuses every call after an error;
 *  - ws_close_code gives WS_CLOSE_NONE, -1 or a code a peer may send, with a NUL-ended
 *    reason. */
#include <string.h>

#include "common/ws.h"
#include "tests/fuzz/fuzz.h"

#define MAX_MSGS 4096

typedef struct outcome {
    int nmsg;
    int opcode[MAX_MSGS];
    size_t len[MAX_MSGS];
    unsigned char *data[MAX_MSGS];
    int failed;               /* a protocol error was returned */
} outcome;

static void outcome_free(outcome *o)
{
    for (int i = 0; i < o->nmsg; i++) free(o->data[i]);
    o->nmsg = 0;
}

static void check_close(const ws_msg *m)
{
    char reason[32];
    int code = ws_close_code(m->data, m->len, reason, sizeof reason);
    CHECK(code == -1 || code == WS_CLOSE_NONE || (code >= 1000 && code <= 4999));
    CHECK(memchr(reason, '\0', sizeof reason));
}

/* Feed p[0..n) to d, recording every message in o. */
static void feed(ws_decoder *d, const unsigned char *p, size_t n, outcome *o)
{
    size_t off = 0;
    while (!o->failed) {
        size_t used = 0;
        ws_msg m;
        sw_err err;
        int rc = ws_decode(d, p + off, n - off, &used, &m, &err);
        CHECK(used <= n - off);
        if (rc < 0) {
            CHECK(err.code == SW_E_BACKEND);
            o->failed = 1;
            CHECK(ws_decode(d, p, n, &used, &m, &err) < 0 && used == 0);
            return;
        }
        off += used;
        if (rc == 0) {
            CHECK(off == n);
            return;
        }
        CHECK(used > 0);
        if (m.opcode >= 8) CHECK(m.len <= WS_CONTROL_MAX);
        else CHECK(m.len <= d->max_msg && (m.opcode == WS_OP_TEXT || m.opcode == WS_OP_BINARY));
        if (m.opcode == WS_OP_CLOSE) check_close(&m);
        CHECK(o->nmsg < MAX_MSGS);
        o->opcode[o->nmsg] = m.opcode;
        o->len[o->nmsg] = m.len;
        o->data[o->nmsg] = malloc(m.len ? m.len : 1);
        if (m.len) memcpy(o->data[o->nmsg], m.data, m.len);
        o->nmsg++;
    }
}

static void decode(const unsigned char *p, size_t n, size_t split, size_t max_msg, outcome *o)
{
    ws_decoder d;
    ws_decoder_init(&d, max_msg);
    memset(o, 0, sizeof *o);
    feed(&d, p, split, o);
    feed(&d, p + split, n - split, o);
    ws_decoder_free(&d);
}

static void compare(const outcome *a, const outcome *b)
{
    CHECK(a->nmsg == b->nmsg && a->failed == b->failed);
    for (int i = 0; i < a->nmsg; i++) {
        CHECK(a->opcode[i] == b->opcode[i] && a->len[i] == b->len[i]);
        CHECK(!memcmp(a->data[i], b->data[i], a->len[i]));
    }
}

/* Feed the head in up to two pieces; returns ws_head_feed's last answer and the offset of
 * the first byte after the head (for a 101). Ends with ws_head_eof when still incomplete. */
static int head(const unsigned char *p, size_t n, size_t split, ws_head *h, size_t *end)
{
    size_t used = 0, off = 0;
    sw_err err;
    ws_head_init(h);
    int rc = ws_head_feed(h, p, split, &used, &err);
    CHECK(used <= split);
    if (rc == 0) {
        CHECK(used == split);
        off = split;
        rc = ws_head_feed(h, p + split, n - split, &used, &err);
        CHECK(used <= n - split);
    }
    off += used;
    if (rc < 0) {
        CHECK(err.code == SW_E_BACKEND);
        return rc;
    }
    if (rc == 0) {
        rc = ws_head_eof(h, &err) < 0 ? -2 : 2;
        if (rc < 0) CHECK(h->head_len == 0);
    }
    *end = off;
    if (rc > 0) {
        CHECK(h->status >= 0 && h->status <= 999 && h->head_len > 0 && h->head_len <= WS_HEAD_MAX);
        CHECK(memchr(h->reason, '\0', sizeof h->reason) && memchr(h->protocol, '\0', sizeof h->protocol));
        if (h->status != 101) CHECK(h->body && h->body_len <= WS_BODY_MAX && h->body[h->body_len] == '\0');
        if (h->status == 101) CHECK(*end == h->head_len);
    }
    return rc;
}

static void compare_head(int ra, const ws_head *a, size_t ea, int rb, const ws_head *b, size_t eb)
{
    CHECK(ra == rb);
    if (ra < 0) return;
    CHECK(a->status == b->status && a->head_len == b->head_len);
    CHECK(!strcmp(a->reason, b->reason) && !strcmp(a->protocol, b->protocol));
    CHECK(!strcmp(a->accept, b->accept));
    CHECK(a->upgrade_ws == b->upgrade_ws && a->connection_upgrade == b->connection_upgrade);
    CHECK(a->content_length == b->content_length && a->chunked == b->chunked);
    if (a->status == 101) {
        CHECK(ea == eb);
        sw_err e1, e2;
        CHECK(ws_head_verify(a, "dGhlIHNhbXBsZSBub25jZQ==", &e1) ==
              ws_head_verify(b, "dGhlIHNhbXBsZSBub25jZQ==", &e2));
    } else {
        CHECK(a->body_len == b->body_len && !memcmp(a->body, b->body, a->body_len));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t max_msgs[4] = {0, 125, 4096, 1 << 20};
    if (size < 2) return 0;
    const unsigned char *p = data + 2;
    size_t n = size - 2, split = n * data[0] / 255;
    size_t max_msg = max_msgs[data[1] & 3];
    static outcome a, b;

    if (data[1] & 0x80) {
        ws_head ha, hb;
        size_t ea = 0, eb = 0;
        int ra = head(p, n, n, &ha, &ea);
        int rb = head(p, n, split, &hb, &eb);
        compare_head(ra, &ha, ea, rb, &hb, eb);
        bool frames = ra > 0 && ha.status == 101;
        ws_head_free(&ha);
        ws_head_free(&hb);
        if (!frames) return 0;
        p += ea;   /* the frames that followed the head in the same bytes */
        n -= ea;
        split = n * data[0] / 255;
    }
    decode(p, n, n, max_msg, &a);
    decode(p, n, split, max_msg, &b);
    compare(&a, &b);
    outcome_free(&a);
    outcome_free(&b);
    return 0;
}
