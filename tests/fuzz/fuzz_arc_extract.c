/* tests/fuzz/fuzz_arc_extract.c — libFuzzer harness for the archive extractor
 * (common/arc_extract.c): any bytes as a snapshot stream (tar, tar.gz or tar.zst) read
 * through arc_extract's source callback into a fresh folder, with the path and link rules on.
 * Each input is extracted into ROOT/x, ROOT being one temp folder per process; afterwards
 * (on success and on a refusal alike, since a refused archive leaves a partial tree):
 *  - ROOT holds only x: nothing was written beside the destination;
 *  - x holds only the folders outputs/ and attachments/;
 *  - every member is a folder, a regular file or a symlink, without setuid/setgid/sticky;
 *  - every symlink stays inside x: its target, resolved by the kernel when it exists, is
 *    under x; read as text from the link's folder, it never climbs above x;
 *  - a regular file's link count equals the number of its names inside x (a hard link
 *    never reaches a file outside);
 *  - an error is unsafe_archive, archive_too_large or a local I/O error (backend_error);
 * then x is removed with arc_rmtree and must be gone. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common/arc.h"
#include "tests/fuzz/fuzz.h"

typedef struct cursor {
    const uint8_t *p;
    size_t n, off;
} cursor;

/* The input in pieces of at most 4093 bytes, so a stream spans several source calls. */
static ssize_t source(void *arg, void *buf, size_t n, sw_err *err)
{
    (void)err;
    cursor *c = arg;
    size_t left = c->n - c->off;
    if (n > left) n = left;
    if (n > 4093) n = 4093;
    memcpy(buf, c->p + c->off, n);
    c->off += n;
    return (ssize_t)n;
}

static char root[PATH_MAX], dest[PATH_MAX];
static size_t dest_len;

typedef struct inode_count {
    dev_t dev;
    ino_t ino;
    nlink_t nlink;
    nlink_t seen;
} inode_count;

static inode_count files[2048];
static size_t nfiles;

static void count_inode(const struct stat *st)
{
    for (size_t i = 0; i < nfiles; i++)
        if (files[i].dev == st->st_dev && files[i].ino == st->st_ino) {
            files[i].seen++;
            return;
        }
    CHECK(nfiles < sizeof files / sizeof files[0]);
    files[nfiles++] = (inode_count){st->st_dev, st->st_ino, st->st_nlink, 1};
}

/* The symlink's target read as text from its folder at 'depth' below x never goes above x. */
static void check_link_text(const char *target, int depth)
{
    CHECK(target[0] != '/');
    for (const char *p = target; *p;) {
        const char *c = p;
        while (*p && *p != '/') p++;
        size_t cl = (size_t)(p - c);
        while (*p == '/') p++;
        if (cl == 0 || (cl == 1 && c[0] == '.')) continue;
        if (cl == 2 && c[0] == '.' && c[1] == '.') CHECK(--depth >= 0);
        else depth++;
    }
}

static void check_link(const char *path, int depth)
{
    char target[PATH_MAX + 1], real[PATH_MAX];
    ssize_t n = readlink(path, target, sizeof target - 1);
    CHECK(n > 0);
    target[n] = '\0';
    check_link_text(target, depth);
    if (realpath(path, real)) {
        bool inside = !strncmp(real, dest, dest_len) && (real[dest_len] == '\0' || real[dest_len] == '/');
        if (!inside) fprintf(stderr, "symlink %s -> %s resolves to %s\n", path, target, real);
        CHECK(inside);
    }
}

/* Walk the tree at 'path' ('depth' folders below x) without following symlinks. */
static void walk(const char *path, int depth)
{
    DIR *d = opendir(path);
    CHECK(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (depth == 0) CHECK(!strcmp(de->d_name, "outputs") || !strcmp(de->d_name, "attachments"));
        char sub[PATH_MAX];
        CHECK((size_t)snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) < sizeof sub);
        struct stat st;
        CHECK(lstat(sub, &st) == 0);
        CHECK(!(st.st_mode & (S_ISUID | S_ISGID | S_ISVTX)));
        if (depth == 0) CHECK(S_ISDIR(st.st_mode));
        if (S_ISDIR(st.st_mode)) walk(sub, depth + 1);
        else if (S_ISLNK(st.st_mode)) check_link(sub, depth);
        else if (S_ISREG(st.st_mode)) count_inode(&st);
        else CHECK(!"a member that is not a folder, a file or a symlink");
    }
    closedir(d);
}

/* The names in ROOT: exactly 'want' (or nothing when NULL). */
static void check_root(const char *want)
{
    DIR *d = opendir(root);
    CHECK(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (!want || strcmp(de->d_name, want)) fprintf(stderr, "unexpected %s/%s\n", root, de->d_name);
        CHECK(want && !strcmp(de->d_name, want));
        n++;
    }
    closedir(d);
    CHECK(n == (want ? 1 : 0));
}

/* ROOT is left empty after every input (checked): remove it when libFuzzer exits. */
static void remove_root(void) { rmdir(root); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!root[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(root, sizeof root, "%s/swfuzz-arc-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        CHECK(mkdtemp(root));
        atexit(remove_root);
        snprintf(dest, sizeof dest, "%s/x", root);
        dest_len = strlen(dest);
    }
    CHECK(mkdir(dest, 0700) == 0);
    cursor c = {data, size, 0};
    arc_limits lim = {.max_bytes = 1 << 20, .max_entries = 512};
    arc_stats st = {0};
    sw_err err;
    sw_err_clear(&err);
    int rc = arc_extract(source, &c, dest, &lim, &st, &err);
    if (rc != 0) {
        if (err.code != SW_E_UNSAFE_ARCHIVE && err.code != SW_E_ARCHIVE_TOO_LARGE &&
            err.code != SW_E_BACKEND)
            fprintf(stderr, "unexpected error %s: %s\n", sw_code_name(err.code), err.msg);
        CHECK(err.code == SW_E_UNSAFE_ARCHIVE || err.code == SW_E_ARCHIVE_TOO_LARGE ||
              err.code == SW_E_BACKEND);
    } else {
        CHECK(st.entries <= lim.max_entries && st.bytes <= lim.max_bytes);
    }
    check_root("x");
    nfiles = 0;
    walk(dest, 0);
    for (size_t i = 0; i < nfiles; i++) CHECK(files[i].seen == files[i].nlink);
    CHECK(arc_rmtree(dest, &err) == 0);
    check_root(NULL);
    return 0;
}
