/* common/lazy_archive.c — the libarchive functions snapworker calls (common/arc_write.c,
 * common/arc_extract.c, common/arc_check.c; test_arc.c also crafts archives with the last three), forwarded
 * into libarchive.so.13 loaded on first use (common/lazylib.h). Owns only this symbol
 * list and the forwarders, with archive.h/archive_entry.h's prototypes (included: the
 * compiler checks them). */
#include <archive.h>
#include <archive_entry.h>
#include <stdarg.h>
#include <stdio.h>

#include "common/lazylib_priv.h"

#define SYMS(X)                                                                           \
    X(archive_entry_clear) X(archive_entry_copy_pathname) X(archive_entry_copy_symlink)  \
    X(archive_entry_filetype) X(archive_entry_free) X(archive_entry_hardlink)            \
    X(archive_entry_mtime) X(archive_entry_mtime_is_set) X(archive_entry_mtime_nsec)     \
    X(archive_entry_new) X(archive_entry_pathname) X(archive_entry_perm)                 \
    X(archive_entry_set_filetype) X(archive_entry_set_gid) X(archive_entry_set_mtime)    \
    X(archive_entry_set_perm) X(archive_entry_set_size) X(archive_entry_set_uid)         \
    X(archive_entry_size) X(archive_entry_size_is_set) X(archive_entry_symlink)          \
    X(archive_error_string) X(archive_read_data_block) X(archive_read_free)              \
    X(archive_read_new) X(archive_read_next_header) X(archive_read_open)                 \
    X(archive_read_support_filter_gzip) X(archive_read_support_filter_none)              \
    X(archive_read_support_filter_zstd) X(archive_read_support_format_tar)               \
    X(archive_set_error) X(archive_write_add_filter_gzip) X(archive_write_close)         \
    X(archive_write_data) X(archive_write_finish_entry) X(archive_write_free)             \
    X(archive_write_header) X(archive_write_new) X(archive_write_open2)                  \
    X(archive_write_set_bytes_in_last_block) X(archive_write_set_bytes_per_block)        \
    X(archive_write_set_filter_option) X(archive_write_set_format_pax_restricted)        \
    X(archive_write_add_filter_zstd) X(archive_entry_copy_hardlink)                      \
    X(archive_entry_set_rdev) X(archive_read_data) X(archive_read_support_format_raw)  \
    X(archive_read_data_skip) X(archive_filter_code)

LAZY_DEFINE(lazy_archive_def, "libarchive.so.13", SYMS);

#define FN(name) LAZY_FN(LAZY_ARCHIVE, name)

/* ---- entries -------------------------------------------------------------- */

struct archive_entry *archive_entry_clear(struct archive_entry *e)
{
    return FN(archive_entry_clear)(e);
}

void archive_entry_copy_pathname(struct archive_entry *e, const char *s)
{
    FN(archive_entry_copy_pathname)(e, s);
}

void archive_entry_copy_symlink(struct archive_entry *e, const char *s)
{
    FN(archive_entry_copy_symlink)(e, s);
}

void archive_entry_copy_hardlink(struct archive_entry *e, const char *s)
{
    FN(archive_entry_copy_hardlink)(e, s);
}

mode_t archive_entry_filetype(struct archive_entry *e) { return FN(archive_entry_filetype)(e); }
void archive_entry_free(struct archive_entry *e) { FN(archive_entry_free)(e); }
const char *archive_entry_hardlink(struct archive_entry *e) { return FN(archive_entry_hardlink)(e); }
time_t archive_entry_mtime(struct archive_entry *e) { return FN(archive_entry_mtime)(e); }
int archive_entry_mtime_is_set(struct archive_entry *e) { return FN(archive_entry_mtime_is_set)(e); }
long archive_entry_mtime_nsec(struct archive_entry *e) { return FN(archive_entry_mtime_nsec)(e); }
struct archive_entry *archive_entry_new(void) { return FN(archive_entry_new)(); }
const char *archive_entry_pathname(struct archive_entry *e) { return FN(archive_entry_pathname)(e); }
mode_t archive_entry_perm(struct archive_entry *e) { return FN(archive_entry_perm)(e); }

void archive_entry_set_filetype(struct archive_entry *e, unsigned int type)
{
    FN(archive_entry_set_filetype)(e, type);
}

void archive_entry_set_gid(struct archive_entry *e, la_int64_t g) { FN(archive_entry_set_gid)(e, g); }

void archive_entry_set_mtime(struct archive_entry *e, time_t t, long ns)
{
    FN(archive_entry_set_mtime)(e, t, ns);
}

void archive_entry_set_perm(struct archive_entry *e, mode_t m) { FN(archive_entry_set_perm)(e, m); }
void archive_entry_set_rdev(struct archive_entry *e, dev_t d) { FN(archive_entry_set_rdev)(e, d); }

void archive_entry_set_size(struct archive_entry *e, la_int64_t s)
{
    FN(archive_entry_set_size)(e, s);
}

void archive_entry_set_uid(struct archive_entry *e, la_int64_t u) { FN(archive_entry_set_uid)(e, u); }
la_int64_t archive_entry_size(struct archive_entry *e) { return FN(archive_entry_size)(e); }
int archive_entry_size_is_set(struct archive_entry *e) { return FN(archive_entry_size_is_set)(e); }
const char *archive_entry_symlink(struct archive_entry *e) { return FN(archive_entry_symlink)(e); }

/* ---- common --------------------------------------------------------------- */

const char *archive_error_string(struct archive *a) { return FN(archive_error_string)(a); }

/* libarchive has no va_list variant: format here, hand over the finished text. A NULL
 * fmt clears the error, as in libarchive. Messages longer than the buffer are cut. */
void archive_set_error(struct archive *a, int err, const char *fmt, ...)
{
    if (!fmt) {
        FN(archive_set_error)(a, err, NULL);
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    FN(archive_set_error)(a, err, "%s", msg);
}

/* ---- read ----------------------------------------------------------------- */

int archive_read_data_block(struct archive *a, const void **buff, size_t *size, la_int64_t *offset)
{
    return FN(archive_read_data_block)(a, buff, size, offset);
}

int archive_read_free(struct archive *a) { return FN(archive_read_free)(a); }
struct archive *archive_read_new(void) { return FN(archive_read_new)(); }

int archive_read_next_header(struct archive *a, struct archive_entry **e)
{
    return FN(archive_read_next_header)(a, e);
}

int archive_read_open(struct archive *a, void *client_data, archive_open_callback *open_cb,
                      archive_read_callback *read_cb, archive_close_callback *close_cb)
{
    return FN(archive_read_open)(a, client_data, open_cb, read_cb, close_cb);
}

int archive_read_support_filter_gzip(struct archive *a)
{
    return FN(archive_read_support_filter_gzip)(a);
}

int archive_read_support_filter_none(struct archive *a)
{
    return FN(archive_read_support_filter_none)(a);
}

int archive_read_support_filter_zstd(struct archive *a)
{
    return FN(archive_read_support_filter_zstd)(a);
}

la_ssize_t archive_read_data(struct archive *a, void *buf, size_t n)
{
    return FN(archive_read_data)(a, buf, n);
}

int archive_read_support_format_raw(struct archive *a)
{
    return FN(archive_read_support_format_raw)(a);
}

int archive_read_data_skip(struct archive *a)
{
    return FN(archive_read_data_skip)(a);
}

int archive_filter_code(struct archive *a, int n)
{
    return FN(archive_filter_code)(a, n);
}

int archive_read_support_format_tar(struct archive *a)
{
    return FN(archive_read_support_format_tar)(a);
}

/* ---- write ---------------------------------------------------------------- */

int archive_write_add_filter_gzip(struct archive *a) { return FN(archive_write_add_filter_gzip)(a); }
int archive_write_add_filter_zstd(struct archive *a) { return FN(archive_write_add_filter_zstd)(a); }
int archive_write_close(struct archive *a) { return FN(archive_write_close)(a); }

la_ssize_t archive_write_data(struct archive *a, const void *buf, size_t n)
{
    return FN(archive_write_data)(a, buf, n);
}

int archive_write_finish_entry(struct archive *a) { return FN(archive_write_finish_entry)(a); }
int archive_write_free(struct archive *a) { return FN(archive_write_free)(a); }

int archive_write_header(struct archive *a, struct archive_entry *e)
{
    return FN(archive_write_header)(a, e);
}

struct archive *archive_write_new(void) { return FN(archive_write_new)(); }

int archive_write_open2(struct archive *a, void *client_data, archive_open_callback *open_cb,
                        archive_write_callback *write_cb, archive_close_callback *close_cb,
                        archive_free_callback *free_cb)
{
    return FN(archive_write_open2)(a, client_data, open_cb, write_cb, close_cb, free_cb);
}

int archive_write_set_bytes_in_last_block(struct archive *a, int bytes_in_last_block)
{
    return FN(archive_write_set_bytes_in_last_block)(a, bytes_in_last_block);
}

int archive_write_set_bytes_per_block(struct archive *a, int bytes_per_block)
{
    return FN(archive_write_set_bytes_per_block)(a, bytes_per_block);
}

int archive_write_set_filter_option(struct archive *a, const char *m, const char *o, const char *v)
{
    return FN(archive_write_set_filter_option)(a, m, o, v);
}

int archive_write_set_format_pax_restricted(struct archive *a)
{
    return FN(archive_write_set_format_pax_restricted)(a);
}
