/* common/ws.c — the RFC 6455 client codec of common/ws.h: handshake text, response-head
 * parsing, masked frames out, strict incremental decoding in.
 * Owns: byte formats only. No sockets, clocks or logging; the caller (k8s_exec.c) moves
 * the bytes. Strict on purpose: a server frame that breaks the RFC is an error, because
 * guessing there would mean silently wrong output.
 *
 * Frame layout (RFC 6455 §5.2), as read and written here:
 *
 *    0               1               2               3
 *   |F|R|R|R| opcode|M| len (7)     | ext len: 16 bits if len=126, 64 bits if 127 ...
 *   |I|S|S|S|  (4)  |A|             |
 *   |N|V|V|V|       |S|             |  ... masking key (4 bytes) when MASK=1,
 *   | |1|2|3|       |K|             |  then the payload (XOR-ed with the key)
 *
 * The client always sets MASK; a server never may. */
#include "common/ws.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "common/xmalloc.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ------------------------------------------------------------------ randomness */

/* getrandom into p; 0 or -1. */
static int fill_random(void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom((char *)p + got, n - got, 0);
        if (r < 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

int ws_make_key(char key[WS_KEY_LEN + 1], sw_err *err)
{
    unsigned char raw[16];
    if (fill_random(raw, sizeof raw) < 0)
        return sw_errf(err, SW_E_INTERNAL, true, "websocket: getrandom failed");
    EVP_EncodeBlock((unsigned char *)key, raw, (int)sizeof raw);
    key[WS_KEY_LEN] = '\0';
    return 0;
}

void ws_mask_key(unsigned char mask[4])
{
    /* A masking key only has to be unpredictable to scripts in a browser (RFC 6455
     * §10.3); getrandom on Linux does not fail for 4 bytes once the pool is ready, but
     * a fixed fallback would still be a valid frame. */
    if (fill_random(mask, 4) < 0) memset(mask, 0x5a, 4);
}

/* ------------------------------------------------------------------ handshake */

void ws_accept_for(const char *key, char out[WS_ACCEPT_LEN + 1])
{
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s%s", key, WS_GUID);
    if (n < 0 || (size_t)n >= sizeof buf) n = 0;   /* a key this long never verifies */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    out[WS_ACCEPT_LEN] = '\0';
}

char *ws_upgrade_request(const char *host, const char *path, const char *auth_line,
                         const char *key, const char *protocols)
{
    return xasprintf("GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "%s%s"
                     "User-Agent: snapworker\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: %s\r\n"
                     "\r\n",
                     path, host, auth_line ? auth_line : "", auth_line ? "\r\n" : "", key,
                     protocols);
}

void ws_head_init(ws_head *h)
{
    memset(h, 0, sizeof *h);
    h->content_length = -1;
}

void ws_head_free(ws_head *h)
{
    if (!h) return;
    free(h->raw);
    free(h->body);
    h->raw = h->body = NULL;
    h->len = h->cap = h->body_len = 0;
}

/* Copy a header value, trimmed, into out[n]. */
static void copy_value(const char *v, size_t vl, char *out, size_t n)
{
    while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
    if (vl >= n) vl = n - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
}

/* Whether the comma-separated list v contains 'token' (case-insensitive). */
static bool has_token(const char *v, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = v; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0) return true;
        p = e;
    }
    return false;
}

/* Parse the complete head raw[0..head_len): status line and the headers we use. */
static int parse_head(ws_head *h, sw_err *err)
{
    const char *p = h->raw, *end = h->raw + h->head_len;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol || (size_t)(eol - p) < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
        !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
        !isdigit((unsigned char)p[11]))
        return sw_errf(err, SW_E_BACKEND, true, "websocket upgrade: not an HTTP/1.x answer");
    h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    const char *rs = p + 12, *re = eol;
    if (re > rs && re[-1] == '\r') re--;
    copy_value(rs, (size_t)(re - rs), h->reason, sizeof h->reason);
    for (p = eol + 1; p < end;) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *le = eol;
        if (le > p && le[-1] == '\r') le--;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon) {
            size_t nl = (size_t)(colon - p);
            const char *v = colon + 1;
            size_t vl = (size_t)(le - v);
            char val[256];
            copy_value(v, vl, val, sizeof val);
            /* The first line of a repeated header wins: that is what Go's Header.Get
             * (the API server) reads too. */
            if (nl == 22 && !strncasecmp(p, "Sec-WebSocket-Protocol", nl)) {
                if (!h->protocol[0]) copy_value(v, vl, h->protocol, sizeof h->protocol);
            } else if (nl == 20 && !strncasecmp(p, "Sec-WebSocket-Accept", nl)) {
                if (!h->accept[0]) copy_value(v, vl, h->accept, sizeof h->accept);
            } else if (nl == 7 && !strncasecmp(p, "Upgrade", nl)) {
                h->upgrade_ws = h->upgrade_ws || has_token(val, "websocket");
            } else if (nl == 10 && !strncasecmp(p, "Connection", nl)) {
                h->connection_upgrade = h->connection_upgrade || has_token(val, "upgrade");
            } else if (nl == 14 && !strncasecmp(p, "Content-Length", nl)) {
                char *e = NULL;
                long long cl = strtoll(val, &e, 10);
                if (e == val || *e || cl < 0)
                    return sw_errf(err, SW_E_BACKEND, true,
                                   "websocket upgrade: bad Content-Length in HTTP %d answer",
                                   h->status);
                h->content_length = cl;
            } else if (nl == 17 && !strncasecmp(p, "Transfer-Encoding", nl)) {
                h->chunked = has_token(val, "chunked");
            }
        }
        p = eol + 1;
    }
    return 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parse the chunk-size line at b[0..n): hex digits, then optional chunk extensions
 * (";name=value", RFC 9112 §7.1.1), then the line end. Returns the offset just past the
 * line end with *sz set; 0 while the line is incomplete; -1 when it is not a size line
 * (no digit first, a size past 2^60, a stray byte). Strict on purpose: strtoull would
 * skip leading blank lines and read a size cut short by the end of the bytes so far, so
 * the outcome would depend on how the bytes arrived. */
static long chunk_line(const char *b, size_t n, uint64_t *sz)
{
    size_t i = 0;
    uint64_t v = 0;
    for (; i < n; i++) {
        int d = hexval((unsigned char)b[i]);
        if (d < 0) break;
        if (i >= 15) return -1;
        v = v << 4 | (uint64_t)d;
    }
    if (i == n) return 0;
    if (i == 0) return -1;
    const char *eol = memchr(b + i, '\n', n - i);
    if (!eol) return 0;
    for (const char *c = b + i; c < eol; c++) {
        if (*c == ';') break;   /* extensions: ignored to the line end */
        if (*c != ' ' && *c != '\t' && !(*c == '\r' && c + 1 == eol)) return -1;
    }
    *sz = v;
    return (long)(eol - b) + 1;
}

/* Decode a chunked body b[0..n) into out (room for n bytes). Returns true when the last
 * chunk was seen (*out_len set); false while incomplete or malformed (*out_len = what
 * decoded so far: the message keeps it). Depends only on complete lines, so any split
 * of the same bytes gives the same answer. */
static bool dechunk(const char *b, size_t n, char *out, size_t *out_len)
{
    size_t i = 0, o = 0;
    for (;;) {
        uint64_t sz = 0;
        long used = chunk_line(b + i, n - i, &sz);
        if (used <= 0) break;   /* incomplete, or not a size line: keep what we have */
        i += (size_t)used;
        if (sz == 0) {
            *out_len = o;
            return true;
        }
        if (sz > n - i) {   /* a partial chunk: keep its bytes for the message */
            memcpy(out + o, b + i, n - i);
            o += n - i;
            break;
        }
        memcpy(out + o, b + i, (size_t)sz);
        o += (size_t)sz;
        i += (size_t)sz;
        if (i < n && b[i] == '\r') i++;   /* the CRLF (or bare LF) after the data */
        if (i < n && b[i] == '\n') i++;
    }
    *out_len = o;
    return false;
}

/* Refresh h->body from the raw bytes after the head; true when the body is complete. */
static bool update_body(ws_head *h, bool eof)
{
    const char *b = h->raw + h->head_len;
    size_t n = h->len - h->head_len, bl = 0;
    bool full = n >= WS_BODY_MAX, complete;
    free(h->body);
    h->body = xmalloc(n + 1);
    if (h->chunked) {
        complete = dechunk(b, n, h->body, &bl);
    } else {
        bl = n;
        if (h->content_length >= 0 && (uint64_t)h->content_length < bl) bl = (size_t)h->content_length;
        memcpy(h->body, b, bl);
        complete = h->content_length >= 0 && (int64_t)bl >= h->content_length;
    }
    h->body[bl] = '\0';
    h->body_len = bl;
    return complete || full || eof;
}

int ws_head_feed(ws_head *h, const void *p, size_t n, size_t *used, sw_err *err)
{
    *used = 0;
    if (h->done) return 1;
    size_t limit = h->head_len ? h->head_len + WS_BODY_MAX : WS_HEAD_MAX;
    size_t take = n;
    if (take > limit - h->len) take = limit - h->len;
    if (h->len + take + 1 > h->cap) {
        size_t cap = h->cap ? h->cap : 4096;
        while (cap < h->len + take + 1) cap *= 2;
        h->raw = xrealloc(h->raw, cap);
        h->cap = cap;
    }
    size_t old = h->len;
    memcpy(h->raw + h->len, p, take);
    h->len += take;
    h->raw[h->len] = '\0';
    *used = take;
    if (!h->head_len) {
        /* The blank line may straddle two chunks: look from 3 bytes before. Bare LF line
         * ends are tolerated (RFC 9112 §2.2). */
        size_t from = old > 3 ? old - 3 : 0, end = 0;
        for (size_t i = from; i < h->len && !end; i++) {
            if (h->raw[i] != '\n') continue;
            if (i + 1 < h->len && h->raw[i + 1] == '\n') end = i + 2;
            else if (i + 2 < h->len && h->raw[i + 1] == '\r' && h->raw[i + 2] == '\n') end = i + 3;
        }
        if (!end) {
            if (h->len >= WS_HEAD_MAX)
                return sw_errf(err, SW_E_BACKEND, true,
                               "websocket upgrade: response head larger than %d bytes",
                               WS_HEAD_MAX);
            return 0;
        }
        h->head_len = end;
        if (parse_head(h, err) < 0) return -1;
        if (h->status == 101) {
            /* Everything after the head belongs to the frame decoder: give it back. */
            *used = end - old;
            h->len = end;
            h->done = true;
            return 1;
        }
        /* Keep taking the body: the rest of this chunk may be more than fitted above. */
        size_t more = n - take, room = h->head_len + WS_BODY_MAX - h->len;
        if (more > room) more = room;
        if (more) {
            if (h->len + more + 1 > h->cap) {
                h->cap = h->len + more + 1;
                h->raw = xrealloc(h->raw, h->cap);
            }
            memcpy(h->raw + h->len, (const char *)p + take, more);
            h->len += more;
            h->raw[h->len] = '\0';
        }
    }
    *used = n;   /* a refused upgrade's extra bytes are dropped */
    if (update_body(h, false)) h->done = true;
    return h->done ? 1 : 0;
}

int ws_head_eof(ws_head *h, sw_err *err)
{
    if (!h->head_len)
        return sw_errf(err, SW_E_BACKEND, true,
                       "websocket upgrade: connection closed before the response head ended");
    if (!h->done && h->status != 101) update_body(h, true);
    h->done = true;
    return 1;
}

int ws_head_verify(const ws_head *h, const char *key, sw_err *err)
{
    char want[WS_ACCEPT_LEN + 1];
    if (h->status != 101)
        return sw_errf(err, SW_E_BACKEND, false, "websocket upgrade: HTTP %d", h->status);
    if (!h->upgrade_ws || !h->connection_upgrade)
        return sw_errf(err, SW_E_BACKEND, false,
                       "websocket upgrade: 101 without Upgrade: websocket / Connection: Upgrade");
    ws_accept_for(key, want);
    if (strcmp(h->accept, want) != 0)
        return sw_errf(err, SW_E_BACKEND, false,
                       "websocket upgrade: Sec-WebSocket-Accept does not match the key");
    return 0;
}

/* ------------------------------------------------------------------ frames out */

void ws_mask(unsigned char *p, size_t n, const unsigned char mask[4], uint64_t offset)
{
    for (size_t i = 0; i < n; i++) p[i] ^= mask[(offset + i) & 3];
}

size_t ws_frame_header(unsigned char *out, int opcode, bool fin, uint64_t len,
                       const unsigned char mask[4])
{
    size_t o = 0;
    out[o++] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (len < 126) {
        out[o++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xFFFF) {
        out[o++] = 0x80 | 126;
        out[o++] = (unsigned char)(len >> 8);
        out[o++] = (unsigned char)len;
    } else {
        out[o++] = 0x80 | 127;
        for (int s = 56; s >= 0; s -= 8) out[o++] = (unsigned char)(len >> s);
    }
    memcpy(out + o, mask, 4);
    return o + 4;
}

size_t ws_frame_encode(unsigned char *out, int opcode, const void *payload, size_t n,
                       const unsigned char *mask)
{
    unsigned char m[4];
    if (mask) memcpy(m, mask, 4);
    else ws_mask_key(m);
    size_t h = ws_frame_header(out, opcode, true, n, m);
    if (n) memcpy(out + h, payload, n);
    ws_mask(out + h, n, m, 0);
    return h + n;
}

/* ------------------------------------------------------------------ frames in */

void ws_decoder_init(ws_decoder *d, size_t max_msg)
{
    memset(d, 0, sizeof *d);
    d->max_msg = max_msg;
    d->hdr_need = 2;
}

void ws_decoder_free(ws_decoder *d)
{
    if (!d) return;
    free(d->msg);
    d->msg = NULL;
    d->msg_len = d->msg_cap = 0;
}

static int proto_err(ws_decoder *d, sw_err *err, const char *what)
{
    d->failed = true;
    return sw_errf(err, SW_E_BACKEND, true, "websocket: protocol error: %s", what);
}

/* The header in d->hdr is complete: check it against the RFC and the open message. */
static int frame_begin(ws_decoder *d, sw_err *err)
{
    const unsigned char *h = d->hdr;
    d->fin = (h[0] & 0x80) != 0;
    d->op = h[0] & 0x0F;
    if (h[0] & 0x70) return proto_err(d, err, "reserved bits set");
    if (h[1] & 0x80) return proto_err(d, err, "masked frame from the server");
    uint64_t len = h[1] & 0x7F;
    if (len == 126) {
        len = ((uint64_t)h[2] << 8) | h[3];
        if (len < 126) return proto_err(d, err, "non-minimal length");
    } else if (len == 127) {
        len = 0;
        for (int i = 2; i < 10; i++) len = (len << 8) | h[i];
        if (len >> 63) return proto_err(d, err, "64-bit length with the top bit set");
        if (len <= 0xFFFF) return proto_err(d, err, "non-minimal length");
    }
    d->frame_len = len;
    d->frame_got = 0;
    switch (d->op) {
    case WS_OP_CLOSE: case WS_OP_PING: case WS_OP_PONG:
        if (!d->fin) return proto_err(d, err, "fragmented control frame");
        if (len > WS_CONTROL_MAX) return proto_err(d, err, "control frame longer than 125 bytes");
        break;
    case WS_OP_TEXT: case WS_OP_BINARY:
        if (d->in_msg) return proto_err(d, err, "new message inside a fragmented one");
        d->in_msg = true;
        d->msg_op = d->op;
        d->msg_len = 0;
        break;
    case WS_OP_CONT:
        if (!d->in_msg) return proto_err(d, err, "continuation frame without a message");
        break;
    default:
        return proto_err(d, err, "unknown opcode");
    }
    if (d->op < 8 && len > d->max_msg - d->msg_len) {
        d->failed = true;
        return sw_errf(err, SW_E_BACKEND, true,
                       "websocket: message larger than %zu bytes refused", d->max_msg);
    }
    if (d->op < 8 && d->msg_len + len > d->msg_cap) {
        size_t cap = d->msg_cap ? d->msg_cap : 4096;
        while (cap < d->msg_len + len) cap *= 2;
        if (cap > d->max_msg) cap = d->max_msg;
        d->msg = xrealloc(d->msg, cap ? cap : 1);
        d->msg_cap = cap;
    }
    d->in_frame = true;
    return 0;
}

/* The current frame's payload is complete: 1 with *msg when it ends a message. */
static int frame_end(ws_decoder *d, ws_msg *msg)
{
    d->in_frame = false;
    d->hdr_len = 0;
    d->hdr_need = 2;
    if (d->op >= 8) {
        msg->opcode = d->op;
        msg->data = d->ctl;
        msg->len = (size_t)d->frame_len;
        return 1;
    }
    if (!d->fin) return 0;
    d->in_msg = false;
    msg->opcode = d->msg_op;
    msg->data = d->msg;
    msg->len = d->msg_len;
    return 1;
}

int ws_decode(ws_decoder *d, const unsigned char *p, size_t n, size_t *used, ws_msg *msg,
              sw_err *err)
{
    size_t i = 0;
    int rc = 0;
    if (d->failed) {
        *used = 0;
        return sw_errf(err, SW_E_BACKEND, true, "websocket: stream already failed");
    }
    while (rc == 0 && (i < n || (d->in_frame && d->frame_got == d->frame_len))) {
        if (!d->in_frame) {
            while (d->hdr_len < d->hdr_need && i < n) d->hdr[d->hdr_len++] = p[i++];
            if (d->hdr_len == 2) {
                unsigned l7 = d->hdr[1] & 0x7F;
                d->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((d->hdr[1] & 0x80) ? 4 : 0);
                while (d->hdr_len < d->hdr_need && i < n) d->hdr[d->hdr_len++] = p[i++];
            }
            if (d->hdr_len < d->hdr_need) break;
            if (frame_begin(d, err) < 0) {
                rc = -1;
                break;
            }
        }
        uint64_t left = d->frame_len - d->frame_got;
        size_t take = n - i;
        if ((uint64_t)take > left) take = (size_t)left;
        if (take) {
            unsigned char *dst = d->op >= 8 ? d->ctl + d->frame_got : d->msg + d->msg_len;
            memcpy(dst, p + i, take);
            i += take;
            d->frame_got += take;
            if (d->op < 8) d->msg_len += take;
        }
        if (d->frame_got == d->frame_len) rc = frame_end(d, msg);
    }
    *used = i;
    return rc;
}

int ws_close_code(const unsigned char *p, size_t n, char *reason, size_t reason_n)
{
    if (reason && reason_n) reason[0] = '\0';
    if (n == 0) return WS_CLOSE_NONE;
    if (n == 1) return -1;
    int code = (p[0] << 8) | p[1];
    bool ok = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
              (code >= 3000 && code <= 4999);
    if (!ok) return -1;
    if (reason && reason_n) {
        size_t rl = n - 2;
        if (rl >= reason_n) rl = reason_n - 1;
        memcpy(reason, p + 2, rl);
        reason[rl] = '\0';
    }
    return code;
}
