/* common/arc_write.c — stream a session's outputs/ and attachments/ out as a gzip tar.
 * Owns: the member layout of a snapshot (docs/archive.md) and the streaming walk.
 * Does not own: where the bytes go (the sink: a store upload, a file, a test buffer).
 * Why: a snapshot must go straight from disk to the store with bounded memory (no temp
 * file, no whole-file buffers) from many executor threads at once, so the tree is walked
 * with openat() from directory fds and each file is read in fixed chunks. */
#include "common/arc.h"
#include "common/arc_priv.h"
#include "common/xmalloc.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)   /* bytes read from a file per read(2) */
#define BLOCK_BYTES (256 * 1024)  /* compressed bytes per sink call (libarchive block) */

typedef struct wctx {
    struct archive *a;
    struct archive_entry *e;   /* reused for every member */
    arc_sink_fn sink;
    void *sink_arg;
    sw_err sink_err;           /* the sink's own error, passed through unchanged */
    int sink_failed;
    int aborted;               /* set on failure: write_cb no longer calls the sink */
    char *buf;                 /* READ_CHUNK bytes */
    char path[ARC_MAX_PATH + 1]; /* member name of the entry being written */
    const excl *ex;            /* members left out (borrowed, may be NULL) */
    arc_live *live;            /* st.entries as it grows (borrowed, may be NULL) */
    arc_stats st;
} wctx;

static la_ssize_t write_cb(struct archive *a, void *p, const void *buf, size_t n)
{
    wctx *w = p;
    if (w->aborted) return -1;
    if (w->sink(w->sink_arg, buf, n, &w->sink_err) != 0) {
        w->sink_failed = 1;
        archive_set_error(a, EIO, "sink failed");
        return -1;
    }
    return (la_ssize_t)n;
}

/* After libarchive said no: the sink's error if it was the sink, else libarchive's text. */
static int ar_fail(wctx *w, const char *what, sw_err *err)
{
    if (w->sink_failed) {
        if (err) *err = w->sink_err;
        if (err && err->code == SW_OK) sw_errf(err, SW_E_STORAGE, true, "archive sink failed");
        return -1;
    }
    const char *s = archive_error_string(w->a);
    return sw_errf(err, SW_E_INTERNAL, true, "archive %s: %s", what, s ? s : "unknown error");
}

static int put_header(wctx *w, const struct stat *st, const char *link_target, sw_err *err)
{
    struct archive_entry *e = w->e;
    archive_entry_clear(e);
    archive_entry_copy_pathname(e, w->path);
    archive_entry_set_filetype(e, st->st_mode & S_IFMT);
    archive_entry_set_perm(e, st->st_mode & 07777);
    archive_entry_set_uid(e, st->st_uid);
    archive_entry_set_gid(e, st->st_gid);
    archive_entry_set_mtime(e, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    archive_entry_set_size(e, S_ISREG(st->st_mode) ? st->st_size : 0);
    if (link_target) archive_entry_copy_symlink(e, link_target);
    if (archive_write_header(w->a, e) < ARCHIVE_WARN) return ar_fail(w, w->path, err);
    arc_live_set(w->live, ++w->st.entries);
    return 0;
}

/* The size in the header is the one fstatat saw. A file that grows meanwhile is cut there
 * (libarchive refuses more), one that shrinks is padded with zeros by finish_entry: the
 * archive stays well-formed either way. Hard links are stored as separate files. */
static int write_file(wctx *w, int dfd, const char *name, const struct stat *st, sw_err *err)
{
    int rc = -1;
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ELOOP ? 0 : arc_errno(err, errno, "open", w->path);
    if (put_header(w, st, NULL, err) != 0) goto out;
    for (off_t left = st->st_size; left > 0;) {
        ssize_t n = read(fd, w->buf, left < READ_CHUNK ? (size_t)left : READ_CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { arc_errno(err, errno, "read", w->path); goto out; }
        if (n == 0) break;
        if (archive_write_data(w->a, w->buf, (size_t)n) < 0) { ar_fail(w, w->path, err); goto out; }
        left -= n;
    }
    if (archive_write_finish_entry(w->a) < ARCHIVE_WARN) { ar_fail(w, w->path, err); goto out; }
    w->st.bytes += st->st_size;
    rc = 0;
out:
    close(fd);
    return rc;
}

static int write_link(wctx *w, int dfd, const char *name, const struct stat *st, sw_err *err)
{
    char target[ARC_MAX_PATH + 1];
    ssize_t n = readlinkat(dfd, name, target, sizeof target);
    if (n < 0) return errno == ENOENT || errno == EINVAL ? 0 : arc_errno(err, errno, "readlink", w->path);
    if ((size_t)n >= sizeof target)
        return sw_errf(err, SW_E_BACKEND, false, "readlink %s: target too long", w->path);
    target[n] = '\0';
    return put_header(w, st, target, err);
}

static int write_dir(wctx *w, int pfd, const char *name, const struct stat *st, size_t plen,
                     int depth, sw_err *err);

/* Members in bytewise name order, so an unchanged tree gives byte-identical archives. */
static int walk_dir(wctx *w, int dfd, size_t plen, int depth, sw_err *err)
{
    char **names = NULL;
    size_t n = 0;
    int rc = -1;
    if (arc_names(dfd, w->path, &names, &n, err) != 0) goto out;
    for (size_t i = 0; i < n; i++) {
        size_t nlen = strlen(names[i]);
        if (plen + 1 + nlen > ARC_MAX_PATH) {
            sw_errf(err, SW_E_BACKEND, false, "%s/%s: path longer than %d bytes", w->path, names[i],
                    ARC_MAX_PATH);
            goto out;
        }
        w->path[plen] = '/';
        memcpy(w->path + plen + 1, names[i], nlen + 1);
        if (excl_match(w->ex, w->path)) continue; /* a folder: its whole subtree with it */
        struct stat st;
        if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) continue; /* vanished while we walked */
            arc_errno(err, errno, "stat", w->path);
            goto out;
        }
        int r = 0;
        if (S_ISDIR(st.st_mode)) r = write_dir(w, dfd, names[i], &st, plen + 1 + nlen, depth + 1, err);
        else if (S_ISREG(st.st_mode)) r = write_file(w, dfd, names[i], &st, err);
        else if (S_ISLNK(st.st_mode)) r = write_link(w, dfd, names[i], &st, err);
        if (r != 0) goto out; /* sockets, FIFOs and devices are skipped, as tar does */
    }
    rc = 0;
out:
    w->path[plen] = '\0';
    arc_names_free(names, n);
    return rc;
}

static int write_dir(wctx *w, int pfd, const char *name, const struct stat *st, size_t plen,
                     int depth, sw_err *err)
{
    if (depth > ARC_MAX_DEPTH)
        return sw_errf(err, SW_E_BACKEND, false, "%s: deeper than %d levels", w->path, ARC_MAX_DEPTH);
    int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : arc_errno(err, errno, "open", w->path);
    int rc = put_header(w, st, NULL, err);
    if (rc == 0) rc = walk_dir(w, fd, plen, depth, err);
    close(fd);
    return rc;
}

/* attachments/ is archived only when it is a real, non-empty directory (Onyx's rule). */
static int attachments_wanted(int sfd, struct stat *st, sw_err *err)
{
    char **names = NULL;
    size_t n = 0;
    if (fstatat(sfd, "attachments", st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : arc_errno(err, errno, "stat", "attachments");
    if (!S_ISDIR(st->st_mode)) return 0;
    int fd = openat(sfd, "attachments", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : arc_errno(err, errno, "open", "attachments");
    int rc = arc_names(fd, "attachments", &names, &n, err);
    close(fd);
    arc_names_free(names, n);
    return rc != 0 ? -1 : n > 0;
}

static int open_writer(wctx *w, int gzip_level, sw_err *err)
{
    char level[2] = {(char)('0' + gzip_level), '\0'};
    struct archive *a = w->a = archive_write_new();
    if (!a) return sw_errf(err, SW_E_INTERNAL, true, "archive_write_new failed");
    if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        archive_write_add_filter_gzip(a) != ARCHIVE_OK ||
        archive_write_set_filter_option(a, "gzip", "compression-level", level) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(a, BLOCK_BYTES) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK)
        return ar_fail(w, "setup", err);
    /* No time in the gzip header: an unchanged tree gives the same bytes (and sha256). */
    (void)archive_write_set_filter_option(a, "gzip", "timestamp", NULL);
    if (archive_write_open2(a, w, NULL, write_cb, NULL, NULL) != ARCHIVE_OK) return ar_fail(w, "open", err);
    return 0;
}

/* Layout (docs/archive.md):  outputs/  outputs/...  [attachments/  attachments/...]  */
int arc_write_session(const char *session_dir, int gzip_level, arc_sink_fn sink, void *arg,
                      arc_stats *st, sw_err *err)
{
    int sfd = open(session_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return sw_errf(err, SW_E_WORKSPACE_MISSING, false, "session directory %s: missing",
                           session_dir);
        return arc_errno(err, errno, "open", session_dir);
    }
    int rc = arc_write_session_at(sfd, session_dir, gzip_level, sink, arg, st, err);
    close(sfd);
    return rc;
}

int arc_write_session_at(int sfd, const char *what, int gzip_level, arc_sink_fn sink, void *arg,
                         arc_stats *st, sw_err *err)
{
    return arc_write_session_ex(sfd, what, gzip_level, NULL, NULL, sink, arg, st, err);
}

/* The roots outputs/ and attachments/ are never matched against the excludes: a snapshot
 * always holds outputs/ (it marks the workspace), only what is below them can be left out. */
int arc_write_session_ex(int sfd, const char *what, int gzip_level, const excl *ex,
                         arc_live *live, arc_sink_fn sink, void *arg, arc_stats *st, sw_err *err)
{
    wctx w = {.sink = sink, .sink_arg = arg, .ex = ex, .live = live};
    arc_locale loc;
    struct stat ost, ast;
    int rc = -1, att;
    arc_locale_enter(&loc);
    arc_live_set(live, 0);
    if (gzip_level < 1 || gzip_level > 9) {
        sw_errf(err, SW_E_INTERNAL, false, "gzip level %d not in 1..9", gzip_level);
        goto out;
    }
    if (fstatat(sfd, "outputs", &ost, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(ost.st_mode)) {
        sw_errf(err, SW_E_WORKSPACE_MISSING, false, "%s/outputs: missing or not a directory", what);
    } else if ((att = attachments_wanted(sfd, &ast, err)) >= 0 && open_writer(&w, gzip_level, err) == 0) {
        w.e = archive_entry_new();
        w.buf = xmalloc(READ_CHUNK);
        strcpy(w.path, "outputs");
        rc = write_dir(&w, sfd, "outputs", &ost, strlen(w.path), 1, err);
        if (rc == 0 && att) {
            strcpy(w.path, "attachments");
            rc = write_dir(&w, sfd, "attachments", &ast, strlen(w.path), 1, err);
        }
        if (rc == 0 && archive_write_close(w.a) != ARCHIVE_OK) rc = ar_fail(&w, "close", err);
    }
out:
    if (w.e) archive_entry_free(w.e);
    if (w.a && rc != 0) {
        /* Close anyway, with the sink cut off: libarchive 3.6 frees the gzip state only
         * in close, and free() skips close once the archive is FATAL (a leak). */
        w.aborted = 1;
        archive_write_close(w.a);
    }
    if (w.a) archive_write_free(w.a);
    free(w.buf);
    arc_locale_leave(&loc);
    if (rc == 0 && st) *st = w.st;
    return rc;
}

int arc_write_tree(const char *dir, const char *as, int gzip_level, arc_sink_fn sink, void *arg,
                   arc_stats *st, sw_err *err)
{
    wctx w = {.sink = sink, .sink_arg = arg};
    arc_locale loc;
    struct stat dst;
    int rc = -1, fd = -1;
    arc_locale_enter(&loc);
    if (gzip_level < 1 || gzip_level > 9 || strlen(as) == 0 || strlen(as) > 64) {
        sw_errf(err, SW_E_INTERNAL, false, "arc_write_tree: bad level or name");
        goto out;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &dst) != 0) {
        arc_errno(err, errno, "open", dir);
        err->retryable = false;
        goto out;
    }
    if (open_writer(&w, gzip_level, err) != 0) goto out;
    w.e = archive_entry_new();
    w.buf = xmalloc(READ_CHUNK);
    strcpy(w.path, as);
    rc = write_dir(&w, fd, ".", &dst, strlen(w.path), 1, err);
    if (rc == 0 && archive_write_close(w.a) != ARCHIVE_OK) rc = ar_fail(&w, "close", err);
out:
    if (fd >= 0) close(fd);
    if (w.e) archive_entry_free(w.e);
    if (w.a && rc != 0) {
        w.aborted = 1;
        archive_write_close(w.a);
    }
    if (w.a) archive_write_free(w.a);
    free(w.buf);
    arc_locale_leave(&loc);
    if (rc == 0 && st) *st = w.st;
    return rc;
}
