/* tests/unit/test_k8s_token.c — when the Kubernetes client (common/k8s.c) reads its token
 * file again: a client made from a kubeconfig whose tokenFile is laid out as the kubelet
 * lays out a projected service-account volume (token -> ..data/token, ..data -> a
 * timestamped folder, swapped by renaming a ..data_tmp symlink over ..data). The cached
 * token is used for a minute, then the file is read again; a forced read (what a 401 does)
 * reads it at once and says whether the token changed; a missing or empty file keeps the
 * last token. The minute is simulated by moving the client's last read back in time. No
 * network: k8s_auth_line() only builds the header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/arc.h"
#include "common/cfg.h"
#include "common/k8s_priv.h"
#include "common/xmalloc.h"

#define TOK_A "tok-unit-rotation-aaaa"
#define TOK_B "tok-unit-rotation-bbbb"
#define TOK_C "tok-unit-rotation-cccc"

typedef struct fx {
    char dir[64];          /* mkdtemp folder: kubeconfig and the serviceaccount/ volume */
    char sa[128];          /* the projected volume */
    char kc[128];          /* the kubeconfig */
    int gen;               /* timestamped folders made so far */
    char cur[160];         /* the timestamped folder ..data points at */
    k8s_client *k;
} fx;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) fail_msg("cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* The kubelet's AtomicWriter: payload into a new folder, ..data_tmp -> it, renamed over
 * ..data, the old folder removed; the visible name is a symlink made once. */
static void kubelet_write(fx *f, const char *token_text)
{
    char ts[160], file[200], tmp[160], data[160], link[160];
    snprintf(ts, sizeof ts, "%s/..2024_01_01_00_00_%02d.%d", f->sa, f->gen, f->gen);
    f->gen++;
    assert_int_equal(mkdir(ts, 0755), 0);
    snprintf(file, sizeof file, "%s/token", ts);
    write_file(file, token_text);
    snprintf(tmp, sizeof tmp, "%s/..data_tmp", f->sa);
    snprintf(data, sizeof data, "%s/..data", f->sa);
    assert_int_equal(symlink(strrchr(ts, '/') + 1, tmp), 0);
    assert_int_equal(rename(tmp, data), 0);
    snprintf(link, sizeof link, "%s/token", f->sa);
    struct stat st;
    if (lstat(link, &st) != 0 && symlink("..data/token", link) != 0) fail_msg("symlink");
    if (f->cur[0]) {
        char old[200];
        snprintf(old, sizeof old, "%s/token", f->cur);
        unlink(old);
        rmdir(f->cur);
    }
    snprintf(f->cur, sizeof f->cur, "%s", ts);
}

static int setup(void **state)
{
    fx *f = xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sw-k8s-token-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->sa, sizeof f->sa, "%s/serviceaccount", f->dir);
    if (mkdir(f->sa, 0755) != 0) return -1;
    snprintf(f->kc, sizeof f->kc, "%s/kubeconfig", f->dir);
    write_file(f->kc, "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                      "clusters:\n- name: cl\n  cluster:\n    server: https://127.0.0.1:1\n"
                      "users:\n- name: u\n  user:\n    tokenFile: serviceaccount/token\n"
                      "contexts:\n- name: c\n  context:\n    cluster: cl\n    user: u\n");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    k8s_client_free(f->k);
    sw_err err = {0};
    if (arc_rmtree(f->dir, &err) < 0) return -1; /* the project's own tree removal, no shell */
    free(f);
    return 0;
}

static k8s_client *client(fx *f)
{
    cfg c = {.kubeconfig = f->kc};
    sw_err err = {0};
    f->k = k8s_client_new(&c, &err);
    if (!f->k) fail_msg("k8s_client_new: %s", err.msg);
    return f->k;
}

/* The header the next request would carry, compared with "Authorization: Bearer want". */
static void header_is(k8s_client *k, bool force, const char *want, bool want_changed)
{
    bool changed = !want_changed;
    char *line = k8s_auth_line(k, force, &changed);
    char *exp = xasprintf("Authorization: Bearer %s", want);
    assert_non_null(line);
    assert_string_equal(line, exp);
    assert_int_equal(changed, want_changed);
    k8s_wipe_free(line);
    free(exp);
}

/* As if the last read of the token file was more than a minute ago. */
static void age(k8s_client *k)
{
    k->token_read_ms -= K8S_TOKEN_REREAD_MS + 1;
}

static void a_rotated_file_is_read_again_after_a_minute(void **state)
{
    fx *f = *state;
    kubelet_write(f, TOK_A "\n");
    k8s_client *k = client(f);
    header_is(k, false, TOK_A, false);          /* read at creation, trimmed */
    kubelet_write(f, TOK_B "\n");
    header_is(k, false, TOK_A, false);          /* within the minute: the cached token */
    age(k);
    header_is(k, false, TOK_B, true);           /* a minute on: the new file */
    header_is(k, false, TOK_B, false);
}

static void a_forced_read_after_a_401_takes_the_new_token_at_once(void **state)
{
    fx *f = *state;
    kubelet_write(f, TOK_A);
    k8s_client *k = client(f);
    kubelet_write(f, "  " TOK_B " \n");
    header_is(k, true, TOK_B, true);            /* what rest() and upgrade() do on a 401 */
    header_is(k, true, TOK_B, false);           /* same token again: no retry */
    kubelet_write(f, TOK_C);
    header_is(k, false, TOK_B, false);          /* the forced read restarted the minute */
    age(k);
    header_is(k, false, TOK_C, true);
}

static void an_unreadable_or_empty_file_keeps_the_last_token(void **state)
{
    fx *f = *state;
    kubelet_write(f, TOK_A);
    k8s_client *k = client(f);
    kubelet_write(f, " \n\t");
    header_is(k, true, TOK_A, false);
    char data[160];
    snprintf(data, sizeof data, "%s/..data", f->sa);
    assert_int_equal(unlink(data), 0);          /* a broken mount: the link dangles */
    age(k);
    header_is(k, false, TOK_A, false);
    header_is(k, true, TOK_A, false);
    kubelet_write(f, TOK_B);                    /* back: the new token is taken */
    header_is(k, true, TOK_B, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_rotated_file_is_read_again_after_a_minute, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_forced_read_after_a_401_takes_the_new_token_at_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(an_unreadable_or_empty_file_keeps_the_last_token, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
