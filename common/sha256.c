/* common/sha256.c — SHA-256 through EVP_MD_CTX (SHA-NI accelerated where the CPU has it).
 * An allocation or EVP failure here means a broken libcrypto: abort like xmalloc does
 * instead of threading an impossible error through every streaming call. */
#include "common/sha256.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

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
