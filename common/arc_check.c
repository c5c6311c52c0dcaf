/* common/arc_check.c — the member rules of a snapshot archive, and applying them to a whole
 * stream without extracting it (arc_check), plus counting an archive that passes by
 * (arc_counter).
 * Owns: name normalization and symlink-target rules (arc_priv.h, shared with
 * arc_extract.c), and a table of the names an archive has laid out so far, which stands
 * in for the filesystem arc_extract asks (a name below a symlink, a name taken twice).
 * Does not own: writing anything (arc_extract.c), where the bytes come from or go.
 * Why: the kubernetes backend extracts with the pod's own tar, so the worker must refuse a
 * hostile archive before a byte of it reaches the pod (docs/kubernetes.md); these checks
 * accept exactly what arc_extract would extract into an empty folder. */
#include "common/arc.h"
#include "common/arc_priv.h"
#include "common/fdio.h"
#include "common/xmalloc.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IN_CHUNK (256 * 1024)          /* bytes asked of the source per call */
#define PIPE_BYTES (1024 * 1024)       /* arc_counter's pipe, when the kernel allows */

/* ------------------------------------------------------------------ the rules */

int arc_normalize(const char *raw, char *out, const char *who, const char *role, sw_err *err)
{
    size_t len = 0;
    int depth = 0;
    const char *why = NULL;
    if (!raw || !*raw) why = "empty name";
    else if (raw[0] == '/') why = "absolute path";
    for (const char *p = why ? "" : raw; *p && !why;) {
        const char *c = p;
        while (*p && *p != '/') p++;
        size_t clen = (size_t)(p - c);
        while (*p == '/') p++;
        if (clen == 0 || (clen == 1 && c[0] == '.')) continue;
        if (clen == 2 && c[0] == '.' && c[1] == '.') why = "'..' in path";
        else if (clen > NAME_MAX) why = "name component too long";
        else if (len + clen + 1 > ARC_MAX_PATH) why = "path too long";
        else if (++depth > ARC_MAX_DEPTH) why = "too deeply nested";
        if (why) break;
        if (len) out[len++] = '/';
        memcpy(out + len, c, clen);
        len += clen;
    }
    out[len] = '\0';
    if (!why && len == 0) return 1;
    size_t top = strcspn(out, "/");
    if (!why && !((top == 7 && !memcmp(out, "outputs", 7)) || (top == 11 && !memcmp(out, "attachments", 11))))
        why = "not under outputs/ or attachments/";
    if (!why) return 0;
    return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "member %s: %s%s", who && *who ? who : "(empty)", role, why);
}

static int unsafe(sw_err *err, const char *name, const char *why)
{
    return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "member %s: %s", name, why);
}

/* Only leading ".." are allowed: once a name was passed it might itself be a symlink, and
 * "name/.." would then climb from wherever that link points, which text cannot tell. */
int arc_check_target(const char *name, const char *target, sw_err *err)
{
    int depth = 0, seen_name = 0;
    if (!target || !*target) return unsafe(err, name, "empty symlink target");
    if (target[0] == '/') return unsafe(err, name, "absolute symlink target");
    if (strlen(target) > ARC_MAX_PATH) return unsafe(err, name, "symlink target too long");
    for (const char *p = name; *p; p++) depth += *p == '/';
    for (const char *p = target; *p;) {
        const char *c = p;
        while (*p && *p != '/') p++;
        size_t clen = (size_t)(p - c);
        while (*p == '/') p++;
        if (clen == 0 || (clen == 1 && c[0] == '.')) continue;
        if (clen == 2 && c[0] == '.' && c[1] == '.') {
            if (seen_name) return unsafe(err, name, "symlink target has '..' after a name");
            if (--depth < 0) return unsafe(err, name, "symlink target points outside the destination");
        } else {
            seen_name = 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ names laid out */

enum { K_NONE, K_DIR, K_REG, K_LNK };   /* what a name is once the archive was extracted */

typedef struct nameset {
    char **key;
    unsigned char *kind;
    size_t cap, n;     /* cap is a power of two; n < cap / 2 */
} nameset;

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static size_t slot(const nameset *t, const char *s, size_t n)
{
    size_t i = (size_t)hash(s, n) & (t->cap - 1);
    while (t->key[i] && !(strlen(t->key[i]) == n && !memcmp(t->key[i], s, n)))
        i = (i + 1) & (t->cap - 1);
    return i;
}

static int ns_get(const nameset *t, const char *s, size_t n)
{
    if (!t->cap) return K_NONE;
    size_t i = slot(t, s, n);
    return t->key[i] ? t->kind[i] : K_NONE;
}

static void ns_put(nameset *t, const char *s, size_t n, int kind)
{
    if (2 * (t->n + 1) > t->cap) {
        nameset g = {xcalloc(t->cap ? t->cap * 2 : 1024, sizeof(char *)), NULL,
                     t->cap ? t->cap * 2 : 1024, t->n};
        g.kind = xcalloc(g.cap, 1);
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->key[i]) continue;
            size_t j = slot(&g, t->key[i], strlen(t->key[i]));
            g.key[j] = t->key[i];
            g.kind[j] = t->kind[i];
        }
        free(t->key);
        free(t->kind);
        *t = g;
    }
    size_t i = slot(t, s, n);
    if (!t->key[i]) {
        t->key[i] = xstrndup(s, n);
        t->n++;
    }
    t->kind[i] = (unsigned char)kind;
}

static void ns_free(nameset *t)
{
    for (size_t i = 0; i < t->cap; i++) free(t->key[i]);
    free(t->key);
    free(t->kind);
}

/* ------------------------------------------------------------------ one member */

typedef struct cctx {
    struct archive *raw;        /* decompresses the source: gzip, zstd or none */
    struct archive *a;          /* the tar reader, over raw's output */
    arc_source_fn source;
    void *src_arg;
    unsigned char *inbuf;       /* compressed bytes from the source */
    unsigned char *tbuf;        /* tar bytes from raw */
    int raw_failed;
    int src_failed;
    sw_err src_err;
    bool rules;                 /* false: only count (arc_counter) */
    arc_limits lim;
    arc_check_info info;
    arc_live *live;             /* info.st.entries as it grows (borrowed, may be NULL) */
    nameset names;
    char name[ARC_MAX_PATH + 1];
    char tname[ARC_MAX_PATH + 1];
} cctx;

static const char *type_name(mode_t type)
{
    switch (type) {
    case AE_IFCHR: return "character device";
    case AE_IFBLK: return "block device";
    case AE_IFIFO: return "FIFO";
    case AE_IFSOCK: return "socket";
    default: return "unknown file type";
    }
}

/* Every folder above 'name' must be (or become) a directory: arc_extract opens each with
 * O_NOFOLLOW and refuses a symlink or a file on the way. */
static int parents(cctx *x, sw_err *err)
{
    for (const char *p = strchr(x->name, '/'); p; p = strchr(p + 1, '/')) {
        size_t n = (size_t)(p - x->name);
        int k = ns_get(&x->names, x->name, n);
        if (k == K_REG || k == K_LNK)
            return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false,
                           "member %s: writing through a symlink or non-directory %.*s", x->name,
                           (int)n, x->name);
        if (k == K_NONE) ns_put(&x->names, x->name, n, K_DIR);
    }
    return 0;
}

static int hardlink(cctx *x, const char *target, int leaf, sw_err *err)
{
    int r = arc_normalize(target, x->tname, x->name, "hard link target: ", err);
    if (r != 0) return r > 0 ? unsafe(err, x->name, "hard link to the archive root") : -1;
    if (ns_get(&x->names, x->tname, strlen(x->tname)) != K_REG)
        return unsafe(err, x->name, "hard link target is not a regular file already extracted");
    if (leaf != K_NONE) return unsafe(err, x->name, "duplicate member (the name is taken)");
    ns_put(&x->names, x->name, strlen(x->name), K_REG);
    return 0;
}

/* The checks of arc_extract's do_entry, in its order: limits, name, type, parents, leaf. */
static int member(cctx *x, struct archive_entry *e, sw_err *err)
{
    const char *raw = archive_entry_pathname(e), *hard = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    arc_stats *st = &x->info.st;
    if (!x->rules) {   /* counting: members, and file bytes as the writer counts them */
        arc_live_set(x->live, ++st->entries);
        if (!hard && type == AE_IFREG && size > 0) st->bytes += size;
        return 0;
    }
    if (x->lim.max_entries > 0 && st->entries >= x->lim.max_entries)
        return sw_errf(err, SW_E_ARCHIVE_TOO_LARGE, false, "archive has more than %lld entries (at %s)",
                       (long long)x->lim.max_entries, raw ? raw : "?");
    arc_live_set(x->live, ++st->entries);
    int r = arc_normalize(raw, x->name, raw, "", err);
    if (r != 0) return r > 0 ? 0 : -1;
    if (!hard && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
        return unsafe(err, x->name, type_name(type));
    if (!strchr(x->name, '/') && (hard || type != AE_IFDIR))
        return unsafe(err, x->name, "top-level outputs/attachments must be a directory");
    if (parents(x, err) != 0) return -1;
    size_t len = strlen(x->name);
    int leaf = ns_get(&x->names, x->name, len);
    if (hard) return hardlink(x, hard, leaf, err);
    if (archive_entry_perm(e) & 07000) x->info.special_bits = true;
    if (type == AE_IFDIR) {
        if (leaf == K_REG || leaf == K_LNK)
            return unsafe(err, x->name, "directory over an existing non-directory");
        ns_put(&x->names, x->name, len, K_DIR);
        return 0;
    }
    if (type == AE_IFREG) {
        if (size < 0) return unsafe(err, x->name, "negative size");
        if (x->lim.max_bytes > 0 && size > x->lim.max_bytes - st->bytes)
            return sw_errf(err, SW_E_ARCHIVE_TOO_LARGE, false,
                           "archive holds more than %lld bytes (member %s, %lld bytes)",
                           (long long)x->lim.max_bytes, x->name, (long long)size);
        st->bytes += size;
    } else if (arc_check_target(x->name, archive_entry_symlink(e), err) != 0) {
        return -1;
    }
    if (leaf != K_NONE) return unsafe(err, x->name, "duplicate member (the name is taken)");
    ns_put(&x->names, x->name, len, type == AE_IFREG ? K_REG : K_LNK);
    return 0;
}

/* ------------------------------------------------------------------ the stream */

static la_ssize_t src_cb(struct archive *a, void *p, const void **buf)
{
    cctx *x = p;
    ssize_t n = x->source(x->src_arg, x->inbuf, IN_CHUNK, &x->src_err);
    if (n < 0) {
        x->src_failed = 1;
        archive_set_error(a, EIO, "source failed");
        return -1;
    }
    *buf = x->inbuf;
    return (la_ssize_t)n;
}

/* The tar reader's source: raw's inflated bytes. */
static la_ssize_t tar_cb(struct archive *a, void *p, const void **buf)
{
    cctx *x = p;
    la_ssize_t n = archive_read_data(x->raw, x->tbuf, IN_CHUNK);
    if (n < 0) {
        x->raw_failed = 1;
        archive_set_error(a, EIO, "inflate failed");
        return -1;
    }
    *buf = x->tbuf;
    return n;
}

static int corrupt(cctx *x, struct archive *a, sw_err *err)
{
    if (x->src_failed) {
        if (err) *err = x->src_err;
        if (err && err->code == SW_OK) sw_errf(err, SW_E_STORAGE, true, "archive source failed");
        return -1;
    }
    const char *s = archive_error_string(x->raw_failed ? x->raw : a);
    if (x->name[0])
        return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "corrupt archive: at %s: %s", x->name,
                       s ? s : "unreadable");
    return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "corrupt archive: %s", s ? s : "unreadable");
}

/* Two readers chained in this thread: raw inflates the whole stream (so a cut or corrupt
 * gzip shows even past the tar's end), the tar reader walks the members. */
static int scan(cctx *x, sw_err *err)
{
    struct archive_entry *e;
    arc_live_set(x->live, 0);
    x->inbuf = xmalloc(IN_CHUNK);
    x->tbuf = xmalloc(IN_CHUNK);
    struct archive *raw = x->raw = archive_read_new(), *a = x->a = archive_read_new();
    if (!raw || !a) return sw_errf(err, SW_E_INTERNAL, true, "archive_read_new failed");
    if (archive_read_support_format_raw(raw) != ARCHIVE_OK ||
        archive_read_support_filter_gzip(raw) != ARCHIVE_OK ||
        archive_read_support_filter_zstd(raw) < ARCHIVE_WARN ||
        archive_read_support_filter_none(raw) != ARCHIVE_OK ||
        archive_read_support_format_tar(a) != ARCHIVE_OK ||
        archive_read_support_filter_none(a) != ARCHIVE_OK)
        return sw_errf(err, SW_E_INTERNAL, true, "archive setup: %s", archive_error_string(raw));
    if (archive_read_open(raw, x, NULL, src_cb, NULL) != ARCHIVE_OK) return corrupt(x, raw, err);
    int r = archive_read_next_header(raw, &e);
    if (r == ARCHIVE_EOF) return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "corrupt archive: empty");
    if (r != ARCHIVE_OK) return corrupt(x, raw, err);
    int f = archive_filter_code(raw, 0);
    x->info.comp = f == ARCHIVE_FILTER_GZIP ? ARC_COMP_GZIP
                   : f == ARCHIVE_FILTER_ZSTD ? ARC_COMP_ZSTD : ARC_COMP_NONE;
    if (archive_read_open(a, x, NULL, tar_cb, NULL) != ARCHIVE_OK) return corrupt(x, a, err);
    for (;;) {
        r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return corrupt(x, a, err);
        if (member(x, e, err) != 0) return -1;
        if (archive_read_data_skip(a) != ARCHIVE_OK) return corrupt(x, a, err);
    }
    /* past the tar's end: the rest must inflate cleanly to the stream's end */
    for (;;) {
        la_ssize_t n = archive_read_data(raw, x->tbuf, IN_CHUNK);
        if (n == 0) return 0;
        if (n < 0) {
            x->raw_failed = 1;
            return corrupt(x, raw, err);
        }
    }
}

static void cctx_free(cctx *x)
{
    if (x->a) archive_read_free(x->a);
    if (x->raw) archive_read_free(x->raw);
    free(x->inbuf);
    free(x->tbuf);
    ns_free(&x->names);
    free(x);
}

int arc_check(arc_source_fn source, void *arg, const arc_limits *lim, arc_live *live,
              arc_check_info *out, sw_err *err)
{
    cctx *x = xcalloc(1, sizeof *x);
    arc_locale loc;
    x->source = source;
    x->src_arg = arg;
    x->live = live;
    x->rules = true;
    if (lim) x->lim = *lim;
    arc_locale_enter(&loc);   /* the same pathnames arc_extract sees */
    int rc = scan(x, err);
    arc_locale_leave(&loc);
    if (rc == 0 && out) *out = x->info;
    cctx_free(x);
    return rc;
}

/* ------------------------------------------------------------------ arc_counter */

struct arc_counter {
    int rfd, wfd;
    arc_live *live;    /* borrowed, may be NULL */
    pthread_t th;
    int rc;            /* the scan's outcome */
    sw_err err;
    arc_stats st;
};

static ssize_t pipe_source(void *arg, void *buf, size_t n, sw_err *err)
{
    arc_counter *c = arg;
    for (;;) {
        ssize_t r = read(c->rfd, buf, n);
        if (r >= 0) return r;
        if (errno != EINTR) return sw_errf(err, SW_E_INTERNAL, true, "counter pipe: %s", strerror(errno));
    }
}

static void *counter_main(void *p)
{
    arc_counter *c = p;
    cctx *x = xcalloc(1, sizeof *x);
    x->source = pipe_source;
    x->src_arg = c;
    x->live = c->live;
    c->rc = scan(x, &c->err);
    if (c->rc == 0) c->st = x->info.st;
    cctx_free(x);
    /* Whatever happened, read to the end so the feeding side never blocks on a full pipe
     * (the gzip trailer follows the tar's end, and a failed scan stops early). */
    char sink[16384];
    for (;;) {
        ssize_t r = read(c->rfd, sink, sizeof sink);
        if (r == 0 || (r < 0 && errno != EINTR)) break;
    }
    return NULL;
}

arc_counter *arc_counter_start(arc_live *live, sw_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        sw_errf(err, SW_E_INTERNAL, true, "counter pipe: %s", strerror(errno));
        return NULL;
    }
    (void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_BYTES);   /* fewer wake-ups; EPERM is fine */
    arc_counter *c = xcalloc(1, sizeof *c);
    c->live = live;
    c->rfd = fds[0];
    c->wfd = fds[1];
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 512 * 1024);
    int rc = pthread_create(&c->th, &at, counter_main, c);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        close(c->rfd);
        close(c->wfd);
        free(c);
        sw_errf(err, SW_E_INTERNAL, true, "cannot start the counter thread: %s", strerror(rc));
        return NULL;
    }
    return c;
}

int arc_counter_feed(arc_counter *c, const void *buf, size_t n, sw_err *err)
{
    if (fd_write_all(c->wfd, buf, n) != 0)
        return sw_errf(err, SW_E_INTERNAL, true, "counter pipe: %s", strerror(errno));
    return 0;
}

static void counter_end(arc_counter *c)
{
    close(c->wfd);
    pthread_join(c->th, NULL);
    close(c->rfd);
}

int arc_counter_finish(arc_counter *c, arc_stats *st, sw_err *err)
{
    counter_end(c);
    int rc = c->rc;
    if (rc == 0 && st) *st = c->st;
    if (rc != 0)
        sw_errf(err, SW_E_BACKEND, true, "the archive stream is truncated or corrupt: %s", c->err.msg);
    free(c);
    return rc;
}

void arc_counter_abort(arc_counter *c)
{
    if (!c) return;
    counter_end(c);
    free(c);
}
