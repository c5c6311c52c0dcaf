/* tests/unit/test_store.c — the store without servers: key rules, the file:// backend
 * in a mkdtemp folder (round trips, atomicity, listing, corruption), the sidecar
 * protocol through a recording fake backend, and the pure S3 helpers (URI encoding,
 * URLs, XML, backoff, part-size limit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/err.h"
#include "common/sha256.h"
#include "common/store.h"
#include "common/xmalloc.h"

#define MiB (1024 * 1024)

/* ------------------------------------------------------------------ fixtures */

typedef struct fx {
    char base[PATH_MAX];
    char url[PATH_MAX + 16];
    cfg c;
    store *s;
} fx;

static int setup(void **state)
{
    fx *f = xcalloc(1, sizeof *f);
    snprintf(f->base, sizeof f->base, "%s/test_store.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(f->base)) return -1;
    snprintf(f->url, sizeof f->url, "file://%s/root/", f->base);
    f->c.store_url = f->url;
    sw_err err = {0};
    f->s = store_open(&f->c, &err);
    if (!f->s) return -1;
    *state = f;
    return 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

static int teardown(void **state)
{
    fx *f = *state;
    store_close(f->s);
    int rc = nftw(f->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = xmalloc(n ? n : 1);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        p[i] = (unsigned char)x;
    }
    return p;
}

/* Put n bytes in uneven pieces; returns the commit's result. */
static int put_bytes(store *s, const char *key, const unsigned char *p, size_t n, store_info *info,
                     sw_err *err)
{
    store_writer *w = store_put_begin(s, key, err);
    if (!w) return -1;
    size_t off = 0, step = 1;
    while (off < n) {
        size_t take = n - off < step ? n - off : step;
        if (store_put_write(w, p + off, take, err) < 0) {
            store_put_abort(w);
            return -1;
        }
        off += take;
        step = step * 3 + 7;
    }
    return store_put_commit(w, info, err);
}

static unsigned char *get_bytes(store *s, const char *key, size_t *n_out, store_info *info, sw_err *err)
{
    store_reader *r = store_get_open(s, key, info, err);
    if (!r) return NULL;
    size_t cap = 1024, n = 0;
    unsigned char *buf = xmalloc(cap);
    for (;;) {
        if (n + 777 > cap) buf = xrealloc(buf, cap *= 2);
        ssize_t got = store_get_read(r, buf + n, 777, err);
        if (got < 0) {
            free(buf);
            buf = NULL;
            break;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    store_get_close(r);
    *n_out = n;
    return buf;
}

static char *path_in(const fx *f, const char *rel)
{
    return xasprintf("%s/root/%s", f->base, rel);
}

/* ------------------------------------------------------------------ keys */

static void test_valid_keys_pass_the_key_check(void **state)
{
    (void)state;
    const char *ok[] = {"a", "public/snapshots/0b6f/1.tar.gz", "a b/c+d", "ünï/😀.tar.gz",
                        "a..b/.hidden/x~", "x.sha256.tar.gz", "%41"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        sw_err err = {0};
        assert_int_equal(store_key_check(ok[i], &err), 0);
    }
    char longest[STORE_KEY_MAX + 1];
    memset(longest, 'k', STORE_KEY_MAX);
    longest[STORE_KEY_MAX] = '\0';
    assert_int_equal(store_key_check(longest, NULL), 0);
}

static void test_invalid_keys_are_invalid_payload(void **state)
{
    (void)state;
    const char *bad[] = {"", "/abs", "a//b", "a/", "./a", "a/./b", "..", "a/../b", "a/..",
                         "tab\tkey", "nl\n", "del\x7f", "bad\xff utf8", "over\xc0\xafong",
                         "surrogate\xed\xa0\x80", "x.sha256", "d/.swtmp-123"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sw_err err = {0};
        assert_int_equal(store_key_check(bad[i], &err), -1);
        assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
        assert_false(err.retryable);
    }
    char toolong[STORE_KEY_MAX + 2];
    memset(toolong, 'k', STORE_KEY_MAX + 1);
    toolong[STORE_KEY_MAX + 1] = '\0';
    assert_int_equal(store_key_check(toolong, NULL), -1);
    assert_int_equal(store_key_check(NULL, NULL), -1);
}

static void test_operations_refuse_bad_keys_before_touching_the_disk(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    assert_null(store_put_begin(f->s, "../escape", &err));
    assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
    assert_null(store_get_open(f->s, "/etc/passwd", NULL, &err));
    assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
    assert_int_equal(store_delete(f->s, "a//b", &err), -1);
    assert_int_equal(store_head(f->s, "", NULL, &err), -1);
    struct stat st;
    char *root = xasprintf("%s/root", f->base);
    assert_int_equal(stat(root, &st), -1);   /* nothing created */
    free(root);
}

/* ------------------------------------------------------------------ file store */

static void test_file_store_round_trips_boundary_sizes(void **state)
{
    fx *f = *state;
    size_t sizes[] = {0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        sw_err err = {0};
        unsigned char *data = pattern(sizes[i], (unsigned)i);
        char key[64], want[65];
        snprintf(key, sizeof key, "t/%zu.tar.gz", sizes[i]);
        sha256_hex(data, sizes[i], want);
        store_info info = {0}, hinfo = {0}, ginfo = {0};
        assert_int_equal(put_bytes(f->s, key, data, sizes[i], &info, &err), 0);
        assert_int_equal(info.size_bytes, (int64_t)sizes[i]);
        assert_string_equal(info.sha256, want);
        assert_int_equal(store_head(f->s, key, &hinfo, &err), 0);
        assert_int_equal(hinfo.size_bytes, (int64_t)sizes[i]);
        assert_string_equal(hinfo.sha256, want);
        size_t n = 0;
        unsigned char *back = get_bytes(f->s, key, &n, &ginfo, &err);
        assert_non_null(back);
        assert_int_equal(n, sizes[i]);
        if (sizes[i]) assert_memory_equal(back, data, sizes[i]);
        assert_string_equal(ginfo.sha256, want);
        free(back);
        free(data);
    }
}

static void test_sidecar_is_64_hex_and_a_newline_next_to_the_object(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    assert_int_equal(put_bytes(f->s, "a/b/c.tar.gz", (const unsigned char *)"abc", 3, NULL, &err), 0);
    char *p = path_in(f, "a/b/c.tar.gz.sha256");
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    char line[100] = {0};
    assert_non_null(fgets(line, sizeof line, fp));
    fclose(fp);
    assert_string_equal(line, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n");
    free(p);
}

static void test_an_aborted_put_leaves_no_object_and_no_temp_file(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    store_writer *w = store_put_begin(f->s, "d/x.tar.gz", &err);
    assert_non_null(w);
    assert_int_equal(store_put_write(w, "partial", 7, &err), 0);
    store_put_abort(w);
    store_put_abort(NULL);
    assert_int_equal(store_head(f->s, "d/x.tar.gz", NULL, &err), -1);
    assert_int_equal(err.code, SW_E_SNAPSHOT_NOT_FOUND);
    char *dir = path_in(f, "d");
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int entries = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) entries++;
    closedir(d);
    assert_int_equal(entries, 0);
    free(dir);
}

static void test_an_unfinished_put_is_invisible_and_a_later_commit_adopts_the_first_object(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    store_info first = {0}, info = {0};
    assert_int_equal(put_bytes(f->s, "v.tar.gz", (const unsigned char *)"old", 3, &first, &err), 0);
    assert_false(first.adopted);
    store_writer *w = store_put_begin(f->s, "v.tar.gz", &err);
    assert_int_equal(store_put_write(w, "newer", 5, &err), 0);
    size_t n = 0;
    unsigned char *back = get_bytes(f->s, "v.tar.gz", &n, &info, &err);
    assert_int_equal(n, 3);                       /* readers still see the old object */
    assert_memory_equal(back, "old", 3);
    free(back);
    /* write-once: the first commit won; this one discards "newer" and describes "old" */
    assert_int_equal(store_put_commit(w, &info, &err), 0);
    assert_true(info.adopted);
    assert_int_equal(info.size_bytes, 3);
    assert_string_equal(info.sha256, first.sha256);
    back = get_bytes(f->s, "v.tar.gz", &n, &info, &err);
    assert_int_equal(n, 3);
    assert_memory_equal(back, "old", 3);
    free(back);
    char *dir = path_in(f, "");
    DIR *d = opendir(dir);                        /* the loser's temp file is gone */
    for (struct dirent *de; (de = readdir(d));) assert_null(strstr(de->d_name, ".swtmp-"));
    closedir(d);
    free(dir);
    /* after a delete the key takes a new object again */
    assert_int_equal(store_delete(f->s, "v.tar.gz", &err), 0);
    assert_int_equal(put_bytes(f->s, "v.tar.gz", (const unsigned char *)"newer", 5, &info, &err), 0);
    assert_false(info.adopted);
    assert_int_equal(info.size_bytes, 5);
}

static void test_adopting_an_object_without_sidecar_hashes_it_and_writes_the_sidecar(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    unsigned char *data = pattern(300000, 4);
    char want[65];
    sha256_hex(data, 300000, want);
    /* its writer died between the commit and the sidecar */
    assert_int_equal(put_bytes(f->s, "a/o.tar.gz", data, 300000, NULL, &err), 0);
    char *side = path_in(f, "a/o.tar.gz.sha256");
    assert_int_equal(unlink(side), 0);
    store_info info = {0};
    assert_int_equal(put_bytes(f->s, "a/o.tar.gz", (const unsigned char *)"other", 5, &info, &err), 0);
    assert_true(info.adopted);
    assert_int_equal(info.size_bytes, 300000);
    assert_string_equal(info.sha256, want);
    assert_int_equal(store_head(f->s, "a/o.tar.gz", &info, &err), 0);
    assert_string_equal(info.sha256, want);      /* the sidecar is back */
    free(side);
    free(data);
}

static void test_a_stale_sidecar_without_object_is_replaced_by_the_next_put(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    char *side = path_in(f, "s.tar.gz.sha256"), *root = path_in(f, "");
    mkdir(root, 0777);
    free(root);
    FILE *fp = fopen(side, "w");
    assert_non_null(fp);                  /* left by a delete that died half-way */
    fputs("0000000000000000000000000000000000000000000000000000000000000000\n", fp);
    fclose(fp);
    store_info info = {0};
    assert_int_equal(put_bytes(f->s, "s.tar.gz", (const unsigned char *)"abc", 3, &info, &err), 0);
    assert_false(info.adopted);
    size_t n = 0;
    unsigned char *back = get_bytes(f->s, "s.tar.gz", &n, &info, &err);
    assert_non_null(back);                        /* verifies against the new sidecar */
    assert_int_equal(n, 3);
    free(back);
    free(side);
}

static void test_gc_removes_old_temp_files_only(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    assert_int_equal(put_bytes(f->s, "t/s/keep.tar.gz", (const unsigned char *)"obj", 3, NULL, &err), 0);
    char *old_tmp = path_in(f, "t/s/.swtmp-00000000000000aa");
    char *young_tmp = path_in(f, "t/s/.swtmp-00000000000000bb");
    char *other = path_in(f, "u/.swtmp-00000000000000cc");
    char *udir = path_in(f, "u");
    mkdir(udir, 0777);
    const char *files[] = {old_tmp, young_tmp, other};
    for (int i = 0; i < 3; i++) {
        FILE *fp = fopen(files[i], "w");
        fputs("partial", fp);
        fclose(fp);
    }
    struct timespec times[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    assert_int_equal(utimensat(AT_FDCWD, old_tmp, times, 0), 0);
    assert_int_equal(utimensat(AT_FDCWD, other, times, 0), 0);
    store_gc_stats st;
    assert_int_equal(store_gc(f->s, "t/", 3600, 10000, &st, &err), 0);   /* u/ is out of scope */
    assert_int_equal(st.seen, 2);
    assert_int_equal(st.removed, 1);
    assert_int_equal(st.kept, 1);
    assert_int_equal(st.removed_bytes, 7);
    assert_false(st.truncated);
    assert_int_equal(access(old_tmp, F_OK), -1);
    assert_int_equal(access(young_tmp, F_OK), 0);
    assert_int_equal(access(other, F_OK), 0);
    store_info info;
    assert_int_equal(store_head(f->s, "t/s/keep.tar.gz", &info, &err), 0);   /* objects untouched */
    assert_int_equal(store_gc(f->s, "", 3600, 10000, &st, &err), 0);
    assert_int_equal(st.removed, 1);
    assert_int_equal(access(other, F_OK), -1);
    assert_int_equal(store_gc(f->s, "", 3600, -1, &st, &err), 0);            /* no time: stops */
    assert_true(st.truncated);
    free(old_tmp);
    free(young_tmp);
    free(other);
    free(udir);
}

static void test_get_and_head_of_a_missing_key_are_snapshot_not_found(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    store_info info;
    assert_null(store_get_open(f->s, "nope/x.tar.gz", &info, &err));
    assert_int_equal(err.code, SW_E_SNAPSHOT_NOT_FOUND);
    assert_false(err.retryable);
    assert_int_equal(store_head(f->s, "nope", &info, &err), -1);
    assert_int_equal(err.code, SW_E_SNAPSHOT_NOT_FOUND);
    /* a folder of other keys is not an object either */
    assert_int_equal(put_bytes(f->s, "dir/inner", (const unsigned char *)"1", 1, NULL, &err), 0);
    assert_null(store_get_open(f->s, "dir", &info, &err));
    assert_int_equal(err.code, SW_E_SNAPSHOT_NOT_FOUND);
}

static void test_delete_removes_object_and_sidecar_and_a_missing_key_is_fine(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    assert_int_equal(store_delete(f->s, "never/was", &err), 0);
    assert_int_equal(put_bytes(f->s, "k.tar.gz", (const unsigned char *)"z", 1, NULL, &err), 0);
    assert_int_equal(store_delete(f->s, "k.tar.gz", &err), 0);
    struct stat st;
    char *p = path_in(f, "k.tar.gz"), *sp = path_in(f, "k.tar.gz.sha256");
    assert_int_equal(stat(p, &st), -1);
    assert_int_equal(stat(sp, &st), -1);
    free(p);
    free(sp);
}

typedef struct seen {
    char keys[16][64];
    int64_t sizes[16];
    int n, stop_after;
} seen;

static int collect(void *arg, const char *key, int64_t size)
{
    seen *s = arg;
    snprintf(s->keys[s->n], sizeof s->keys[0], "%s", key);
    s->sizes[s->n++] = size;
    return s->stop_after && s->n >= s->stop_after;
}

typedef struct seen_mtime {
    int n;
    int64_t mtimes[8];
} seen_mtime;

static int collect_mtime(void *arg, const char *key, int64_t size, int64_t mtime)
{
    (void)key;
    (void)size;
    seen_mtime *s = arg;
    if (s->n < 8) s->mtimes[s->n++] = mtime;
    return 0;
}

static void test_list_filters_by_string_prefix_and_hides_sidecars_and_temp_files(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    const char *keys[] = {"a/b/1", "a/b/2", "a/bc", "a-c", "b"};
    for (int i = 0; i < 5; i++)
        assert_int_equal(put_bytes(f->s, keys[i], (const unsigned char *)"12345", (size_t)i, NULL, &err), 0);
    store_writer *w = store_put_begin(f->s, "a/b/3", &err);   /* a temp file on disk */
    seen s = {0};
    assert_int_equal(store_list(f->s, "a/b", collect, &s, &err), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.keys[0], "a/b/1");
    assert_string_equal(s.keys[1], "a/b/2");
    assert_string_equal(s.keys[2], "a/bc");
    assert_int_equal(s.sizes[1], 1);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_list(f->s, "", collect, &s, &err), 0);
    assert_int_equal(s.n, 5);
    memset(&s, 0, sizeof s);
    s.stop_after = 2;
    assert_int_equal(store_list(f->s, NULL, collect, &s, &err), 0);
    assert_int_equal(s.n, 2);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_list(f->s, "zzz", collect, &s, &err), 0);
    assert_int_equal(s.n, 0);
    seen_mtime sm = {0};                             /* the file's mtime, sidecars hidden */
    time_t before = time(NULL);
    assert_int_equal(store_list_mtime(f->s, "a/b/", collect_mtime, &sm, &err), 0);
    assert_int_equal(sm.n, 2);
    assert_true(sm.mtimes[0] > 0 && sm.mtimes[0] <= (int64_t)before);
    assert_true(sm.mtimes[0] > (int64_t)before - 600);
    store_put_abort(w);
}

static void test_a_corrupted_object_fails_verification_permanently(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    unsigned char *data = pattern(100000, 7);
    assert_int_equal(put_bytes(f->s, "c.tar.gz", data, 100000, NULL, &err), 0);
    char *p = path_in(f, "c.tar.gz");
    int fd = open(p, O_WRONLY);
    assert_true(pwrite(fd, "X", 1, 4242) == 1);
    close(fd);
    size_t n = 0;
    assert_null(get_bytes(f->s, "c.tar.gz", &n, NULL, &err));
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_false(err.retryable);
    assert_non_null(strstr(err.msg, "sha256 mismatch"));
    /* drain reports the same, and reads after a failure keep failing */
    store_reader *r = store_get_open(f->s, "c.tar.gz", NULL, &err);
    assert_non_null(r);
    assert_int_equal(store_get_drain(r, &err), -1);
    char b[8];
    assert_int_equal(store_get_read(r, b, sizeof b, &err), -1);
    store_get_close(r);
    free(p);
    free(data);
}

static void test_a_truncated_object_is_a_retryable_size_error(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    unsigned char *data = pattern(5000, 3);
    assert_int_equal(put_bytes(f->s, "t.tar.gz", data, 5000, NULL, &err), 0);
    store_reader *r = store_get_open(f->s, "t.tar.gz", NULL, &err);
    char *p = path_in(f, "t.tar.gz");
    assert_int_equal(truncate(p, 100), 0);      /* shrinks under an open reader */
    assert_int_equal(store_get_drain(r, &err), -1);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_true(err.retryable);
    store_get_close(r);
    free(p);
    free(data);
}

static void test_an_object_without_sidecar_reads_unverified(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    assert_int_equal(put_bytes(f->s, "n.tar.gz", (const unsigned char *)"data", 4, NULL, &err), 0);
    char *sp = path_in(f, "n.tar.gz.sha256");
    assert_int_equal(unlink(sp), 0);
    store_info info;
    size_t n = 0;
    unsigned char *back = get_bytes(f->s, "n.tar.gz", &n, &info, &err);
    assert_non_null(back);
    assert_int_equal(n, 4);
    assert_string_equal(info.sha256, "");
    assert_int_equal(info.size_bytes, 4);
    free(back);
    free(sp);
}

static void test_a_garbled_sidecar_is_a_permanent_storage_error(void **state)
{
    fx *f = *state;
    sw_err err = {0};
    assert_int_equal(put_bytes(f->s, "g.tar.gz", (const unsigned char *)"data", 4, NULL, &err), 0);
    char *sp = path_in(f, "g.tar.gz.sha256");
    FILE *fp = fopen(sp, "w");
    fputs("not a hash\n", fp);
    fclose(fp);
    assert_null(store_get_open(f->s, "g.tar.gz", NULL, &err));
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_false(err.retryable);
    free(sp);
}

/* ------------------------------------------------------------------ opening */

static void test_store_open_refuses_bad_urls_missing_bucket_and_missing_credentials(void **state)
{
    (void)state;
    cfg c;
    memset(&c, 0, sizeof c);
    sw_err err = {0};
    char u1[] = "ftp://x", u2[] = "file://relative", u3[] = "", u4[] = "s3://bad/../prefix";
    char *urls[] = {u1, u2, u3, u4};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        c.store_url = urls[i];
        assert_null(store_open(&c, &err));
        assert_int_equal(err.code, SW_E_STORAGE);
        assert_false(err.retryable);
    }
    char s3empty[] = "s3://", nobucket[] = "", fallback[] = "fallback-bucket", secret[] = "sekret-value";
    char akid[] = "AKID", ftp[] = "ftp://nope", ep[] = "http://127.0.0.1:1/", named[] = "s3://named/pre/fix/";
    c.store_url = s3empty;
    c.s3_bucket = nobucket;
    assert_null(store_open(&c, &err));
    assert_non_null(strstr(err.msg, "bucket"));
    c.s3_bucket = fallback;
    c.aws_secret_access_key = secret;
    assert_null(store_open(&c, &err));              /* no access key id */
    assert_non_null(strstr(err.msg, "AWS_ACCESS_KEY_ID"));
    assert_null(strstr(err.msg, "sekret-value"));
    c.aws_access_key_id = akid;
    c.aws_endpoint_url = ftp;
    assert_null(store_open(&c, &err));
    c.aws_endpoint_url = ep;
    store *s = store_open(&c, &err);
    assert_non_null(s);
    assert_string_equal(store_describe(s), "s3://fallback-bucket");
    store_close(s);
    c.store_url = named;
    s = store_open(&c, &err);
    assert_non_null(s);
    assert_string_equal(store_describe(s), "s3://named/pre/fix");
    store_close(s);
    store_close(NULL);
}

static void test_an_unreachable_s3_endpoint_is_a_retryable_storage_error(void **state)
{
    (void)state;
    cfg c;
    memset(&c, 0, sizeof c);
    char url[] = "s3://b", akid[] = "AKID", secret[] = "SECRET", ep[] = "http://127.0.0.1:1";
    c.store_url = url;
    c.aws_access_key_id = akid;
    c.aws_secret_access_key = secret;
    c.aws_endpoint_url = ep;                        /* nothing listens on port 1 */
    c.store_retry_budget_s = 0;
    c.store_timeout_s = 2;
    sw_err err = {0};
    store *s = store_open(&c, &err);
    assert_non_null(s);
    assert_int_equal(store_head(s, "k", NULL, &err), -1);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_true(err.retryable);
    assert_null(strstr(err.msg, "SECRET"));
    store_close(s);
}

/* ------------------------------------------------------------------ the sidecar protocol */

/* A backend that keeps one object in memory and records the order of operations. */
typedef struct fake {
    char log[512];
    int fail_commit;
    int64_t size;
} fake;

typedef struct fake_w { fake *f; char key[64]; int64_t n; } fake_w;

static void logop(fake *f, const char *op, const char *key)
{
    size_t l = strlen(f->log);
    snprintf(f->log + l, sizeof f->log - l, "%s%s %s", l ? ";" : "", op, key);
}
static void fk_close(void *impl) { (void)impl; }
static void *fk_put_begin(void *impl, const char *key, sw_err *err)
{
    (void)err;
    fake_w *w = xcalloc(1, sizeof *w);
    w->f = impl;
    snprintf(w->key, sizeof w->key, "%s", key);
    return w;
}
static int fk_put_write(void *w, const void *buf, size_t n, sw_err *err)
{
    (void)buf; (void)err;
    ((fake_w *)w)->n += (int64_t)n;
    return 0;
}
static int fk_put_commit(void *wp, sw_err *err)
{
    fake_w *w = wp;
    int rc = 0;
    if (w->f->fail_commit && !strstr(w->key, ".sha256"))
        rc = sw_errf(err, SW_E_STORAGE, true, "injected 503");
    else
        logop(w->f, "publish", w->key);
    free(w);
    return rc;
}
static void fk_put_abort(void *w) { free(w); }
static void *fk_get_open(void *impl, const char *key, int64_t *size, sw_err *err)
{
    (void)impl; (void)size;
    sw_errf(err, SW_E_SNAPSHOT_NOT_FOUND, false, "no %s", key);
    return NULL;
}
static ssize_t fk_get_read(void *r, void *buf, size_t n, sw_err *err) { (void)r; (void)buf; (void)n; (void)err; return 0; }
static void fk_get_close(void *r) { (void)r; }
static int fk_head(void *impl, const char *key, int64_t *size, sw_err *err)
{
    (void)impl; (void)key; (void)size;
    return sw_errf(err, SW_E_SNAPSHOT_NOT_FOUND, false, "none");
}
static int fk_del(void *impl, const char *key, sw_err *err)
{
    (void)err;
    logop(impl, "delete", key);
    return 0;
}
static int fk_list(void *impl, const char *prefix, int (*cb)(void *, const char *, int64_t, int64_t),
                   void *arg, sw_err *err)
{
    (void)impl; (void)prefix; (void)err;
    if (cb(arg, "x.tar.gz", 1, 1000)) return 0;
    if (cb(arg, "x.tar.gz.sha256", 65, 1000)) return 0;
    cb(arg, "y.tar.gz", 2, 2000);
    return 0;
}
static const store_ops fake_ops = {"fake", fk_close, fk_put_begin, fk_put_write, fk_put_commit,
                                   fk_put_abort, fk_get_open, fk_get_read, fk_get_close, fk_head,
                                   fk_del, fk_list, NULL};

static void test_commit_publishes_then_writes_the_sidecar(void **state)
{
    (void)state;
    fake f = {0};
    store *s = store_new(&fake_ops, &f, NULL);
    sw_err err = {0};
    store_writer *w = store_put_begin(s, "x.tar.gz", &err);
    assert_int_equal(store_put_write(w, "abc", 3, &err), 0);
    store_info info;
    assert_int_equal(store_put_commit(w, &info, &err), 0);
    assert_string_equal(f.log, "publish x.tar.gz;publish x.tar.gz.sha256");
    assert_int_equal(info.size_bytes, 3);
    f.log[0] = '\0';
    f.fail_commit = 1;                               /* a failed publish writes no sidecar */
    w = store_put_begin(s, "x.tar.gz", &err);
    assert_int_equal(store_put_commit(w, &info, &err), -1);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_true(err.retryable);
    assert_string_equal(f.log, "");
    seen sn = {0};
    assert_int_equal(store_list(s, "", collect, &sn, &err), 0);   /* sidecars hidden */
    assert_int_equal(sn.n, 2);
    assert_string_equal(sn.keys[1], "y.tar.gz");
    seen_mtime sm = {0};
    assert_int_equal(store_list_mtime(s, "", collect_mtime, &sm, &err), 0);   /* mtime passed on */
    assert_int_equal(sm.n, 2);
    assert_int_equal(sm.mtimes[0], 1000);
    assert_int_equal(sm.mtimes[1], 2000);
    store_set_cancel(s, NULL);                       /* no-op without the hook */
    store_close(s);
}

/* ------------------------------------------------------------------ known-length puts */

/* A memory source: 'len' bytes of 'data'; 'rewindable' picks whether rewind exists. */
typedef struct mem_src {
    const unsigned char *data;
    size_t len, off;
    int rewinds;
} mem_src;

static ssize_t mem_read(void *arg, void *buf, size_t n, sw_err *err)
{
    (void)err;
    mem_src *m = arg;
    size_t take = m->len - m->off < n ? m->len - m->off : n;
    if (take > 7777) take = 7777;               /* short reads, as pipes give */
    memcpy(buf, m->data + m->off, take);
    m->off += take;
    return (ssize_t)take;
}

static int mem_rewind(void *arg, sw_err *err)
{
    (void)err;
    mem_src *m = arg;
    m->off = 0;
    m->rewinds++;
    return 0;
}

static void test_put_sized_through_the_file_store_checks_the_size_both_ways(void **state)
{
    fx *f = *state;
    size_t n = 3 * MiB + 11;
    unsigned char *data = pattern(n, 7);
    char want[65];
    sha256_hex(data, n, want);
    sw_err err = {0};
    store_info info = {0};
    mem_src m = {data, n, 0, 0};
    store_source src = {mem_read, NULL, &m};
    assert_int_equal(store_put_sized(f->s, "s/ok.tar.gz", (int64_t)n, &src, &info, &err), 0);
    assert_int_equal(info.size_bytes, (int64_t)n);
    assert_string_equal(info.sha256, want);
    size_t got = 0;
    unsigned char *back = get_bytes(f->s, "s/ok.tar.gz", &got, NULL, &err);
    assert_non_null(back);
    assert_int_equal(got, n);
    assert_memory_equal(back, data, n);
    free(back);
    /* one byte short, one byte long, and empty-but-not: refused, nothing visible */
    int64_t declared[] = {(int64_t)n + 1, (int64_t)n - 1, 0};
    const char *why[] = {"ended at byte", "more than", "more than"};
    for (int i = 0; i < 3; i++) {
        m.off = 0;
        sw_err e2 = {0};
        assert_int_equal(store_put_sized(f->s, "s/bad.tar.gz", declared[i], &src, NULL, &e2), -1);
        assert_int_equal(e2.code, SW_E_INVALID_PAYLOAD);
        assert_false(e2.retryable);
        assert_non_null(strstr(e2.msg, why[i]));
        assert_int_equal(store_head(f->s, "s/bad.tar.gz", NULL, &e2), -1);
        assert_int_equal(e2.code, SW_E_SNAPSHOT_NOT_FOUND);
    }
    m.len = 0;
    m.off = 0;
    assert_int_equal(store_put_sized(f->s, "s/empty.tar.gz", 0, &src, &info, &err), 0);
    assert_string_equal(info.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    free(data);
}

static void test_put_fd_sends_a_regular_file_from_its_offset_and_a_pipe_to_eof(void **state)
{
    fx *f = *state;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/src.bin", f->base);
    size_t n = MiB + 5;
    unsigned char *data = pattern(n, 3);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    assert_int_equal(lseek(fd, 5, SEEK_SET), 5);     /* from the current offset on */
    sw_err err = {0};
    store_info info = {0};
    char want[65];
    sha256_hex(data + 5, n - 5, want);
    assert_int_equal(store_put_fd(f->s, "fd/file.tar.gz", fd, &info, &err), 0);
    assert_int_equal(info.size_bytes, (int64_t)(n - 5));
    assert_string_equal(info.sha256, want);
    close(fd);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    assert_int_equal(write(pfd[1], data, 4096), 4096);
    close(pfd[1]);
    sha256_hex(data, 4096, want);
    assert_int_equal(store_put_fd(f->s, "fd/pipe.tar.gz", pfd[0], &info, &err), 0);
    assert_int_equal(info.size_bytes, 4096);
    assert_string_equal(info.sha256, want);
    close(pfd[0]);
    free(data);
}

/* A fake put_sized that reads half, "loses the connection", rewinds and sends it all,
 * as the S3 backend does on a retry. */
static int fk_put_sized(void *impl, const char *key, int64_t size, const store_source *src, sw_err *err)
{
    unsigned char buf[4096];
    int64_t got = 0;
    while (got < size / 2) {
        ssize_t r = src->read(src->arg, buf, sizeof buf, err);
        if (r <= 0) break;
        got += r;
    }
    if (!src->rewind) return sw_errf(err, SW_E_STORAGE, true, "HTTP 503 (not retried: the source cannot be rewound)");
    if (src->rewind(src->arg, err) < 0) return -1;
    got = 0;
    for (;;) {
        ssize_t r = src->read(src->arg, buf, sizeof buf, err);
        if (r < 0) return -1;
        if (r == 0) break;
        got += r;
    }
    if (got != size) return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "size");
    logop(impl, "publish", key);
    return 0;
}

static void test_a_rewound_sized_put_hashes_only_the_attempt_that_was_published(void **state)
{
    (void)state;
    store_ops ops = fake_ops;
    ops.put_sized = fk_put_sized;
    ops.put_sized_max = 1000 * 1000;
    fake f = {0};
    store *s = store_new(&ops, &f, NULL);
    size_t n = 100000;
    unsigned char *data = pattern(n, 9);
    char want[65];
    sha256_hex(data, n, want);
    mem_src m = {data, n, 0, 0};
    store_source src = {mem_read, mem_rewind, &m};
    sw_err err = {0};
    store_info info = {0};
    assert_int_equal(store_put_sized(s, "r.tar.gz", (int64_t)n, &src, &info, &err), 0);
    assert_int_equal(m.rewinds, 1);
    assert_string_equal(info.sha256, want);
    assert_string_equal(f.log, "publish r.tar.gz;publish r.tar.gz.sha256");
    /* not rewindable: the failed attempt is final and retryable, no sidecar */
    f.log[0] = '\0';
    m.off = 0;
    src.rewind = NULL;
    assert_int_equal(store_put_sized(s, "r.tar.gz", (int64_t)n, &src, &info, &err), -1);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_true(err.retryable);
    assert_string_equal(f.log, "");
    /* above put_sized_max: streamed through the ordinary writer */
    f.log[0] = '\0';
    m.off = 0;
    ops.put_sized_max = 10;
    assert_int_equal(store_put_sized(s, "r.tar.gz", (int64_t)n, &src, &info, &err), 0);
    assert_string_equal(info.sha256, want);
    assert_string_equal(f.log, "publish r.tar.gz;publish r.tar.gz.sha256");
    store_close(s);
    free(data);
}

static void test_a_sized_put_to_an_unreachable_s3_endpoint_is_retryable(void **state)
{
    (void)state;
    cfg c;
    memset(&c, 0, sizeof c);
    char url[] = "s3://b", akid[] = "AKID", secret[] = "SECRET", ep[] = "http://127.0.0.1:1";
    c.store_url = url;
    c.aws_access_key_id = akid;
    c.aws_secret_access_key = secret;
    c.aws_endpoint_url = ep;
    c.store_retry_budget_s = 1;
    c.store_timeout_s = 2;
    sw_err err = {0};
    store *s = store_open(&c, &err);
    assert_non_null(s);
    unsigned char data[100] = {0};
    mem_src m = {data, sizeof data, 0, 0};
    store_source src = {mem_read, NULL, &m};      /* never read: connecting fails first */
    assert_int_equal(store_put_sized(s, "k.tar.gz", sizeof data, &src, NULL, &err), -1);
    assert_int_equal(err.code, SW_E_STORAGE);
    assert_true(err.retryable);
    assert_null(strstr(err.msg, "SECRET"));
    store_close(s);
}

/* ------------------------------------------------------------------ S3 helpers */

static void test_uri_encoding_is_sigv4_uppercase_with_optional_slash(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(store_s3_uri_encode("a b/c+d/é~_.-", true, out, sizeof out), 22);
    assert_string_equal(out, "a%20b/c%2Bd/%C3%A9~_.-");
    store_s3_uri_encode("a/b=c&d", false, out, sizeof out);
    assert_string_equal(out, "a%2Fb%3Dc%26d");
    store_s3_uri_encode("%41*!'()", true, out, sizeof out);
    assert_string_equal(out, "%2541%2A%21%27%28%29");
    assert_int_equal(store_s3_uri_encode("abc", true, out, 3), -1);   /* no room for NUL */
    assert_int_equal(store_s3_uri_encode(" ", true, out, 3), -1);
    assert_int_equal(store_s3_uri_encode("", true, out, 1), 0);
}

static void test_urls_are_path_style_with_an_endpoint_else_virtual_host(void **state)
{
    (void)state;
    char *u = store_s3_url("http://127.0.0.1:9000/", "us-east-1", "bkt", "a b/c+d", NULL);
    assert_string_equal(u, "http://127.0.0.1:9000/bkt/a%20b/c%2Bd");
    free(u);
    u = store_s3_url("http://h:1", "eu-west-1", "bkt", "k", "partNumber=1&uploadId=x");
    assert_string_equal(u, "http://h:1/bkt/k?partNumber=1&uploadId=x");
    free(u);
    u = store_s3_url("", "eu-west-1", "bkt", "k/é", "uploads=");
    assert_string_equal(u, "https://bkt.s3.eu-west-1.amazonaws.com/k/%C3%A9?uploads=");
    free(u);
    u = store_s3_url(NULL, "eu-west-1", "my.bkt", "k", NULL);
    assert_string_equal(u, "https://s3.eu-west-1.amazonaws.com/my.bkt/k");
    free(u);
    u = store_s3_url("http://h:1", "r", "bkt", NULL, "list-type=2&prefix=a%2F");
    assert_string_equal(u, "http://h:1/bkt?list-type=2&prefix=a%2F");
    free(u);
}

static void test_part_size_bounds_the_largest_object(void **state)
{
    (void)state;
    /* S3 takes at most 10,000 parts: the default 8 MiB parts hold 78.125 GiB, the
     * 5 MiB minimum 48.8 GiB; bigger parts hold more */
    assert_int_equal(store_s3_max_object_bytes(8 * MiB), 83886080000LL);
    assert_int_equal(store_s3_max_object_bytes(5 * MiB), 52428800000LL);
    assert_true(store_s3_max_object_bytes(16 * MiB) > store_s3_max_object_bytes(8 * MiB));
    /* the 20 GiB restore limit fits in the default parts */
    assert_true(store_s3_max_object_bytes(8 * MiB) > 21474836480LL);
}

static void test_backoff_doubles_with_equal_jitter_and_stops_at_the_cap(void **state)
{
    (void)state;
    /* base 100 ms, cap 5 s: the window (upper bound) per attempt, written out */
    static const struct { int attempt; int64_t window; } w[] = {
        {1, 100}, {2, 200}, {3, 400}, {4, 800}, {5, 1600}, {6, 3200}, {7, 5000}, {12, 5000}, {40, 5000}};
    uint64_t rnds[] = {0, 1, 7, 12345, 99991, UINT64_MAX};
    for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
        /* equal jitter: never below half the window, never above it */
        for (size_t k = 0; k < sizeof rnds / sizeof *rnds; k++) {
            int64_t b = store_backoff_ms(w[i].attempt, 100, 5000, rnds[k]);
            assert_true(b >= w[i].window / 2);
            assert_true(b <= w[i].window);
        }
        /* both ends are reached */
        assert_int_equal(store_backoff_ms(w[i].attempt, 100, 5000, 0), w[i].window / 2);
        assert_int_equal(store_backoff_ms(w[i].attempt, 100, 5000, (uint64_t)w[i].window / 2),
                         w[i].window);
    }
    /* the floor doubles from one attempt to the next until the cap */
    for (int a = 1; a < 6; a++)
        assert_int_equal(store_backoff_ms(a + 1, 100, 5000, 0), 2 * store_backoff_ms(a, 100, 5000, 0));
}

static void test_s3_times_parse_as_utc(void **state)
{
    (void)state;
    assert_int_equal(store_s3_parse_time("1970-01-01T00:00:00.000Z"), 0);
    assert_int_equal(store_s3_parse_time("2024-05-01T12:00:01.000Z"), 1714564801);
    assert_int_equal(store_s3_parse_time("2024-05-01T12:00:01Z"), 1714564801);
    assert_int_equal(store_s3_parse_time("yesterday"), -1);
    assert_int_equal(store_s3_parse_time(NULL), -1);
}

static void test_xml_take_decodes_entities_and_walks_in_order(void **state)
{
    (void)state;
    const char *x = "<R><Contents><Key>a &amp; b&lt;&#233;&#x1F600;&quot;</Key><Size>12</Size></Contents>"
                    "<Contents><Key>second</Key></Contents><IsTruncated>false</IsTruncated></R>";
    size_t pos = 0, n = strlen(x);
    char *k = store_xml_take(x, n, &pos, "Key");
    assert_string_equal(k, "a & b<é😀\"");
    free(k);
    k = store_xml_take(x, n, &pos, "Key");
    assert_string_equal(k, "second");
    free(k);
    assert_null(store_xml_take(x, n, &pos, "Key"));
    pos = 0;
    char *t = store_xml_take(x, n, &pos, "IsTruncated");
    assert_string_equal(t, "false");
    free(t);
    pos = 0;
    assert_null(store_xml_take("<Key>unterminated", 17, &pos, "Key"));
}

static void test_sha256_streams_and_validates_hex(void **state)
{
    (void)state;
    sha256_ctx *h = sha256_new();
    sha256_update(h, "a", 1);
    sha256_update(h, "bc", 2);
    char hex[65];
    sha256_final_hex(h, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_reset(h);
    sha256_final_hex(h, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_free(h);
    sha256_free(NULL);
    assert_true(sha256_hex_valid(hex, 64));
    char with_nl[66];
    snprintf(with_nl, sizeof with_nl, "%s\n", hex);
    assert_true(sha256_hex_valid(with_nl, 65));
    assert_false(sha256_hex_valid(hex, 63));
    with_nl[3] = 'g';
    assert_false(sha256_hex_valid(with_nl, 65));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_keys_pass_the_key_check),
        cmocka_unit_test(test_invalid_keys_are_invalid_payload),
        cmocka_unit_test_setup_teardown(test_operations_refuse_bad_keys_before_touching_the_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_store_round_trips_boundary_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sidecar_is_64_hex_and_a_newline_next_to_the_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_aborted_put_leaves_no_object_and_no_temp_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_unfinished_put_is_invisible_and_a_later_commit_adopts_the_first_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopting_an_object_without_sidecar_hashes_it_and_writes_the_sidecar, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_stale_sidecar_without_object_is_replaced_by_the_next_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_removes_old_temp_files_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_and_head_of_a_missing_key_are_snapshot_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_removes_object_and_sidecar_and_a_missing_key_is_fine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_filters_by_string_prefix_and_hides_sidecars_and_temp_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_corrupted_object_fails_verification_permanently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_truncated_object_is_a_retryable_size_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_object_without_sidecar_reads_unverified, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_garbled_sidecar_is_a_permanent_storage_error, setup, teardown),
        cmocka_unit_test(test_store_open_refuses_bad_urls_missing_bucket_and_missing_credentials),
        cmocka_unit_test(test_an_unreachable_s3_endpoint_is_a_retryable_storage_error),
        cmocka_unit_test(test_commit_publishes_then_writes_the_sidecar),
        cmocka_unit_test_setup_teardown(test_put_sized_through_the_file_store_checks_the_size_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_fd_sends_a_regular_file_from_its_offset_and_a_pipe_to_eof, setup, teardown),
        cmocka_unit_test(test_a_rewound_sized_put_hashes_only_the_attempt_that_was_published),
        cmocka_unit_test(test_a_sized_put_to_an_unreachable_s3_endpoint_is_retryable),
        cmocka_unit_test(test_uri_encoding_is_sigv4_uppercase_with_optional_slash),
        cmocka_unit_test(test_urls_are_path_style_with_an_endpoint_else_virtual_host),
        cmocka_unit_test(test_part_size_bounds_the_largest_object),
        cmocka_unit_test(test_backoff_doubles_with_equal_jitter_and_stops_at_the_cap),
        cmocka_unit_test(test_xml_take_decodes_entities_and_walks_in_order),
        cmocka_unit_test(test_s3_times_parse_as_utc),
        cmocka_unit_test(test_sha256_streams_and_validates_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
