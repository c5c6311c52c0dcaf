/* common/store_s3.c — the s3://BUCKET[/PREFIX] backend: the store operations over S3.
 * Owns: multipart uploads with one part in flight while the next fills, the single
 * PUT for small objects, the streaming single PUT of a known length (up to 5 GiB,
 * body pulled from the caller's source, UNSIGNED-PAYLOAD), the pull-style download that pauses between reads and
 * resumes a dropped connection with Range (If-Match the first ETag), head, delete
 * ListObjectsV2, write-once commits (If-None-Match: * on every PUT and
 * CompleteMultipartUpload: a 412 means the key exists and the attempt is discarded)
 * and the sweep of abandoned multipart uploads. Does not own the transport (store_s3_http.c: signing inputs,
 * retries, error mapping), whole-object hashing or the sidecar (store.c), nor key
 * validation (keys arrive checked).
 * Why the multi interface: the reader must return to its caller between network
 * reads (libarchive pulls), and an upload part should travel while the next fills.
 *
 *   store ──► s3 { multi, pool of idle easy handles, credentials, budget }
 *               ├─ s3i_call()     one request, retried with backoff (sync)
 *               ├─ s3_writer      slot A fills ◄─ caller │ slot B uploads (async)
 *               └─ s3_reader      GET paused between reads; spill ≤ one curl chunk */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/sha256.h"
#include "common/store.h"
#include "common/store_s3_priv.h"
#include "common/xmalloc.h"

#define LIST_BODY_MAX (32 * 1024 * 1024)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void *store_s3_new(const cfg *c, const char *bucket, const char *prefix, sw_err *err)
{
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return sw_errf(err, SW_E_STORAGE, false, "s3 store: curl_global_init: %s",
                       curl_easy_strerror(curl_init_rc)), NULL;
    for (const char *p = bucket; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_'))
            return sw_errf(err, SW_E_STORAGE, false, "s3 store: bad bucket name '%.64s'", bucket), NULL;
    }
    awsc_env ae;
    awsc_env_load(&ae, c);
    sw_err ce = {0};
    awsc_provider *creds = awsc_provider_new(&ae, &ce);
    if (!creds)
        return sw_errf(err, ce.code, ce.retryable, "s3 store for bucket %.64s: %s", bucket, ce.msg), NULL;
    const char *ep = c->aws_endpoint_url ? c->aws_endpoint_url : "";
    if (*ep && strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)
        return awsc_provider_free(creds), sw_errf(err, SW_E_STORAGE, false,
                       "s3 store: AWS_ENDPOINT_URL_S3: expected http(s)://host[:port], got '%.100s'",
                       ep), NULL;
    CURLM *multi = curl_multi_init();
    if (!multi) {
        awsc_provider_free(creds);
        return sw_errf(err, SW_E_STORAGE, true, "s3 store: curl_multi_init failed"), NULL;
    }
    s3 *s = xcalloc(1, sizeof *s);
    s->multi = multi;
    s->bucket = xstrdup(bucket);
    s->prefix = xstrdup(prefix);
    s->endpoint = xstrdup(ep);
    s->region = xstrdup(c->aws_region && *c->aws_region ? c->aws_region : "us-east-1");
    s->creds = creds;
    s->sigv4 = xasprintf("aws:amz:%s:s3", s->region);
    s->part_size = c->s3_part_size >= 5 * 1024 * 1024 ? c->s3_part_size : 8 * 1024 * 1024;
    s->budget_s = c->store_retry_budget_s;
    s->timeout_s = c->store_timeout_s > 0 ? c->store_timeout_s : 30;
    if (getrandom(&s->rng, sizeof s->rng, 0) != (ssize_t)sizeof s->rng || !s->rng)
        s->rng = (uint64_t)s3i_now_ms() | 1;
    return s;
}

static void s3_close(void *impl)
{
    s3 *s = impl;
    if (!s) return;
    for (int i = 0; i < s->npool; i++) curl_easy_cleanup(s->pool[i]);
    curl_multi_cleanup(s->multi);
    free(s->bucket);
    free(s->prefix);
    free(s->endpoint);
    free(s->region);
    awsc_provider_free(s->creds);
    free(s->sigv4);
    free(s);
}

static void s3_set_cancel(void *impl, const atomic_int *cancel)
{
    ((s3 *)impl)->cancel = cancel;
}

/* ---- put: single PUT or multipart with one part in flight ---------------------------- */

typedef struct part_slot {
    unsigned char *p;             /* part_size bytes once grown */
    size_t len, cap;
} part_slot;

typedef struct s3_writer {
    s3 *s;
    char *key;
    part_slot slot[2];            /* [fill] takes writes, [1-fill] may be uploading */
    int fill;
    char *upload_id;              /* NULL until the first part leaves */
    char **etags;                 /* etags[i] of part i+1 */
    int nparts;                   /* parts started */
    int64_t total;                /* bytes written */
    bool failed;
    /* the part in flight (async first attempt) */
    s3i_xfer fly;
    bool flying;
    s3i_req fly_req;
    char fly_sha[SHA256_HEX_LEN + 1];
    char fly_query[512];
    char fly_what[48];
    int fly_partno;
} s3_writer;

static void *s3_put_begin(void *impl, const char *key, sw_err *err)
{
    (void)err;
    s3_writer *w = xcalloc(1, sizeof *w);
    w->s = impl;
    w->key = xstrdup(key);
    return w;
}

static int create_upload(s3_writer *w, sw_err *err)
{
    s3i_xfer x;
    s3i_req rq = {.method = "POST", .key = w->key, .query = "uploads=", .ctype = "application/octet-stream",
              .what = "CreateMultipartUpload"};
    if (s3i_call(w->s, &rq, &x, err) != R_OK) return -1;
    size_t pos = 0;
    w->upload_id = x.body.p ? store_xml_take(x.body.p, x.body.len, &pos, "UploadId") : NULL;
    s3i_release(&x);
    if (!w->upload_id || !*w->upload_id) {
        char where[200];
        s3i_target(w->s, w->key, where, sizeof where);
        return sw_errf(err, SW_E_STORAGE, true, "CreateMultipartUpload %s: no UploadId in the answer",
                       where);
    }
    return 0;
}

/* Wait for the part in flight; retry it synchronously if its first attempt failed
 * in a retryable way. Records its ETag. */
static int finish_flying(s3_writer *w, sw_err *err)
{
    if (!w->flying) return 0;
    w->flying = false;
    s3i_xfer *x = &w->fly;
    s3i_outcome o;
    if (!s3i_wait(x)) {
        s3i_release(x);
        return sw_errf(err, SW_E_TIMEOUT, true, "store operation cancelled");
    }
    o = s3i_classify(w->s, x, &w->fly_req, err);
    if (o == R_RETRY) {
        s3i_release(x);
        o = s3i_call(w->s, &w->fly_req, x, err);
    }
    if (o == R_NOTFOUND)   /* NoSuchUpload: aborted under us (a sweep, while we stalled) */
        return sw_errf(err, SW_E_STORAGE, true, "UploadPart %d of %.140s: the upload is gone (%s)",
                       w->fly_partno, w->key, err ? err->msg : "");
    if (o != R_OK) return -1;
    int partno = w->fly_partno;
    if (!x->etag[0]) {
        s3i_release(x);
        return sw_errf(err, SW_E_STORAGE, true, "UploadPart %d of %.140s: no ETag in the answer",
                       partno, w->key);
    }
    w->etags[partno - 1] = xstrdup(x->etag);
    s3i_release(x);
    return 0;
}

/* Send slot 'i' as the next part, asynchronously. */
static int launch_part(s3_writer *w, int i, sw_err *err)
{
    if (w->nparts >= S3I_MAX_PARTS)
        return sw_errf(err, SW_E_STORAGE, false,
                       "%.140s: more than %d parts of %lld bytes; raise SNAPWORKER_S3_PART_SIZE", w->key,
                       S3I_MAX_PARTS, (long long)w->s->part_size);
    if (!w->upload_id && create_upload(w, err) < 0) return -1;
    int partno = ++w->nparts;
    w->fly_partno = partno;
    w->etags = xrealloc(w->etags, (size_t)w->nparts * sizeof *w->etags);
    w->etags[partno - 1] = NULL;
    char *eid = s3i_encode_dup(w->upload_id, false);
    snprintf(w->fly_query, sizeof w->fly_query, "partNumber=%d&uploadId=%s", partno, eid);
    free(eid);
    snprintf(w->fly_what, sizeof w->fly_what, "UploadPart %d", partno);
    sha256_hex(w->slot[i].p, w->slot[i].len, w->fly_sha);
    w->fly_req = (s3i_req){.method = "PUT", .key = w->key, .query = w->fly_query, .body = w->slot[i].p,
                       .body_len = w->slot[i].len, .body_sha = w->fly_sha, .what = w->fly_what};
    if (s3i_setup(w->s, &w->fly, &w->fly_req, err) < 0 || s3i_start(&w->fly, err) < 0) {
        s3i_release(&w->fly);
        return -1;
    }
    w->flying = true;
    return 0;
}

static int s3_put_write(void *wp, const void *buf, size_t n, sw_err *err)
{
    s3_writer *w = wp;
    const unsigned char *p = buf;
    size_t ps = (size_t)w->s->part_size;
    if (w->failed) return sw_errf(err, SW_E_INTERNAL, false, "store writer used after a failure");
    w->total += (int64_t)n;
    while (n > 0) {
        part_slot *sl = &w->slot[w->fill];
        if (sl->len == ps) {
            /* full: the other slot must be free before this one leaves */
            if (finish_flying(w, err) < 0 || launch_part(w, w->fill, err) < 0) goto fail;
            w->fill = 1 - w->fill;
            w->slot[w->fill].len = 0;
            continue;
        }
        size_t take = ps - sl->len < n ? ps - sl->len : n;
        if (sl->len + take > sl->cap) {
            size_t cap = sl->cap ? sl->cap : 64 * 1024;
            while (cap < sl->len + take) cap *= 2;
            if (cap > ps) cap = ps;
            sl->p = xrealloc(sl->p, cap);
            sl->cap = cap;
        }
        memcpy(sl->p + sl->len, p, take);
        sl->len += take;
        p += take;
        n -= take;
    }
    if (w->flying) s3i_pump(w->s, 0);      /* keep the part in flight moving */
    return 0;
fail:
    w->failed = true;
    return -1;
}

static void abort_upload(s3_writer *w)
{
    if (!w->upload_id) return;
    char *eid = s3i_encode_dup(w->upload_id, false);
    char *q = xasprintf("uploadId=%s", eid);
    s3i_xfer x;
    sw_err ignore = {0};
    s3i_req rq = {.method = "DELETE", .key = w->key, .query = q, .what = "AbortMultipartUpload"};
    /* best effort, one attempt: 405/501 (s3rver and others lack abort) are fine, and
     * `store gc` or a bucket lifecycle rule reaps what an abort could not. It runs even
     * when the job was cancelled (lease lost, timeout): that is when uploads get left. */
    const atomic_int *cancel = w->s->cancel;
    w->s->cancel = NULL;
    if (s3i_setup(w->s, &x, &rq, &ignore) == 0 && s3i_start(&x, &ignore) == 0) s3i_wait(&x);
    s3i_release(&x);
    w->s->cancel = cancel;
    free(q);
    free(eid);
}

static void s3_put_abort(void *wp)
{
    s3_writer *w = wp;
    if (!w) return;
    if (w->flying) {
        s3i_release(&w->fly);
        w->flying = false;
    }
    abort_upload(w);
    for (int i = 0; i < 2; i++) free(w->slot[i].p);
    for (int i = 0; i < w->nparts; i++) free(w->etags[i]);
    free(w->etags);
    free(w->upload_id);
    free(w->key);
    free(w);
}

/* 0 published, 1 the key exists (nothing written), -1 error. */
static int put_single(s3_writer *w, sw_err *err)
{
    part_slot *sl = &w->slot[w->fill];
    s3i_xfer x;
    s3i_req rq = {.method = "PUT", .key = w->key, .body = sl->p, .body_len = sl->len,
              .ctype = "application/octet-stream", .what = "PUT", .if_none_match = true};
    s3i_outcome o = s3i_call(w->s, &rq, &x, err);
    if (o == R_EXISTS) return 1;
    if (o != R_OK) return -1;
    s3i_release(&x);
    return 0;
}

static char *complete_xml(const s3_writer *w)
{
    s3i_buf b = {0};
    const char *head = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
    s3i_buf_add(&b, head, strlen(head), SIZE_MAX);
    for (int i = 0; i < w->nparts; i++) {
        char line[256];
        int n = snprintf(line, sizeof line, "<Part><PartNumber>%d</PartNumber><ETag>", i + 1);
        s3i_buf_add(&b, line, (size_t)n, SIZE_MAX);
        for (const char *e = w->etags[i]; *e; e++) {
            const char *esc = *e == '&' ? "&amp;" : *e == '<' ? "&lt;" : *e == '>' ? "&gt;" : NULL;
            if (esc) s3i_buf_add(&b, esc, strlen(esc), SIZE_MAX);
            else s3i_buf_add(&b, e, 1, SIZE_MAX);
        }
        s3i_buf_add(&b, "</ETag></Part>", 14, SIZE_MAX);
    }
    s3i_buf_add(&b, "</CompleteMultipartUpload>", 26, SIZE_MAX);
    return b.p;
}

static int s3_head(void *impl, const char *key, int64_t *size_out, sw_err *err);

/* The answer to CompleteMultipartUpload (store_s3_priv.h). */
bool s3i_complete_ok(const char *body, size_t n, char **code)
{
    size_t pos = 0;
    *code = body ? store_xml_take(body, n, &pos, "Code") : NULL;
    return body && strstr(body, "CompleteMultipartUploadResult") && !*code;
}

/* CompleteMultipartUpload with If-None-Match: *. 0 published, 1 the key exists (412:
 * another commit won; the upload is left for s3_put_abort to abort), -1 error.
 * S3 may answer 200 with an <Error> body. A retry after a lost answer may get
 * NoSuchUpload (or 412) although the first attempt published: both end in "exists",
 * and the adopting caller describes the stored object, which is then our own. A 409
 * ConditionalRequestConflict (another conditional write of the key in progress) is
 * retried: the retry then meets the winner's object (412) or publishes. */
static int complete_upload(s3_writer *w, sw_err *err)
{
    char *xml = complete_xml(w);
    char *eid = s3i_encode_dup(w->upload_id, false);
    char *q = xasprintf("uploadId=%s", eid);
    s3i_req rq = {.method = "POST", .key = w->key, .query = q, .body = (unsigned char *)xml,
              .body_len = strlen(xml), .ctype = "application/xml", .what = "CompleteMultipartUpload",
              .if_none_match = true};
    s3i_budget b;
    int rc = -1;
    s3i_budget_start(w->s, &b);
    for (;;) {
        s3i_xfer x;
        s3i_outcome o = s3i_call(w->s, &rq, &x, err);
        if (o == R_EXISTS) {
            rc = 1;
            break;
        }
        if (o == R_NOTFOUND) {
            int64_t size = -1;
            sw_err e2 = {0};
            if (s3_head(w->s, w->key, &size, &e2) == 0) rc = 1;   /* published: ours or not */
            else sw_errf(err, SW_E_STORAGE, true, "CompleteMultipartUpload %.140s: the upload is "
                         "gone and no object was published", w->key);
            break;
        }
        if (o != R_OK) break;
        char *code = NULL;
        bool ok = s3i_complete_ok(x.body.p, x.body.len, &code);
        bool exists = code && !strcmp(code, "PreconditionFailed");
        if (!ok && !exists) {
            char where[200];
            s3i_target(w->s, w->key, where, sizeof where);
            sw_errf(err, SW_E_STORAGE, true, "CompleteMultipartUpload %s: error %s in a 200 answer",
                    where, code ? code : "(unreadable)");
        }
        free(code);
        s3i_release(&x);
        if (ok || exists) {
            rc = exists ? 1 : 0;
            break;
        }
        if (!s3i_budget_retry(w->s, &b, err)) break;
    }
    free(q);
    free(eid);
    free(xml);
    return rc;
}

static int s3_put_commit(void *wp, sw_err *err)
{
    s3_writer *w = wp;
    int rc = -1;
    if (w->failed) {
        sw_errf(err, SW_E_INTERNAL, false, "store writer committed after a failure");
        goto out;
    }
    if (w->nparts == 0) {
        rc = put_single(w, err);
        goto out;
    }
    /* the last part may be short (S3 allows it) but not empty unless it is the only one */
    if (w->slot[w->fill].len > 0) {
        if (finish_flying(w, err) < 0 || launch_part(w, w->fill, err) < 0) goto out;
    }
    if (finish_flying(w, err) < 0) goto out;
    rc = complete_upload(w, err);
    if (rc == 0) {
        free(w->upload_id);             /* completed: nothing left to abort */
        w->upload_id = NULL;
    }                                   /* rc 1: the key existed, the upload is aborted below */
out:
    s3_put_abort(w);
    return rc;
}

/* ---- known-length put: one streaming PUT -------------------------------------------------
 * Content-Length = size, x-amz-content-sha256: UNSIGNED-PAYLOAD, the body pulled from
 * the source by curl's read callback (no buffer of ours: curl's upload buffer is the
 * only copy). A retry rewinds the source; one that cannot be rewound fails once it
 * was read from. A source of the wrong size aborts the request mid-body, so S3 never
 * stores it (a PUT is all or nothing). */
static int s3_put_sized(void *impl, const char *key, int64_t size, const store_source *src,
                        sw_err *err)
{
    s3 *s = impl;
    s3i_stream st = {.src = src, .len = size};
    s3i_req rq = {.method = "PUT", .key = key, .stream = &st, .ctype = "application/octet-stream",
                  .what = "PUT", .if_none_match = true};
    char where[200];
    s3i_target(s, key, where, sizeof where);
    if (size == 0) {            /* curl reads nothing for an empty body: probe here */
        char extra;
        ssize_t more = src->read(src->arg, &extra, 1, err);
        if (more < 0) return -1;
        if (more > 0)
            return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                           "PUT %s: the source holds more than the 0 bytes declared", where);
    }
    s3i_budget b;
    s3i_budget_start(s, &b);
    for (;;) {
        s3i_xfer x;
        if (s3i_stream_rewind(&st, err) < 0) return -1;
        st.fail = 0;
        if (s3i_setup(s, &x, &rq, err) < 0 || s3i_start(&x, err) < 0) {
            s3i_release(&x);
            return -1;
        }
        if (!s3i_wait(&x)) {
            s3i_release(&x);
            return sw_errf(err, SW_E_TIMEOUT, true, "store operation cancelled");
        }
        if (st.fail) {
            s3i_release(&x);
            if (st.fail == 1) {
                if (err) *err = st.e;
                return -1;
            }
            if (st.fail == 2)
                return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                               "PUT %s: the source ended at byte %lld of the %lld declared", where,
                               (long long)st.off, (long long)size);
            return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                           "PUT %s: the source holds more than the %lld bytes declared", where,
                           (long long)size);
        }
        s3i_outcome o = s3i_classify(s, &x, &rq, err);
        s3i_release(&x);
        if (o == R_EXISTS) return 1;   /* nothing written: the key was there */
        if (o == R_OK) {
            if (st.off != size)     /* curl said done without sending it all: never trust it */
                return sw_errf(err, SW_E_STORAGE, true, "PUT %s: sent %lld of %lld bytes", where,
                               (long long)st.off, (long long)size);
            return 0;
        }
        if (o != R_RETRY) return -1;
        if (st.touched && !src->rewind) {
            if (err) {
                char prev[sizeof err->msg];
                snprintf(prev, sizeof prev, "%s", err->msg);
                sw_errf(err, SW_E_STORAGE, true, "%s (not retried: the source cannot be rewound)",
                        prev);
            }
            return -1;
        }
        if (!s3i_budget_retry(s, &b, err)) return -1;
    }
}

/* ---- get: a GET paused between reads, resumed with Range ------------------------------ */

struct s3_reader {
    s3 *s;
    char *key;
    s3i_xfer x;                       /* the current attempt */
    bool have_x;                  /* x holds a handle (maybe finished) */
    int64_t received;             /* object bytes accepted (handed out or spilled) */
    int64_t size;                 /* from the first answer, -1 unknown */
    char etag[128];               /* from the first answer: resumes must match it */
    int64_t skip;                 /* bytes to drop: the server ignored our Range */
    bool range_checked;           /* this attempt's Content-Range was validated */
    bool range_bad;
    bool eof;
    bool dead;                    /* failed for good: every read fails */
    bool paused;
    unsigned char *dst;           /* the caller's buffer during store_get_read */
    size_t dst_len, dst_used;
    unsigned char *spill;         /* what did not fit in dst, at most one curl chunk */
    size_t spill_len, spill_off, spill_cap;
    s3i_budget b;
    int64_t received_at_fail;     /* progress since the last failure resets the s3i_budget */
    char range[64];
    s3i_req rq;
};

/* Write callback of a 2xx answer: fill dst, spill the rest; pause when the
 * caller is not reading (dst full or absent). */
size_t s3i_reader_take(s3_reader *r, const char *p, size_t n)
{
    if (!r->range_checked) {
        r->range_checked = true;
        if (r->x.status == 206) {
            long long start = -1;
            if (sscanf(r->x.content_range, "bytes %lld-", &start) != 1 || start != r->received) {
                r->range_bad = true;
                return 0;                       /* aborts: CURLE_WRITE_ERROR */
            }
        } else if (r->received > 0) {
            r->skip = r->received;              /* 200 to a Range: skip what we have */
        }
    }
    if (r->skip >= (int64_t)n) {
        r->skip -= (int64_t)n;
        return n;
    }
    size_t room = r->dst ? r->dst_len - r->dst_used : 0;
    if (room == 0) {
        r->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    size_t off = (size_t)r->skip;
    r->skip = 0;
    const char *d = p + off;
    size_t dl = n - off, take = dl < room ? dl : room;
    memcpy(r->dst + r->dst_used, d, take);
    r->dst_used += take;
    if (take < dl) {
        size_t rest = dl - take;
        if (rest > r->spill_cap) {
            r->spill = xrealloc(r->spill, rest);
            r->spill_cap = rest;
        }
        memcpy(r->spill, d + take, rest);
        r->spill_len = rest;
        r->spill_off = 0;
    }
    r->received += (int64_t)dl;
    return n;
}

/* Start an attempt from r->received. */
static int reader_launch(s3_reader *r, sw_err *err)
{
    bool renewed = r->rq.creds_renewed;     /* once per download, not per resume */
    r->rq = (s3i_req){.method = "GET", .key = r->key, .what = "GET", .creds_renewed = renewed};
    if (r->received > 0) {
        snprintf(r->range, sizeof r->range, "bytes=%lld-", (long long)r->received);
        r->rq.range = r->range;
        r->rq.if_match = r->etag;
    }
    if (s3i_setup(r->s, &r->x, &r->rq, err) < 0) {
        s3i_release(&r->x);
        return -1;
    }
    r->have_x = true;
    r->x.sink = r;
    r->range_checked = false;
    r->range_bad = false;
    r->paused = false;
    r->skip = 0;
    if (s3i_start(&r->x, err) < 0) {
        s3i_release(&r->x);
        r->have_x = false;
        return -1;
    }
    return 0;
}

/* After a finished attempt: R_OK = the whole object arrived. */
static s3i_outcome reader_outcome(s3_reader *r, sw_err *err)
{
    char where[200];
    s3i_target(r->s, r->key, where, sizeof where);
    if (r->range_bad)
        return sw_errf(err, SW_E_STORAGE, true, "GET %s: resumed answer starts at the wrong byte (%s)",
                       where, r->x.content_range), R_FAIL;
    if (r->x.status == 412)
        return sw_errf(err, SW_E_STORAGE, true, "GET %s: object changed while downloading", where),
               R_FAIL;
    s3i_outcome o = s3i_classify(r->s, &r->x, &r->rq, err);
    if (o == R_OK && r->size >= 0 && r->received < r->size) {
        sw_errf(err, SW_E_STORAGE, true, "GET %s: connection ended at byte %lld of %lld", where,
                (long long)r->received, (long long)r->size);
        o = R_RETRY;
    }
    return o;
}

/* Drive the current attempt until the caller's buffer got bytes or it ended; once
 * bytes flow, keep going without waiting while more are already there, so one read
 * returns up to the whole buffer instead of one 16 KiB curl chunk. */
static void reader_drive(s3_reader *r)
{
    if (r->paused) {
        r->paused = false;
        curl_easy_pause(r->x.e, CURLPAUSE_CONT);   /* may deliver into dst right away */
    }
    while (!r->x.done && !r->paused && r->dst_used < r->dst_len && !s3i_cancelled(r->s)) {
        size_t before = r->dst_used;
        s3i_pump(r->s, 0);
        if (r->dst_used > 0 && r->dst_used == before) break;   /* nothing more right now */
        if (r->dst_used == 0 && !r->x.done) s3i_pump(r->s, 200);
    }
}

static void reader_free(s3_reader *r)
{
    if (r->have_x) s3i_release(&r->x);
    free(r->spill);
    free(r->key);
    free(r);
}

static void *s3_get_open(void *impl, const char *key, int64_t *size_out, sw_err *err)
{
    s3_reader *r = xcalloc(1, sizeof *r);
    r->s = impl;
    r->key = xstrdup(key);
    r->size = -1;
    s3i_budget_start(r->s, &r->b);
    for (;;) {
        if (reader_launch(r, err) < 0) goto fail;
        while (!r->x.headers_done && !r->x.done) {
            if (s3i_cancelled(r->s)) {
                sw_errf(err, SW_E_TIMEOUT, true, "store operation cancelled");
                goto fail;
            }
            s3i_pump(r->s, 0);
            if (!r->x.headers_done && !r->x.done) s3i_pump(r->s, 200);
        }
        if (r->x.headers_done && r->x.status >= 200 && r->x.status < 300) break;
        if (!s3i_wait(&r->x)) {
            sw_errf(err, SW_E_TIMEOUT, true, "store operation cancelled");
            goto fail;
        }
        s3i_outcome o = reader_outcome(r, err);
        if (o == R_OK) break;             /* finished already (tiny object) */
        s3i_release(&r->x);
        r->have_x = false;
        if (o != R_RETRY || !s3i_budget_retry(r->s, &r->b, err)) goto fail;
    }
    r->size = r->x.content_length;
    snprintf(r->etag, sizeof r->etag, "%s", r->x.etag);
    if (size_out) *size_out = r->size;
    return r;
fail:
    reader_free(r);
    return NULL;
}

static ssize_t s3_get_read(void *rp, void *buf, size_t n, sw_err *err)
{
    s3_reader *r = rp;
    if (r->dead) return sw_errf(err, SW_E_STORAGE, true, "read after a failed download");
    for (;;) {
        if (r->spill_off < r->spill_len) {
            size_t take = r->spill_len - r->spill_off < n ? r->spill_len - r->spill_off : n;
            memcpy(buf, r->spill + r->spill_off, take);
            r->spill_off += take;
            return (ssize_t)take;
        }
        if (r->eof) return 0;
        if (!r->x.done) {
            r->dst = buf;
            r->dst_len = n;
            r->dst_used = 0;
            reader_drive(r);
            r->dst = NULL;
            if (r->dst_used > 0) return (ssize_t)r->dst_used;
            if (!r->x.done) return sw_errf(err, SW_E_TIMEOUT, true, "store operation cancelled");
        }
        if (r->x.in_multi) curl_multi_remove_handle(r->s->multi, r->x.e);
        r->x.in_multi = false;
        s3i_outcome o = reader_outcome(r, err);
        if (o == R_OK) {
            r->eof = true;
            continue;
        }
        if (o != R_RETRY) {
            r->dead = true;
            return -1;
        }
        if (r->received > r->received_at_fail) {   /* progress: a fresh s3i_budget */
            s3i_budget_start(r->s, &r->b);
            r->received_at_fail = r->received;
        }
        s3i_release(&r->x);
        r->have_x = false;
        if (!s3i_budget_retry(r->s, &r->b, err) || reader_launch(r, err) < 0) {
            r->dead = true;
            return -1;
        }
    }
}

static void s3_get_close(void *rp)
{
    if (rp) reader_free(rp);
}

/* ---- head / delete / list ---------------------------------------------------------------- */

static int s3_head(void *impl, const char *key, int64_t *size_out, sw_err *err)
{
    s3i_xfer x;
    s3i_req rq = {.method = "HEAD", .key = key, .what = "HEAD"};
    if (s3i_call(impl, &rq, &x, err) != R_OK) return -1;
    *size_out = x.content_length;
    s3i_release(&x);
    return 0;
}

static int s3_del(void *impl, const char *key, sw_err *err)
{
    s3i_xfer x;
    s3i_req rq = {.method = "DELETE", .key = key, .what = "DELETE"};
    s3i_outcome o = s3i_call(impl, &rq, &x, err);
    if (o == R_OK) s3i_release(&x);
    if (o == R_NOTFOUND) sw_err_clear(err);
    return o == R_OK || o == R_NOTFOUND ? 0 : -1;
}

/* One ListObjectsV2 page (store_s3_priv.h). */
char *s3i_list_page(const char *xml, size_t n, const char *full, size_t cut,
                    int (*cb)(void *arg, const char *key, int64_t size, int64_t mtime), void *arg,
                    bool *stop)
{
    size_t pos = 0, b, l;
    while (!*stop && s3i_xml_span(xml, n, &pos, "Contents", &b, &l)) {
        size_t p2 = 0;
        char *k = store_xml_take(xml + b, l, &p2, "Key");
        p2 = 0;
        char *sz = store_xml_take(xml + b, l, &p2, "Size");
        p2 = 0;
        char *lm = store_xml_take(xml + b, l, &p2, "LastModified");
        if (k && strlen(k) > cut && strncmp(k, full, strlen(full)) == 0)
            *stop = cb(arg, k + cut, sz ? strtoll(sz, NULL, 10) : -1, store_s3_parse_time(lm)) != 0;
        free(k);
        free(sz);
        free(lm);
    }
    pos = 0;
    char *trunc = store_xml_take(xml, n, &pos, "IsTruncated");
    pos = 0;
    char *token = store_xml_take(xml, n, &pos, "NextContinuationToken");
    bool more = !*stop && trunc && !strcmp(trunc, "true") && token && *token;
    free(trunc);
    if (!more) {
        free(token);
        token = NULL;
    }
    return token;
}

/* ListObjectsV2 pages; keys come back with the store prefix, which is cut. */
static int s3_list(void *impl, const char *prefix,
                   int (*cb)(void *arg, const char *key, int64_t size, int64_t mtime), void *arg,
                   sw_err *err)
{
    s3 *s = impl;
    char *full = *s->prefix ? xasprintf("%s/%s", s->prefix, prefix) : xstrdup(prefix);
    size_t cut = *s->prefix ? strlen(s->prefix) + 1 : 0;
    char *eprefix = s3i_encode_dup(full, false);
    char *token = NULL;
    int rc = -1;
    bool stop = false;
    while (!stop) {
        char *etok = token ? s3i_encode_dup(token, false) : NULL;
        char *q = etok ? xasprintf("continuation-token=%s&list-type=2&prefix=%s", etok, eprefix)
                       : xasprintf("list-type=2&prefix=%s", eprefix);
        s3i_req rq = {.method = "GET", .query = q, .resp_max = LIST_BODY_MAX, .what = "LIST"};
        s3i_xfer x;
        s3i_outcome o = s3i_call(s, &rq, &x, err);
        free(q);
        free(etok);
        if (o != R_OK) goto out;
        free(token);
        token = s3i_list_page(x.body.p ? x.body.p : "", x.body.len, full, cut, cb, arg, &stop);
        s3i_release(&x);
        if (!token) break;
    }
    rc = 0;
out:
    free(token);
    free(eprefix);
    free(full);
    return rc;
}

/* ---- orphans: multipart uploads never completed nor aborted ------------------------------
 * ListMultipartUploads under the store prefix + 'prefix' (a page of up to 1000), abort
 * each one initiated more than grace_s ago. A writer's upload is initiated when its first
 * part fills and lives until its commit, so the grace must exceed the longest snapshot
 * (docs/store.md). Aborting never touches a published object. */

static int abort_id(s3 *s, const char *key, const char *upload_id, sw_err *err)
{
    char *eid = s3i_encode_dup(upload_id, false);
    char *q = xasprintf("uploadId=%s", eid);
    s3i_req rq = {.method = "DELETE", .key = key, .query = q, .what = "AbortMultipartUpload"};
    s3i_xfer x;
    s3i_outcome o = s3i_call(s, &rq, &x, err);
    free(q);
    free(eid);
    if (o == R_OK) s3i_release(&x);
    if (o == R_NOTFOUND) sw_err_clear(err);   /* aborted or completed meanwhile */
    return o == R_OK || o == R_NOTFOUND ? 0 : -1;
}

static int s3_gc(void *impl, const char *prefix, int64_t grace_s, int64_t deadline_ms,
                 store_gc_stats *out, sw_err *err)
{
    s3 *s = impl;
    char *full = *s->prefix ? xasprintf("%s/%s", s->prefix, prefix) : xstrdup(prefix);
    size_t cut = *s->prefix ? strlen(s->prefix) + 1 : 0;
    char *eprefix = s3i_encode_dup(full, false);
    char *kmark = NULL, *umark = NULL;
    int64_t cutoff = (int64_t)time(NULL) - grace_s;
    int rc = -1;
    for (;;) {
        if (s3i_now_ms() > deadline_ms) {
            out->truncated = true;
            break;
        }
        char *ek = kmark ? s3i_encode_dup(kmark, false) : NULL;
        char *eu = umark ? s3i_encode_dup(umark, false) : NULL;
        char *q = ek ? xasprintf("key-marker=%s&prefix=%s&upload-id-marker=%s&uploads=", ek, eprefix,
                                 eu ? eu : "")
                     : xasprintf("prefix=%s&uploads=", eprefix);
        free(ek);
        free(eu);
        s3i_req rq = {.method = "GET", .query = q, .resp_max = LIST_BODY_MAX,
                      .what = "ListMultipartUploads"};
        s3i_xfer x;
        s3i_outcome o = s3i_call(s, &rq, &x, err);
        free(q);
        if (o != R_OK) goto out;
        const char *xml = x.body.p ? x.body.p : "";
        size_t n = x.body.len, pos = 0, b, l;
        bool failed = false;
        while (!failed && s3i_xml_span(xml, n, &pos, "Upload", &b, &l)) {
            size_t p2 = 0;
            char *k = store_xml_take(xml + b, l, &p2, "Key");
            p2 = 0;
            char *id = store_xml_take(xml + b, l, &p2, "UploadId");
            p2 = 0;
            char *when = store_xml_take(xml + b, l, &p2, "Initiated");
            int64_t t = store_s3_parse_time(when);
            if (k && id && strlen(k) > cut && strncmp(k, full, strlen(full)) == 0) {
                out->seen++;
                if (t < 0 || t >= cutoff) out->kept++;     /* young, or unreadable: leave it */
                else if (abort_id(s, k + cut, id, err) < 0) failed = true;
                else out->removed++;
            }
            free(k);
            free(id);
            free(when);
            if (!failed && s3i_now_ms() > deadline_ms) {
                out->truncated = true;
                break;
            }
        }
        pos = 0;
        char *trunc = store_xml_take(xml, n, &pos, "IsTruncated");
        pos = 0;
        free(kmark);
        kmark = store_xml_take(xml, n, &pos, "NextKeyMarker");
        pos = 0;
        free(umark);
        umark = store_xml_take(xml, n, &pos, "NextUploadIdMarker");
        bool more = trunc && !strcmp(trunc, "true") && kmark && *kmark;
        free(trunc);
        s3i_release(&x);
        if (failed) goto out;
        if (!more || out->truncated) break;
    }
    rc = 0;
out:
    free(kmark);
    free(umark);
    free(eprefix);
    free(full);
    return rc;
}

const store_ops store_s3_ops = {
    .scheme = "s3",
    .close = s3_close,
    .put_begin = s3_put_begin,
    .put_write = s3_put_write,
    .put_commit = s3_put_commit,
    .put_abort = s3_put_abort,
    .get_open = s3_get_open,
    .get_read = s3_get_read,
    .get_close = s3_get_close,
    .head = s3_head,
    .del = s3_del,
    .list = s3_list,
    .set_cancel = s3_set_cancel,
    .put_sized = s3_put_sized,
    .put_sized_max = STORE_SINGLE_PUT_MAX,
    .gc = s3_gc,
};
