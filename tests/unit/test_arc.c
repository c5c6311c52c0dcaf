/* tests/unit/test_arc.c — the archive module: session round trips, hostile archives
 * built here with libarchive's writer, limits, corrupt streams, error pass-through,
 * rmtree/copytree, and concurrent extraction. Every hostile archive also goes through
 * arc_check, which must refuse (with the same code) exactly what arc_extract refuses; the
 * arc_check/arc_counter/arc_write_tree tests follow the hostile ones. Each test works in its own mkdtemp folder
 * laid out as  BASE/victim (sentinel file)  BASE/dest (extraction target)  BASE/... */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/arc.h"
#include "common/err.h"
#include "common/xmalloc.h"

#define VICTIM "do not touch"

/* ------------------------------------------------------------------ fixtures */

typedef struct tdir { char base[PATH_MAX]; } tdir;

static int setup(void **state)
{
    tdir *t = xcalloc(1, sizeof *t);
    snprintf(t->base, sizeof t->base, "%s/test_arc.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(t->base)) return -1;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tdir *t = *state;
    sw_err err;
    int rc = arc_rmtree(t->base, &err);
    free(t);
    return rc;
}

/* buf = a/b; buf may be a (the join goes through a temporary) */
static char *pj(char *buf, const char *a, const char *b)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s/%s", a, b);
    assert_true(n > 0 && n < PATH_MAX);
    memcpy(buf, tmp, (size_t)n + 1);
    return buf;
}

static void put_file(const char *dir, const char *name, const void *data, size_t n, mode_t mode)
{
    char p[PATH_MAX];
    int fd = open(pj(p, dir, name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void put_dir(const char *dir, const char *name)
{
    char p[PATH_MAX];
    assert_int_equal(mkdir(pj(p, dir, name), 0755), 0);
}

static void put_link(const char *dir, const char *name, const char *target)
{
    char p[PATH_MAX];
    assert_int_equal(symlink(target, pj(p, dir, name)), 0);
}

/* ------------------------------------------------------------------ memory sink/source */

typedef struct membuf { unsigned char *p; size_t len, cap; } membuf;

static int mem_sink(void *arg, const void *buf, size_t n, sw_err *err)
{
    (void)err;
    membuf *m = arg;
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->p = xrealloc(m->p, m->cap);
    }
    memcpy(m->p + m->len, buf, n);
    m->len += n;
    return 0;
}

typedef struct memsrc {
    const unsigned char *p;
    size_t len, pos;
    size_t fail_at;   /* 0 = never; else fail once pos reaches it */
} memsrc;

static ssize_t mem_source(void *arg, void *buf, size_t n, sw_err *err)
{
    memsrc *s = arg;
    if (s->fail_at && s->pos >= s->fail_at)
        return sw_errf(err, SW_E_STORAGE, true, "GET snap.tar.gz: connection reset");
    size_t k = s->len - s->pos;
    if (k > n) k = n;
    if (k > 7001) k = 7001; /* odd chunks exercise libarchive's buffering */
    memcpy(buf, s->p + s->pos, k);
    s->pos += k;
    return (ssize_t)k;
}

static int failing_sink(void *arg, const void *buf, size_t n, sw_err *err)
{
    (void)buf;
    (void)n;
    int *calls = arg;
    if (++*calls >= 2) return sw_errf(err, SW_E_STORAGE, true, "PUT part 2: HTTP 503");
    return 0;
}

static int extract_mem(const membuf *m, const char *dest, const arc_limits *lim, arc_stats *st, sw_err *err)
{
    memsrc s = {m->p, m->len, 0, 0};
    return arc_extract(mem_source, &s, dest, lim, st, err);
}

/* ------------------------------------------------------------------ tree helpers */

/* Set mtimes bottom-up (a directory's after its contents), symlinks without following. */
static void set_times(const char *path, time_t t)
{
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char p[PATH_MAX];
        struct stat st;
        pj(p, path, de->d_name);
        assert_int_equal(lstat(p, &st), 0);
        if (S_ISDIR(st.st_mode)) set_times(p, t + 7);
        struct timespec ts[2] = {{t, 0}, {t + (time_t)strlen(de->d_name), 0}};
        assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
    }
    closedir(d);
    struct timespec ts[2] = {{t, 0}, {t - 1000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    char ba[65536], bb[65536];
    size_t na, nb;
    do {
        na = fread(ba, 1, sizeof ba, fa);
        nb = fread(bb, 1, sizeof bb, fb);
        assert_int_equal(na, nb);
        assert_memory_equal(ba, bb, na);
    } while (na > 0);
    fclose(fa);
    fclose(fb);
}

/* Compare trees a and b (content, type, mode, mtime seconds, link targets); returns the
 * number of entries under a. Every entry of b must exist in a too (counted both ways). */
static int64_t same_tree(const char *a, const char *b)
{
    int64_t n = 0, nb = 0;
    DIR *d = opendir(a);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char pa[PATH_MAX], pb[PATH_MAX];
        struct stat sa, sb;
        pj(pa, a, de->d_name);
        pj(pb, b, de->d_name);
        assert_int_equal(lstat(pa, &sa), 0);
        if (lstat(pb, &sb) != 0) fail_msg("missing in copy: %s", pb);
        assert_int_equal(sa.st_mode & S_IFMT, sb.st_mode & S_IFMT);
        if (!S_ISLNK(sa.st_mode)) assert_int_equal(sa.st_mode & 07777, sb.st_mode & 07777);
        if (sa.st_mtim.tv_sec != sb.st_mtim.tv_sec) fail_msg("mtime differs: %s", pb);
        n++;
        if (S_ISDIR(sa.st_mode)) n += same_tree(pa, pb);
        else if (S_ISREG(sa.st_mode)) {
            assert_int_equal(sa.st_size, sb.st_size);
            same_file(pa, pb);
        } else if (S_ISLNK(sa.st_mode)) {
            char ta[PATH_MAX], tb[PATH_MAX];
            ssize_t la = readlink(pa, ta, sizeof ta), lb = readlink(pb, tb, sizeof tb);
            assert_true(la > 0);
            assert_int_equal(la, lb);
            assert_memory_equal(ta, tb, (size_t)la);
        }
    }
    closedir(d);
    d = opendir(b);
    assert_non_null(d);
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) nb++;
    closedir(d);
    d = opendir(a);
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) nb--;
    closedir(d);
    assert_int_equal(nb, 0);
    return n;
}

static int count_names(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Builds BASE/session with a representative workspace; returns nothing, asserts. */
static void build_session(const char *base, int with_attachments, int big)
{
    char s[PATH_MAX], o[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
    pj(s, base, "session");
    put_dir(base, "session");
    put_dir(s, "outputs");
    pj(o, s, "outputs");
    put_dir(o, "web");
    pj(p, o, "web");
    put_file(p, "package.json", "{\"name\":\"w\"}\n", 13, 0644);
    put_dir(p, "node_modules");
    pj(q, p, "node_modules");
    put_dir(q, "next");
    put_dir(q, ".bin");
    char r[PATH_MAX];
    pj(r, q, "next");
    put_dir(r, "dist");
    pj(r, r, "dist");
    put_file(r, "cli.js", "#!/usr/bin/env node\n", 20, 0755);
    pj(r, q, ".bin");
    put_link(r, "next", "../next/dist/cli.js");
    put_file(o, "empty", "", 0, 0600);
    put_file(o, "secret.txt", "s3cr3t", 6, 0600);
    put_file(o, "run.sh", "#!/bin/sh\necho hi\n", 18, 0755);
    put_file(o, "r\xc3\xa9sum\xc3\xa9.txt", "unicode", 7, 0644);
    put_dir(o, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
    pj(p, o, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
    put_file(p, "\xf0\x9f\x98\x80 emoji.md", "# hi\n", 5, 0640);
    put_file(o, "caf\xe9-latin1", "not utf-8 name", 14, 0644);
    put_link(o, "to-web", "web/package.json");
    put_link(o, "dangling", "does/not/exist");
    put_dir(o, "a");
    pj(p, o, "a");
    put_dir(p, "b");
    pj(p, p, "b");
    put_dir(p, "c");
    pj(p, p, "c");
    put_file(p, "deep.txt", "deep", 4, 0444);
    put_link(p, "up", "../../../secret.txt");
    put_dir(o, "ro");
    pj(p, o, "ro");
    put_file(p, "f", "x", 1, 0644);
    assert_int_equal(chmod(p, 0555), 0);
    if (big) {
        size_t n = 20u << 20;
        unsigned char *buf = xmalloc(n);
        uint32_t x = 12345;
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (unsigned char)('a' + ((x >> 16) % 23));
        }
        put_file(o, "big.bin", buf, n, 0644);
        free(buf);
    }
    put_dir(s, "attachments");
    if (with_attachments) {
        pj(p, s, "attachments");
        put_file(p, "upload.pdf", "%PDF-1.4", 8, 0644);
    }
    set_times(s, 1700000000);
}

/* ------------------------------------------------------------------ round trips */

static void roundtrip_keeps_content_modes_links_and_mtimes(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX], d[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    sw_err err = {0};
    arc_stats ws = {0}, xs = {0};
    membuf m = {0};
    build_session(t->base, 0, 1);
    pj(s, t->base, "session");
    assert_int_equal(arc_write_session(s, 1, mem_sink, &m, &ws, &err), 0);
    put_dir(t->base, "dest");
    pj(d, t->base, "dest");
    arc_limits lim = {.max_bytes = 1LL << 30, .max_entries = 1000};
    if (extract_mem(&m, d, &lim, &xs, &err) != 0) fail_msg("extract: %s", err.msg);
    int64_t n = same_tree(pj(a, s, "outputs"), pj(b, d, "outputs")) + 1;
    assert_int_equal(ws.entries, n);
    assert_int_equal(xs.entries, n);
    assert_int_equal(ws.bytes, xs.bytes);
    assert_true(ws.bytes > (20 << 20));
    /* empty attachments/ is not archived */
    assert_int_equal(count_names(d), 1);
    assert_int_equal(access(pj(a, d, "attachments"), F_OK), -1);
    free(m.p);
}

static void nonempty_attachments_are_included(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX], d[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    sw_err err = {0};
    arc_stats ws = {0}, xs = {0};
    membuf m = {0};
    build_session(t->base, 1, 0);
    pj(s, t->base, "session");
    assert_int_equal(arc_write_session(s, 6, mem_sink, &m, &ws, &err), 0);
    put_dir(t->base, "dest");
    pj(d, t->base, "dest");
    if (extract_mem(&m, d, NULL, &xs, &err) != 0) fail_msg("extract: %s", err.msg);
    int64_t n = same_tree(pj(a, s, "outputs"), pj(b, d, "outputs")) + 1;
    n += same_tree(pj(a, s, "attachments"), pj(b, d, "attachments")) + 1;
    assert_int_equal(ws.entries, n);
    assert_int_equal(xs.entries, n);
    assert_int_equal(count_names(d), 2);
    free(m.p);
}

static void unchanged_tree_gives_identical_bytes(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX];
    sw_err err = {0};
    membuf m1 = {0}, m2 = {0};
    build_session(t->base, 1, 0);
    pj(s, t->base, "session");
    assert_int_equal(arc_write_session(s, 9, mem_sink, &m1, NULL, &err), 0);
    sleep(1); /* a gzip header timestamp would differ now */
    assert_int_equal(arc_write_session(s, 9, mem_sink, &m2, NULL, &err), 0);
    assert_int_equal(m1.len, m2.len);
    assert_memory_equal(m1.p, m2.p, m1.len);
    free(m1.p);
    free(m2.p);
}

static void missing_outputs_is_workspace_missing(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX];
    sw_err err = {0};
    membuf m = {0};
    assert_int_equal(arc_write_session(pj(s, t->base, "nope"), 6, mem_sink, &m, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_WORKSPACE_MISSING);
    put_dir(t->base, "session");
    pj(s, t->base, "session");
    assert_int_equal(arc_write_session(s, 6, mem_sink, &m, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_WORKSPACE_MISSING);
    assert_false(err.retryable);
    assert_int_equal(m.len, 0);
}

static void empty_outputs_is_archived(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX], d[PATH_MAX];
    sw_err err = {0};
    arc_stats ws = {0}, xs = {0};
    membuf m = {0};
    put_dir(t->base, "session");
    pj(s, t->base, "session");
    put_dir(s, "outputs");
    assert_int_equal(arc_write_session(s, 6, mem_sink, &m, &ws, &err), 0);
    assert_int_equal(ws.entries, 1);
    put_dir(t->base, "dest");
    assert_int_equal(extract_mem(&m, pj(d, t->base, "dest"), NULL, &xs, &err), 0);
    assert_int_equal(xs.entries, 1);
    assert_int_equal(count_names(pj(d, d, "outputs")), 0);
    free(m.p);
}

static void sink_error_is_passed_through(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX];
    sw_err err = {0};
    int calls = 0;
    build_session(t->base, 0, 1);
    assert_int_equal(arc_write_session(pj(s, t->base, "session"), 1, failing_sink, &calls, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_true(err.retryable);
    assert_string_equal(err.msg, "PUT part 2: HTTP 503");
    assert_int_equal(calls, 2); /* nothing more after the failure, not even the trailer */
}

static void deep_tree_round_trips_without_leaking_fds(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX], d[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    sw_err err = {0};
    arc_stats ws = {0}, xs = {0};
    membuf m = {0};
    put_dir(t->base, "session");
    pj(s, t->base, "session/outputs");
    put_dir(t->base, "session/outputs");
    for (int i = 0; i < 45; i++) { /* deeper than the extractor's fd cache */
        put_file(s, "f", "x", 1, 0644);
        put_dir(s, "d");
        pj(s, s, "d");
    }
    put_file(s, "leaf", "deep", 4, 0600);
    put_link(s, "back", "../../../../f");
    pj(s, t->base, "session");
    set_times(s, 1690000000);
    int fds = count_names("/proc/self/fd");
    assert_int_equal(arc_write_session(s, 6, mem_sink, &m, &ws, &err), 0);
    put_dir(t->base, "dest");
    pj(d, t->base, "dest");
    if (extract_mem(&m, d, NULL, &xs, &err) != 0) fail_msg("extract: %s", err.msg);
    assert_int_equal(count_names("/proc/self/fd"), fds);
    assert_int_equal(same_tree(pj(a, s, "outputs"), pj(b, d, "outputs")) + 1, xs.entries);
    assert_int_equal(ws.entries, xs.entries);
    free(m.p);
}

/* ------------------------------------------------------------------ hostile archives */

typedef struct hent {
    const char *name;
    mode_t type;          /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, AE_IFIFO */
    mode_t perm;
    const char *link;     /* symlink target */
    const char *hard;     /* hard link target */
    int64_t size;         /* data bytes (pattern) */
} hent;

static la_ssize_t hw_cb(struct archive *a, void *p, const void *buf, size_t n)
{
    (void)a;
    return mem_sink(p, buf, n, NULL) == 0 ? (la_ssize_t)n : -1;
}

/* Writes raw entries with libarchive (no sanitizing) as tar + 'filter'. */
static void build(membuf *m, const char *filter, const hent *ents, size_t n)
{
    struct archive *a = archive_write_new();
    assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    if (!strcmp(filter, "gzip")) assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    if (!strcmp(filter, "zstd")) assert_true(archive_write_add_filter_zstd(a) >= ARCHIVE_WARN);
    assert_int_equal(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
    assert_int_equal(archive_write_open2(a, m, NULL, hw_cb, NULL, NULL), ARCHIVE_OK);
    struct archive_entry *e = archive_entry_new();
    char chunk[4096];
    memset(chunk, 'z', sizeof chunk);
    for (size_t i = 0; i < n; i++) {
        archive_entry_clear(e);
        archive_entry_copy_pathname(e, ents[i].name);
        archive_entry_set_filetype(e, ents[i].type);
        archive_entry_set_perm(e, ents[i].perm ? ents[i].perm : 0644);
        archive_entry_set_mtime(e, 1600000000, 0);
        archive_entry_set_size(e, ents[i].type == AE_IFREG ? ents[i].size : 0);
        if (ents[i].link) archive_entry_copy_symlink(e, ents[i].link);
        if (ents[i].hard) archive_entry_copy_hardlink(e, ents[i].hard);
        if (ents[i].type == AE_IFCHR) archive_entry_set_rdev(e, makedev(1, 3));
        assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
        for (int64_t left = ents[i].type == AE_IFREG ? ents[i].size : 0; left > 0;) {
            size_t k = left < (int64_t)sizeof chunk ? (size_t)left : sizeof chunk;
            assert_int_equal(archive_write_data(a, chunk, k), (la_ssize_t)k);
            left -= (int64_t)k;
        }
    }
    archive_entry_free(e);
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* Extract 'ents' into BASE/dest next to BASE/victim; check the code, and that BASE still
 * holds exactly dest and an untouched victim. Leaves dest for the caller to inspect. */
static void hostile(tdir *t, const hent *ents, size_t n, const arc_limits *lim, sw_code want)
{
    char d[PATH_MAX], v[PATH_MAX];
    membuf m = {0};
    sw_err err = {0};
    build(&m, "gzip", ents, n);
    put_file(t->base, "victim", VICTIM, strlen(VICTIM), 0644);
    put_dir(t->base, "dest");
    int fds = count_names("/proc/self/fd");
    /* arc_check first: the same verdict, nothing written anywhere */
    memsrc cs = {m.p, m.len, 0, 0};
    sw_err cerr = {0};
    arc_check_info info;
    int crc = arc_check(mem_source, &cs, lim, NULL, &info, &cerr);
    if (want == SW_OK && crc != 0) fail_msg("arc_check refused: %s", cerr.msg);
    if (want != SW_OK && (crc != -1 || cerr.code != want))
        fail_msg("arc_check: want %s, got rc %d %s: %s", sw_code_name(want), crc,
                 sw_code_name(cerr.code), cerr.msg);
    assert_int_equal(count_names(pj(d, t->base, "dest")), 0);
    int rc = extract_mem(&m, pj(d, t->base, "dest"), lim, NULL, &err);
    assert_int_equal(count_names("/proc/self/fd"), fds); /* error paths close everything */
    free(m.p);
    if (getenv("ARC_TEST_VERBOSE")) print_message("  -> %s: %s\n", sw_code_name(err.code), err.msg);
    if (want == SW_OK) {
        if (rc != 0) fail_msg("unexpected refusal: %s", err.msg);
    } else {
        if (rc != -1 || err.code != want)
            fail_msg("want %s, got rc %d %s: %s", sw_code_name(want), rc, sw_code_name(err.code), err.msg);
        assert_false(err.retryable);
    }
    assert_int_equal(count_names(t->base), 2);
    struct stat st;
    assert_int_equal(lstat(pj(v, t->base, "victim"), &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, (off_t)strlen(VICTIM));
    assert_int_equal(st.st_nlink, 1);
}

#define HOSTILE(t, want, ...)                                                        \
    do {                                                                             \
        const hent ents_[] = {__VA_ARGS__};                                          \
        hostile((t), ents_, sizeof ents_ / sizeof ents_[0], NULL, (want));           \
    } while (0)

static void dotdot_member_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"../x", AE_IFREG, 0644, NULL, NULL, 5});
}

static void absolute_member_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"/abs", AE_IFREG, 0644, NULL, NULL, 5});
}

static void dotdot_inside_member_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/../../x", AE_IFREG, 0644, NULL, NULL, 5});
}

static void member_outside_outputs_and_attachments_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"etc/x", AE_IFREG, 0644, NULL, NULL, 5});
}

static void symlink_to_etc_then_file_through_it_is_refused(void **state)
{
    tdir *t = *state;
    char p[PATH_MAX];
    HOSTILE(t, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/link", AE_IFLNK, 0777, "/etc", NULL, 0},
            {"outputs/link/passwd", AE_IFREG, 0644, NULL, NULL, 5});
    struct stat st;
    assert_int_equal(lstat(pj(p, t->base, "dest/outputs/link"), &st), -1);
}

static void writing_through_an_in_tree_symlink_is_refused(void **state)
{
    tdir *t = *state;
    char p[PATH_MAX];
    HOSTILE(t, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/sub/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/l", AE_IFLNK, 0777, "sub", NULL, 0},
            {"outputs/l/f", AE_IFREG, 0644, NULL, NULL, 5});
    assert_int_equal(access(pj(p, t->base, "dest/outputs/sub/f"), F_OK), -1);
}

static void symlink_escaping_upwards_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/up", AE_IFLNK, 0777, "../../outside", NULL, 0});
}

static void symlink_climbing_through_another_symlink_is_refused(void **state)
{
    /* d1/d2/up -> ../.. is outputs/; esc -> d1/d2/up/../../.. would then be BASE/.. */
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/d1/d2/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/d1/d2/up", AE_IFLNK, 0777, "../..", NULL, 0},
            {"outputs/esc", AE_IFLNK, 0777, "d1/d2/up/../../..", NULL, 0});
}

static void hard_link_to_etc_passwd_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/h", AE_IFREG, 0644, NULL, "/etc/passwd", 0});
}

static void hard_link_to_parent_file_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/h", AE_IFREG, 0644, NULL, "../victim", 0});
    tdir *t = *state;
    arc_rmtree(t->base, NULL);
    assert_int_equal(mkdir(t->base, 0700), 0);
    HOSTILE(t, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/h", AE_IFREG, 0644, NULL, "outputs/../../victim", 0});
}

static void hard_link_to_symlink_or_dir_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/s", AE_IFLNK, 0777, "x", NULL, 0},
            {"outputs/h", AE_IFREG, 0644, NULL, "outputs/s", 0});
    tdir *t = *state;
    arc_rmtree(t->base, NULL);
    assert_int_equal(mkdir(t->base, 0700), 0);
    HOSTILE(t, SW_E_UNSAFE_ARCHIVE, {"outputs/sub/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/h", AE_IFREG, 0644, NULL, "outputs/sub", 0});
}

static void hard_link_to_extracted_file_is_kept(void **state)
{
    tdir *t = *state;
    char a[PATH_MAX], b[PATH_MAX];
    HOSTILE(t, SW_OK, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/x/a", AE_IFREG, 0644, NULL, NULL, 3},
            {"outputs/y/b", AE_IFREG, 0644, NULL, "outputs/x/a", 0});
    struct stat sa, sb;
    assert_int_equal(stat(pj(a, t->base, "dest/outputs/x/a"), &sa), 0);
    assert_int_equal(stat(pj(b, t->base, "dest/outputs/y/b"), &sb), 0);
    assert_int_equal(sa.st_ino, sb.st_ino);
    assert_int_equal(sa.st_size, 3);
}

static void character_device_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/null", AE_IFCHR, 0666, NULL, NULL, 0});
}

static void fifo_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/pipe", AE_IFIFO, 0644, NULL, NULL, 0});
}

static void duplicate_member_is_refused(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/f", AE_IFREG, 0644, NULL, NULL, 1}, {"outputs/f", AE_IFREG, 0644, NULL, NULL, 2});
}

static void top_level_outputs_must_be_a_directory(void **state)
{
    HOSTILE(*state, SW_E_UNSAFE_ARCHIVE, {"outputs", AE_IFLNK, 0777, "attachments", NULL, 0});
}

static void setuid_setgid_sticky_bits_are_stripped(void **state)
{
    tdir *t = *state;
    char p[PATH_MAX];
    struct stat st;
    HOSTILE(t, SW_OK, {"./outputs/", AE_IFDIR, 03775, NULL, NULL, 0},
            {"./outputs/suid", AE_IFREG, 04755, NULL, NULL, 4},
            {"./outputs/sgid", AE_IFREG, 02700, NULL, NULL, 4},
            {"./outputs/tmp/", AE_IFDIR, 01777, NULL, NULL, 0});
    assert_int_equal(lstat(pj(p, t->base, "dest/outputs/suid"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(lstat(pj(p, t->base, "dest/outputs/sgid"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(lstat(pj(p, t->base, "dest/outputs/tmp"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0777);
    assert_int_equal(lstat(pj(p, t->base, "dest/outputs"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0775);
    assert_int_equal(st.st_mtim.tv_sec, 1600000000);
}

static void entry_bomb_is_too_large(void **state)
{
    tdir *t = *state;
    char p[PATH_MAX];
    enum { N = 150 };
    hent ents[N];
    static char names[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "outputs/f%03d", i);
        ents[i] = (hent){names[i], AE_IFREG, 0644, NULL, NULL, 0};
    }
    arc_limits lim = {.max_bytes = 0, .max_entries = 100};
    hostile(t, ents, N, &lim, SW_E_ARCHIVE_TOO_LARGE);
    assert_true(count_names(pj(p, t->base, "dest/outputs")) <= 100);
}

static void size_bomb_is_too_large_before_writing(void **state)
{
    tdir *t = *state;
    char p[PATH_MAX];
    arc_limits lim = {.max_bytes = 1 << 20, .max_entries = 0};
    const hent one[] = {{"outputs/small", AE_IFREG, 0644, NULL, NULL, 1000},
                        {"outputs/huge", AE_IFREG, 0644, NULL, NULL, 4 << 20}};
    hostile(t, one, 2, &lim, SW_E_ARCHIVE_TOO_LARGE);
    assert_int_equal(access(pj(p, t->base, "dest/outputs/huge"), F_OK), -1);

    arc_rmtree(t->base, NULL);
    assert_int_equal(mkdir(t->base, 0700), 0);
    hent many[10];
    static char names[10][32];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof names[i], "outputs/part%d", i);
        many[i] = (hent){names[i], AE_IFREG, 0644, NULL, NULL, 200 << 10};
    }
    hostile(t, many, 10, &lim, SW_E_ARCHIVE_TOO_LARGE);
    assert_int_equal(count_names(pj(p, t->base, "dest/outputs")), 5);
}

/* Inflating runs on its own thread, ahead of the tar reader: a refusal early in a long
 * stream must stop that thread (it waits on a full ring) and leak nothing. */
static void an_early_refusal_stops_the_inflate_thread(void **state)
{
    tdir *t = *state;
    char p[PATH_MAX];
    const hent ents[] = {{"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
                         {"outputs/a", AE_IFREG, 0644, NULL, NULL, 1000},
                         {"outputs/../../escape", AE_IFREG, 0644, NULL, NULL, 5},
                         {"outputs/big", AE_IFREG, 0644, NULL, NULL, 16 << 20}};
    int threads = count_names("/proc/self/task"); /* sanitizers may run their own */
    hostile(t, ents, 4, NULL, SW_E_UNSAFE_ARCHIVE);
    assert_int_equal(access(pj(p, t->base, "dest/outputs/big"), F_OK), -1);
    assert_int_equal(count_names("/proc/self/task"), threads); /* the thread was joined */
}

static void truncated_gzip_is_corrupt(void **state)
{
    tdir *t = *state;
    char d[PATH_MAX];
    membuf m = {0};
    sw_err err = {0};
    const hent ents[] = {{"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
                         {"outputs/a", AE_IFREG, 0644, NULL, NULL, 300000}};
    build(&m, "gzip", ents, 2);
    pj(d, t->base, "dest");
    for (size_t cut = 10; cut < m.len; cut = cut * 3 + 1) {
        membuf half = {m.p, cut, cut};
        assert_int_equal(mkdir(d, 0755), 0);
        assert_int_equal(extract_mem(&half, d, NULL, NULL, &err), -1);
        assert_int_equal(err.code, SW_E_UNSAFE_ARCHIVE);
        assert_non_null(strstr(err.msg, "corrupt archive"));
        assert_int_equal(arc_rmtree(d, &err), 0);
    }
    free(m.p);
}

static void garbage_bytes_are_corrupt(void **state)
{
    tdir *t = *state;
    char d[PATH_MAX];
    sw_err err = {0};
    unsigned char junk[5000];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(i * 7919 + 13);
    membuf m = {junk, sizeof junk, sizeof junk};
    assert_int_equal(mkdir(pj(d, t->base, "dest"), 0755), 0);
    assert_int_equal(extract_mem(&m, d, NULL, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_UNSAFE_ARCHIVE);
    assert_non_null(strstr(err.msg, "corrupt archive"));
    membuf empty = {junk, 0, 0};
    assert_int_equal(extract_mem(&empty, d, NULL, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_UNSAFE_ARCHIVE);
}

static void source_error_is_passed_through(void **state)
{
    tdir *t = *state;
    char d[PATH_MAX];
    membuf m = {0};
    sw_err err = {0};
    const hent ents[] = {{"outputs/a", AE_IFREG, 0644, NULL, NULL, 300000}};
    build(&m, "none", ents, 1);
    assert_int_equal(mkdir(pj(d, t->base, "dest"), 0755), 0);
    memsrc s = {m.p, m.len, 0, 100000};
    assert_int_equal(arc_extract(mem_source, &s, d, NULL, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_true(err.retryable);
    assert_string_equal(err.msg, "GET snap.tar.gz: connection reset");
    free(m.p);
}

static void zstd_and_plain_tar_are_read(void **state)
{
    tdir *t = *state;
    char d[PATH_MAX], p[PATH_MAX];
    const char *filters[] = {"zstd", "none"};
    const hent ents[] = {{"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
                         {"outputs/a", AE_IFREG, 0640, NULL, NULL, 70000},
                         {"attachments/b", AE_IFREG, 0644, NULL, NULL, 0}};
    for (int i = 0; i < 2; i++) {
        membuf m = {0};
        sw_err err = {0};
        arc_stats st = {0};
        build(&m, filters[i], ents, 3);
        pj(d, t->base, filters[i]);
        assert_int_equal(mkdir(d, 0755), 0);
        if (extract_mem(&m, d, NULL, &st, &err) != 0) fail_msg("%s: %s", filters[i], err.msg);
        assert_int_equal(st.entries, 3);
        assert_int_equal(st.bytes, 70000);
        struct stat sb;
        assert_int_equal(stat(pj(p, d, "outputs/a"), &sb), 0);
        assert_int_equal(sb.st_size, 70000);
        assert_int_equal(sb.st_mode & 0777, 0640);
        free(m.p);
    }
}

static void nonempty_destination_is_refused(void **state)
{
    tdir *t = *state;
    char d[PATH_MAX];
    membuf m = {0};
    sw_err err = {0};
    const hent ents[] = {{"outputs/a", AE_IFREG, 0644, NULL, NULL, 1}};
    build(&m, "gzip", ents, 1);
    put_dir(t->base, "dest");
    put_file(pj(d, t->base, "dest"), "stale", "x", 1, 0644);
    assert_int_equal(extract_mem(&m, d, NULL, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_INTERNAL);
    free(m.p);
}

/* ------------------------------------------------------------------ arc_check, arc_counter */

static int check_mem(const membuf *m, const arc_limits *lim, arc_check_info *info, sw_err *err)
{
    memsrc s = {m->p, m->len, 0, 0};
    return arc_check(mem_source, &s, lim, NULL, info, err);
}

/* What arc_check counts is what arc_extract counts; it reports compression and special bits. */
static void check_counts_like_extract_and_reports_compression(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX], d[PATH_MAX];
    membuf m = {0};
    sw_err err = {0};
    arc_stats ws, xs;
    arc_check_info info;
    build_session(t->base, 1, 1);
    pj(s, t->base, "session");
    assert_int_equal(arc_write_session(s, 6, mem_sink, &m, &ws, &err), 0);
    if (check_mem(&m, NULL, &info, &err) != 0) fail_msg("arc_check: %s", err.msg);
    put_dir(t->base, "dest");
    assert_int_equal(extract_mem(&m, pj(d, t->base, "dest"), NULL, &xs, &err), 0);
    assert_int_equal(info.st.entries, xs.entries);
    assert_int_equal(info.st.bytes, xs.bytes);
    assert_int_equal(info.st.entries, ws.entries);
    assert_int_equal(info.comp, ARC_COMP_GZIP);
    assert_false(info.special_bits);
    free(m.p);
    const hent ents[] = {{"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
                         {"outputs/suid", AE_IFREG, 04755, NULL, NULL, 10}};
    const char *filters[] = {"none", "zstd"};
    const arc_compression want[] = {ARC_COMP_NONE, ARC_COMP_ZSTD};
    for (int i = 0; i < 2; i++) {
        membuf z = {0};
        build(&z, filters[i], ents, 2);
        if (check_mem(&z, NULL, &info, &err) != 0) fail_msg("%s: %s", filters[i], err.msg);
        assert_int_equal(info.comp, want[i]);
        assert_true(info.special_bits);
        assert_int_equal(info.st.entries, 2);
        assert_int_equal(info.st.bytes, 10);
        free(z.p);
    }
}

/* A name may be a directory many times (explicit or implied) but nothing else twice, and no
 * directory may sit where a file or link is (the table stands in for the filesystem). */
static void check_tracks_names_like_the_filesystem(void **state)
{
    HOSTILE(*state, SW_OK, {"outputs/a/b/f", AE_IFREG, 0644, NULL, NULL, 1},
            {"outputs/a/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/a/b/", AE_IFDIR, 0755, NULL, NULL, 0},
            {"outputs/a/b/", AE_IFDIR, 0700, NULL, NULL, 0});
    tdir *t = *state;
    const hent cases[][3] = {
        {{"outputs/f", AE_IFREG, 0644, NULL, NULL, 1}, {"outputs/f/", AE_IFDIR, 0755, NULL, NULL, 0}, {0}},
        {{"outputs/d/x", AE_IFREG, 0644, NULL, NULL, 1}, {"outputs/d", AE_IFLNK, 0777, "x", NULL, 0}, {0}},
        {{"outputs/f", AE_IFREG, 0644, NULL, NULL, 1}, {"outputs/f/g", AE_IFREG, 0644, NULL, NULL, 1}, {0}},
        {{"outputs/l", AE_IFLNK, 0777, "sub", NULL, 0}, {"outputs/l", AE_IFLNK, 0777, "sub", NULL, 0}, {0}},
        {{"outputs/h", AE_IFREG, 0644, NULL, "outputs/later", 0}, {"outputs/later", AE_IFREG, 0644, NULL, NULL, 1}, {0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        arc_rmtree(t->base, NULL);
        assert_int_equal(mkdir(t->base, 0700), 0);
        hostile(t, cases[i], 2, NULL, SW_E_UNSAFE_ARCHIVE);
    }
}

static void check_passes_source_errors_and_refuses_truncation(void **state)
{
    (void)state;
    membuf m = {0};
    sw_err err = {0};
    arc_check_info info;
    const hent ents[] = {{"outputs/", AE_IFDIR, 0755, NULL, NULL, 0},
                         {"outputs/a", AE_IFREG, 0644, NULL, NULL, 300000}};
    build(&m, "none", ents, 2);
    memsrc s = {m.p, m.len, 0, 100000};
    assert_int_equal(arc_check(mem_source, &s, NULL, NULL, &info, &err), -1);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_string_equal(err.msg, "GET snap.tar.gz: connection reset");
    free(m.p);
    m = (membuf){0};
    build(&m, "gzip", ents, 2);
    for (size_t cut = 10; cut < m.len; cut = cut * 3 + 1) {
        membuf half = {m.p, cut, cut};
        if (check_mem(&half, NULL, &info, &err) != -1) fail_msg("cut %zu of %zu accepted", cut, m.len);
        assert_int_equal(err.code, SW_E_UNSAFE_ARCHIVE);
    }
    free(m.p);
}

typedef struct feed_arg { arc_counter *c; } feed_arg;

static int counter_sink(void *arg, const void *buf, size_t n, sw_err *err)
{
    feed_arg *f = arg;
    return arc_counter_feed(f->c, buf, n, err);
}

/* The counter sees what the writer wrote; a cut stream is an error; an early end leaks no
 * thread (the writer never blocks on a counter that stopped reading). */
static void counter_counts_a_passing_stream_and_catches_a_cut(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX];
    sw_err err = {0};
    arc_stats ws, cs;
    int threads = count_names("/proc/self/task");
    build_session(t->base, 1, 1);
    pj(s, t->base, "session");
    feed_arg f = {arc_counter_start(NULL, &err)};
    assert_non_null(f.c);
    assert_int_equal(arc_write_session(s, 1, counter_sink, &f, &ws, &err), 0);
    assert_int_equal(arc_counter_finish(f.c, &cs, &err), 0);
    assert_int_equal(cs.entries, ws.entries);
    assert_int_equal(cs.bytes, ws.bytes);

    membuf m = {0};
    assert_int_equal(arc_write_session(s, 1, mem_sink, &m, NULL, &err), 0);
    f.c = arc_counter_start(NULL, &err);
    assert_int_equal(arc_counter_feed(f.c, m.p, m.len / 2, &err), 0);
    assert_int_equal(arc_counter_finish(f.c, &cs, &err), -1);
    assert_int_equal(err.code, SW_E_BACKEND);
    assert_true(err.retryable);
    /* garbage first: the counter fails at once but keeps draining; feeding never blocks */
    unsigned char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    f.c = arc_counter_start(NULL, &err);
    for (int i = 0; i < 1024; i++) assert_int_equal(arc_counter_feed(f.c, junk, sizeof junk, &err), 0);
    assert_int_equal(arc_counter_finish(f.c, &cs, &err), -1);
    f.c = arc_counter_start(NULL, &err);
    assert_int_equal(arc_counter_feed(f.c, m.p, 1000, &err), 0);
    arc_counter_abort(f.c);
    arc_counter_abort(NULL);
    assert_int_equal(count_names("/proc/self/task"), threads);
    free(m.p);
}

/* ------------------------------------------------------------------ live counts */

typedef struct live_rec {
    membuf m;          /* what the writer wrote */
    memsrc *src;       /* what the reader reads */
    arc_live *live;
    int64_t first, last; /* counts seen by the sink or source calls */
    int changes;       /* calls that saw a new count */
    int down;          /* a count went down */
} live_rec;

static void live_note(live_rec *r)
{
    int64_t v = arc_live_get(r->live);
    if (r->changes && v < r->last) r->down = 1;
    if (!r->changes) r->first = v;
    if (!r->changes || v != r->last) r->changes++;
    r->last = v;
}

static int live_sink(void *arg, const void *buf, size_t n, sw_err *err)
{
    live_rec *r = arg;
    live_note(r);
    return mem_sink(&r->m, buf, n, err);
}

static ssize_t live_source(void *arg, void *buf, size_t n, sw_err *err)
{
    live_rec *r = arg;
    live_note(r);
    return mem_source(r->src, buf, n, err);
}

static void live_seen(const live_rec *r, int64_t final)
{
    assert_false(r->down);
    assert_true(r->first >= 0);
    assert_true(r->last <= final);
    assert_true(r->changes >= 2);   /* a 20 MiB member between the first members and the rest */
}

/* What progress events read while an archive goes by: a count that starts at 0, never goes
 * down, is at most the final count at every sink or source call (the extractor's source runs
 * ahead of its members on another thread), and ends at exactly what arc_stats reports. */
static void live_counts_follow_the_members(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX], d[PATH_MAX];
    sw_err err = {0};
    arc_stats ws, xs, cs;
    arc_check_info info;
    arc_live live;
    build_session(t->base, 1, 1);
    pj(s, t->base, "session");
    arc_live_init(&live);
    assert_int_equal(arc_live_get(&live), -1);
    live_rec w = {.live = &live};
    int fd = open(s, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(arc_write_session_ex(fd, s, 1, NULL, &live, live_sink, &w, &ws, &err), 0);
    close(fd);
    assert_int_equal(arc_live_get(&live), ws.entries);
    live_seen(&w, ws.entries);

    memsrc ms = {w.m.p, w.m.len, 0, 0};
    live_rec x = {.src = &ms, .live = &live};
    arc_live_init(&live);
    put_dir(t->base, "dest");
    fd = open(pj(d, t->base, "dest"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    if (arc_extract_at(live_source, &x, fd, d, NULL, &live, &xs, &err) != 0) fail_msg("extract: %s", err.msg);
    close(fd);
    assert_int_equal(xs.entries, ws.entries);
    assert_int_equal(arc_live_get(&live), xs.entries);
    live_seen(&x, xs.entries);

    ms.pos = 0;
    live_rec c = {.src = &ms, .live = &live};
    arc_live_init(&live);
    assert_int_equal(arc_check(live_source, &c, NULL, &live, &info, &err), 0);
    assert_int_equal(arc_live_get(&live), info.st.entries);
    assert_int_equal(info.st.entries, ws.entries);
    live_seen(&c, info.st.entries);

    arc_live_init(&live);
    arc_counter *k = arc_counter_start(&live, &err);
    assert_non_null(k);
    for (size_t off = 0; off < w.m.len; off += 65536)
        assert_int_equal(arc_counter_feed(k, w.m.p + off, w.m.len - off < 65536 ? w.m.len - off : 65536, &err), 0);
    assert_int_equal(arc_counter_finish(k, &cs, &err), 0);
    assert_int_equal(arc_live_get(&live), cs.entries);
    assert_int_equal(cs.entries, ws.entries);
    free(w.m.p);
}

/* A folder archived under another name ("outputs") extracts to the same tree. */
static void write_tree_archives_a_folder_under_a_new_name(void **state)
{
    tdir *t = *state;
    char s[PATH_MAX], a[PATH_MAX], d[PATH_MAX], b[PATH_MAX];
    membuf m = {0};
    sw_err err = {0};
    arc_stats ws, xs;
    build_session(t->base, 0, 0);
    pj(s, t->base, "session");
    pj(a, s, "outputs");
    assert_int_equal(arc_write_tree(a, "outputs", 6, mem_sink, &m, &ws, &err), 0);
    put_dir(t->base, "dest");
    pj(d, t->base, "dest");
    if (extract_mem(&m, d, NULL, &xs, &err) != 0) fail_msg("extract: %s", err.msg);
    assert_int_equal(same_tree(a, pj(b, d, "outputs")) + 1, xs.entries);
    assert_int_equal(ws.entries, xs.entries);
    free(m.p);
    assert_int_equal(arc_write_tree(pj(b, t->base, "missing"), "outputs", 6, mem_sink, &m, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_BACKEND);
    assert_false(err.retryable);
}

/* ------------------------------------------------------------------ rmtree, copytree */

static void rmtree_does_not_follow_symlinks(void **state)
{
    tdir *t = *state;
    char tree[PATH_MAX], out[PATH_MAX], p[PATH_MAX];
    sw_err err = {0};
    put_dir(t->base, "outside");
    pj(out, t->base, "outside");
    put_file(out, "keep", "k", 1, 0644);
    put_dir(t->base, "tree");
    pj(tree, t->base, "tree");
    put_link(tree, "link", out);
    put_link(tree, "rel", "../outside/keep");
    put_dir(tree, "closed");
    put_file(pj(p, tree, "closed"), "f", "x", 1, 0644);
    assert_int_equal(chmod(p, 0), 0);
    put_dir(tree, "ro");
    put_file(pj(p, tree, "ro"), "f", "x", 1, 0444);
    assert_int_equal(chmod(p, 0555), 0);
    assert_int_equal(arc_rmtree(tree, &err), 0);
    assert_int_equal(access(tree, F_OK), -1);
    assert_int_equal(access(pj(p, out, "keep"), F_OK), 0);
    assert_int_equal(arc_rmtree(tree, &err), 0); /* missing is success */
    put_link(t->base, "lnk", out);
    assert_int_equal(arc_rmtree(pj(p, t->base, "lnk"), &err), 0);
    assert_int_equal(access(pj(p, out, "keep"), F_OK), 0);
}

static void copytree_copies_files_links_modes_and_mtimes(void **state)
{
    tdir *t = *state;
    char src[PATH_MAX], dst[PATH_MAX], p[PATH_MAX];
    sw_err err = {0};
    put_dir(t->base, "tpl");
    pj(src, t->base, "tpl");
    put_file(src, "README.md", "hello", 5, 0640);
    put_dir(src, "web");
    put_file(pj(p, src, "web"), "run", "#!/bin/sh\n", 10, 0755);
    put_link(src, "start", "web/run");
    set_times(src, 1650000000);
    pj(dst, t->base, "out");
    assert_int_equal(arc_copytree(src, dst, &err), 0);
    assert_int_equal(same_tree(src, dst), 4);
    assert_int_equal(arc_copytree(src, dst, &err), -1);
    assert_int_equal(err.code, SW_E_BACKEND);
    assert_int_equal(arc_copytree(pj(p, t->base, "missing"), pj(dst, t->base, "out2"), &err), -1);
    assert_int_equal(access(dst, F_OK), -1);
}

/* ------------------------------------------------------------------ threads */

typedef struct job { membuf m; char dest[PATH_MAX]; int rc; sw_err err; arc_stats st; } job;

static void *extract_thread(void *p)
{
    job *j = p;
    j->rc = extract_mem(&j->m, j->dest, NULL, &j->st, &j->err);
    return NULL;
}

static void four_threads_extract_at_once(void **state)
{
    tdir *t = *state;
    enum { T = 4 };
    job jobs[T];
    pthread_t th[T];
    char base[PATH_MAX], s[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < T; i++) {
        assert_true(snprintf(base, sizeof base, "%s/w%d", t->base, i) < PATH_MAX);
        assert_int_equal(mkdir(base, 0755), 0);
        build_session(base, i % 2, 0);
        pj(s, base, "session/outputs");
        for (int k = 0; k <= i * 40; k++) { /* different trees */
            char name[32];
            snprintf(name, sizeof name, "gen%d-%d", i, k);
            put_file(s, name, name, strlen(name), 0600 | (mode_t)(k % 2 ? 0100 : 0));
        }
        pj(s, base, "session");
        assert_int_equal(arc_write_session(s, 3, mem_sink, &jobs[i].m, NULL, &jobs[i].err), 0);
        pj(jobs[i].dest, base, "dest");
        assert_int_equal(mkdir(jobs[i].dest, 0755), 0);
    }
    for (int i = 0; i < T; i++) assert_int_equal(pthread_create(&th[i], NULL, extract_thread, &jobs[i]), 0);
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++) {
        if (jobs[i].rc != 0) fail_msg("thread %d: %s", i, jobs[i].err.msg);
        assert_true(snprintf(base, sizeof base, "%s/w%d/session", t->base, i) < PATH_MAX);
        int64_t n = same_tree(pj(a, base, "outputs"), pj(b, jobs[i].dest, "outputs")) + 1;
        if (i % 2) n += same_tree(pj(a, base, "attachments"), pj(b, jobs[i].dest, "attachments")) + 1;
        assert_int_equal(jobs[i].st.entries, n);
        free(jobs[i].m.p);
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(roundtrip_keeps_content_modes_links_and_mtimes),
        T(nonempty_attachments_are_included),
        T(unchanged_tree_gives_identical_bytes),
        T(missing_outputs_is_workspace_missing),
        T(empty_outputs_is_archived),
        T(sink_error_is_passed_through),
        T(deep_tree_round_trips_without_leaking_fds),
        T(dotdot_member_is_refused),
        T(absolute_member_is_refused),
        T(dotdot_inside_member_is_refused),
        T(member_outside_outputs_and_attachments_is_refused),
        T(symlink_to_etc_then_file_through_it_is_refused),
        T(writing_through_an_in_tree_symlink_is_refused),
        T(symlink_escaping_upwards_is_refused),
        T(symlink_climbing_through_another_symlink_is_refused),
        T(hard_link_to_etc_passwd_is_refused),
        T(hard_link_to_parent_file_is_refused),
        T(hard_link_to_symlink_or_dir_is_refused),
        T(hard_link_to_extracted_file_is_kept),
        T(character_device_is_refused),
        T(fifo_is_refused),
        T(duplicate_member_is_refused),
        T(top_level_outputs_must_be_a_directory),
        T(setuid_setgid_sticky_bits_are_stripped),
        T(entry_bomb_is_too_large),
        T(size_bomb_is_too_large_before_writing),
        T(an_early_refusal_stops_the_inflate_thread),
        T(truncated_gzip_is_corrupt),
        T(garbage_bytes_are_corrupt),
        T(source_error_is_passed_through),
        T(zstd_and_plain_tar_are_read),
        T(nonempty_destination_is_refused),
        T(check_counts_like_extract_and_reports_compression),
        T(check_tracks_names_like_the_filesystem),
        T(check_passes_source_errors_and_refuses_truncation),
        T(counter_counts_a_passing_stream_and_catches_a_cut),
        T(live_counts_follow_the_members),
        T(write_tree_archives_a_folder_under_a_new_name),
        T(rmtree_does_not_follow_symlinks),
        T(copytree_copies_files_links_modes_and_mtimes),
        T(four_threads_extract_at_once),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
