/* common/store.c — the store interface: URL dispatch, key rules, integrity.
 * Owns: choosing the backend from the URL, validating every key before it
 * reaches a backend, hashing every byte that goes up or comes down, and the
 * KEY.sha256 sidecar (docs/store.md). Does not own any I/O: backends move bytes.
 * Why here and not in each backend: the sidecar protocol (ordering, format,
 * verification) must be identical for file:// and s3://, and fakes in tests
 * get it for free.
 *
 * Put protocol for KEY (each step only after the previous succeeded; docs/store.md
 * "Write-once objects" gives the reasoning and the alternatives rejected):
 *
 *   stream bytes ──► backend (invisible: temp file / multipart parts / memory)
 *   publish KEY only if absent   (renameat2 NOREPLACE or link / If-None-Match: *)
 *     ├ published ──► write KEY.sha256 = "<64 hex>\n" (write-once too; an existing
 *     │               one that differs is a stale leftover: replaced)
 *     └ KEY existed ─► the attempt's bytes are discarded; ADOPT the stored object:
 *                     size from head, sha256 from KEY.sha256 or, when there is
 *                     none yet, from reading the object (then written as KEY.sha256)
 *
 * Objects are never replaced, so a sidecar only ever describes the one object ever
 * published under its key: every writer of KEY.sha256 writes the same bytes, and a
 * writer that stalled before its commit can no longer overwrite a newer object.
 * A crash between the steps leaves the object without sidecar: it reads back fine
 * (unverified) and the next put of KEY (adopting) writes the sidecar. Deletes remove
 * the sidecar first, so no sidecar outlives its object. */
#include "common/store.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/metrics.h"
#include "common/sha256.h"
#include "common/xmalloc.h"

#define SIDECAR_MAX 256   /* bytes read from a KEY.sha256 before calling it corrupt */
#define PUT_CHUNK (256 * 1024)   /* bytes per read when store.c pulls a source itself */

struct store {
    const store_ops *ops;
    void *impl;           /* the backend's, owned */
    char *desc;           /* "s3://bucket", for messages */
};

struct store_writer {
    store *s;
    void *bw;             /* backend writer, owned until commit/abort */
    char *key;
    sha256_ctx *sha;
    int64_t size_bytes;
};

struct store_reader {
    store *s;
    void *br;             /* backend reader, owned */
    char *key;
    sha256_ctx *sha;
    int64_t got_bytes;    /* bytes handed to the caller so far */
    int64_t size_bytes;   /* expected total, -1 unknown */
    char expect[65];      /* sidecar hash, "" = none */
    int state;            /* 0 streaming, 1 verified end, 2 failed (err kept) */
    sw_err failed;        /* the error repeated after state 2 */
};

/* ---- keys ---------------------------------------------------------------- */

/* Length of the UTF-8 sequence at p (max n bytes), 0 when invalid: no overlong
 * forms, no surrogates, nothing above U+10FFFF. S3 keys must be UTF-8. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80) return 1;
    size_t len = (p[0] & 0xE0) == 0xC0 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3 : (p[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || len > n) return 0;
    uint32_t cp = p[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

int store_key_check(const char *key, sw_err *err)
{
    if (!key || !*key) return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "store key is empty");
    size_t n = strlen(key);
    if (n > STORE_KEY_MAX)
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "store key is %zu bytes (max %d)", n,
                       STORE_KEY_MAX);
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)key[i];
        if (ch < 0x20 || ch == 0x7F)
            return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                           "store key has a control character at byte %zu", i);
        size_t l = utf8_len((const unsigned char *)key + i, n - i);
        if (!l)
            return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                           "store key is not valid UTF-8 at byte %zu", i);
        i += l;
    }
    if (key[0] == '/')
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "store key '%.100s' is absolute", key);
    const char *seg = key;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t sl = end ? (size_t)(end - seg) : strlen(seg);
        if (sl == 0 || (sl == 1 && seg[0] == '.') || (sl == 2 && seg[0] == '.' && seg[1] == '.'))
            return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                           "store key '%.100s' has an empty, '.' or '..' segment", key);
        if (sl >= 7 && strncmp(seg, ".swtmp-", 7) == 0)
            return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                           "store key '%.100s' uses the reserved prefix .swtmp-", key);
        if (!end) break;
        seg = end + 1;
    }
    size_t sl = strlen(STORE_SIDECAR_SUFFIX);
    if (n >= sl && strcmp(key + n - sl, STORE_SIDECAR_SUFFIX) == 0)
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                       "store key '%.100s' ends in the reserved suffix .sha256", key);
    return 0;
}

static char *sidecar_key(const char *key)
{
    return xasprintf("%s%s", key, STORE_SIDECAR_SUFFIX);
}

/* ---- open / close ---------------------------------------------------------- */

store *store_new(const store_ops *ops, void *impl, const char *desc)
{
    store *s = xcalloc(1, sizeof *s);
    s->ops = ops;
    s->impl = impl;
    s->desc = xstrdup(desc ? desc : ops->scheme);
    return s;
}

static store *open_file(const char *url, sw_err *err)
{
    const char *path = url + strlen("file://");
    if (path[0] != '/') {
        sw_errf(err, SW_E_STORAGE, false, "SNAPWORKER_STORE: expected file:///absolute/path");
        return NULL;
    }
    char *root = xstrdup(path);
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') root[--n] = '\0';
    store *s = NULL;
    void *impl = store_file_new(root, err);
    if (impl) {
        char *desc = xasprintf("file://%s", root);
        s = store_new(&store_file_ops, impl, desc);
        free(desc);
    }
    free(root);
    return s;
}

static store *open_s3(const cfg *c, const char *url, sw_err *err)
{
    const char *rest = url + strlen("s3://");
    const char *slash = strchr(rest, '/');
    char *bucket = slash ? xstrndup(rest, (size_t)(slash - rest)) : xstrdup(rest);
    char *prefix = xstrdup(slash ? slash + 1 : "");
    store *s = NULL;
    size_t pn = strlen(prefix);
    while (pn > 0 && prefix[pn - 1] == '/') prefix[--pn] = '\0';
    if (!*bucket && c->s3_bucket && *c->s3_bucket) {
        free(bucket);
        bucket = xstrdup(c->s3_bucket);
    }
    if (!*bucket) {
        sw_errf(err, SW_E_STORAGE, false,
                "SNAPWORKER_STORE: s3:// names no bucket and SANDBOX_S3_BUCKET is empty");
        goto out;
    }
    if (*prefix && store_key_check(prefix, err) < 0) {
        sw_errf(err, SW_E_STORAGE, false, "SNAPWORKER_STORE: bad prefix in s3:// URL");
        goto out;
    }
    void *impl = store_s3_new(c, bucket, prefix, err);
    if (!impl) goto out;
    char *desc = *prefix ? xasprintf("s3://%s/%s", bucket, prefix) : xasprintf("s3://%s", bucket);
    s = store_new(&store_s3_ops, impl, desc);
    free(desc);
out:
    free(bucket);
    free(prefix);
    return s;
}

store *store_open(const cfg *c, sw_err *err)
{
    const char *url = c->store_url ? c->store_url : "";
    metrics_mark_store_used();
    if (strncmp(url, "file://", 7) == 0) return open_file(url, err);
    if (strncmp(url, "s3://", 5) == 0) return open_s3(c, url, err);
    sw_errf(err, SW_E_STORAGE, false,
            "SNAPWORKER_STORE: expected file:///path or s3://bucket, got '%.100s'", url);
    return NULL;
}

void store_close(store *s)
{
    if (!s) return;
    s->ops->close(s->impl);
    free(s->desc);
    free(s);
}

void store_set_cancel(store *s, const atomic_int *cancel)
{
    if (s->ops->set_cancel) s->ops->set_cancel(s->impl, cancel);
}

const char *store_describe(const store *s)
{
    return s->desc;
}

/* ---- put ------------------------------------------------------------------ */

store_writer *store_put_begin(store *s, const char *key, sw_err *err)
{
    if (store_key_check(key, err) < 0) return NULL;
    void *bw = s->ops->put_begin(s->impl, key, err);
    if (!bw) return NULL;
    store_writer *w = xcalloc(1, sizeof *w);
    w->s = s;
    w->bw = bw;
    w->key = xstrdup(key);
    w->sha = sha256_new();
    return w;
}

int store_put_write(store_writer *w, const void *buf, size_t n, sw_err *err)
{
    if (n == 0) return 0;
    sha256_update(w->sha, buf, n);
    w->size_bytes += (int64_t)n;
    return w->s->ops->put_write(w->bw, buf, n, err);
}

static void writer_free(store_writer *w)
{
    sha256_free(w->sha);
    free(w->key);
    free(w);
}

static int get_sidecar(store *s, const char *key, char out[65], sw_err *err);

/* One write-once put of the sidecar bytes: 0 published, 1 one existed, -1 error. */
static int put_sidecar_once(store *s, const char *sk, const char *line, sw_err *err)
{
    void *bw = s->ops->put_begin(s->impl, sk, err);
    if (!bw) return -1;
    if (s->ops->put_write(bw, line, strlen(line), err) < 0) {
        s->ops->put_abort(bw);
        return -1;
    }
    return s->ops->put_commit(bw, err);
}

/* Write KEY.sha256 = hex for the object now stored under KEY. 'hex' describes that
 * object (this put published it, or it was computed from its bytes), so an existing
 * sidecar with the same hex is fine and one with another (or garbled) is a stale
 * leftover of a deleted object: replaced. */
static int put_sidecar(store *s, const char *key, const char *hex, sw_err *err)
{
    char *sk = sidecar_key(key);
    char line[SHA256_HEX_LEN + 2], have[65];
    int rc = -1;
    snprintf(line, sizeof line, "%s\n", hex);
    for (int tries = 0; tries < 3; tries++) {
        int c = put_sidecar_once(s, sk, line, err);
        if (c <= 0) {
            rc = c;
            goto out;
        }
        sw_err e2 = {0};
        if (get_sidecar(s, key, have, &e2) < 0 && e2.retryable) {
            if (err) *err = e2;
            goto out;
        }
        if (have[0] && strcmp(have, hex) == 0) {
            rc = 0;
            goto out;
        }
        if (have[0] || e2.code != SW_OK) {   /* another object's, or garbled: replace */
            if (s->ops->del(s->impl, sk, err) < 0) goto out;
        }
    }
    sw_errf(err, SW_E_STORAGE, true, "%s: sidecar %.120s keeps changing under us", s->desc, sk);
out:
    free(sk);
    return rc;
}

/* sha256 and size of what is stored under 'key', by reading it all. */
static int hash_object(store *s, const char *key, char hex[65], int64_t *size_out, sw_err *err)
{
    int64_t size = -1, got = 0;
    void *br = s->ops->get_open(s->impl, key, &size, err);
    if (!br) return -1;
    sha256_ctx *sha = sha256_new();
    char *buf = xmalloc(PUT_CHUNK);
    int rc = -1;
    for (;;) {
        ssize_t n = s->ops->get_read(br, buf, PUT_CHUNK, err);
        if (n < 0) goto out;
        if (n == 0) break;
        sha256_update(sha, buf, (size_t)n);
        got += n;
    }
    if (size >= 0 && got != size) {
        sw_errf(err, SW_E_STORAGE, true, "%s/%.120s: read %lld of %lld bytes", s->desc, key,
                (long long)got, (long long)size);
        goto out;
    }
    sha256_final_hex(sha, hex);
    *size_out = got;
    rc = 0;
out:
    free(buf);
    sha256_free(sha);
    s->ops->get_close(br);
    return rc;
}

/* The commit found KEY already published (another attempt of the same job, a
 * worker that stalled past its lease, a lost answer to our own commit): describe
 * the stored object instead of the bytes this attempt streamed, which the backend
 * already discarded. */
static int adopt(store *s, const char *key, store_info *out, sw_err *err)
{
    int64_t size = -1;
    char hex[65];
    if (s->ops->head(s->impl, key, &size, err) < 0) {
        if (err && err->code == SW_E_SNAPSHOT_NOT_FOUND)
            sw_errf(err, SW_E_STORAGE, true,
                    "%s/%.120s: existed at commit, gone right after (deleted meanwhile)", s->desc,
                    key);
        return -1;
    }
    if (get_sidecar(s, key, hex, err) < 0) return -1;
    if (!hex[0]) {   /* its writer has not written the sidecar (yet, or ever) */
        if (hash_object(s, key, hex, &size, err) < 0 || put_sidecar(s, key, hex, err) < 0)
            return -1;
    }
    if (out) {
        out->size_bytes = size;
        memcpy(out->sha256, hex, sizeof hex);
        out->adopted = true;
    }
    return 0;
}

/* Test hook (docs/store.md "Test hooks"): SNAPWORKER_TEST_STOP_BEFORE_COMMIT=TEXT stops
 * the whole process (SIGSTOP, as a VM pause would) right before it commits a key
 * containing TEXT, so a test can let the lease lapse and SIGCONT it later. */
static void test_stop_before_commit(const char *key)
{
    const char *t = getenv("SNAPWORKER_TEST_STOP_BEFORE_COMMIT");
    if (t && *t && strstr(key, t)) raise(SIGSTOP);
}

int store_put_commit(store_writer *w, store_info *out, sw_err *err)
{
    store *s = w->s;
    char hex[SHA256_HEX_LEN + 1];
    int rc = -1;
    sha256_final_hex(w->sha, hex);
    test_stop_before_commit(w->key);
    int c = s->ops->put_commit(w->bw, err);
    if (c < 0) goto out;
    if (c == 1) {
        rc = adopt(s, w->key, out, err);
        goto out;
    }
    if (put_sidecar(s, w->key, hex, err) < 0) goto out;
    if (out) {
        out->size_bytes = w->size_bytes;
        memcpy(out->sha256, hex, sizeof hex);
        out->adopted = false;
    }
    rc = 0;
out:
    writer_free(w);
    return rc;
}

void store_put_abort(store_writer *w)
{
    if (!w) return;
    w->s->ops->put_abort(w->bw);
    writer_free(w);
}

/* ---- known-length put --------------------------------------------------------
 * The backend pulls the source; a wrapper hashes and counts what it hands out, and
 * starts both again on rewind, so the sidecar describes the attempt that was
 * published. The hash runs on a helper thread (sha256_async: a copy of each piece
 * goes into a small ring, HASH_SLOTS x HASH_SLOT bytes), so it overlaps the transfer
 * instead of delaying every chunk; read() blocks only when the hasher is a whole ring
 * behind. Without a backend put_sized (file://, fakes) or above its limit, the
 * source is streamed through the ordinary writer. */

#define HASH_SLOT (512 * 1024)   /* = curl's upload buffer (store_s3_http.c) */
#define HASH_SLOTS 8             /* 4 MiB of ring at most */

typedef struct hashed_src {
    const store_source *src;
    sha256_async *sha;
    int64_t got;              /* bytes handed out since the last rewind */
} hashed_src;

static ssize_t hashed_read(void *arg, void *buf, size_t n, sw_err *err)
{
    hashed_src *h = arg;
    ssize_t r = h->src->read(h->src->arg, buf, n, err);
    if (r > 0) {
        sha256_async_update(h->sha, buf, (size_t)r);
        h->got += r;
    }
    return r;
}

static int hashed_rewind(void *arg, sw_err *err)
{
    hashed_src *h = arg;
    if (h->src->rewind(h->src->arg, err) < 0) return -1;
    sha256_async_reset(h->sha);
    h->got = 0;
    return 0;
}

static int size_mismatch(store *s, const char *key, int64_t got, int64_t size, sw_err *err)
{
    if (got > size)
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                       "%s/%.120s: the source holds more than the %lld bytes declared", s->desc, key,
                       (long long)size);
    return sw_errf(err, SW_E_INVALID_PAYLOAD, false,
                   "%s/%.120s: the source ended at byte %lld of the %lld declared", s->desc, key,
                   (long long)got, (long long)size);
}

/* Through the push writer: read exactly size bytes, then make sure nothing follows. */
static int put_sized_streamed(store *s, const char *key, int64_t size, const store_source *src,
                              store_info *out, sw_err *err)
{
    store_writer *w = store_put_begin(s, key, err);
    if (!w) return -1;
    char *buf = xmalloc(PUT_CHUNK);
    int64_t left = size;
    for (;;) {
        size_t want = left == 0 ? 1 : left < PUT_CHUNK ? (size_t)left : PUT_CHUNK;
        ssize_t r = src->read(src->arg, buf, want, err);
        if (r < 0) goto fail;
        if (r == 0 && left > 0) {
            size_mismatch(s, key, size - left, size, err);
            goto fail;
        }
        if (r == 0) break;
        if (left == 0) {
            size_mismatch(s, key, size + r, size, err);
            goto fail;
        }
        if (store_put_write(w, buf, (size_t)r, err) < 0) goto fail;
        left -= r;
    }
    free(buf);
    return store_put_commit(w, out, err);
fail:
    free(buf);
    store_put_abort(w);
    return -1;
}

int store_put_sized(store *s, const char *key, int64_t size, const store_source *src,
                    store_info *out, sw_err *err)
{
    if (store_key_check(key, err) < 0) return -1;
    if (size < 0) return sw_errf(err, SW_E_INTERNAL, false, "store_put_sized: negative size");
    if (!s->ops->put_sized || size > s->ops->put_sized_max)
        return put_sized_streamed(s, key, size, src, out, err);
    hashed_src h = {src, sha256_async_new(HASH_SLOT, HASH_SLOTS), 0};
    store_source hs = {hashed_read, src->rewind ? hashed_rewind : NULL, &h};
    char hex[SHA256_HEX_LEN + 1];
    int rc = -1;
    int c = s->ops->put_sized(s->impl, key, size, &hs, err);
    if (c < 0) goto out;
    if (c == 1) {
        rc = adopt(s, key, out, err);
        goto out;
    }
    if (h.got != size) {   /* the backend must have refused this: a bug, say so */
        sw_errf(err, SW_E_INTERNAL, false, "%s/%.120s: published %lld bytes of %lld declared",
                s->desc, key, (long long)h.got, (long long)size);
        goto out;
    }
    sha256_async_final_hex(h.sha, hex);
    if (put_sidecar(s, key, hex, err) < 0) goto out;
    if (out) {
        out->size_bytes = size;
        memcpy(out->sha256, hex, sizeof hex);
        out->adopted = false;
    }
    rc = 0;
out:
    sha256_async_free(h.sha);
    return rc;
}

typedef struct fd_src {
    int fd;
    off_t start, off;
} fd_src;

static ssize_t fd_pread(void *arg, void *buf, size_t n, sw_err *err)
{
    fd_src *f = arg;
    for (;;) {
        ssize_t r = pread(f->fd, buf, n, f->off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return sw_errf(err, SW_E_INTERNAL, false, "read: %s", strerror(errno));
        f->off += r;
        return r;
    }
}

static int fd_rewind(void *arg, sw_err *err)
{
    (void)err;
    fd_src *f = arg;
    f->off = f->start;
    return 0;
}

int store_put_fd(store *s, const char *key, int fd, store_info *out, sw_err *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return sw_errf(err, SW_E_INTERNAL, false, "fstat: %s", strerror(errno));
    off_t start = S_ISREG(st.st_mode) ? lseek(fd, 0, SEEK_CUR) : -1;
    if (start >= 0) {
        fd_src f = {fd, start, start};
        store_source src = {fd_pread, fd_rewind, &f};
        int64_t size = st.st_size > start ? (int64_t)(st.st_size - start) : 0;
        return store_put_sized(s, key, size, &src, out, err);
    }
    store_writer *w = store_put_begin(s, key, err);
    if (!w) return -1;
    char *buf = xmalloc(PUT_CHUNK);
    for (;;) {
        ssize_t got = read(fd, buf, PUT_CHUNK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            sw_errf(err, SW_E_INTERNAL, false, "read: %s", strerror(errno));
            goto fail;
        }
        if (got == 0) break;
        if (store_put_write(w, buf, (size_t)got, err) < 0) goto fail;
    }
    free(buf);
    return store_put_commit(w, out, err);
fail:
    free(buf);
    store_put_abort(w);
    return -1;
}

/* ---- get -------------------------------------------------------------------- */

/* Fetch KEY.sha256 into out[65] ("" when absent). A sidecar that is not 64 hex
 * digits is a corrupt store: SW_E_STORAGE, non-retryable. */
static int get_sidecar(store *s, const char *key, char out[65], sw_err *err)
{
    char *sk = sidecar_key(key);
    char buf[SIDECAR_MAX];
    size_t len = 0;
    int rc = -1;
    sw_err e2 = {0};
    out[0] = '\0';
    void *br = s->ops->get_open(s->impl, sk, NULL, &e2);
    if (!br) {
        if (e2.code == SW_E_SNAPSHOT_NOT_FOUND) rc = 0;
        else if (err) *err = e2;
        goto out;
    }
    for (;;) {
        ssize_t got = s->ops->get_read(br, buf + len, sizeof buf - len, err);
        if (got < 0) goto close;
        if (got == 0) break;
        len += (size_t)got;
        if (len == sizeof buf) break;
    }
    if (!sha256_hex_valid(buf, len)) {
        sw_errf(err, SW_E_STORAGE, false, "%s: sidecar %.120s is not a sha256", s->desc, sk);
        goto close;
    }
    for (int i = 0; i < SHA256_HEX_LEN; i++)
        out[i] = (char)((buf[i] >= 'A' && buf[i] <= 'F') ? buf[i] - 'A' + 'a' : buf[i]);
    out[SHA256_HEX_LEN] = '\0';
    rc = 0;
close:
    s->ops->get_close(br);
out:
    free(sk);
    return rc;
}

store_reader *store_get_open(store *s, const char *key, store_info *info_out, sw_err *err)
{
    if (store_key_check(key, err) < 0) return NULL;
    char expect[65];
    if (get_sidecar(s, key, expect, err) < 0) return NULL;
    int64_t size = -1;
    void *br = s->ops->get_open(s->impl, key, &size, err);
    if (!br) return NULL;
    store_reader *r = xcalloc(1, sizeof *r);
    r->s = s;
    r->br = br;
    r->key = xstrdup(key);
    r->sha = sha256_new();
    r->size_bytes = size;
    memcpy(r->expect, expect, sizeof expect);
    if (info_out) {
        info_out->size_bytes = size;
        memcpy(info_out->sha256, expect, sizeof expect);
        info_out->adopted = false;
    }
    return r;
}

static ssize_t reader_fail(store_reader *r, sw_err *err)
{
    r->state = 2;
    if (err) *err = r->failed;
    return -1;
}

/* The end of the stream: the size and the sidecar hash must both match. */
static ssize_t reader_finish(store_reader *r, sw_err *err)
{
    if (r->size_bytes >= 0 && r->got_bytes != r->size_bytes) {
        sw_errf(&r->failed, SW_E_STORAGE, true, "%s/%.120s: got %lld of %lld bytes", r->s->desc,
                r->key, (long long)r->got_bytes, (long long)r->size_bytes);
        return reader_fail(r, err);
    }
    char hex[SHA256_HEX_LEN + 1];
    sha256_final_hex(r->sha, hex);
    if (r->expect[0] && strcmp(hex, r->expect) != 0) {
        sw_errf(&r->failed, SW_E_STORAGE, false,
                "%s/%.100s: sha256 mismatch (sidecar %.12s…, data %.12s…): object is corrupt",
                r->s->desc, r->key, r->expect, hex);
        return reader_fail(r, err);
    }
    r->state = 1;
    return 0;
}

ssize_t store_get_read(store_reader *r, void *buf, size_t n, sw_err *err)
{
    if (r->state == 1) return 0;
    if (r->state == 2) return reader_fail(r, err);
    if (n == 0) return 0;
    ssize_t got = r->s->ops->get_read(r->br, buf, n, &r->failed);
    if (got < 0) return reader_fail(r, err);
    if (got == 0) return reader_finish(r, err);
    r->got_bytes += got;
    if (r->size_bytes >= 0 && r->got_bytes > r->size_bytes) {
        sw_errf(&r->failed, SW_E_STORAGE, true, "%s/%.120s: more bytes than the %lld announced",
                r->s->desc, r->key, (long long)r->size_bytes);
        return reader_fail(r, err);
    }
    sha256_update(r->sha, buf, (size_t)got);
    return got;
}

int store_get_drain(store_reader *r, sw_err *err)
{
    char *buf = xmalloc(64 * 1024);
    ssize_t got;
    while ((got = store_get_read(r, buf, 64 * 1024, err)) > 0) {}
    free(buf);
    return got < 0 ? -1 : 0;
}

void store_get_close(store_reader *r)
{
    if (!r) return;
    r->s->ops->get_close(r->br);
    sha256_free(r->sha);
    free(r->key);
    free(r);
}

/* ---- head / delete / list ------------------------------------------------------ */

int store_head(store *s, const char *key, store_info *out, sw_err *err)
{
    if (store_key_check(key, err) < 0) return -1;
    int64_t size = -1;
    if (s->ops->head(s->impl, key, &size, err) < 0) return -1;
    char hex[65];
    if (get_sidecar(s, key, hex, err) < 0) return -1;
    if (out) {
        out->size_bytes = size;
        memcpy(out->sha256, hex, sizeof hex);
        out->adopted = false;
    }
    return 0;
}

int store_delete(store *s, const char *key, sw_err *err)
{
    if (store_key_check(key, err) < 0) return -1;
    char *sk = sidecar_key(key);   /* sidecar first: none ever outlives its object */
    int rc = s->ops->del(s->impl, sk, err);
    free(sk);
    if (rc < 0) return -1;
    return s->ops->del(s->impl, key, err);
}

struct list_filter {
    int (*cb)(void *arg, const char *key, int64_t size);                     /* store_list */
    int (*cbm)(void *arg, const char *key, int64_t size, int64_t mtime);     /* store_list_mtime */
    void *arg;
};

static int list_filter_cb(void *arg, const char *key, int64_t size, int64_t mtime)
{
    struct list_filter *f = arg;
    size_t n = strlen(key), sl = strlen(STORE_SIDECAR_SUFFIX);
    if (n >= sl && strcmp(key + n - sl, STORE_SIDECAR_SUFFIX) == 0) return 0;
    return f->cbm ? f->cbm(f->arg, key, size, mtime) : f->cb(f->arg, key, size);
}

static int list_any(store *s, const char *prefix, struct list_filter *f, sw_err *err)
{
    if (!prefix) prefix = "";
    for (const char *p = prefix; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7F)
            return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "store prefix has a control character");
    if (strlen(prefix) > STORE_KEY_MAX)
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "store prefix is too long");
    return s->ops->list(s->impl, prefix, list_filter_cb, f, err);
}

int store_list(store *s, const char *prefix, int (*cb)(void *arg, const char *key, int64_t size),
               void *arg, sw_err *err)
{
    struct list_filter f = {cb, NULL, arg};
    return list_any(s, prefix, &f, err);
}

int store_list_mtime(store *s, const char *prefix,
                     int (*cb)(void *arg, const char *key, int64_t size, int64_t mtime), void *arg,
                     sw_err *err)
{
    struct list_filter f = {NULL, cb, arg};
    return list_any(s, prefix, &f, err);
}

/* ---- orphans ---------------------------------------------------------------------- */

int store_gc(store *s, const char *prefix, int64_t grace_s, int64_t budget_ms,
             store_gc_stats *out, sw_err *err)
{
    store_gc_stats st = {0};
    if (!prefix) prefix = "";
    for (const char *p = prefix; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7F)
            return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "store prefix has a control character");
    if (strlen(prefix) > STORE_KEY_MAX)
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "store prefix is too long");
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + budget_ms;
    int rc = s->ops->gc ? s->ops->gc(s->impl, prefix, grace_s, deadline, &st, err) : 0;
    if (out) *out = st;
    return rc;
}
