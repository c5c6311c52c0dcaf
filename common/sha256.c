/* common/sha256.c — SHA-256 through EVP_MD_CTX (SHA-NI accelerated where the CPU has it),
 * plus sha256_async: the same digest computed on a helper thread behind a bounded ring.
 * An allocation or EVP failure here means a broken libcrypto: abort like xmalloc does
 * instead of threading an impossible error through every streaming call. */
#include "common/sha256.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sha256_ctx {
    EVP_MD_CTX *md;
};

static void evp_die(const char *what)
{
    fprintf(stderr, "snapworker: libcrypto %s failed\n", what);
    abort();
}

sha256_ctx *sha256_new(void)
{
    sha256_ctx *h = malloc(sizeof *h);
    if (!h) evp_die("alloc");
    h->md = EVP_MD_CTX_new();
    if (!h->md) evp_die("EVP_MD_CTX_new");
    sha256_reset(h);
    return h;
}

void sha256_free(sha256_ctx *h)
{
    if (!h) return;
    EVP_MD_CTX_free(h->md);
    free(h);
}

void sha256_reset(sha256_ctx *h)
{
    if (EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) evp_die("EVP_DigestInit_ex");
}

void sha256_update(sha256_ctx *h, const void *p, size_t n)
{
    if (n && EVP_DigestUpdate(h->md, p, n) != 1) evp_die("EVP_DigestUpdate");
}

static void to_hex(const unsigned char *d, unsigned n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[2 * n] = '\0';
}

void sha256_final_hex(sha256_ctx *h, char out[SHA256_HEX_LEN + 1])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_DigestFinal_ex(h->md, d, &n) != 1 || n != 32) evp_die("EVP_DigestFinal_ex");
    to_hex(d, n, out);
}

void sha256_hex(const void *p, size_t n, char out[SHA256_HEX_LEN + 1])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    if (EVP_Digest(p, n, d, &dn, EVP_sha256(), NULL) != 1 || dn != 32) evp_die("EVP_Digest");
    to_hex(d, dn, out);
}

int sha256_hex_valid(const char *s, size_t n)
{
    if (n < SHA256_HEX_LEN) return 0;
    for (size_t i = 0; i < SHA256_HEX_LEN; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return 0;
    }
    for (size_t i = SHA256_HEX_LEN; i < n; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t') return 0;
    return 1;
}

/* ---- hashing on a helper thread ----
 * Slots [tail, head) are published and wait for the hasher (slot tail may be under its
 * hands: tail moves on only once it is hashed); slot head is the one being filled by
 * the producer (fill bytes), which may start it only while head - tail < nslots. The
 * hasher touches ctx only while tail < head, so with tail == head (under mu) the
 * producer may reset or finish ctx itself. */
struct sha256_async {
    sha256_ctx *ctx;
    unsigned char **slot;
    size_t *len;
    size_t slot_size, fill;
    uint64_t head, tail;            /* monotonic counts; index = count % nslots */
    int nslots;
    bool threaded, stop;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t work, space;     /* hasher waits on work, producer on space */
};

static void *hasher_main(void *arg)
{
    sha256_async *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->tail == a->head && !a->stop) pthread_cond_wait(&a->work, &a->mu);
        if (a->stop) break;
        int i = (int)(a->tail % (uint64_t)a->nslots);
        size_t n = a->len[i];
        pthread_mutex_unlock(&a->mu);
        sha256_update(a->ctx, a->slot[i], n);
        pthread_mutex_lock(&a->mu);
        a->tail++;
        pthread_cond_signal(&a->space);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

sha256_async *sha256_async_new(size_t slot_size, int nslots)
{
    sha256_async *a = calloc(1, sizeof *a);
    if (!a) evp_die("alloc");
    if (slot_size == 0) slot_size = 256 * 1024;
    if (nslots < 2) nslots = 2;
    a->ctx = sha256_new();
    a->slot_size = slot_size;
    a->nslots = nslots;
    a->slot = calloc((size_t)nslots, sizeof *a->slot);
    a->len = calloc((size_t)nslots, sizeof *a->len);
    if (!a->slot || !a->len) evp_die("alloc");
    for (int i = 0; i < nslots; i++)
        if (!(a->slot[i] = malloc(slot_size))) evp_die("alloc");
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->space, NULL);
    a->threaded = pthread_create(&a->th, NULL, hasher_main, a) == 0;
    return a;
}

void sha256_async_free(sha256_async *a)
{
    if (!a) return;
    if (a->threaded) {
        pthread_mutex_lock(&a->mu);
        a->stop = true;
        pthread_cond_signal(&a->work);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->th, NULL);
    }
    pthread_cond_destroy(&a->space);
    pthread_cond_destroy(&a->work);
    pthread_mutex_destroy(&a->mu);
    for (int i = 0; i < a->nslots; i++) free(a->slot[i]);
    free(a->slot);
    free(a->len);
    sha256_free(a->ctx);
    free(a);
}

/* Hand the slot being filled to the hasher. */
static void publish(sha256_async *a)
{
    pthread_mutex_lock(&a->mu);
    a->len[a->head % (uint64_t)a->nslots] = a->fill;
    a->head++;
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->mu);
    a->fill = 0;
}

/* Wait until the hasher has consumed every published slot (it then leaves ctx alone). */
static void drain(sha256_async *a)
{
    pthread_mutex_lock(&a->mu);
    while (a->tail != a->head) pthread_cond_wait(&a->space, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

void sha256_async_update(sha256_async *a, const void *p, size_t n)
{
    if (!a->threaded) {
        sha256_update(a->ctx, p, n);
        return;
    }
    const unsigned char *src = p;
    while (n) {
        if (a->fill == 0) {   /* starting slot head: wait until it is free */
            pthread_mutex_lock(&a->mu);
            while (a->head - a->tail >= (uint64_t)a->nslots) pthread_cond_wait(&a->space, &a->mu);
            pthread_mutex_unlock(&a->mu);
        }
        size_t k = a->slot_size - a->fill;
        if (k > n) k = n;
        memcpy(a->slot[a->head % (uint64_t)a->nslots] + a->fill, src, k);
        a->fill += k;
        src += k;
        n -= k;
        if (a->fill == a->slot_size) publish(a);
    }
}

void sha256_async_reset(sha256_async *a)
{
    if (a->threaded) {
        a->fill = 0;
        drain(a);
    }
    sha256_reset(a->ctx);
}

void sha256_async_final_hex(sha256_async *a, char out[SHA256_HEX_LEN + 1])
{
    if (a->threaded) {
        if (a->fill) publish(a);
        drain(a);
    }
    sha256_final_hex(a->ctx, out);
}
