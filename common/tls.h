/* common/tls.h — TLS client sessions for Redis (OpenSSL; docs/redis.md "TLS").
 * One SSL_CTX per Redis URL, made on first use and kept for the process (the CA bundle
 * and client key are read once); one SSL per connection with the peer's name checked
 * (a DNS name against the certificate's DNS names, an IP literal against its IP
 * addresses) unless the URL turns verification or the name check off. Used by both the
 * blocking client (common/rds.c) and the event-loop transport (worker/rtr.c).
 * Thread-safe. */
#ifndef SW_COMMON_TLS_H
#define SW_COMMON_TLS_H
#include <openssl/ssl.h>
#include <stddef.h>

#include "common/cfg.h"
#include "common/err.h"

/* The context for 'u' (borrowed; lives until the process ends). NULL with a message
 * naming the file when the CA bundle, certificate or key cannot be loaded. */
SSL_CTX *tls_ctx(const rds_url *u, sw_err *err);
/* A client session for 'host' (SNI for DNS names; the name checked as the URL says). */
SSL *tls_session(SSL_CTX *ctx, const rds_url *u, const char *host, sw_err *err);
/* Why a handshake or read failed, for an error message: the verification result
 * ("certificate verify failed: hostname mismatch") or OpenSSL's first real error
 * (libevent's pseudo errors of SSL_get_error codes are skipped). 'e' is an error
 * code already taken off a queue (0: read ERR_get_error). */
void tls_explain(SSL *ssl, unsigned long e, char *out, size_t n);

#endif
