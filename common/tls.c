/* common/tls.c — TLS client contexts and sessions for Redis (common/tls.h).
 * Verification is on unless the URL says ssl_cert_reqs=none: SSL_VERIFY_PEER against
 * the URL's CA bundle (ssl_ca_certs) or the system's, and the host name checked with
 * SSL_set1_host, which matches an IP literal against the certificate's IP addresses and
 * a name against its DNS names. TLS 1.2 at least. */
#include "common/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/xmalloc.h"

/* Contexts by URL: a process has at most a few (REDIS_URL, the Celery broker and result
 * backend). Keyed by the URL's address, which lives as long as the configuration. */
#define CTX_MAX 8
static struct {
    const rds_url *u;
    SSL_CTX *ctx;
} ctxs[CTX_MAX];
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;

static void first_error(char *out, size_t n)
{
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, out, n);
    else snprintf(out, n, "unknown error");
    ERR_clear_error();
}

static SSL_CTX *make_ctx(const rds_url *u, sw_err *err)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        first_error(why, sizeof why);
        sw_errc(err, SW_E_INTERNAL, "Redis TLS: cannot make a context: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* idle connections give their 16 KiB read and write buffers back (an idle worker
     * holds three) */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_RELEASE_BUFFERS);
    if (u->tls_verify == RDS_VERIFY_REQUIRED) {
        int ok = u->tls_ca ? SSL_CTX_load_verify_locations(ctx, u->tls_ca, NULL)
                           : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            first_error(why, sizeof why);
            sw_errf(err, SW_E_INTERNAL, false, "Redis TLS: cannot load the CA bundle %s (ssl_ca_certs): %s",
                    u->tls_ca ? u->tls_ca : "(system default)", why);
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL); /* without it nothing is checked */
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (u->tls_cert || u->tls_key) {
        const char *cert = u->tls_cert ? u->tls_cert : u->tls_key;
        const char *key = u->tls_key ? u->tls_key : u->tls_cert;
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
            first_error(why, sizeof why);
            sw_errf(err, SW_E_INTERNAL, false, "Redis TLS: cannot load the client certificate %s "
                    "(ssl_certfile): %s", cert, why);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            first_error(why, sizeof why);
            sw_errf(err, SW_E_INTERNAL, false, "Redis TLS: cannot load the client key %s "
                    "(ssl_keyfile): %s", key, why);
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *tls_ctx(const rds_url *u, sw_err *err)
{
    SSL_CTX *ctx = NULL;
    pthread_mutex_lock(&ctx_lock);
    int i = 0;
    for (; i < CTX_MAX && ctxs[i].u; i++)
        if (ctxs[i].u == u) {
            ctx = ctxs[i].ctx;
            break;
        }
    if (!ctx) {
        ctx = make_ctx(u, err);
        if (ctx && i < CTX_MAX) {
            ctxs[i].u = u;
            ctxs[i].ctx = ctx;
        }
        /* more URLs than slots: the context is made again next time (and leaked: never
         * happens with the configuration's few URLs) */
    }
    pthread_mutex_unlock(&ctx_lock);
    return ctx;
}

SSL *tls_session(SSL_CTX *ctx, const rds_url *u, const char *host, sw_err *err)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        char why[256];
        first_error(why, sizeof why);
        sw_errc(err, SW_E_INTERNAL, "Redis TLS: %s", why);
        return NULL;
    }
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    if (!is_ip) SSL_set_tlsext_host_name(ssl, host); /* SNI: names only (RFC 6066 §3) */
    if (u->tls_verify == RDS_VERIFY_REQUIRED && u->tls_check_hostname) {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(ssl, host) != 1) {
            SSL_free(ssl);
            sw_errc(err, SW_E_INTERNAL, "Redis TLS: cannot check the host name '%s'", host);
            return NULL;
        }
    }
    return ssl;
}

void tls_explain(SSL *ssl, unsigned long e, char *out, size_t n)
{
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(out, n, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        return;
    }
    /* libevent pushes SSL_get_error() codes (1..8) into its error queue: not errors */
    while (e && ERR_GET_LIB(e) == 0 && ERR_GET_REASON(e) < 16) e = 0;
    if (!e) e = ERR_get_error();
    if (e) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        /* "error:0A000086:SSL routines::certificate verify failed": keep the words */
        const char *words = strstr(buf, "::");
        snprintf(out, n, "%s", words ? words + 2 : buf);
    } else {
        snprintf(out, n, "TLS handshake failed");
    }
    ERR_clear_error();
}
