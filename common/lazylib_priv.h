/* common/lazylib_priv.h — what common/lazylib.c shares with the forwarding files
 * common/lazy_{pq,curl,archive,crypto}.c (and tests/unit/test_lazylib.c) only.
 *
 * A forwarding file lists its symbols once and gets the name table and the slots:
 *
 *   #define SYMS(X) X(PQclear) X(PQexec)
 *   LAZY_DEFINE(lazy_pq_def, "libpq.so.5", SYMS);
 *   #define FN(name) LAZY_FN(LAZY_PQ, name)
 *   void PQclear(PGresult *r) { FN(PQclear)(r); }
 *
 * LAZY_FN() has the type of a pointer to the header's own function (__typeof__), so a
 * forwarder that passes the wrong arguments does not compile. */
#ifndef SW_COMMON_LAZYLIB_PRIV_H
#define SW_COMMON_LAZYLIB_PRIV_H
#include <stddef.h>

#include "common/lazylib.h"

typedef struct lazy_def {
    const char *soname;          /* what dlopen() is given */
    const char *const *names;    /* names[i] is resolved into fn[i] */
    void **fn;                   /* written once, under the library's pthread_once */
    size_t n;                    /* entries in names and fn */
} lazy_def;

extern const lazy_def lazy_pq_def, lazy_curl_def, lazy_archive_def, lazy_crypto_def;

/* dlopen(d->soname, RTLD_NOW | RTLD_LOCAL) and resolve every name into d->fn. 0 with
 * *handle set, or -1 with 'why' ("cannot load SONAME: <dlerror>") and nothing left open.
 * Not locked: lazylib.c calls it under pthread_once; tests call it on their own defs. */
int lazy_load(const lazy_def *d, void **handle, char *why, size_t why_n);

/* The resolved slots of 'lib', loading it first when needed. Never returns when the
 * library cannot be loaded: logs the reason and abort()s (an entry point should have
 * called lazy_need() and failed with a clear error instead). */
void *const *lazy_fns(lazy_lib lib);

#define LAZY_ENUM_(name) LAZY_I_##name,
#define LAZY_NAME_(name) #name,
/* The index enum, the name table, the slots and the lazy_def 'var'. Once per file. */
#define LAZY_DEFINE(var, soname, SYMS)                                   \
    enum { SYMS(LAZY_ENUM_) LAZY_I_COUNT_ };                              \
    static const char *const lazy_names_[] = {SYMS(LAZY_NAME_)};         \
    static void *lazy_slots_[LAZY_I_COUNT_];                              \
    const lazy_def var = {soname, lazy_names_, lazy_slots_, LAZY_I_COUNT_}
/* The library's 'name' as a typed function pointer (POSIX lets void * hold one). */
#define LAZY_FN(lib, name) ((__typeof__(&name))lazy_fns(lib)[LAZY_I_##name])

#endif
