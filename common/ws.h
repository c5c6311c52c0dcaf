/* common/ws.h — a small, strict RFC 6455 WebSocket client codec with no I/O.
 * Owns: the upgrade request text, parsing the server's response head (and a bounded body
 * when the upgrade is refused), the Sec-WebSocket-Accept check, masked client frames, an
 * incremental frame decoder that reassembles messages within a fixed memory cap, and
 * close-code parsing.
 * Does not own: sockets, TLS, timers (common/k8s_exec.c drives this codec over libcurl),
 * nor what the messages mean (the pods/exec channel layout is k8s_exec.c's).
 * Why: libcurl 7.88 has no ws:// support, and a codec without sockets can be unit-tested
 * byte by byte (tests/unit/test_ws.c). Uses libcrypto (SHA-1, base64). Errors: SW_E_BACKEND, not retryable, naming what
 * was wrong in the server's bytes. */
#ifndef SW_COMMON_WS_H
#define SW_COMMON_WS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define WS_KEY_LEN 24              /* base64 of 16 bytes */
#define WS_ACCEPT_LEN 28           /* base64 of a SHA-1 */
#define WS_HEAD_MAX (16 * 1024)    /* a response head larger than this is refused */
#define WS_BODY_MAX (64 * 1024)    /* body kept from a refused upgrade */
#define WS_FRAME_HDR_MAX 14        /* 2 + 8 (64-bit length) + 4 (mask) */
#define WS_CONTROL_MAX 125         /* RFC 6455 §5.5 */
#define WS_CLOSE_NONE 1005         /* a close frame without a code */

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* ------------------------------------------------------------------ handshake */

/* A fresh Sec-WebSocket-Key (base64 of 16 getrandom bytes) into key[25]. 0 or -1. */
int ws_make_key(char key[WS_KEY_LEN + 1], sw_err *err);
/* The Sec-WebSocket-Accept a server must answer to 'key' (base64(SHA1(key+GUID))). */
void ws_accept_for(const char *key, char out[WS_ACCEPT_LEN + 1]);
/* The GET upgrade request for 'path' (with its query) on 'host' ("host:port"), with the
 * caller's 'auth_line' ("Authorization: Bearer ..." without CRLF; NULL = none), 'key' and
 * 'protocols' sent as ONE Sec-WebSocket-Protocol line. Caller wipes (it may hold a token)
 * and frees. */
char *ws_upgrade_request(const char *host, const char *path, const char *auth_line,
                         const char *key, const char *protocols);

/* The server's answer to the upgrade, fed as it arrives. */
typedef struct ws_head {
    char *raw;                 /* head bytes, then (status != 101) body bytes; owned */
    size_t len, cap;
    size_t head_len;           /* bytes of the head incl. the blank line; 0 until complete */
    int status;                /* HTTP status code, 0 until the head is complete */
    char reason[64];           /* reason phrase, truncated */
    char protocol[64];         /* Sec-WebSocket-Protocol chosen, "" when none */
    char accept[64];           /* Sec-WebSocket-Accept as sent */
    bool upgrade_ws;           /* Upgrade: websocket */
    bool connection_upgrade;   /* Connection: ... upgrade ... */
    int64_t content_length;    /* -1 when absent */
    bool chunked;              /* Transfer-Encoding: chunked */
    bool done;                 /* ws_head_feed returned 1 */
    char *body;                /* decoded body of a refused upgrade (NUL-ended); owned */
    size_t body_len;
} ws_head;

void ws_head_init(ws_head *h);
void ws_head_free(ws_head *h);   /* frees the buffers; the struct may be reused after init */
/* Take bytes of the server's answer. *used is how many of p[0..n) were taken. Returns 1
 * when complete: for a 101, the head ends inside this chunk and p[*used..n) are already
 * WebSocket frames (keep them); otherwise the body is complete (Content-Length, chunked
 * end, or WS_BODY_MAX reached) and h->body holds it. 0 = more needed, -1 on a malformed or
 * oversized head (err filled). */
int ws_head_feed(ws_head *h, const void *p, size_t n, size_t *used, sw_err *err);
/* The connection ended: a refused upgrade's body is whatever arrived (h->body set).
 * 1 when the head was complete, -1 (err filled) when the head itself was cut off. */
int ws_head_eof(ws_head *h, sw_err *err);
/* For a complete 101 head: Upgrade, Connection and Sec-WebSocket-Accept match 'key'.
 * 0, or -1 with err filled. */
int ws_head_verify(const ws_head *h, const char *key, sw_err *err);

/* ------------------------------------------------------------------ frames */

/* A fresh random masking key (getrandom). */
void ws_mask_key(unsigned char mask[4]);
/* XOR p[0..n) with 'mask', p[0] being byte 'offset' of the payload (in place). */
void ws_mask(unsigned char *p, size_t n, const unsigned char mask[4], uint64_t offset);
/* Write a masked client frame header for a payload of 'len' bytes into out (at least
 * WS_FRAME_HDR_MAX bytes); returns its size. The payload must be masked with the same key. */
size_t ws_frame_header(unsigned char *out, int opcode, bool fin, uint64_t len,
                       const unsigned char mask[4]);
/* A whole masked frame (header + masked copy of payload) into out, which has room for
 * n + WS_FRAME_HDR_MAX bytes; returns its size. 'mask' NULL = a fresh random key. */
size_t ws_frame_encode(unsigned char *out, int opcode, const void *payload, size_t n,
                       const unsigned char *mask);

/* One complete message (or control frame), borrowed until the next ws_decode call. */
typedef struct ws_msg {
    int opcode;                /* WS_OP_TEXT/BINARY for data, or a control opcode */
    const unsigned char *data;
    size_t len;
} ws_msg;

/* Incremental decoder of server frames. Memory: one message of at most max_msg bytes
 * plus one control frame. */
typedef struct ws_decoder {
    size_t max_msg;            /* a data message larger than this is an error */
    unsigned char hdr[WS_FRAME_HDR_MAX];
    size_t hdr_len;            /* header bytes gathered for the current frame */
    size_t hdr_need;           /* header size once known (2 until the length byte is seen) */
    bool in_frame;             /* header complete, payload being read */
    int op;                    /* the current frame's opcode */
    bool fin;
    uint64_t frame_len, frame_got;
    bool in_msg;               /* a fragmented data message is open */
    int msg_op;
    unsigned char *msg;        /* reassembly buffer; owned */
    size_t msg_len, msg_cap;
    unsigned char ctl[WS_CONTROL_MAX];
    bool failed;               /* a protocol error was reported: no more decoding */
} ws_decoder;

void ws_decoder_init(ws_decoder *d, size_t max_msg);
void ws_decoder_free(ws_decoder *d);   /* frees the reassembly buffer */
/* Consume bytes of p[0..n) up to the end of the next complete message. Returns 1 with
 * *msg set (and *used bytes taken; call again with the rest), 0 when all n bytes were
 * taken and no message completed, -1 on a protocol error (masked server frame, RSV bits,
 * unknown opcode, bad continuation, control frame fragmented or >125 bytes, message
 * larger than max_msg), err filled; the decoder then stays failed. */
int ws_decode(ws_decoder *d, const unsigned char *p, size_t n, size_t *used, ws_msg *msg,
              sw_err *err);

/* A close frame's payload: its code (WS_CLOSE_NONE when empty), or -1 when the payload is
 * 1 byte or the code is one a peer may not send (<1000, 1004-1006, 1015, 1016..2999).
 * 'reason'/'reason_n' (may be NULL) receive the UTF-8 reason, truncated, NUL-ended. */
int ws_close_code(const unsigned char *p, size_t n, char *reason, size_t reason_n);

#endif
