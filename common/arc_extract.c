/* common/arc_extract.c — extract an untrusted tar(.gz|.zst) stream safely into a folder.
 * Owns: member-name validation, the refusal rules, the size/entry limits, and writing
 * every entry with openat()/mkdirat()/symlinkat()/linkat() below a dirfd of dest_dir.
 * Does not own: fetching the bytes (the source callback), staging or swapping folders.
 * Why not archive_write_disk: it chdir()s for long paths and resolves relative to the
 * process cwd, which breaks a multi-threaded worker, and it does not check where a
 * symlink points. Here no path is ever resolved by the kernel through a symlink: each
 * directory is opened O_DIRECTORY|O_NOFOLLOW one component at a time (docs/archive.md).
 * Decompression runs on a thread of its own, like `tar -xz` runs gzip in a second process:
 * inflating and writing the files each take about half of a restore, so on two cores the
 * two halves overlap (docs/benchmarks.md). */
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IN_CHUNK (256 * 1024)    /* bytes asked of the source per call */
#define OUT_CHUNK (256 * 1024)   /* file bytes gathered per write(2) */
#define CACHE_DEPTH 32           /* directory fds kept open per extraction */
#define RING_SLOTS 4             /* inflated IN_CHUNKs between the two threads (1 MiB) */

/* The decompressing side: a libarchive "raw" reader (gzip, zstd or none) over the source,
 * filling a ring of buffers that the tar reader of the calling thread takes in order. */
typedef struct inflater {
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned char *slot[RING_SLOTS];
    size_t len[RING_SLOTS];
    int head, count;             /* oldest filled slot; filled slots */
    int held;                    /* the tar reader still uses slot[head] */
    int eof, stop;
    int failed;                  /* err says why (the source's error, or a corrupt stream) */
    sw_err err;
    struct archive *raw;
    arc_source_fn source;
    void *src_arg;
    unsigned char *inbuf;        /* IN_CHUNK: compressed bytes from the source */
    int src_failed;
    sw_err src_err;
} inflater;

typedef struct dir_rec {         /* a directory whose mode/mtime is set at the end */
    char *name;                  /* member name, normalized */
    mode_t mode;                 /* permission bits, already stripped */
    struct timespec mtime;       /* tv_nsec = UTIME_OMIT when unknown */
    size_t seq;                  /* arrival order: the last record of a name wins */
} dir_rec;

typedef struct xctx {
    struct archive *a;           /* the tar reader, over the inflater's ring */
    inflater inf;
    sw_err src_err;              /* why the stream failed: the source's own error passed
                                  * through unchanged, or the inflater's */
    int src_failed;
    unsigned char *obuf;         /* OUT_CHUNK */
    size_t olen;                 /* bytes waiting in obuf */
    int root;                    /* dirfd of dest_dir */
    int cfd[CACHE_DEPTH + 1];    /* cfd[i] = fd of the first i components of the cached path; cfd[0] = root */
    size_t cend[CACHE_DEPTH + 1]; /* name[0..cend[i]) is that prefix */
    int cdepth;                  /* cached levels in use (cfd[1..cdepth]) */
    char cpath[ARC_MAX_PATH + 1]; /* the cached path (a prefix of the last parent) */
    dir_rec *dirs;
    size_t ndirs, capdirs;
    arc_limits lim;
    arc_stats st;
    arc_live *live;              /* st.entries as it grows (borrowed, may be NULL) */
    char name[ARC_MAX_PATH + 1]; /* the current member, normalized */
} xctx;

/* ------------------------------------------------------------------ errors */

static int unsafe(sw_err *err, const char *name, const char *why)
{
    return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "member %s: %s", name, why);
}

/* libarchive failed: the source's error when it was the source, else a corrupt stream. */
static int corrupt(xctx *x, const char *name, sw_err *err)
{
    if (x->src_failed) {
        if (err) *err = x->src_err;
        if (err && err->code == SW_OK) sw_errf(err, SW_E_STORAGE, true, "archive source failed");
        return -1;
    }
    const char *s = archive_error_string(x->a);
    if (name && *name)
        return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "corrupt archive: at %s: %s", name,
                       s ? s : "unreadable");
    return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "corrupt archive: %s", s ? s : "unreadable");
}

/* ------------------------------------------------------------------ inflate thread */

static la_ssize_t raw_read_cb(struct archive *a, void *p, const void **buf)
{
    inflater *f = p;
    ssize_t n = f->source(f->src_arg, f->inbuf, IN_CHUNK, &f->src_err);
    if (n < 0) {
        f->src_failed = 1;
        archive_set_error(a, EIO, "source failed");
        return -1;
    }
    *buf = f->inbuf;
    return (la_ssize_t)n;
}

/* Inflate into the next free slot until the stream ends, fails, or stop is set. */
static void *inflate_main(void *p)
{
    inflater *f = p;
    struct archive_entry *e;
    sw_err err;
    sw_err_clear(&err);
    int r = archive_read_next_header(f->raw, &e);
    int done = r == ARCHIVE_EOF, failed = r != ARCHIVE_OK && r != ARCHIVE_EOF;
    while (!done && !failed) {
        pthread_mutex_lock(&f->mu);
        while (f->count == RING_SLOTS && !f->stop) pthread_cond_wait(&f->cv, &f->mu);
        int stop = f->stop, i = (f->head + f->count) % RING_SLOTS;
        pthread_mutex_unlock(&f->mu);
        if (stop) break;
        la_ssize_t n = archive_read_data(f->raw, f->slot[i], IN_CHUNK);
        if (n < 0) {
            failed = 1;
            break;
        }
        if (n == 0) {
            done = 1;
            break;
        }
        pthread_mutex_lock(&f->mu);
        f->len[i] = (size_t)n;
        f->count++;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    }
    if (failed) {
        if (f->src_failed) err = f->src_err;
        if (!f->src_failed || err.code == SW_OK) {
            const char *s = archive_error_string(f->raw);
            sw_errf(&err, SW_E_UNSAFE_ARCHIVE, false, "corrupt archive: %s", s ? s : "unreadable");
        }
    }
    pthread_mutex_lock(&f->mu);
    f->eof = done;
    f->failed = failed;
    f->err = err;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

static int inflate_start(xctx *x, arc_source_fn source, void *arg, sw_err *err)
{
    inflater *f = &x->inf;
    f->source = source;
    f->src_arg = arg;
    f->inbuf = xmalloc(IN_CHUNK);
    for (int i = 0; i < RING_SLOTS; i++) f->slot[i] = xmalloc(IN_CHUNK);
    struct archive *a = f->raw = archive_read_new();
    if (!a) return sw_errf(err, SW_E_INTERNAL, true, "archive_read_new failed");
    if (archive_read_support_format_raw(a) != ARCHIVE_OK ||
        archive_read_support_filter_gzip(a) != ARCHIVE_OK ||
        archive_read_support_filter_zstd(a) < ARCHIVE_WARN ||
        archive_read_support_filter_none(a) != ARCHIVE_OK)
        return sw_errf(err, SW_E_INTERNAL, true, "archive setup: %s", archive_error_string(a));
    if (archive_read_open(a, f, NULL, raw_read_cb, NULL) != ARCHIVE_OK) {
        if (f->src_failed) {
            if (err) *err = f->src_err;
            return -1;
        }
        const char *s = archive_error_string(a);
        return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "corrupt archive: %s", s ? s : "unreadable");
    }
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 512 * 1024);
    int rc = pthread_create(&f->th, &at, inflate_main, f);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
        return sw_errf(err, SW_E_INTERNAL, true, "cannot start the inflate thread: %s", strerror(rc));
    }
    f->started = 1;
    return 0;
}

/* Stop the thread wherever it is (at most one more IN_CHUNK is read) and free it all. */
static void inflate_stop(inflater *f)
{
    if (f->started) {
        pthread_mutex_lock(&f->mu);
        f->stop = 1;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->th, NULL);
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
        f->started = 0;
    }
    if (f->raw) archive_read_free(f->raw);
    f->raw = NULL;
    for (int i = 0; i < RING_SLOTS; i++) free(f->slot[i]);
    free(f->inbuf);
}

/* The tar reader's source: the ring, in order. A slot handed out stays ours until the
 * next call (libarchive's rule for read callbacks), then it goes back to the thread. */
static la_ssize_t read_cb(struct archive *a, void *p, const void **buf)
{
    xctx *x = p;
    inflater *f = &x->inf;
    pthread_mutex_lock(&f->mu);
    if (f->held) {
        f->held = 0;
        f->head = (f->head + 1) % RING_SLOTS;
        f->count--;
        pthread_cond_broadcast(&f->cv);
    }
    while (f->count == 0 && !f->eof && !f->failed) pthread_cond_wait(&f->cv, &f->mu);
    la_ssize_t n = 0;
    if (f->count > 0) {
        f->held = 1;
        *buf = f->slot[f->head];
        n = (la_ssize_t)f->len[f->head];
    } else if (f->failed) {
        x->src_failed = 1;
        x->src_err = f->err;
        n = -1;
    }
    pthread_mutex_unlock(&f->mu);
    if (n < 0) archive_set_error(a, EIO, "source failed");
    return n;
}

/* Member names and symlink targets are checked by the rules in arc_check.c (arc_priv.h),
 * the same ones arc_check() applies without writing. */

/* ------------------------------------------------------------------ directories */

static void add_dir(xctx *x, const char *name, size_t len, mode_t mode, struct timespec mtime)
{
    if (x->ndirs == x->capdirs) {
        x->capdirs = x->capdirs ? x->capdirs * 2 : 64;
        x->dirs = xrealloc(x->dirs, x->capdirs * sizeof *x->dirs);
    }
    x->dirs[x->ndirs] = (dir_rec){xstrndup(name, len), mode, mtime, x->ndirs};
    x->ndirs++;
}

/* Open directory 'comp' (length clen) in 'pfd' without following a symlink; when 'create',
 * make it (0700 until the end) if missing and remember it as an implicit 0755 folder. */
static int step(xctx *x, int pfd, const char *name, size_t upto, size_t cstart, int create, sw_err *err)
{
    char comp[NAME_MAX + 1];
    memcpy(comp, name + cstart, upto - cstart);
    comp[upto - cstart] = '\0';
    for (int tries = 0; tries < 2; tries++) {
        int fd = openat(pfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) return fd;
        if (errno == ELOOP || errno == ENOTDIR)
            return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false,
                           "member %s: writing through a symlink or non-directory %.*s", name, (int)upto, name);
        if (errno != ENOENT || !create || tries) return arc_errno(err, errno, "open", name);
        if (mkdirat(pfd, comp, 0700) != 0 && errno != EEXIST) return arc_errno(err, errno, "mkdir", name);
        add_dir(x, name, upto, 0755, (struct timespec){.tv_nsec = UTIME_OMIT});
    }
    return -1; /* not reached */
}

/* A dirfd for the folder holding member 'name' and its last component in *leaf. The walk
 * reuses the open fds of the previous member's folder (tar lists siblings together);
 * deeper than CACHE_DEPTH it uses temporary fds and *owned says the caller closes it. */
static int open_parent(xctx *x, const char *name, int create, const char **leaf, int *owned, sw_err *err)
{
    const char *slash = strrchr(name, '/');
    size_t plen = slash ? (size_t)(slash - name) : 0;
    int keep = 0, fd;
    *owned = 0;
    *leaf = slash ? slash + 1 : name;
    while (keep < x->cdepth && x->cend[keep + 1] <= plen && name[x->cend[keep + 1]] == '/' &&
           !memcmp(x->cpath, name, x->cend[keep + 1]))
        keep++;
    if (plen == 0) keep = 0;
    while (x->cdepth > keep) close(x->cfd[x->cdepth--]);
    fd = x->cfd[keep];
    for (size_t pos = x->cend[keep]; slash && pos < plen;) {
        size_t cstart = pos ? pos + 1 : 0, upto = cstart;
        while (upto < plen && name[upto] != '/') upto++;
        int nfd = step(x, fd, name, upto, cstart, create, err);
        if (*owned) close(fd);
        if (nfd < 0) return -1;
        fd = nfd;
        if (x->cdepth < CACHE_DEPTH && !*owned) {
            x->cfd[++x->cdepth] = fd;
            x->cend[x->cdepth] = upto;
            memcpy(x->cpath, name, upto);
        } else {
            *owned = 1;
        }
        pos = upto;
    }
    return fd;
}

static void drop_cache(xctx *x)
{
    while (x->cdepth > 0) close(x->cfd[x->cdepth--]);
}

static int cmp_dir_desc(const void *a, const void *b)
{
    const dir_rec *l = a, *r = b;
    int c = strcmp(r->name, l->name);
    return c ? c : (r->seq > l->seq) - (r->seq < l->seq);
}

/* Modes and mtimes of directories, set once everything is written (adding an entry
 * changes a directory's mtime; a 0555 folder cannot be filled). Reverse name order puts
 * every folder before its parent, so no folder is closed to us before its children. */
static int apply_dirs(xctx *x, sw_err *err)
{
    if (x->ndirs > 1) qsort(x->dirs, x->ndirs, sizeof *x->dirs, cmp_dir_desc);
    for (size_t i = 0; i < x->ndirs; i++) {
        dir_rec *d = &x->dirs[i];
        if (i > 0 && !strcmp(d->name, x->dirs[i - 1].name)) continue; /* older record */
        const char *leaf;
        int owned, rc = -1;
        int pfd = open_parent(x, d->name, 0, &leaf, &owned, err);
        if (pfd < 0) return -1;
        int fd = openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, d->mtime};
        if (fd < 0) arc_errno(err, errno, "open", d->name);
        else if (fchmod(fd, d->mode) != 0 || futimens(fd, ts) != 0) arc_errno(err, errno, "chmod/utime", d->name);
        else rc = 0;
        if (fd >= 0) close(fd);
        if (owned) close(pfd);
        if (rc != 0) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ entries */

static int put_bytes(xctx *x, int fd, const unsigned char *p, size_t n, sw_err *err)
{
    if (fd_write_all(fd, p, n) < 0) return arc_errno(err, errno, "write", x->name);
    return 0;
}

static int flush_out(xctx *x, int fd, sw_err *err)
{
    size_t n = x->olen;
    x->olen = 0;
    return put_bytes(x, fd, x->obuf, n, err);
}

/* Copy the member's data into fd through obuf. Blocks normally arrive back to back; a
 * sparse member jumps ahead, which becomes a hole (lseek, then ftruncate at the end). */
static int write_data(xctx *x, int fd, int64_t size, sw_err *err)
{
    int64_t fpos = 0; /* file offset of obuf[0] */
    x->olen = 0;
    for (;;) {
        const void *buf;
        size_t n;
        la_int64_t off;
        int r = archive_read_data_block(x->a, &buf, &n, &off);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK) return corrupt(x, x->name, err);
        if (off < 0 || off > size || (int64_t)n > size - off)
            return sw_errf(err, SW_E_UNSAFE_ARCHIVE, false, "corrupt archive: at %s: data past its size", x->name);
        if (off != fpos + (int64_t)x->olen) {
            if (flush_out(x, fd, err) != 0) return -1;
            if (lseek(fd, off, SEEK_SET) < 0) return arc_errno(err, errno, "seek", x->name);
            fpos = off;
        }
        if (x->olen + n > OUT_CHUNK) {
            fpos += (int64_t)x->olen;
            if (flush_out(x, fd, err) != 0) return -1;
        }
        if (n >= OUT_CHUNK) { /* large block: write it in place */
            if (put_bytes(x, fd, buf, n, err) != 0) return -1;
            fpos += (int64_t)n;
            continue;
        }
        memcpy(x->obuf + x->olen, buf, n);
        x->olen += n;
    }
    fpos += (int64_t)x->olen;
    if (flush_out(x, fd, err) != 0) return -1;
    if (fpos < size && ftruncate(fd, size) != 0) return arc_errno(err, errno, "truncate", x->name);
    return 0;
}

static struct timespec entry_mtime(struct archive_entry *e)
{
    if (!archive_entry_mtime_is_set(e)) return (struct timespec){.tv_nsec = UTIME_OMIT};
    return (struct timespec){archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
}

/* Permission bits only: setuid, setgid and sticky are stripped (docs/archive.md). */
static mode_t entry_mode(struct archive_entry *e)
{
    return archive_entry_perm(e) & 0777;
}

static int do_file(xctx *x, struct archive_entry *e, int pfd, const char *leaf, sw_err *err)
{
    int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    int rc = -1;
    if (size < 0) return unsafe(err, x->name, "negative size");
    if (x->lim.max_bytes > 0 && size > x->lim.max_bytes - x->st.bytes)
        return sw_errf(err, SW_E_ARCHIVE_TOO_LARGE, false,
                       "archive holds more than %lld bytes (member %s, %lld bytes)",
                       (long long)x->lim.max_bytes, x->name, (long long)size);
    x->st.bytes += size;
    int fd = openat(pfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST) return unsafe(err, x->name, "duplicate member (the name is taken)");
        return arc_errno(err, errno, "create", x->name);
    }
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, entry_mtime(e)};
    if (write_data(x, fd, size, err) != 0) goto out;
    if (fchmod(fd, entry_mode(e)) != 0 || futimens(fd, ts) != 0) {
        arc_errno(err, errno, "chmod/utime", x->name);
        goto out;
    }
    rc = 0;
out:
    if (close(fd) != 0 && rc == 0) rc = arc_errno(err, errno, "close", x->name);
    return rc;
}

static int do_dir(xctx *x, struct archive_entry *e, int pfd, const char *leaf, sw_err *err)
{
    struct stat st;
    if (mkdirat(pfd, leaf, 0700) != 0) {
        if (errno != EEXIST) return arc_errno(err, errno, "mkdir", x->name);
        if (fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0) return arc_errno(err, errno, "stat", x->name);
        if (!S_ISDIR(st.st_mode)) return unsafe(err, x->name, "directory over an existing non-directory");
    }
    add_dir(x, x->name, strlen(x->name), entry_mode(e), entry_mtime(e));
    return 0;
}

static int do_symlink(xctx *x, struct archive_entry *e, int pfd, const char *leaf, sw_err *err)
{
    const char *target = archive_entry_symlink(e);
    if (arc_check_target(x->name, target, err) != 0) return -1;
    if (symlinkat(target, pfd, leaf) != 0) {
        if (errno == EEXIST) return unsafe(err, x->name, "duplicate member (the name is taken)");
        return arc_errno(err, errno, "symlink", x->name);
    }
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, entry_mtime(e)};
    if (utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW) != 0) return arc_errno(err, errno, "utime", x->name);
    return 0;
}

/* The folder of 'name', opened from 'root' without the cache and without creating
 * anything; -1 with errno when a component is missing, a symlink or not a folder. */
static int walk_plain(int root, const char *name, const char **leaf)
{
    char comp[NAME_MAX + 1];
    const char *p = name, *s;
    int fd = fcntl(root, F_DUPFD_CLOEXEC, 0);
    while (fd >= 0 && (s = strchr(p, '/'))) {
        memcpy(comp, p, (size_t)(s - p));
        comp[s - p] = '\0';
        int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(fd);
        errno = e;
        fd = nfd;
        p = s + 1;
    }
    *leaf = p;
    return fd;
}

/* The target must be a regular file this archive already wrote (dest_dir started empty).
 * It is found with its own walk, so the cache keeps serving the link's folder 'pfd'.
 * Data carried by a hard-link member is ignored. */
static int do_hardlink(xctx *x, const char *target, int pfd, const char *leaf, sw_err *err)
{
    char tname[ARC_MAX_PATH + 1];
    const char *tleaf;
    struct stat st;
    int rc = -1;
    int r = arc_normalize(target, tname, x->name, "hard link target: ", err);
    if (r != 0) return r > 0 ? unsafe(err, x->name, "hard link to the archive root") : -1;
    int tfd = walk_plain(x->root, tname, &tleaf);
    if (tfd < 0 && errno != ENOENT && errno != ELOOP && errno != ENOTDIR)
        arc_errno(err, errno, "open", tname);
    else if (tfd < 0 || fstatat(tfd, tleaf, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        unsafe(err, x->name, "hard link target is not a regular file already extracted");
    else if (linkat(tfd, tleaf, pfd, leaf, 0) != 0) {
        if (errno == EEXIST) unsafe(err, x->name, "duplicate member (the name is taken)");
        else arc_errno(err, errno, "link", x->name);
    } else rc = 0;
    if (tfd >= 0) close(tfd);
    return rc;
}

/* ------------------------------------------------------------------ the loop */

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

/* One member: limits first, then its name, then its type. Nothing is written for a
 * member that is refused. */
static int do_entry(xctx *x, struct archive_entry *e, sw_err *err)
{
    const char *raw = archive_entry_pathname(e), *leaf, *hard = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    int owned = 0, rc = -1, pfd;
    if (x->lim.max_entries > 0 && x->st.entries >= x->lim.max_entries)
        return sw_errf(err, SW_E_ARCHIVE_TOO_LARGE, false, "archive has more than %lld entries (at %s)",
                       (long long)x->lim.max_entries, raw ? raw : "?");
    arc_live_set(x->live, ++x->st.entries);
    int r = arc_normalize(raw, x->name, raw, "", err);
    if (r != 0) return r > 0 ? 0 : -1;
    if (!hard && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
        return unsafe(err, x->name, type_name(type));
    if (!strchr(x->name, '/') && (hard || type != AE_IFDIR))
        return unsafe(err, x->name, "top-level outputs/attachments must be a directory");
    if ((pfd = open_parent(x, x->name, 1, &leaf, &owned, err)) < 0) return -1;
    if (hard) rc = do_hardlink(x, hard, pfd, leaf, err);
    else if (type == AE_IFREG) rc = do_file(x, e, pfd, leaf, err);
    else if (type == AE_IFDIR) rc = do_dir(x, e, pfd, leaf, err);
    else rc = do_symlink(x, e, pfd, leaf, err);
    if (owned) close(pfd);
    return rc;
}

static int open_reader(xctx *x, arc_source_fn source, void *arg, sw_err *err)
{
    if (inflate_start(x, source, arg, err) != 0) return -1;
    struct archive *a = x->a = archive_read_new();
    if (!a) return sw_errf(err, SW_E_INTERNAL, true, "archive_read_new failed");
    if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
        archive_read_support_filter_none(a) != ARCHIVE_OK)
        return sw_errf(err, SW_E_INTERNAL, true, "archive setup: %s", archive_error_string(a));
    if (archive_read_open(a, x, NULL, read_cb, NULL) != ARCHIVE_OK) return corrupt(x, NULL, err);
    return 0;
}

/* dest_dir must be an empty folder: "already extracted" means "written by this call". */
static int open_dest(xctx *x, int dest_fd, const char *dest_dir, sw_err *err)
{
    char **names = NULL;
    size_t n = 0;
    x->root = dest_fd >= 0 ? fcntl(dest_fd, F_DUPFD_CLOEXEC, 0)
                           : open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (x->root < 0) return arc_errno(err, errno, "open", dest_dir);
    if (arc_names(x->root, dest_dir, &names, &n, err) != 0) return -1;
    arc_names_free(names, n);
    if (n > 0) return sw_errf(err, SW_E_INTERNAL, false, "extract: %s is not empty", dest_dir);
    x->cfd[0] = x->root;
    return 0;
}

int arc_extract(arc_source_fn source, void *arg, const char *dest_dir, const arc_limits *lim,
                arc_stats *st, sw_err *err)
{
    return arc_extract_at(source, arg, -1, dest_dir, lim, NULL, st, err);
}

/* dest_fd < 0: open 'dest_dir' by path (arc_extract). */
int arc_extract_at(arc_source_fn source, void *arg, int dest_fd, const char *dest_dir,
                   const arc_limits *lim, arc_live *live, arc_stats *st, sw_err *err)
{
    xctx *x = xcalloc(1, sizeof *x);
    arc_locale loc;
    int rc = -1;
    x->root = -1;
    x->live = live;
    arc_live_set(live, 0);
    if (lim) x->lim = *lim;
    arc_locale_enter(&loc);
    if (open_dest(x, dest_fd, dest_dir, err) != 0) goto out;
    x->obuf = xmalloc(OUT_CHUNK);
    if (open_reader(x, source, arg, err) != 0) goto out;
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(x->a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) { corrupt(x, NULL, err); goto out; }
        if (do_entry(x, e, err) != 0) goto out;
    }
    if (apply_dirs(x, err) != 0) goto out;
    rc = 0;
out:
    drop_cache(x);
    if (x->root >= 0) close(x->root);
    if (x->a) archive_read_free(x->a);
    inflate_stop(&x->inf);
    for (size_t i = 0; i < x->ndirs; i++) free(x->dirs[i].name);
    free(x->dirs);
    free(x->obuf);
    arc_locale_leave(&loc);
    if (rc == 0 && st) *st = x->st;
    free(x);
    return rc;
}
