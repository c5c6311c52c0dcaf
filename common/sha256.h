/* common/sha256.h — streaming SHA-256 over libcrypto's EVP, with hex output.
 * Owns: the digest context and its lowercase-hex rendering. Used by the store
 * (whole-object hash, per-part x-amz-content-sha256) and anything else that
 * hashes while streaming. */
#ifndef SW_COMMON_SHA256_H
#define SW_COMMON_SHA256_H
#include <stddef.h>

#define SHA256_HEX_LEN 64

typedef struct sha256_ctx sha256_ctx;

sha256_ctx *sha256_new(void);                     /* never NULL; caller frees with sha256_free() */
void sha256_free(sha256_ctx *h);                  /* NULL-safe */
void sha256_reset(sha256_ctx *h);                 /* start a new digest on the same context */
void sha256_update(sha256_ctx *h, const void *p, size_t n);
/* Finish into out[65] (64 lowercase hex + NUL); the context must be reset before reuse. */
void sha256_final_hex(sha256_ctx *h, char out[SHA256_HEX_LEN + 1]);
/* One-shot hash of p[0..n) into out[65]. */
void sha256_hex(const void *p, size_t n, char out[SHA256_HEX_LEN + 1]);
/* True when s[0..n) is exactly 64 hex digits, optionally followed by whitespace. */
int sha256_hex_valid(const char *s, size_t n);

/* A streaming SHA-256 computed on a helper thread, so hashing overlaps whatever the
 * caller does next (sending the bytes). update() copies into a ring of nslots slots
 * of slot_size bytes and returns; it blocks only while the ring is full. Slots are
 * hashed strictly in order. Memory is bounded by nslots * slot_size. One producer:
 * the calls below must not race each other (the helper is internal). If the thread
 * cannot be started, hashing happens inline in update(): same results. */
typedef struct sha256_async sha256_async;

sha256_async *sha256_async_new(size_t slot_size, int nslots);   /* never NULL */
void sha256_async_free(sha256_async *a);          /* NULL-safe; drops pending bytes, joins */
void sha256_async_reset(sha256_async *a);         /* drop everything so far, start a new digest */
void sha256_async_update(sha256_async *a, const void *p, size_t n);
/* Wait for every byte given so far, finish into out[65]; reset before reuse. */
void sha256_async_final_hex(sha256_async *a, char out[SHA256_HEX_LEN + 1]);

#endif
