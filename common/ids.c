/* common/ids.c — id grammars and UUIDs (v5 via libcrypto SHA-1, v4 via getrandom). */
#include "common/ids.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static bool all_of(const char *s, size_t max, const char *extra)
{
    size_t n = 0;
    if (!s) return false;
    for (; s[n]; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (n >= max) return false;
        if (!(isascii(ch) && isalnum(ch)) && !strchr(extra, ch)) return false;
    }
    return n >= 1;
}

bool id_valid_job(const char *s) { return all_of(s, 128, "_.:-"); }
bool id_valid_tenant(const char *s) { return all_of(s, 63, "_-"); }

bool id_valid_uuid(const char *s)
{
    if (!s || strlen(s) != SW_UUID_LEN) return false;
    for (int i = 0; i < SW_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

bool id_uuid_lower(const char *s, char out[SW_UUID_LEN + 1])
{
    if (!id_valid_uuid(s)) return false;
    for (int i = 0; i < SW_UUID_LEN; i++) out[i] = (char)tolower((unsigned char)s[i]);
    out[SW_UUID_LEN] = '\0';
    return true;
}

static void format_uuid(const unsigned char b[16], char out[SW_UUID_LEN + 1])
{
    snprintf(out, SW_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

void id_uuid5_url(const char *name, char out[SW_UUID_LEN + 1])
{
    /* NAMESPACE_URL 6ba7b811-9dad-11d1-80b4-00c04fd430c8 */
    static const unsigned char ns[16] = {0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
                                         0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) abort();
    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
    EVP_DigestUpdate(ctx, ns, sizeof ns);
    EVP_DigestUpdate(ctx, name, strlen(name));
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    format_uuid(md, out);
}

void id_uuid4(char out[SW_UUID_LEN + 1])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r > 0) got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    format_uuid(b, out);
}
