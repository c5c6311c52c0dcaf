/* common/lazylib.c — load libpq, libcurl, libarchive and libcrypto on first use.
 * Owns: one pthread_once per library, the dlopen handle and the remembered failure text.
 * Does not own the symbol lists or the forwarders (common/lazy_*.c) nor when a library is
 * needed (the entry points call lazy_need(): db connect, s3 store open, archive open,
 * store open for the hashes).
 * Why dlopen and not linking: linking these four maps them and everything they depend on
 * in every worker, most of which never runs a job that needs them; see docs/decisions.md.
 *
 * Lifetime: a loaded library is never dlclose()d. Its handles and allocations (curl's
 * global state, OpenSSL's providers, libpq's per-connection state) may be in use by any
 * thread until exit, and OpenSSL registers its own atexit cleanup. LeakSanitizer scans the
 * data of loaded libraries like that of the executable, so what they keep reachable from
 * their globals is not reported as a leak. */
#include "common/lazylib_priv.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct lazy_state {
    pthread_once_t once;
    void *handle;      /* NULL until loaded, or when loading failed */
    char why[256];     /* "cannot load SONAME: <dlerror>" when loading failed */
} lazy_state;

static const lazy_def *const defs[LAZY_LIB_COUNT] = {
    [LAZY_PQ] = &lazy_pq_def,
    [LAZY_CURL] = &lazy_curl_def,
    [LAZY_ARCHIVE] = &lazy_archive_def,
    [LAZY_CRYPTO] = &lazy_crypto_def,
};

/* What a library that cannot be loaded means to the caller (lazylib.h). */
static const sw_code codes[LAZY_LIB_COUNT] = {
    [LAZY_PQ] = SW_E_DATABASE,
    [LAZY_CURL] = SW_E_STORAGE,
    [LAZY_ARCHIVE] = SW_E_INTERNAL,
    [LAZY_CRYPTO] = SW_E_INTERNAL,
};

static lazy_state states[LAZY_LIB_COUNT] = {
    [LAZY_PQ] = {PTHREAD_ONCE_INIT},
    [LAZY_CURL] = {PTHREAD_ONCE_INIT},
    [LAZY_ARCHIVE] = {PTHREAD_ONCE_INIT},
    [LAZY_CRYPTO] = {PTHREAD_ONCE_INIT},
};

int lazy_load(const lazy_def *d, void **handle, char *why, size_t why_n)
{
    *handle = NULL;
    void *h = dlopen(d->soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, why_n, "cannot load %s: %s", d->soname, e ? e : "unknown dlopen error");
        return -1;
    }
    for (size_t i = 0; i < d->n; i++) {
        (void)dlerror();
        d->fn[i] = dlsym(h, d->names[i]);
        if (!d->fn[i]) {
            const char *e = dlerror();
            snprintf(why, why_n, "cannot load %s: %s", d->soname,
                     e ? e : "symbol resolves to NULL");
            dlclose(h);
            return -1;
        }
    }
    *handle = h;
    return 0;
}

static void load(lazy_lib lib)
{
    lazy_state *st = &states[lib];
    void *h = NULL;
    if (lazy_load(defs[lib], &h, st->why, sizeof st->why) == 0)
        __atomic_store_n(&st->handle, h, __ATOMIC_RELEASE);   /* for lazy_loaded() */
}

/* pthread_once takes no argument: one routine per library. */
static void load_pq(void) { load(LAZY_PQ); }
static void load_curl(void) { load(LAZY_CURL); }
static void load_archive(void) { load(LAZY_ARCHIVE); }
static void load_crypto(void) { load(LAZY_CRYPTO); }
static void (*const loaders[LAZY_LIB_COUNT])(void) = {
    [LAZY_PQ] = load_pq,
    [LAZY_CURL] = load_curl,
    [LAZY_ARCHIVE] = load_archive,
    [LAZY_CRYPTO] = load_crypto,
};

static lazy_state *ensure(lazy_lib lib)
{
    lazy_state *st = &states[lib];
    pthread_once(&st->once, loaders[lib]);
    return st;
}

int lazy_need(lazy_lib lib, sw_err *err)
{
    const lazy_state *st = ensure(lib);
    if (st->handle) return 0;
    return sw_errc(err, codes[lib], "%s", st->why);
}

/* Without the once: during a load in progress "not yet" is a right answer. */
bool lazy_loaded(lazy_lib lib)
{
    return __atomic_load_n(&states[lib].handle, __ATOMIC_ACQUIRE) != NULL;
}

const char *lazy_soname(lazy_lib lib) { return defs[lib]->soname; }

void *const *lazy_fns(lazy_lib lib)
{
    const lazy_state *st = ensure(lib);
    if (st->handle) return defs[lib]->fn;
    /* A programming error (a path that skipped lazy_need) or a broken install: there is
     * no error path to take from inside, say PQexec(), so stop loudly like xmalloc. */
    char msg[400];
    int len = snprintf(msg, sizeof msg,
                       "snapworker: %s is needed but could not be loaded (%s); aborting\n",
                       defs[lib]->soname, st->why);
    if (len > 0) {
        ssize_t w = write(2, msg, (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1);
        (void)w;
    }
    abort();
}
