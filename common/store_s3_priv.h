/* common/store_s3_priv.h — what the two halves of the S3 backend share.
 * Owns: the backend state, one HTTP exchange (s3i_xfer), the request description,
 * the retry budget and the outcome of an attempt. store_s3_http.c implements the
 * transport (signing inputs, multi loop, retries, error mapping); store_s3.c the
 * store operations on top (multipart put, streaming get, head, delete, list).
 * Private to those two files: nothing else includes it. */
#ifndef SW_COMMON_STORE_S3_PRIV_H
#define SW_COMMON_STORE_S3_PRIV_H
#include <curl/curl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/aws_creds.h"
#include "common/err.h"

#define S3I_POOL_MAX 4                  /* idle easy handles kept for reuse */
#define S3I_MAX_PARTS 10000             /* S3 limit on part numbers */
#define S3I_ERRBODY_MAX (16 * 1024)     /* bytes of an error answer kept for its <Code> */

typedef struct s3i_buf {
    char *p;                            /* NUL-terminated when non-NULL */
    size_t len, cap;
} s3i_buf;

typedef struct s3 s3;
typedef struct s3_reader s3_reader;
typedef struct store_source store_source;

/* A PUT body pulled from a store_source while it travels (the known-length put):
 * exactly len bytes; one byte more is probed before the last chunk leaves, so a
 * source of the wrong size aborts the request before the server has it all. */
typedef struct s3i_stream {
    const store_source *src;
    int64_t len;                        /* Content-Length */
    int64_t off;                        /* bytes handed to curl by this attempt */
    bool touched;                       /* bytes were read from src since its last rewind */
    int fail;                           /* 0; 1 src failed (e); 2 src too short; 3 too long */
    sw_err e;
} s3i_stream;

struct s3 {
    CURLM *multi;                       /* one connection cache for every handle */
    CURL *pool[S3I_POOL_MAX];
    int npool;
    char *bucket, *prefix;              /* prefix "" or "a/b" (no trailing '/') */
    char *endpoint, *region;            /* endpoint "" = AWS virtual-host */
    awsc_provider *creds;               /* the credentials chain (common/aws_creds.h) */
    char *sigv4;                        /* "aws:amz:REGION:s3" */
    int64_t part_size;                  /* bytes, >= 5 MiB */
    int budget_s, timeout_s;            /* retry budget per request; connect/stall limit */
    uint64_t rng;                       /* xorshift state for jitter */
    const atomic_int *cancel;           /* borrowed, may be NULL */
};

/* One HTTP exchange on one easy handle; set up again for each attempt. */
typedef struct s3i_xfer {
    s3 *s;
    CURL *e;                            /* from the pool, NULL when none held */
    struct curl_slist *hdrs;
    char *url;
    bool in_multi, done;
    CURLcode result;
    long status;                        /* of the last final response line */
    bool headers_done;                  /* blank line after a final (>= 200) status */
    char etag[128];
    char content_range[128];
    int64_t content_length;             /* -1 when absent */
    const unsigned char *up;            /* request body, borrowed */
    size_t up_len, up_off;
    s3i_buf body;                       /* answer body when not streamed, capped */
    size_t body_max;
    s3_reader *sink;                    /* streaming reader taking 2xx bodies */
    s3i_stream *stream;                 /* streamed PUT body, borrowed (from the req) */
    char akid[128];                     /* access key id this attempt signed with (not secret) */
    bool temp_creds;                    /* ... and whether it came from a temporary source */
    char errbuf[CURL_ERROR_SIZE];
} s3i_xfer;

typedef struct s3i_req {
    const char *method;                 /* GET PUT POST DELETE HEAD */
    const char *key;                    /* relative to the store prefix; NULL = bucket */
    const char *query;                  /* canonical: sorted, encoded, "name=" for no value */
    const unsigned char *body;          /* PUT/POST body, borrowed */
    size_t body_len;
    s3i_stream *stream;                 /* PUT body pulled from here instead (UNSIGNED-PAYLOAD) */
    const char *body_sha;               /* hex of body; NULL = computed */
    const char *ctype;                  /* Content-Type or NULL */
    const char *range;                  /* "bytes=N-" or NULL */
    const char *if_match;               /* ETag or NULL */
    bool if_none_match;                 /* send "If-None-Match: *": write only a new key */
    size_t resp_max;                    /* answer body kept (0 = S3I_ERRBODY_MAX) */
    const char *what;                   /* "UploadPart 3", for messages */
    int attempts;                       /* out: attempts made by the last s3i_call */
    bool creds_renewed;                 /* temporary credentials S3 refused were dropped once */
} s3i_req;

/* R_EXISTS: 412 to an if_none_match request, the key already exists (err filled). */
typedef enum { R_OK, R_NOTFOUND, R_RETRY, R_FAIL, R_EXISTS } s3i_outcome;

typedef struct s3i_budget {
    int64_t started_ms, deadline_ms;    /* monotonic */
    int attempt;                        /* retries done so far */
} s3i_budget;

/* ---- helpers ---- */
int64_t s3i_now_ms(void);                                   /* CLOCK_MONOTONIC */
uint64_t s3i_rnd64(s3 *s);
bool s3i_cancelled(const s3 *s);
char *s3i_encode_dup(const char *s, bool keep_slash);       /* caller frees */
char *s3i_full_key(const s3 *s, const char *key);           /* PREFIX/KEY; caller frees */
void s3i_target(const s3 *s, const char *key, char *out, size_t n); /* "s3://bucket/key" */
void s3i_buf_add(s3i_buf *b, const void *p, size_t n, size_t max);
/* Raw span of the next <tag>…</tag> at or after *pos; *pos moves past it. */
bool s3i_xml_span(const char *xml, size_t n, size_t *pos, const char *tag, size_t *start, size_t *len);

/* ---- transfers ---- */
/* Prepare x for one attempt of rq (x is overwritten). 0, or -1 with err. */
int s3i_setup(s3 *s, s3i_xfer *x, const s3i_req *rq, sw_err *err);
int s3i_start(s3i_xfer *x, sw_err *err);                    /* add to the multi */
bool s3i_wait(s3i_xfer *x);             /* drive until done; false when cancelled first */
void s3i_release(s3i_xfer *x);          /* detach, return the handle; x may be set up again */
void s3i_pump(s3 *s, int wait_ms);      /* one round of curl work, then wait up to wait_ms */
/* What a finished attempt means; err filled unless R_OK. When S3 refuses temporary
 * credentials as expired or unknown (ExpiredToken, InvalidToken, InvalidAccessKeyId), they
 * are dropped from the cache and the request is retried once with fresh ones
 * (rq->creds_renewed); a second refusal is the permanent authorization error. */
s3i_outcome s3i_classify(const s3 *s, const s3i_xfer *x, s3i_req *rq, sw_err *err);
/* One request with retries; on R_OK the caller owns *x and must s3i_release() it. */
s3i_outcome s3i_call(s3 *s, s3i_req *rq, s3i_xfer *x, sw_err *err);
void s3i_budget_start(const s3 *s, s3i_budget *b);
/* Sleep before another attempt if the budget allows; false (err says why) if not. */
bool s3i_budget_retry(s3 *s, s3i_budget *b, sw_err *err);

/* Rewind st's source for another attempt (a no-op when nothing was read yet). 0, or
 * -1 with err: SW_E_STORAGE retryable when the source cannot be rewound. */
int s3i_stream_rewind(s3i_stream *st, sw_err *err);

/* store_s3.c: the write callback of a streaming reader (2xx bodies only). */
size_t s3i_reader_take(s3_reader *r, const char *p, size_t n);

/* The pure parsers of S3 answers in store_s3.c, split out for tests/fuzz/fuzz_s3_xml.c. */
/* One ListObjectsV2 page xml[0..n) (NUL-ended): cb(arg, key + cut, size or -1,
 * LastModified as unix seconds or -1) for each
 * <Contents> whose <Key> starts with 'full' and is longer than 'cut'; a non-zero return
 * sets *stop and ends the page. The NextContinuationToken (owned: caller frees) when the
 * page says IsTruncated true and *stop is unset, else NULL (the listing is over). */
char *s3i_list_page(const char *xml, size_t n, const char *full, size_t cut,
                    int (*cb)(void *arg, const char *key, int64_t size, int64_t mtime), void *arg,
                    bool *stop);
/* Whether a 200 answer body[0..n) (NUL-ended, may be NULL) to CompleteMultipartUpload is a
 * CompleteMultipartUploadResult without an <Error> <Code>; *code gets that code (owned,
 * caller frees) or NULL. */
bool s3i_complete_ok(const char *body, size_t n, char **code);

#endif
