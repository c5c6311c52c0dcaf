/* common/store_s3_http.c — the transport under the S3 backend: one signed request, retried.
 * Owns: the inputs curl signs (docs/store.md "s3://": x-amz-content-sha256 on every request,
 * sorted "name=" queries, uppercase percent-encoding, no empty header, the session
 * token header), the easy-handle pool on one multi handle (one connection cache, so
 * requests reuse connections), the multi loop, the retry budget with jittered backoff,
 * and the mapping of curl and HTTP outcomes to sw_err. Also the pure helpers the unit
 * tests call (URI encoding, URLs, XML, backoff). Does not own any store operation
 * (store_s3.c).
 *
 * Error mapping: 404 → SW_E_SNAPSHOT_NOT_FOUND; 401/403 → SW_E_STORAGE permanent
 * ("authorization", naming bucket and key); 412 to a write with If-None-Match →
 * R_EXISTS (the key exists: the caller adopts it); 409 ConditionalRequestConflict
 * (a concurrent conditional write) and 5xx, 429, SlowDown, RequestTimeout,
 * connection failures, resets and stalls (CURLOPT_LOW_SPEED_*) → retried inside
 * store_retry_budget_s, then SW_E_STORAGE retryable. Secrets never reach a message. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/sha256.h"
#include "common/store.h"
#include "common/store_s3_priv.h"
#include "common/xmalloc.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ---- pure helpers (unit-tested) --------------------------------------------- */

int store_s3_uri_encode(const char *s, bool keep_slash, char *out, size_t n)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char ch = *p;
        bool keep = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                    ch == '-' || ch == '.' || ch == '_' || ch == '~' || (keep_slash && ch == '/');
        if (o + (keep ? 1 : 3) >= n) return -1;
        if (keep) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hx[ch >> 4];
            out[o++] = hx[ch & 15];
        }
    }
    if (o >= n) return -1;
    out[o] = '\0';
    return (int)o;
}

char *s3i_encode_dup(const char *s, bool keep_slash)
{
    size_t n = strlen(s) * 3 + 1;
    char *out = xmalloc(n);
    store_s3_uri_encode(s, keep_slash, out, n);
    return out;
}

char *store_s3_url(const char *endpoint, const char *region, const char *bucket, const char *key,
                   const char *query)
{
    char *ek = s3i_encode_dup(key ? key : "", true);
    const char *q = query && *query ? "?" : "";
    const char *qs = query ? query : "";
    char *url;
    if (endpoint && *endpoint) {
        size_t el = strlen(endpoint);
        while (el > 0 && endpoint[el - 1] == '/') el--;
        url = xasprintf("%.*s/%s%s%s%s%s", (int)el, endpoint, bucket, key ? "/" : "", ek, q, qs);
    } else if (strchr(bucket, '.')) {
        /* dotted buckets break the TLS wildcard of virtual-host names */
        url = xasprintf("https://s3.%s.amazonaws.com/%s%s%s%s%s", region, bucket, key ? "/" : "", ek, q,
                        qs);
    } else {
        url = xasprintf("https://%s.s3.%s.amazonaws.com/%s%s%s", bucket, region, ek, q, qs);
    }
    free(ek);
    return url;
}

int64_t store_s3_parse_time(const char *iso)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int y, mo, d, h, mi, sec;
    if (!iso || sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &sec) != 6) return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    return (int64_t)timegm(&tm);
}

int64_t store_s3_max_object_bytes(int64_t part_size)
{
    return part_size * S3I_MAX_PARTS;
}

int64_t store_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd)
{
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < cap_ms; i++) d *= 2;
    if (d > cap_ms) d = cap_ms;
    int64_t half = d / 2;
    return half + (half > 0 ? (int64_t)(rnd % (uint64_t)(half + 1)) : 0);
}

static void put_utf8(char **o, uint32_t cp)
{
    char *p = *o;
    if (cp < 0x80) {
        *p++ = (char)cp;
    } else if (cp < 0x800) {
        *p++ = (char)(0xC0 | (cp >> 6));
        *p++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *p++ = (char)(0xE0 | (cp >> 12));
        *p++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *p++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *p++ = (char)(0xF0 | (cp >> 18));
        *p++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *p++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *p++ = (char)(0x80 | (cp & 0x3F));
    }
    *o = p;
}

/* Decode the five XML entities and numeric references of s[0..n). */
static char *xml_decode(const char *s, size_t n)
{
    static const struct { const char *ent; char ch; } ents[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n;) {
        if (s[i] != '&') {
            *o++ = s[i++];
            continue;
        }
        size_t k, done = 0;
        for (k = 0; k < sizeof ents / sizeof ents[0] && !done; k++) {
            size_t el = strlen(ents[k].ent);
            if (i + el <= n && memcmp(s + i, ents[k].ent, el) == 0) {
                *o++ = ents[k].ch;
                i += el;
                done = 1;
            }
        }
        if (done) continue;
        const char *semi = memchr(s + i, ';', n - i);
        if (semi && i + 2 < n && s[i + 1] == '#') {
            bool hex = s[i + 2] == 'x' || s[i + 2] == 'X';
            char *end = NULL;
            unsigned long cp = strtoul(s + i + (hex ? 3 : 2), &end, hex ? 16 : 10);
            if (end == semi && cp > 0 && cp <= 0x10FFFF) {
                put_utf8(&o, (uint32_t)cp);
                i = (size_t)(semi - s) + 1;
                continue;
            }
        }
        *o++ = s[i++];
    }
    *o = '\0';
    return out;
}

/* Locate the raw content of the next <tag>…</tag> at or after *pos. */
bool s3i_xml_span(const char *xml, size_t n, size_t *pos, const char *tag, size_t *start, size_t *len)
{
    char open[80], close[80];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    size_t ol = strlen(open), cl = strlen(close);
    for (size_t i = *pos; i + ol <= n; i++) {
        if (memcmp(xml + i, open, ol) != 0) continue;
        size_t b = i + ol;
        for (size_t j = b; j + cl <= n; j++) {
            if (memcmp(xml + j, close, cl) == 0) {
                *start = b;
                *len = j - b;
                *pos = j + cl;
                return true;
            }
        }
        return false;
    }
    return false;
}

char *store_xml_take(const char *xml, size_t n, size_t *pos, const char *tag)
{
    size_t b, l;
    if (!s3i_xml_span(xml, n, pos, tag, &b, &l)) return NULL;
    return xml_decode(xml + b, l);
}

int64_t s3i_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t s3i_rnd64(s3 *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 2685821657736338717ULL;
}

bool s3i_cancelled(const s3 *s)
{
    return s->cancel && atomic_load(s->cancel) != 0;
}

/* Sleep ms in slices, giving up early when cancelled. */
static void s3i_nap(s3 *s, int64_t ms)
{
    int64_t end = s3i_now_ms() + ms;
    while (!s3i_cancelled(s)) {
        int64_t left = end - s3i_now_ms();
        if (left <= 0) break;
        if (left > 100) left = 100;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void s3i_buf_add(s3i_buf *b, const void *p, size_t n, size_t max)
{
    if (b->len >= max) return;
    if (n > max - b->len) n = max - b->len;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* The object key as S3 sees it: PREFIX/KEY. Caller frees. */
char *s3i_full_key(const s3 *s, const char *key)
{
    return *s->prefix ? xasprintf("%s/%s", s->prefix, key) : xstrdup(key);
}


/* ---- transfers ------------------------------------------------------------------------ */

static size_t on_header(char *p, size_t sz, size_t nm, void *ud);
static size_t on_body(char *p, size_t sz, size_t nm, void *ud);
static size_t on_read(char *p, size_t sz, size_t nm, void *ud);
static int on_seek(void *ud, curl_off_t off, int origin);
static size_t on_stream_read(char *p, size_t sz, size_t nm, void *ud);
static int on_stream_seek(void *ud, curl_off_t off, int origin);

static CURL *pool_get(s3 *s)
{
    CURL *e = s->npool > 0 ? s->pool[--s->npool] : curl_easy_init();
    if (e) curl_easy_reset(e);
    return e;
}

static void pool_put(s3 *s, CURL *e)
{
    if (!e) return;
    if (s->npool < S3I_POOL_MAX) s->pool[s->npool++] = e;
    else curl_easy_cleanup(e);
}

/* Detach x from the multi and give its handle back; x may be set up again. */
void s3i_release(s3i_xfer *x)
{
    if (x->in_multi) curl_multi_remove_handle(x->s->multi, x->e);
    x->in_multi = false;
    pool_put(x->s, x->e);
    x->e = NULL;
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    free(x->url);
    x->url = NULL;
    free(x->body.p);
    memset(&x->body, 0, sizeof x->body);
}


static struct curl_slist *add_hdr(struct curl_slist *l, const char *h)
{
    struct curl_slist *n = curl_slist_append(l, h);
    if (!n) {
        fprintf(stderr, "snapworker: out of memory (curl_slist_append)\n");
        abort();
    }
    return n;
}

/* Prepare x for one attempt of rq. Headers follow docs/store.md "s3://": the payload
 * hash on every request, no empty header, names that are no prefix of another. */
int s3i_setup(s3 *s, s3i_xfer *x, const s3i_req *rq, sw_err *err)
{
    memset(x, 0, sizeof *x);
    x->s = s;
    x->content_length = -1;
    x->body_max = rq->resp_max ? rq->resp_max : S3I_ERRBODY_MAX;
    x->e = pool_get(s);
    if (!x->e) return sw_errf(err, SW_E_STORAGE, true, "s3 store: curl_easy_init failed");
    /* the credentials current now sign this attempt (a refresh never touches a request
     * already started; the next one, or a retry, signs with the new ones) */
    awsc_creds cr;
    sw_err ce = {0};
    if (awsc_get(s->creds, &cr, &ce) < 0)
        return sw_errf(err, ce.code ? ce.code : SW_E_STORAGE, ce.retryable,
                       "%s s3://%s: credentials: %s", rq->what ? rq->what : rq->method, s->bucket,
                       ce.msg);
    snprintf(x->akid, sizeof x->akid, "%s", cr.access_key);
    x->temp_creds = cr.source != AWSC_STATIC;
    char *fk = rq->key ? s3i_full_key(s, rq->key) : NULL;
    x->url = store_s3_url(s->endpoint, s->region, s->bucket, fk, rq->query);
    free(fk);
    char sha[SHA256_HEX_LEN + 1], line[256];
    if (rq->stream) snprintf(sha, sizeof sha, "UNSIGNED-PAYLOAD");   /* SigV4 allows it */
    else if (rq->body_sha) snprintf(sha, sizeof sha, "%s", rq->body_sha);
    else if (rq->body_len == 0) snprintf(sha, sizeof sha, "%s", EMPTY_SHA256);
    else sha256_hex(rq->body, rq->body_len, sha);
    snprintf(line, sizeof line, "x-amz-content-sha256: %s", sha);
    x->hdrs = add_hdr(x->hdrs, line);
    if (cr.token) {
        char *th = xasprintf("x-amz-security-token: %s", cr.token);
        x->hdrs = add_hdr(x->hdrs, th);
        memset(th, 0, strlen(th));
        free(th);
    }
    if (rq->ctype) {
        snprintf(line, sizeof line, "Content-Type: %s", rq->ctype);
        x->hdrs = add_hdr(x->hdrs, line);
    }
    if (rq->range) {
        snprintf(line, sizeof line, "Range: %s", rq->range);
        x->hdrs = add_hdr(x->hdrs, line);
    }
    if (rq->if_match && *rq->if_match) {
        snprintf(line, sizeof line, "If-Match: %s", rq->if_match);
        x->hdrs = add_hdr(x->hdrs, line);
    }
    if (rq->if_none_match) x->hdrs = add_hdr(x->hdrs, "If-None-Match: *");
    CURL *e = x->e;
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(e, CURLOPT_USERNAME, cr.access_key);   /* curl keeps copies */
    curl_easy_setopt(e, CURLOPT_PASSWORD, cr.secret_key);
    awsc_creds_clear(&cr);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)s->timeout_s);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)s->timeout_s);
    curl_easy_setopt(e, CURLOPT_EXPECT_100_TIMEOUT_MS, 500L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    const char *m = rq->method;
    if (!strcmp(m, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(m, "PUT") && rq->stream) {
        x->stream = rq->stream;
        rq->stream->off = 0;
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)rq->stream->len);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_stream_read);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_stream_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
    } else if (!strcmp(m, "PUT")) {
        x->up = rq->body;
        x->up_len = rq->body_len;
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)rq->body_len);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
    } else if (!strcmp(m, "POST")) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body ? (const char *)rq->body : "");
    } else if (strcmp(m, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
    return 0;
}

static size_t on_read(char *p, size_t sz, size_t nm, void *ud)
{
    s3i_xfer *x = ud;
    size_t n = sz * nm, left = x->up_len - x->up_off;
    if (n > left) n = left;
    if (n) memcpy(p, x->up + x->up_off, n);
    x->up_off += n;
    return n;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
    s3i_xfer *x = ud;
    if (origin != SEEK_SET || off < 0 || (size_t)off > x->up_len) return CURL_SEEKFUNC_CANTSEEK;
    x->up_off = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

/* Start the source again from its first byte (a retry, or curl resending on a
 * fresh connection). -1 when it cannot: not rewindable, or the rewind failed. */
int s3i_stream_rewind(s3i_stream *st, sw_err *err)
{
    if (st->touched) {
        if (!st->src->rewind)
            return sw_errf(err, SW_E_STORAGE, true, "the upload source cannot be rewound to retry");
        if (st->src->rewind(st->src->arg, err) < 0) return -1;
    }
    st->touched = false;
    st->off = 0;
    return 0;
}

/* Pull the next piece of a streamed PUT body straight into curl's upload buffer.
 * Before the piece that completes Content-Length leaves, probe one byte more: a
 * source longer than declared aborts the request, as does a short one, so the
 * server never receives a complete body of the wrong content. */
static size_t on_stream_read(char *p, size_t sz, size_t nm, void *ud)
{
    s3i_xfer *x = ud;
    s3i_stream *st = x->stream;
    int64_t left = st->len - st->off;
    size_t n = sz * nm;
    if (left <= 0) return 0;
    if ((int64_t)n > left) n = (size_t)left;
    st->touched = true;
    ssize_t got = st->src->read(st->src->arg, p, n, &st->e);
    if (got < 0) {
        st->fail = 1;
        return CURL_READFUNC_ABORT;
    }
    if (got == 0) {
        st->fail = 2;
        return CURL_READFUNC_ABORT;
    }
    st->off += got;
    if (st->off == st->len) {
        char extra;
        ssize_t more = st->src->read(st->src->arg, &extra, 1, &st->e);
        if (more != 0) {
            st->fail = more < 0 ? 1 : 3;
            return CURL_READFUNC_ABORT;
        }
    }
    return (size_t)got;
}

static int on_stream_seek(void *ud, curl_off_t off, int origin)
{
    s3i_xfer *x = ud;
    if (origin != SEEK_SET || off != 0) return CURL_SEEKFUNC_CANTSEEK;
    sw_err ignore = {0};
    return s3i_stream_rewind(x->stream, &ignore) == 0 ? CURL_SEEKFUNC_OK : CURL_SEEKFUNC_CANTSEEK;
}

/* Copy a header value (trimmed) into out. */
static void hdr_value(const char *p, size_t n, size_t name_len, char *out, size_t outn)
{
    const char *v = p + name_len;
    size_t vl = n - name_len;
    while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' ')) vl--;
    if (vl >= outn) vl = outn - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    s3i_xfer *x = ud;
    size_t n = sz * nm;
    if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', n);
        x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        x->headers_done = false;
        x->etag[0] = x->content_range[0] = '\0';
        x->content_length = -1;
    } else if ((n == 2 && p[0] == '\r') || (n == 1 && p[0] == '\n')) {
        if (x->status >= 200) x->headers_done = true;
    } else if (n > 5 && strncasecmp(p, "ETag:", 5) == 0) {
        hdr_value(p, n, 5, x->etag, sizeof x->etag);
    } else if (n > 14 && strncasecmp(p, "Content-Range:", 14) == 0) {
        hdr_value(p, n, 14, x->content_range, sizeof x->content_range);
    } else if (n > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
        char v[32];
        hdr_value(p, n, 15, v, sizeof v);
        x->content_length = strtoll(v, NULL, 10);
    }
    return n;
}

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    s3i_xfer *x = ud;
    size_t n = sz * nm;
    if (x->sink && x->status >= 200 && x->status < 300) return s3i_reader_take(x->sink, p, n);
    s3i_buf_add(&x->body, p, n, x->body_max);
    return n;
}

/* Run curl until 'flag' is set (or it got nothing more to do), waiting on sockets.
 * Marks every finished transfer of the multi (not just ours) as done. */
void s3i_pump(s3 *s, int wait_ms)
{
    int running = 0, left = 0;
    curl_multi_perform(s->multi, &running);
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(s->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        s3i_xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x) {
            x->done = true;
            x->result = msg->data.result;
        }
    }
    if (wait_ms > 0) curl_multi_poll(s->multi, NULL, 0, wait_ms, NULL);
}

int s3i_start(s3i_xfer *x, sw_err *err)
{
    CURLMcode mc = curl_multi_add_handle(x->s->multi, x->e);
    if (mc != CURLM_OK)
        return sw_errf(err, SW_E_STORAGE, true, "s3 store: curl_multi_add_handle: %s",
                       curl_multi_strerror(mc));
    x->in_multi = true;
    return 0;
}

/* Drive until x is done; false when cancelled first. */
bool s3i_wait(s3i_xfer *x)
{
    while (!x->done) {
        if (s3i_cancelled(x->s)) return false;
        s3i_pump(x->s, 0);
        if (!x->done) s3i_pump(x->s, 200);
    }
    if (x->in_multi) curl_multi_remove_handle(x->s->multi, x->e);
    x->in_multi = false;
    return true;
}

static bool curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_CONNECT: case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY: case CURLE_AGAIN:
        return true;
    default:
        return false;
    }
}

/* Name of what a request touched, for messages: "s3://bucket/key". */
void s3i_target(const s3 *s, const char *key, char *out, size_t n)
{
    char *fk = key ? s3i_full_key(s, key) : NULL;
    snprintf(out, n, "s3://%s%s%.140s", s->bucket, fk ? "/" : "", fk ? fk : "");
    free(fk);
}

/* Decide what a finished attempt means; fills err unless R_OK. */
s3i_outcome s3i_classify(const s3 *s, const s3i_xfer *x, s3i_req *rq, sw_err *err)
{
    char where[200];
    s3i_target(s, rq->key, where, sizeof where);
    if (x->result != CURLE_OK) {
        bool again = curl_retryable(x->result);
        sw_errf(err, SW_E_STORAGE, again, "%s %s: %s%s%s", rq->what ? rq->what : rq->method, where,
                curl_easy_strerror(x->result), x->errbuf[0] ? ": " : "", x->errbuf);
        return again ? R_RETRY : R_FAIL;
    }
    if (x->status >= 200 && x->status < 300) return R_OK;
    size_t pos = 0;
    char *code = x->body.p ? store_xml_take(x->body.p, x->body.len, &pos, "Code") : NULL;
    const char *cs = code ? code : "";
    s3i_outcome o;
    if (x->status == 404) {
        sw_errf(err, SW_E_SNAPSHOT_NOT_FOUND, false, "%s: not found (HTTP 404%s%s)", where,
                *cs ? " " : "", cs);
        o = R_NOTFOUND;
    } else if (x->temp_creds && !rq->creds_renewed &&
               (x->status == 400 || x->status == 401 || x->status == 403) &&
               (!strcmp(cs, "ExpiredToken") || !strcmp(cs, "InvalidToken") ||
                !strcmp(cs, "TokenRefreshRequired") || !strcmp(cs, "InvalidAccessKeyId"))) {
        /* temporary credentials S3 no longer takes: fetch new ones and try once more */
        rq->creds_renewed = true;
        awsc_invalidate(s->creds, x->akid);
        sw_errf(err, SW_E_STORAGE, true, "%s %s: HTTP %ld %s", rq->what ? rq->what : rq->method,
                where, x->status, cs);
        o = R_RETRY;
    } else if (x->status == 401 || x->status == 403 ||
               (x->status == 400 && (!strcmp(cs, "ExpiredToken") || !strcmp(cs, "InvalidToken")))) {
        if (x->temp_creds)
            sw_errf(err, SW_E_STORAGE, false,
                    "authorization failed for bucket %s, key %.140s (HTTP %ld%s%s) with credentials "
                    "from %s", s->bucket, rq->key ? rq->key : "(none)", x->status, *cs ? " " : "",
                    cs, awsc_source_name(awsc_provider_source(s->creds)));
        else
            sw_errf(err, SW_E_STORAGE, false,
                    "authorization failed for bucket %s, key %.140s (HTTP %ld%s%s): check "
                    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN",
                    s->bucket, rq->key ? rq->key : "(none)", x->status, *cs ? " " : "", cs);
        o = R_FAIL;
    } else if (x->status == 412 && rq->if_none_match) {
        sw_errf(err, SW_E_STORAGE, false, "%s %s: the key exists (HTTP 412%s%s)",
                rq->what ? rq->what : rq->method, where, *cs ? " " : "", cs);
        o = R_EXISTS;
    } else {
        bool again = x->status >= 500 || x->status == 429 || !strcmp(cs, "SlowDown") ||
                     (x->status == 409 && !strcmp(cs, "ConditionalRequestConflict")) ||
                     !strcmp(cs, "RequestTimeout") || !strcmp(cs, "InternalError");
        sw_errf(err, SW_E_STORAGE, again, "%s %s: HTTP %ld%s%s", rq->what ? rq->what : rq->method,
                where, x->status, *cs ? " " : "", cs);
        o = again ? R_RETRY : R_FAIL;
    }
    free(code);
    return o;
}

/* Retry bookkeeping shared by s3_call and the reader. */

void s3i_budget_start(const s3 *s, s3i_budget *b)
{
    b->started_ms = s3i_now_ms();
    b->deadline_ms = b->started_ms + (int64_t)s->budget_s * 1000;
    b->attempt = 0;
}

/* Sleep before another attempt if the budget allows; false (err rewritten to say
 * the budget is spent, still retryable) when it does not. */
bool s3i_budget_retry(s3 *s, s3i_budget *b, sw_err *err)
{
    int64_t d = store_backoff_ms(b->attempt + 1, BACKOFF_BASE_MS, BACKOFF_CAP_MS, s3i_rnd64(s));
    if (s3i_cancelled(s)) {
        sw_errf(err, SW_E_TIMEOUT, true, "store operation cancelled");
        return false;
    }
    if (s3i_now_ms() + d > b->deadline_ms) {
        if (err) {
            char prev[sizeof err->msg];
            snprintf(prev, sizeof prev, "%s", err->msg);
            sw_errf(err, SW_E_STORAGE, true, "%s (gave up after %d attempts in %.1fs)", prev,
                    b->attempt + 1, (double)(s3i_now_ms() - b->started_ms) / 1000.0);
        }
        return false;
    }
    s3i_nap(s, d);
    b->attempt++;
    return true;
}

/* One request with retries. On R_OK the response (status, etag, body) is left in
 * *x for the caller, who must s3i_release(x). Returns the final s3i_outcome; err is
 * filled unless R_OK. */
s3i_outcome s3i_call(s3 *s, s3i_req *rq, s3i_xfer *x, sw_err *err)
{
    s3i_budget b;
    s3i_budget_start(s, &b);
    rq->attempts = 0;
    for (;;) {
        rq->attempts++;
        if (s3i_setup(s, x, rq, err) < 0 || s3i_start(x, err) < 0) {
            s3i_release(x);
            if (err && err->retryable && s3i_budget_retry(s, &b, err)) continue;  /* e.g. STS 503 */
            return R_FAIL;
        }
        if (!s3i_wait(x)) {
            s3i_release(x);
            sw_errf(err, SW_E_TIMEOUT, true, "store operation cancelled");
            return R_FAIL;
        }
        s3i_outcome o = s3i_classify(s, x, rq, err);
        if (o != R_RETRY) {
            if (o != R_OK) s3i_release(x);
            return o;
        }
        s3i_release(x);
        if (!s3i_budget_retry(s, &b, err)) return R_FAIL;
    }
}
