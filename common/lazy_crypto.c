/* common/lazy_crypto.c — the libcrypto functions snapworker calls, forwarded into
 * libcrypto.so.3 loaded on first use (common/lazylib.h). Owns only this symbol list and
 * the forwarders, with openssl/evp.h's prototypes (included: the compiler checks them).
 * Users: common/sha256.c, id_uuid5_url() (common/ids.c), worker/scripts.c (EVP_Digest,
 * EVP_sha1) and tests/unit/test_celery.c (EVP_EncodeBlock). Those have no error path, so
 * the first call loads the library; only a missing library aborts (lazylib.c). */
#include <openssl/evp.h>

#include "common/lazylib_priv.h"

#define SYMS(X)                                                                         \
    X(EVP_Digest) X(EVP_DigestFinal_ex) X(EVP_DigestInit_ex) X(EVP_DigestUpdate)       \
    X(EVP_MD_CTX_free) X(EVP_MD_CTX_new) X(EVP_sha1) X(EVP_sha256) X(EVP_EncodeBlock)

LAZY_DEFINE(lazy_crypto_def, "libcrypto.so.3", SYMS);

#define FN(name) LAZY_FN(LAZY_CRYPTO, name)

int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size,
               const EVP_MD *type, ENGINE *impl)
{
    return FN(EVP_Digest)(data, count, md, size, type, impl);
}

int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s)
{
    return FN(EVP_DigestFinal_ex)(ctx, md, s);
}

int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl)
{
    return FN(EVP_DigestInit_ex)(ctx, type, impl);
}

int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt)
{
    return FN(EVP_DigestUpdate)(ctx, d, cnt);
}

void EVP_MD_CTX_free(EVP_MD_CTX *ctx) { FN(EVP_MD_CTX_free)(ctx); }
EVP_MD_CTX *EVP_MD_CTX_new(void) { return FN(EVP_MD_CTX_new)(); }
const EVP_MD *EVP_sha1(void) { return FN(EVP_sha1)(); }
const EVP_MD *EVP_sha256(void) { return FN(EVP_sha256)(); }

int EVP_EncodeBlock(unsigned char *t, const unsigned char *f, int n)
{
    return FN(EVP_EncodeBlock)(t, f, n);
}
