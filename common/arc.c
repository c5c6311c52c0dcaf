/* common/arc.c — directory-tree helpers of the archive module: arc_rmtree, arc_copytree,
 * and the small pieces arc_write.c / arc_extract.c share (common/arc_priv.h).
 * Owns: fd-relative tree walks that never follow a symlink and never chdir.
 * Does not own: the archive format (arc_write.c, arc_extract.c).
 * Why here: the restore path needs to delete staging folders and lay out a fresh
 * workspace from many executor threads at once, with the same rules as extraction. */
#include "common/arc.h"
#include "common/arc_priv.h"
#include "common/fdio.h"
#include "common/xmalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (256 * 1024)

/* ------------------------------------------------------------------ shared helpers */

/* Permission problems and read-only filesystems will not heal by retrying; the rest
 * (ENOSPC, EIO, EMFILE, ...) may. */
int arc_errno(sw_err *err, int e, const char *op, const char *name)
{
    char buf[128];
    const char *s = strerror_r(e, buf, sizeof buf); /* GNU variant: returns the text */
    bool retryable = !(e == EACCES || e == EPERM || e == EROFS || e == ENAMETOOLONG);
    return sw_errf(err, SW_E_BACKEND, retryable, "%s %s: %s", op, name, s);
}

/* Relaxed: a progress report needs a recent count, not an order with other memory. */
void arc_live_init(arc_live *l)
{
    atomic_init(&l->entries, -1);
}

int64_t arc_live_get(arc_live *l)
{
    return atomic_load_explicit(&l->entries, memory_order_relaxed);
}

void arc_live_set(arc_live *l, int64_t n)
{
    if (l) atomic_store_explicit(&l->entries, n, memory_order_relaxed);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int arc_names(int dfd, const char *what, char ***names, size_t *n, sw_err *err)
{
    char **v = NULL;
    size_t len = 0, cap = 0;
    int rc = -1;
    int fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        arc_errno(err, errno, "opendir", what);
        if (fd >= 0) close(fd);
        goto out;
    }
    rewinddir(d); /* the dup shares its offset with dfd, which may have been read before */
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) { arc_errno(err, errno, "readdir", what); goto out; }
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[len++] = xstrdup(de->d_name);
    }
    if (len > 1) qsort(v, len, sizeof *v, cmp_names);
    rc = 0;
out:
    if (d) closedir(d);
    if (rc != 0) { arc_names_free(v, len); v = NULL; len = 0; }
    *names = v;
    *n = len;
    return rc;
}

void arc_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* One C.UTF-8 locale object for the whole process, made once and never freed: an
 * immutable constant, not state. Loading and unloading it per call would churn glibc's
 * shared locale data under its internal locks for nothing. */
static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;
static locale_t utf8_locale;

static void utf8_init(void)
{
    utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

void arc_locale_enter(arc_locale *l)
{
    pthread_once(&utf8_once, utf8_init);
    l->utf8 = utf8_locale;
    l->prev = l->utf8 ? uselocale(l->utf8) : (locale_t)0;
}

void arc_locale_leave(arc_locale *l)
{
    if (l->utf8) uselocale(l->prev);
    l->utf8 = (locale_t)0;
}

/* ------------------------------------------------------------------ arc_rmtree */

static int rm_contents(int dfd, const char *what, int depth, sw_err *err);

/* 'name' in 'pfd' is a directory (unlinkat said EISDIR): empty it, then remove it.
 * A directory without owner rwx (an archive may restore 0555 or 0000) is opened up first;
 * we own everything under a staging folder, so chmod is enough. */
static int rm_subdir(int pfd, const char *name, const char *what, int depth, sw_err *err)
{
    int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES && fchmodat(pfd, name, 0700, 0) == 0)
        fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        if (errno == ELOOP || errno == ENOTDIR) /* replaced by a non-directory meanwhile */
            return unlinkat(pfd, name, 0) == 0 || errno == ENOENT ? 0
                                                                  : arc_errno(err, errno, "unlink", name);
        return arc_errno(err, errno, "open", name);
    }
    int rc = rm_contents(fd, what, depth + 1, err);
    close(fd);
    if (rc == 0 && unlinkat(pfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        rc = arc_errno(err, errno, "rmdir", name);
    return rc;
}

static int rm_contents(int dfd, const char *what, int depth, sw_err *err)
{
    char **names = NULL;
    size_t n = 0;
    struct stat st;
    int rc = -1;
    if (depth > ARC_MAX_DEPTH) {
        sw_errf(err, SW_E_BACKEND, false, "rmtree %s: deeper than %d levels", what, ARC_MAX_DEPTH);
        goto out;
    }
    if (fstat(dfd, &st) != 0) { arc_errno(err, errno, "stat", what); goto out; }
    if ((st.st_mode & 0700) != 0700 && fchmod(dfd, (st.st_mode & 07777) | 0700) != 0) {
        arc_errno(err, errno, "chmod", what);
        goto out;
    }
    if (arc_names(dfd, what, &names, &n, err) != 0) goto out;
    for (size_t i = 0; i < n; i++) {
        if (unlinkat(dfd, names[i], 0) == 0 || errno == ENOENT) continue;
        if (errno != EISDIR && errno != EPERM) { arc_errno(err, errno, "unlink", names[i]); goto out; }
        if (rm_subdir(dfd, names[i], what, depth, err) != 0) goto out;
    }
    rc = 0;
out:
    arc_names_free(names, n);
    return rc;
}

/* Missing is success; a symlink or file at 'path' is unlinked, never followed. */
int arc_rmtree(const char *path, sw_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : arc_errno(err, errno, "stat", path);
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 || errno == ENOENT ? 0 : arc_errno(err, errno, "unlink", path);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES && chmod(path, 0700) == 0)
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : arc_errno(err, errno, "open", path);
    int rc = rm_contents(fd, path, 1, err);
    close(fd);
    if (rc == 0 && rmdir(path) != 0 && errno != ENOENT) rc = arc_errno(err, errno, "rmdir", path);
    return rc;
}

int arc_rmtree_at(int dfd, const char *name, sw_err *err)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : arc_errno(err, errno, "stat", name);
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dfd, name, 0) == 0 || errno == ENOENT ? 0 : arc_errno(err, errno, "unlink", name);
    return rm_subdir(dfd, name, name, 0, err);
}

/* ------------------------------------------------------------------ arc_copytree */

/* copy_file_range keeps the bytes in the kernel (and reflinks where the filesystem can);
 * fall back to read/write when it refuses this pair of files. */
static int copy_bytes(int in, int out, const char *name, sw_err *err)
{
    char *buf = NULL;
    int rc = -1;
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)1 << 30, 0);
        if (n > 0) continue;
        if (n == 0) { rc = 0; goto out; }
        if (errno == EINTR) continue;
        if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP) break;
        arc_errno(err, errno, "copy", name);
        goto out;
    }
    buf = xmalloc(COPY_CHUNK);
    for (;;) {
        ssize_t n = read(in, buf, COPY_CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { arc_errno(err, errno, "read", name); goto out; }
        if (n == 0) break;
        if (fd_write_all(out, buf, (size_t)n) != 0) { arc_errno(err, errno, "write", name); goto out; }
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

static int copy_file(int sfd, int dfd, const char *name, const struct stat *st, sw_err *err)
{
    int rc = -1, out = -1;
    int in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (in < 0) return errno == ENOENT ? 0 : arc_errno(err, errno, "open", name);
    out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) { arc_errno(err, errno, "create", name); goto out; }
    if (copy_bytes(in, out, name, err) != 0) goto out;
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, st->st_mtim};
    if (fchmod(out, st->st_mode & 0777) != 0 || futimens(out, ts) != 0) {
        arc_errno(err, errno, "chmod/utime", name);
        goto out;
    }
    rc = 0;
out:
    if (out >= 0) close(out);
    close(in);
    return rc;
}

static int copy_link(int sfd, int dfd, const char *name, const struct stat *st, sw_err *err)
{
    char target[ARC_MAX_PATH + 1];
    ssize_t n = readlinkat(sfd, name, target, sizeof target);
    if (n < 0) return errno == ENOENT ? 0 : arc_errno(err, errno, "readlink", name);
    if ((size_t)n >= sizeof target)
        return sw_errf(err, SW_E_BACKEND, false, "readlink %s: target too long", name);
    target[n] = '\0';
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, st->st_mtim};
    if (symlinkat(target, dfd, name) != 0) return arc_errno(err, errno, "symlink", name);
    if (utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) != 0) return arc_errno(err, errno, "utime", name);
    return 0;
}

static int copy_dir(int sfd, int dfd, const char *what, int depth, sw_err *err);

/* mkdir 0700 so we can fill it whatever its final mode; the mode and mtime are set after
 * the contents, because adding entries changes a directory's mtime. */
static int copy_subdir(int sfd, int dfd, const char *name, const struct stat *st, int depth,
                       sw_err *err)
{
    int rc = -1, in = -1, out = -1;
    if (depth > ARC_MAX_DEPTH)
        return sw_errf(err, SW_E_BACKEND, false, "copytree %s: deeper than %d levels", name,
                       ARC_MAX_DEPTH);
    in = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) return errno == ENOENT ? 0 : arc_errno(err, errno, "open", name);
    if (mkdirat(dfd, name, 0700) != 0) { arc_errno(err, errno, "mkdir", name); goto out; }
    out = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (out < 0) { arc_errno(err, errno, "open", name); goto out; }
    if (copy_dir(in, out, name, depth, err) != 0) goto out;
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, st->st_mtim};
    if (fchmod(out, st->st_mode & 0777) != 0 || futimens(out, ts) != 0) {
        arc_errno(err, errno, "chmod/utime", name);
        goto out;
    }
    rc = 0;
out:
    if (out >= 0) close(out);
    close(in);
    return rc;
}

static int copy_dir(int sfd, int dfd, const char *what, int depth, sw_err *err)
{
    char **names = NULL;
    size_t n = 0;
    int rc = -1;
    if (arc_names(sfd, what, &names, &n, err) != 0) goto out;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (fstatat(sfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) continue; /* vanished while we walked */
            arc_errno(err, errno, "stat", names[i]);
            goto out;
        }
        int r = 0;
        if (S_ISDIR(st.st_mode)) r = copy_subdir(sfd, dfd, names[i], &st, depth + 1, err);
        else if (S_ISREG(st.st_mode)) r = copy_file(sfd, dfd, names[i], &st, err);
        else if (S_ISLNK(st.st_mode)) r = copy_link(sfd, dfd, names[i], &st, err);
        if (r != 0) goto out; /* devices, FIFOs and sockets are skipped */
    }
    rc = 0;
out:
    arc_names_free(names, n);
    return rc;
}

int arc_copytree(const char *src, const char *dst, sw_err *err)
{
    return arc_copytree_at(src, AT_FDCWD, dst, err);
}

int arc_copytree_at(const char *src, int dfd, const char *dst, sw_err *err)
{
    int rc = -1, in = -1, out = -1, made = 0;
    struct stat st;
    in = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (in < 0 || fstat(in, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            sw_errf(err, SW_E_BACKEND, false, "copytree: source %s is not a directory", src);
        else
            arc_errno(err, errno, "copytree: open", src);
        goto out;
    }
    if (mkdirat(dfd, dst, 0700) != 0) {
        if (errno == EEXIST) sw_errf(err, SW_E_BACKEND, false, "copytree: destination %s exists", dst);
        else arc_errno(err, errno, "copytree: mkdir", dst);
        goto out;
    }
    made = 1;
    out = openat(dfd, dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (out < 0) { arc_errno(err, errno, "copytree: open", dst); goto out; }
    if (copy_dir(in, out, src, 1, err) != 0) goto out;
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, st.st_mtim};
    if (fchmod(out, (st.st_mode & 0777) | 0700) != 0 || futimens(out, ts) != 0) {
        arc_errno(err, errno, "copytree: chmod/utime", dst);
        goto out;
    }
    rc = 0;
out:
    if (out >= 0) close(out);
    if (in >= 0) close(in);
    if (rc != 0 && made) {
        sw_err e2;
        if (dfd == AT_FDCWD) arc_rmtree(dst, &e2);
        else arc_rmtree_at(dfd, dst, &e2);
    }
    return rc;
}
