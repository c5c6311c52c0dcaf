/* common/store_file.c — the file:///ROOT backend: object KEY is the plain file ROOT/KEY.
 * Owns: write-once publication on a local filesystem (temp file in the same folder,
 * fsync, renameat2(RENAME_NOREPLACE) or link(2), fsync of the folder), the walk
 * behind list, and the sweep of orphaned temp files. Does not own hashing or the
 * sidecar (store.c) nor key validation (keys arrive checked).
 * Why a temp file in the same folder: a rename or link is atomic only within one
 * filesystem, and a reader must see no object or the whole one; NOREPLACE/link
 * because an object is never replaced (store.h: the first commit wins). Temp files
 * are named ".swtmp-<hex>" (a segment no key may start with) and are hidden from
 * list; a crash can leave one behind, swept by fs_gc once older than the grace. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fdio.h"
#include "common/store.h"
#include "common/xmalloc.h"

#define TMP_PREFIX ".swtmp-"

typedef struct fstore {
    char *root;           /* absolute, no trailing '/' (except "/" itself) */
} fstore;

typedef struct fwriter {
    char *path;           /* ROOT/KEY */
    char *tmp;            /* ROOT/dir/.swtmp-XXXX, unlinked unless renamed */
    int fd;               /* open on tmp, -1 once closed */
} fwriter;

typedef struct freader {
    int fd;
    char *path;
} freader;

/* errno values another attempt may cure (space freed, disk back, fds released). */
static bool errno_retryable(int e)
{
    return e == ENOSPC || e == EIO || e == EDQUOT || e == EAGAIN || e == EINTR || e == EMFILE ||
           e == ENFILE || e == ENOMEM || e == EBUSY || e == ESTALE;
}

static int ferr(sw_err *err, int e, const char *what, const char *path)
{
    return sw_errf(err, SW_E_STORAGE, errno_retryable(e), "file store: %s %.150s: %s", what, path,
                   strerror(e));
}

static char *obj_path(const fstore *fs, const char *key)
{
    return strcmp(fs->root, "/") == 0 ? xasprintf("/%s", key) : xasprintf("%s/%s", fs->root, key);
}

void *store_file_new(const char *root, sw_err *err)
{
    if (!root || root[0] != '/')
        return sw_errf(err, SW_E_STORAGE, false, "file store: root must be absolute"), NULL;
    fstore *fs = xcalloc(1, sizeof *fs);
    fs->root = xstrdup(root);
    return fs;
}

static void fs_close(void *impl)
{
    fstore *fs = impl;
    if (!fs) return;
    free(fs->root);
    free(fs);
}

/* mkdir -p of every component of 'dir' (absolute). */
static int mkdir_p(const char *dir, sw_err *err)
{
    char *p = xstrdup(dir);
    int rc = -1;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char save = *s;
        *s = '\0';
        if (mkdir(p, 0777) < 0 && errno != EEXIST) {
            ferr(err, errno, "mkdir", p);
            goto out;
        }
        *s = save;
        if (!save) break;
    }
    rc = 0;
out:
    free(p);
    return rc;
}

static int fsync_dir(const char *dir, sw_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ferr(err, errno, "open folder", dir);
    int rc = 0;
    if (fsync(fd) < 0 && errno != EINVAL) rc = ferr(err, errno, "fsync folder", dir);
    close(fd);
    return rc;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
}

/* ---- put ---------------------------------------------------------------------- */

static void *fs_put_begin(void *impl, const char *key, sw_err *err)
{
    fstore *fs = impl;
    fwriter *w = xcalloc(1, sizeof *w);
    w->fd = -1;
    w->path = obj_path(fs, key);
    char *dir = dir_of(w->path);
    if (mkdir_p(dir, err) < 0) goto fail;
    for (int tries = 0; tries < 8 && w->fd < 0; tries++) {
        uint64_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
            rnd = ((uint64_t)getpid() << 20) + (uint64_t)time(NULL) * 31u + (uint64_t)tries;
        free(w->tmp);
        w->tmp = xasprintf("%s/" TMP_PREFIX "%016llx", dir, (unsigned long long)rnd);
        w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (w->fd < 0 && errno != EEXIST) {
            ferr(err, errno, "create", w->tmp);
            goto fail;
        }
    }
    if (w->fd < 0) {
        ferr(err, EEXIST, "create", w->tmp);
        goto fail;
    }
    free(dir);
    return w;
fail:
    free(dir);
    free(w->tmp);
    free(w->path);
    free(w);
    return NULL;
}

static int fs_put_write(void *wp, const void *buf, size_t n, sw_err *err)
{
    fwriter *w = wp;
    if (fd_write_all(w->fd, buf, n) < 0) return ferr(err, errno, "write", w->tmp);
    return 0;
}

static void fs_put_abort(void *wp)
{
    fwriter *w = wp;
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmp) unlink(w->tmp);
    free(w->tmp);
    free(w->path);
    free(w);
}

/* Give tmp the name path unless path exists: 0 done, 1 path exists (tmp kept),
 * -1 with errno. renameat2(RENAME_NOREPLACE) where the filesystem has it, else
 * link(2) + unlink (a crash between the two leaves a second name of the object
 * under .swtmp-*: the sweep removes that name, never the object). */
static int publish_noreplace(const char *tmp, const char *path)
{
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0) return 0;
    if (errno == EEXIST) return 1;
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return -1;
    if (link(tmp, path) < 0) return errno == EEXIST ? 1 : -1;
    unlink(tmp);
    return 0;
}

static int fs_put_commit(void *wp, sw_err *err)
{
    fwriter *w = wp;
    int rc = -1;
    char *dir = dir_of(w->path);
    if (fsync(w->fd) < 0) {
        ferr(err, errno, "fsync", w->tmp);
        goto out;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) < 0) {
        ferr(err, errno, "close", w->tmp);
        goto out;
    }
    int p = publish_noreplace(w->tmp, w->path);
    if (p < 0) {
        ferr(err, errno, "publish", w->path);
        goto out;
    }
    if (p == 1) {                      /* the first commit won: ours is discarded below */
        rc = 1;
        goto out;
    }
    free(w->tmp);
    w->tmp = NULL;                     /* published: nothing to unlink any more */
    rc = fsync_dir(dir, err);
out:
    free(dir);
    fs_put_abort(w);
    return rc;
}

/* ---- get / head ------------------------------------------------------------------ */

static int not_found(sw_err *err, const char *path)
{
    return sw_errf(err, SW_E_SNAPSHOT_NOT_FOUND, false, "file store: no object %.180s", path);
}

static void *fs_get_open(void *impl, const char *key, int64_t *size_out, sw_err *err)
{
    fstore *fs = impl;
    char *path = obj_path(fs, key);
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) not_found(err, path);
        else ferr(err, errno, "open", path);
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        ferr(err, errno, "stat", path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        not_found(err, path);
        goto fail;
    }
    if (size_out) *size_out = (int64_t)st.st_size;
    freader *r = xcalloc(1, sizeof *r);
    r->fd = fd;
    r->path = path;
    return r;
fail:
    if (fd >= 0) close(fd);
    free(path);
    return NULL;
}

static ssize_t fs_get_read(void *rp, void *buf, size_t n, sw_err *err)
{
    freader *r = rp;
    for (;;) {
        ssize_t got = read(r->fd, buf, n);
        if (got >= 0) return got;
        if (errno != EINTR) return ferr(err, errno, "read", r->path);
    }
}

static void fs_get_close(void *rp)
{
    freader *r = rp;
    if (!r) return;
    close(r->fd);
    free(r->path);
    free(r);
}

static int fs_head(void *impl, const char *key, int64_t *size_out, sw_err *err)
{
    fstore *fs = impl;
    char *path = obj_path(fs, key);
    struct stat st;
    int rc = -1;
    if (stat(path, &st) < 0) {
        if (errno == ENOENT || errno == ENOTDIR) not_found(err, path);
        else ferr(err, errno, "stat", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        not_found(err, path);
        goto out;
    }
    *size_out = (int64_t)st.st_size;
    rc = 0;
out:
    free(path);
    return rc;
}

/* ---- delete / list ------------------------------------------------------------------ */

static int fs_del(void *impl, const char *key, sw_err *err)
{
    fstore *fs = impl;
    char *path = obj_path(fs, key);
    int rc = 0;
    if (unlink(path) < 0) {
        /* absent, or a folder of other keys: either way no object KEY */
        if (errno != ENOENT && errno != ENOTDIR && errno != EISDIR) rc = ferr(err, errno, "unlink", path);
    } else {
        char *dir = dir_of(path);
        rc = fsync_dir(dir, err);
        free(dir);
    }
    free(path);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct walk {
    const char *prefix;
    size_t prefix_len;
    int (*cb)(void *arg, const char *key, int64_t size, int64_t mtime);
    void *arg;
    int stopped;          /* cb asked to stop */
} walk;

/* Does a folder whose keys all start with 'rel' (ending in '/') hold candidates? */
static bool may_match(const walk *wk, const char *rel, size_t rl)
{
    size_t m = rl < wk->prefix_len ? rl : wk->prefix_len;
    return strncmp(rel, wk->prefix, m) == 0;
}

/* Visit folder 'dirpath' whose keys start with 'rel' ("" at the root). */
static int walk_dir(walk *wk, const char *dirpath, const char *rel, sw_err *err)
{
    DIR *d = opendir(dirpath);
    char **names = NULL;
    size_t nn = 0, cap = 0;
    int rc = -1;
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR) return 0;
        return ferr(err, errno, "opendir", dirpath);
    }
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) {
                ferr(err, errno, "readdir", dirpath);
                goto out;
            }
            break;
        }
        const char *nm = de->d_name;
        if (!strcmp(nm, ".") || !strcmp(nm, "..") || !strncmp(nm, TMP_PREFIX, strlen(TMP_PREFIX)))
            continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 32;
            names = xrealloc(names, cap * sizeof *names);
        }
        names[nn++] = xstrdup(nm);
    }
    if (nn > 1) qsort(names, nn, sizeof *names, cmp_names);
    for (size_t i = 0; i < nn && !wk->stopped; i++) {
        char *childrel = xasprintf("%s%s", rel, names[i]);
        char *childpath = xasprintf("%s/%s", dirpath, names[i]);
        size_t cl = strlen(childrel);
        struct stat st;
        int r2 = 0;
        if (lstat(childpath, &st) < 0) {
            if (errno != ENOENT) r2 = ferr(err, errno, "stat", childpath);
        } else if (S_ISDIR(st.st_mode)) {
            char *sub = xasprintf("%s/", childrel);
            if (may_match(wk, sub, cl + 1)) r2 = walk_dir(wk, childpath, sub, err);
            free(sub);
        } else if (S_ISREG(st.st_mode) && cl >= wk->prefix_len &&
                   strncmp(childrel, wk->prefix, wk->prefix_len) == 0) {
            if (wk->cb(wk->arg, childrel, (int64_t)st.st_size, (int64_t)st.st_mtime) != 0)
                wk->stopped = 1;
        }
        free(childrel);
        free(childpath);
        if (r2 < 0) goto out;
    }
    rc = 0;
out:
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

static int fs_list(void *impl, const char *prefix,
                   int (*cb)(void *arg, const char *key, int64_t size, int64_t mtime), void *arg,
                   sw_err *err)
{
    fstore *fs = impl;
    walk wk = {prefix, strlen(prefix), cb, arg, 0};
    return walk_dir(&wk, fs->root, "", err);
}

/* ---- orphans ------------------------------------------------------------------------ */

typedef struct gcwalk {
    const char *prefix;
    size_t prefix_len;
    time_t cutoff;        /* temp files last modified before this are orphans */
    int64_t deadline_ms;
    store_gc_stats *st;
} gcwalk;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Visit folder 'dirpath' (keys start with 'rel'): remove ".swtmp-*" regular files
 * older than the cutoff, recurse into folders that may hold keys of the prefix. A
 * writer appends to its temp file all along, so only a stalled or dead one ages. */
static int gc_dir(gcwalk *g, const char *dirpath, const char *rel, sw_err *err)
{
    DIR *d = opendir(dirpath);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR) return 0;
        return ferr(err, errno, "opendir", dirpath);
    }
    int rc = 0;
    for (;;) {
        if (mono_ms() > g->deadline_ms) {
            g->st->truncated = true;
            break;
        }
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) rc = ferr(err, errno, "readdir", dirpath);
            break;
        }
        const char *nm = de->d_name;
        if (!strcmp(nm, ".") || !strcmp(nm, "..")) continue;
        struct stat st;
        if (fstatat(dirfd(d), nm, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;   /* gone meanwhile */
        if (!strncmp(nm, TMP_PREFIX, strlen(TMP_PREFIX))) {
            if (!S_ISREG(st.st_mode)) continue;   /* folders visited may hold keys of the prefix */
            g->st->seen++;
            if (st.st_mtime >= g->cutoff) {
                g->st->kept++;
            } else if (unlinkat(dirfd(d), nm, 0) == 0) {
                g->st->removed++;
                g->st->removed_bytes += (int64_t)st.st_size;
            }
            continue;
        }
        if (!S_ISDIR(st.st_mode)) continue;
        char *sub = xasprintf("%s%s/", rel, nm);
        size_t sl = strlen(sub), m = sl < g->prefix_len ? sl : g->prefix_len;
        if (strncmp(sub, g->prefix, m) == 0) {
            char *childpath = xasprintf("%s/%s", dirpath, nm);
            rc = gc_dir(g, childpath, sub, err);
            free(childpath);
        }
        free(sub);
        if (rc < 0 || g->st->truncated) break;
    }
    closedir(d);
    return rc;
}

static int fs_gc(void *impl, const char *prefix, int64_t grace_s, int64_t deadline_ms,
                 store_gc_stats *out, sw_err *err)
{
    fstore *fs = impl;
    gcwalk g = {prefix, strlen(prefix), time(NULL) - (time_t)grace_s, deadline_ms, out};
    return gc_dir(&g, fs->root, "", err);
}

const store_ops store_file_ops = {
    .scheme = "file",
    .close = fs_close,
    .put_begin = fs_put_begin,
    .put_write = fs_put_write,
    .put_commit = fs_put_commit,
    .put_abort = fs_put_abort,
    .get_open = fs_get_open,
    .get_read = fs_get_read,
    .get_close = fs_get_close,
    .head = fs_head,
    .del = fs_del,
    .list = fs_list,
    .set_cancel = NULL,
    .gc = fs_gc,
};
