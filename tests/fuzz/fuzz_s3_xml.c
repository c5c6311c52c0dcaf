/* tests/fuzz/fuzz_s3_xml.c — libFuzzer harness for the parsers of S3 answers
 * (common/store_s3.c, common/store_s3_http.c): any bytes as a ListObjectsV2 page
 * (s3i_list_page), a CompleteMultipartUpload answer (s3i_complete_ok), an error body with
 * its <Code> (s3i_classify) and through the XML helpers (s3i_xml_span, store_xml_take).
 * Input: byte 0 picks the HTTP status of the error answer; the rest is the body.
 * Invariants beyond the sanitizers:
 *  - a listing reports only keys under the listed prefix, with the store prefix cut, never
 *    empty; a callback asking to stop gets no further key and ends the listing; a page
 *    that continues gives a non-empty token;
 *  - an element's text is never longer than its raw span (entity decoding only shrinks);
 *  - a CompleteMultipartUpload answer with an error <Code> is never taken as success;
 *  - the outcome of an error answer follows its status: 404 not found, 401/403 permanent,
 *    5xx and 429 retried, each with a NUL-ended message naming the bucket.
 * Nothing here talks to a server: the transfer functions are linked but never called. */
#include <string.h>

#include "common/store.h"
#include "common/store_s3_priv.h"
#include "tests/fuzz/fuzz.h"

typedef struct listing {
    const char *under;   /* what every reported key starts with */
    int calls, stop_after;
} listing;

static int on_key(void *arg, const char *key, int64_t size, int64_t mtime)
{
    (void)size;
    (void)mtime;
    listing *l = arg;
    CHECK(l->stop_after == 0 || l->calls < l->stop_after);
    CHECK(key[0] && !strncmp(key, l->under, strlen(l->under)));
    l->calls++;
    return l->stop_after && l->calls == l->stop_after;
}

static void check_list(const char *xml, size_t n)
{
    /* A store without a prefix listing "" and a store "pre" listing "snap/": full "pre/snap/". */
    static const struct { const char *full, *under; size_t cut; } cases[] = {
        {"", "", 0}, {"pre/snap/", "snap/", 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        listing all = {cases[i].under, 0, 0}, one = {cases[i].under, 0, 1};
        bool stop = false;
        char *tok = s3i_list_page(xml, n, cases[i].full, cases[i].cut, on_key, &all, &stop);
        CHECK(!stop);
        if (tok) CHECK(tok[0]);
        stop = false;
        char *tok1 = s3i_list_page(xml, n, cases[i].full, cases[i].cut, on_key, &one, &stop);
        CHECK(one.calls == (all.calls ? 1 : 0) && stop == (all.calls > 0));
        CHECK(stop ? !tok1 : (!tok1 == !tok && (!tok || !strcmp(tok, tok1))));
        free(tok);
        free(tok1);
    }
}

static void check_take(const char *xml, size_t n)
{
    static const char *const tags[] = {"Key", "Code", "UploadId", "Size"};
    for (size_t t = 0; t < sizeof tags / sizeof tags[0]; t++) {
        size_t pos = 0, span_pos = 0, b, l;
        for (int k = 0; k < 64; k++) {
            bool found = s3i_xml_span(xml, n, &span_pos, tags[t], &b, &l);
            char *v = store_xml_take(xml, n, &pos, tags[t]);
            CHECK(found == (v != NULL));
            if (!v) break;
            CHECK(b + l <= n && span_pos <= n && pos == span_pos && strlen(v) <= l);
            free(v);
        }
    }
}

static void check_complete(const char *xml, size_t n)
{
    char *code = NULL;
    bool ok = s3i_complete_ok(xml, n, &code);
    if (ok) CHECK(!code && strstr(xml, "CompleteMultipartUploadResult"));
    if (code) CHECK(!ok);
    free(code);
}

static void check_classify(int status, char *body, size_t n)
{
    char bucket[] = "bkt", prefix[] = "pre";
    s3 s = {.bucket = bucket, .prefix = prefix};
    s3i_xfer x = {.s = &s, .result = CURLE_OK, .status = status};
    x.body.p = body;
    x.body.len = n;
    s3i_req rq = {.method = "GET", .key = "snap/a.tar.gz", .what = "GET"};
    sw_err err;
    sw_err_clear(&err);
    s3i_outcome o = s3i_classify(&s, &x, &rq, &err);
    CHECK(memchr(err.msg, '\0', sizeof err.msg));
    if (status >= 200 && status < 300) {
        CHECK(o == R_OK);
        return;
    }
    CHECK(strstr(err.msg, "bkt"));
    if (status == 404) CHECK(o == R_NOTFOUND && err.code == SW_E_SNAPSHOT_NOT_FOUND);
    else if (status == 401 || status == 403) CHECK(o == R_FAIL && !err.retryable);
    else if (status >= 500 || status == 429) CHECK(o == R_RETRY && err.retryable);
    else CHECK((o == R_RETRY) == err.retryable && err.code == SW_E_STORAGE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int statuses[] = {200, 400, 401, 403, 404, 409, 429, 500, 503};
    if (size < 1) return 0;
    int status = statuses[data[0] % (sizeof statuses / sizeof statuses[0])];
    size_t n = size - 1;
    char *xml = fuzz_cstr(data + 1, n);   /* bodies are kept NUL-ended (s3i_buf) */
    check_list(xml, n);
    check_take(xml, n);
    check_complete(xml, n);
    check_classify(status, xml, n);
    free(xml);
    return 0;
}
