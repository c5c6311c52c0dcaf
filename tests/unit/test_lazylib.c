/* tests/unit/test_lazylib.c — libpq, libcurl, libarchive and libcrypto loaded on first use
 * (common/lazylib.h): none is mapped before it is needed, each lazy_need() maps its own
 * library, and calls through the forwarders reach the real library with their arguments
 * intact (variadic ones included). The tests run in order in one process: the first one
 * looks at a process that has not used any of them yet, and each later one checks that
 * loading one library did not load the ones still to come. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <errno.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/db.h"
#include "common/ids.h"
#include "common/lazylib.h"
#include "common/lazylib_priv.h"
#include "common/sha256.h"
#include "common/xmalloc.h"

/* True when /proc/self/maps has a mapping whose path contains 'needle'. */
static bool mapped(const char *needle)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static const char *const files[LAZY_LIB_COUNT] = {
    [LAZY_PQ] = "/libpq.so.",
    [LAZY_CURL] = "/libcurl.so.",
    [LAZY_ARCHIVE] = "/libarchive.so.",
    [LAZY_CRYPTO] = "/libcrypto.so.",
};

/* Libraries from 'first' on are neither loaded by us nor mapped at all (the earlier ones
 * may pull a later one in: libpq and libcurl need libcrypto, so crypto is tested first). */
static void not_yet(lazy_lib first)
{
    static const lazy_lib order[] = {LAZY_CRYPTO, LAZY_ARCHIVE, LAZY_PQ, LAZY_CURL};
    size_t i = 0;
    while (order[i] != first) i++;
    for (; i < sizeof order / sizeof *order; i++) {
        if (lazy_loaded(order[i])) fail_msg("%s loaded too early", lazy_soname(order[i]));
        if (mapped(files[order[i]])) fail_msg("%s mapped too early", files[order[i]]);
    }
}

static void need(lazy_lib lib)
{
    sw_err e;
    sw_err_clear(&e);
    if (lazy_need(lib, &e) != 0) fail_msg("lazy_need(%s): %s", lazy_soname(lib), e.msg);
    assert_int_equal(e.code, SW_OK);
    assert_true(lazy_loaded(lib));
    assert_true(mapped(files[lib]));
}

static void nothing_is_mapped_before_first_use(void **state)
{
    (void)state;
    not_yet(LAZY_CRYPTO);
    assert_string_equal(lazy_soname(LAZY_PQ), "libpq.so.5");
    assert_string_equal(lazy_soname(LAZY_CURL), "libcurl.so.4");
    assert_string_equal(lazy_soname(LAZY_ARCHIVE), "libarchive.so.13");
    assert_string_equal(lazy_soname(LAZY_CRYPTO), "libcrypto.so.3");
}

/* ---- libcrypto ------------------------------------------------------------ */

static void the_first_hash_loads_libcrypto_and_only_it(void **state)
{
    (void)state;
    char hex[SHA256_HEX_LEN + 1];
    sha256_hex("abc", 3, hex);   /* no lazy_need first: the forwarder loads it */
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(lazy_loaded(LAZY_CRYPTO));
    need(LAZY_CRYPTO);
    not_yet(LAZY_ARCHIVE);

    sha256_ctx *h = sha256_new();
    sha256_update(h, "a", 1);
    sha256_update(h, "bc", 2);
    sha256_final_hex(h, hex);
    sha256_free(h);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    char uuid[SW_UUID_LEN + 1];   /* SHA-1: python3 uuid.uuid5(NAMESPACE_URL, ...) */
    id_uuid5_url("snapworker:job-1", uuid);
    assert_string_equal(uuid, "765d1775-4562-5fe9-baea-dfd7b0d95c3f");

    unsigned char b64[8];
    assert_int_equal(EVP_EncodeBlock(b64, (const unsigned char *)"abc", 3), 4);
    assert_string_equal((const char *)b64, "YWJj");
}

/* ---- libarchive ----------------------------------------------------------- */

typedef struct membuf {
    char data[4096];
    size_t len;
    bool read;
} membuf;

static la_ssize_t mem_write(struct archive *a, void *p, const void *buf, size_t n)
{
    (void)a;
    membuf *m = p;
    if (n > sizeof m->data - m->len) return -1;
    memcpy(m->data + m->len, buf, n);
    m->len += n;
    return (la_ssize_t)n;
}

static la_ssize_t mem_read(struct archive *a, void *p, const void **buf)
{
    (void)a;
    membuf *m = p;
    if (m->read) return 0;
    m->read = true;
    *buf = m->data;
    return (la_ssize_t)m->len;
}

static void a_tar_gz_round_trips_through_libarchive(void **state)
{
    (void)state;
    need(LAZY_ARCHIVE);
    not_yet(LAZY_PQ);
    membuf *m = xcalloc(1, sizeof *m);

    struct archive *w = archive_write_new();
    assert_int_equal(archive_write_set_format_pax_restricted(w), ARCHIVE_OK);
    assert_int_equal(archive_write_add_filter_gzip(w), ARCHIVE_OK);
    assert_int_equal(archive_write_set_bytes_in_last_block(w, 1), ARCHIVE_OK);
    assert_int_equal(archive_write_open2(w, m, NULL, mem_write, NULL, NULL), ARCHIVE_OK);
    struct archive_entry *e = archive_entry_new();
    archive_entry_copy_pathname(e, "outputs/hello.txt");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0640);
    archive_entry_set_size(e, 5);
    archive_entry_set_mtime(e, 1700000000, 0);
    assert_int_equal(archive_write_header(w, e), ARCHIVE_OK);
    assert_int_equal(archive_write_data(w, "hello", 5), 5);
    assert_int_equal(archive_write_close(w), ARCHIVE_OK);
    archive_entry_free(e);
    assert_int_equal(archive_write_free(w), ARCHIVE_OK);
    assert_true(m->len > 20 && (unsigned char)m->data[0] == 0x1f);   /* gzip magic */

    struct archive *r = archive_read_new();
    assert_int_equal(archive_read_support_format_tar(r), ARCHIVE_OK);
    assert_int_equal(archive_read_support_filter_gzip(r), ARCHIVE_OK);
    assert_int_equal(archive_read_open(r, m, NULL, mem_read, NULL), ARCHIVE_OK);
    struct archive_entry *got;
    assert_int_equal(archive_read_next_header(r, &got), ARCHIVE_OK);
    assert_string_equal(archive_entry_pathname(got), "outputs/hello.txt");
    assert_int_equal(archive_entry_filetype(got), AE_IFREG);
    assert_int_equal(archive_entry_perm(got), 0640);
    assert_int_equal(archive_entry_size(got), 5);
    assert_int_equal(archive_entry_mtime(got), 1700000000);
    const void *data;
    size_t n;
    la_int64_t off;
    assert_int_equal(archive_read_data_block(r, &data, &n, &off), ARCHIVE_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(data, "hello", 5);
    assert_int_equal(archive_read_next_header(r, &got), ARCHIVE_EOF);
    assert_int_equal(archive_read_free(r), ARCHIVE_OK);
    free(m);
}

static void archive_set_error_formats_its_arguments(void **state)
{
    (void)state;
    struct archive *a = archive_read_new();
    archive_set_error(a, EIO, "source %s failed after %d bytes", "s3", 42);
    assert_string_equal(archive_error_string(a), "source s3 failed after 42 bytes");
    archive_set_error(a, 0, NULL);
    assert_null(archive_error_string(a));
    archive_read_free(a);
}

/* ---- libpq ---------------------------------------------------------------- */

static void libpq_loads_on_need_and_parses_conninfo(void **state)
{
    (void)state;
    not_yet(LAZY_PQ);
    need(LAZY_PQ);
    not_yet(LAZY_CURL);
    PQconninfoOption *opts = PQconninfoParse("postgresql://ann:s3cret@db.example:5433/app", NULL);
    assert_non_null(opts);
    int seen = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val) continue;
        if (strcmp(o->keyword, "host") == 0) seen += strcmp(o->val, "db.example") == 0;
        if (strcmp(o->keyword, "port") == 0) seen += strcmp(o->val, "5433") == 0;
        if (strcmp(o->keyword, "password") == 0) seen += strcmp(o->val, "s3cret") == 0;
    }
    PQconninfoFree(opts);
    assert_int_equal(seen, 3);
    assert_null(PQconninfoParse("host='unterminated", NULL));

    char target[128], *password = NULL;
    db_describe_url("postgresql://ann:s3cret@db.example:5433/app", target, sizeof target,
                    &password);
    assert_string_equal(target, "db.example:5433/app");
    assert_string_equal(password, "s3cret");
    free(password);
}

/* ---- libcurl -------------------------------------------------------------- */

typedef struct sink {
    char data[64];
    size_t len;
} sink;

static size_t collect(char *p, size_t size, size_t nmemb, void *arg)
{
    sink *s = arg;
    size_t n = size * nmemb;
    if (n > sizeof s->data - 1 - s->len) return 0;
    memcpy(s->data + s->len, p, n);
    s->len += n;
    s->data[s->len] = '\0';
    return n;
}

/* One transfer of 'h' through a multi handle, as the s3 store drives them. */
static CURLcode run_multi(CURL *h)
{
    CURLM *m = curl_multi_init();
    assert_non_null(m);
    assert_int_equal(curl_multi_add_handle(m, h), CURLM_OK);
    int running = 1, left = 0;
    for (int rounds = 0; running && rounds < 1000; rounds++) {
        assert_int_equal(curl_multi_perform(m, &running), CURLM_OK);
        if (running) assert_int_equal(curl_multi_poll(m, NULL, 0, 100, NULL), CURLM_OK);
    }
    assert_int_equal(running, 0);
    CURLMsg *msg = curl_multi_info_read(m, &left);
    assert_non_null(msg);
    assert_int_equal(msg->msg, CURLMSG_DONE);
    CURLcode rc = msg->data.result;
    assert_int_equal(curl_multi_remove_handle(m, h), CURLM_OK);
    assert_int_equal(curl_multi_cleanup(m), CURLM_OK);
    return rc;
}

/* Each setopt argument class goes through the variadic forwarder: strings and data
 * pointers, a function pointer, a long and a curl_off_t. (On x86-64 all of them travel
 * in the same registers, so this proves the plumbing, not the type choice.) */
static void curl_transfers_a_file_through_the_forwarders(void **state)
{
    (void)state;
    not_yet(LAZY_CURL);
    need(LAZY_CURL);
    assert_int_equal(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    char path[] = "/tmp/test_lazylib.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "0123456789", 10), 10);
    close(fd);
    char *url = xasprintf("file://%s", path);
    sink s = {0};
    int marker = 7;

    CURL *h = curl_easy_init();
    assert_non_null(h);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_URL, url), CURLE_OK);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect), CURLE_OK);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_WRITEDATA, &s), CURLE_OK);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_PRIVATE, &marker), CURLE_OK);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)3), CURLE_OK);
    assert_int_equal(run_multi(h), CURLE_OK);
    assert_string_equal(s.data, "3456789");
    void *priv = NULL;
    curl_off_t got = 0;
    assert_int_equal(curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv), CURLE_OK);
    assert_ptr_equal(priv, &marker);
    assert_int_equal(curl_easy_getinfo(h, CURLINFO_SIZE_DOWNLOAD_T, &got), CURLE_OK);
    assert_int_equal(got, 7);

    curl_easy_reset(h);   /* back to defaults: no resume offset, no callback */
    s.len = 0;
    assert_int_equal(curl_easy_setopt(h, CURLOPT_URL, url), CURLE_OK);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect), CURLE_OK);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_WRITEDATA, &s), CURLE_OK);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_RESUME_FROM, 6L), CURLE_OK);
    assert_int_equal(run_multi(h), CURLE_OK);
    assert_string_equal(s.data, "6789");

    struct curl_slist *l = curl_slist_append(NULL, "x-a: 1");
    l = curl_slist_append(l, "x-b: 2");
    assert_string_equal(l->next->data, "x-b: 2");
    curl_slist_free_all(l);
    assert_string_equal(curl_easy_strerror(CURLE_OK), "No error");
    assert_string_equal(curl_multi_strerror(CURLM_OK), "No error");
    curl_easy_cleanup(h);
    unlink(path);
    free(url);
}

/* ---- failures ------------------------------------------------------------- */

static void a_library_that_cannot_be_loaded_is_a_clear_error(void **state)
{
    (void)state;
    static const char *const names[] = {"EVP_sha256"};
    void *slots[1] = {0};
    const lazy_def missing = {"libsnapworker-missing.so.0", names, slots, 1};
    void *handle = &handle;
    char why[256] = "";
    assert_int_equal(lazy_load(&missing, &handle, why, sizeof why), -1);
    assert_null(handle);
    if (!strstr(why, "cannot load libsnapworker-missing.so.0: ") || !strstr(why, "No such file"))
        fail_msg("message: %s", why);
}

static void a_library_without_a_needed_symbol_is_a_clear_error(void **state)
{
    (void)state;
    static const char *const names[] = {"EVP_sha256", "snapworker_no_such_symbol"};
    void *slots[2] = {0};
    const lazy_def old = {"libcrypto.so.3", names, slots, 2};
    void *handle = &handle;
    char why[256] = "";
    assert_int_equal(lazy_load(&old, &handle, why, sizeof why), -1);
    assert_null(handle);
    if (!strstr(why, "cannot load libcrypto.so.3: ") || !strstr(why, "snapworker_no_such_symbol"))
        fail_msg("message: %s", why);
}

int main(void)
{
    /* Order matters: see the top comment. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nothing_is_mapped_before_first_use),
        cmocka_unit_test(the_first_hash_loads_libcrypto_and_only_it),
        cmocka_unit_test(a_tar_gz_round_trips_through_libarchive),
        cmocka_unit_test(archive_set_error_formats_its_arguments),
        cmocka_unit_test(libpq_loads_on_need_and_parses_conninfo),
        cmocka_unit_test(curl_transfers_a_file_through_the_forwarders),
        cmocka_unit_test(a_library_that_cannot_be_loaded_is_a_clear_error),
        cmocka_unit_test(a_library_without_a_needed_symbol_is_a_clear_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
