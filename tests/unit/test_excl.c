/* tests/unit/test_excl.c — snapshot exclude patterns (common/excl.h, docs/lifecycle.md) and the
 * archive walk leaving matches out (common/arc_write.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/arc.h"
#include "common/excl.h"
#include "common/xmalloc.h"

static void star_matches_within_one_name_only(void **state)
{
    (void)state;
    assert_true(excl_match_one("outputs/*.log", "outputs/a.log"));
    assert_true(excl_match_one("outputs/*.log", "outputs/.log"));
    assert_false(excl_match_one("outputs/*.log", "outputs/web/a.log"));
    assert_true(excl_match_one("outputs/web/*", "outputs/web/x"));
    assert_false(excl_match_one("outputs/web/*", "outputs/web"));
    assert_true(excl_match_one("a*b*c", "aXXbYYc"));
    assert_false(excl_match_one("a*b*c", "aXXbYY"));
    assert_true(excl_match_one("nextjs.pid", "nextjs.pid"));
    assert_false(excl_match_one("nextjs.pid", "outputs/nextjs.pid"));
    assert_true(excl_match_one("outputs/?.txt", "outputs/a.txt"));
    assert_false(excl_match_one("outputs/?.txt", "outputs/ab.txt"));
}

static void double_star_spans_zero_or_more_folders(void **state)
{
    (void)state;
    assert_true(excl_match_one("**/node_modules", "outputs/web/node_modules"));
    assert_true(excl_match_one("**/node_modules", "node_modules"));
    assert_true(excl_match_one("outputs/**/.next", "outputs/.next"));
    assert_true(excl_match_one("outputs/**/.next", "outputs/web/app/.next"));
    assert_false(excl_match_one("outputs/**/.next", "attachments/.next"));
    assert_true(excl_match_one("outputs/**", "outputs/a/b/c"));
    assert_false(excl_match_one("outputs/**", "outputs"));
    assert_true(excl_match_one("**/*.tmp", "outputs/x/y.tmp"));
    assert_false(excl_match_one("**/*.tmp", "outputs/x/y.tmpz"));
    assert_true(excl_match_one("outputs/w**", "outputs/web"));   /* ** inside a name = * */
    assert_false(excl_match_one("outputs/w**", "outputs/web/x"));
}

static void literal_names_match_exactly(void **state)
{
    (void)state;
    assert_true(excl_match_one("outputs/web/node_modules", "outputs/web/node_modules"));
    assert_false(excl_match_one("outputs/web/node_modules", "outputs/web/node_modules2"));
    assert_false(excl_match_one("outputs/web/node_modules", "outputs/web"));
    assert_true(excl_match_one("outputs/[a]", "outputs/[a]")); /* no classes */
    assert_false(excl_match_one("outputs/[a]", "outputs/a"));
}

static void patterns_are_normalized_and_bad_ones_refused(void **state)
{
    (void)state;
    char why[160];
    excl *x = excl_new();
    assert_int_equal(excl_add_csv(x, " ./outputs/web/.next/ , nextjs.pid,,", why, sizeof why), 0);
    assert_int_equal(excl_count(x), 2);
    assert_string_equal(excl_get(x, 0), "outputs/web/.next");
    assert_string_equal(excl_get(x, 1), "nextjs.pid");
    assert_true(excl_match(x, "outputs/web/.next"));
    assert_false(excl_match(NULL, "outputs/web/.next"));
    const char *bad[] = {"/etc/passwd", "outputs/../x", "a//b", "./", "", "a/./b", "a\nb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(excl_add(x, bad[i], why, sizeof why), -1);
    assert_int_equal(excl_count(x), 2);
    excl_free(x);
}

/* ---- the archive walk --------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t n;
} buf;

static int to_buf(void *arg, const void *data, size_t n, sw_err *err)
{
    (void)err;
    buf *b = arg;
    b->p = xrealloc(b->p, b->n + n);
    memcpy(b->p + b->n, data, n);
    b->n += n;
    return 0;
}

static ssize_t from_buf(void *arg, void *out, size_t n, sw_err *err)
{
    (void)err;
    buf *b = arg;
    size_t k = b->n < n ? b->n : n;
    memcpy(out, b->p, k);
    b->p += k;
    b->n -= k;
    return (ssize_t)k;
}

static void put(const char *root, const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    size_t l = strlen(p);
    if (p[l - 1] == '/') {
        p[l - 1] = '\0';
        mkdir(p, 0755);
        return;
    }
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
}

static bool exists(const char *root, const char *rel)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", root, rel);
    return lstat(p, &st) == 0;
}

static void the_archive_leaves_out_matching_members_and_their_subtrees(void **state)
{
    (void)state;
    char src[] = "/tmp/sw-excl-src-XXXXXX", dst[] = "/tmp/sw-excl-dst-XXXXXX", why[160];
    assert_non_null(mkdtemp(src));
    assert_non_null(mkdtemp(dst));
    const char *tree[] = {"outputs/", "outputs/web/", "outputs/web/node_modules/",
                          "outputs/web/node_modules/x.js", "outputs/web/.next/",
                          "outputs/web/.next/cache", "outputs/web/page.tsx", "outputs/a.log",
                          "outputs/keep.txt", "outputs/sub/", "outputs/sub/b.log", "nextjs.pid",
                          "attachments/", "attachments/doc.pdf"};
    for (size_t i = 0; i < sizeof tree / sizeof tree[0]; i++) put(src, tree[i]);
    excl *x = excl_new();
    assert_int_equal(excl_add_csv(x, "outputs/web/node_modules,**/.next,outputs/*.log,outputs",
                                  why, sizeof why), 0);
    buf b = {0};
    sw_err e;
    int sfd = open(src, O_RDONLY | O_DIRECTORY);
    assert_int_equal(arc_write_session_ex(sfd, src, 1, x, NULL, to_buf, &b, NULL, &e), 0);
    close(sfd);
    char *start = b.p;
    arc_stats st;
    assert_int_equal(arc_extract(from_buf, &b, dst, NULL, &st, &e), 0);
    free(start);
    assert_true(exists(dst, "outputs/web/page.tsx"));     /* the root itself is never excluded */
    assert_true(exists(dst, "outputs/keep.txt"));
    assert_true(exists(dst, "outputs/sub/b.log"));        /* * stays in one folder */
    assert_true(exists(dst, "attachments/doc.pdf"));
    assert_false(exists(dst, "outputs/web/node_modules"));
    assert_false(exists(dst, "outputs/web/.next"));
    assert_false(exists(dst, "outputs/a.log"));
    assert_false(exists(dst, "nextjs.pid"));
    excl_free(x);
    assert_int_equal(arc_rmtree(src, &e), 0);
    assert_int_equal(arc_rmtree(dst, &e), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(star_matches_within_one_name_only),
        cmocka_unit_test(double_star_spans_zero_or_more_folders),
        cmocka_unit_test(literal_names_match_exactly),
        cmocka_unit_test(patterns_are_normalized_and_bad_ones_refused),
        cmocka_unit_test(the_archive_leaves_out_matching_members_and_their_subtrees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
