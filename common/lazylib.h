/* common/lazylib.h — libpq, libcurl, libarchive and libcrypto loaded on first use (dlopen).
 * Owns: loading each of the four libraries once per process and the clear error when one
 * cannot be loaded. The binary does not link them: common/lazy_{pq,curl,archive,crypto}.c
 * define the library functions we call, with the headers' own prototypes, and forward
 * each call into the loaded library, so call sites use libpq/curl/... as usual.
 * Why: an idle worker (noop and Celery-only jobs) never maps them nor what they pull in
 * (gnutls, krb5, ldap, icu, libstdc++...): about 10 MiB of RSS. docs/decisions.md. */
#ifndef SW_COMMON_LAZYLIB_H
#define SW_COMMON_LAZYLIB_H
#include <stdbool.h>

#include "common/err.h"

typedef enum lazy_lib {
    LAZY_PQ,        /* libpq.so.5: common/db.c */
    LAZY_CURL,      /* libcurl.so.4: the s3:// store */
    LAZY_ARCHIVE,   /* libarchive.so.13: common/arc_write.c, arc_extract.c */
    LAZY_CRYPTO,    /* libcrypto.so.3: common/sha256.c, id_uuid5_url() */
    LAZY_LIB_COUNT
} lazy_lib;

/* Load 'lib' now unless it already is (thread-safe; a failure is remembered). 0, or -1
 * with 'err' (may be NULL) filled: "cannot load libpq.so.5: <dlerror>", code by library
 * (SW_E_DATABASE for libpq, SW_E_STORAGE for libcurl, SW_E_INTERNAL for libarchive and
 * libcrypto) with that code's default retryable flag. Entry points call it before their
 * first library call; a forwarder reached with a library that cannot be loaded aborts. */
int lazy_need(lazy_lib lib, sw_err *err);
/* True once 'lib' has been loaded successfully (does not try to load it). */
bool lazy_loaded(lazy_lib lib);
const char *lazy_soname(lazy_lib lib);   /* "libpq.so.5"; static storage */

#endif
