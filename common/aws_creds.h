/* common/aws_creds.h — the AWS credentials chain of the s3:// store (docs/store.md
 * "Credentials").
 * Owns: choosing the source as the AWS SDKs order it (static environment keys, then web
 * identity through STS AssumeRoleWithWebIdentity, then the ECS/EKS container endpoint,
 * then IMDSv2), fetching temporary credentials, the process-wide cache of them (one
 * mutex; one thread refreshes while the others keep signing with the current ones) and
 * the refresh schedule (5 min before expiry, at half-life for short-lived ones).
 * Does not own signing (curl's CURLOPT_AWS_SIGV4, common/store_s3_http.c) nor the region
 * or addressing of S3 requests.
 * Secrets (keys, session tokens, the web identity token, the container authorization
 * token) never reach a message or a log line; messages name the source and, for web
 * identity, the role ARN (not a secret). */
#ifndef SW_COMMON_AWS_CREDS_H
#define SW_COMMON_AWS_CREDS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/err.h"

typedef enum awsc_source {
    AWSC_NONE = 0,
    AWSC_STATIC,            /* AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) */
    AWSC_WEB_IDENTITY,      /* AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN → STS */
    AWSC_CONTAINER,         /* AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI */
    AWSC_IMDS,              /* EC2 instance metadata, IMDSv2 */
} awsc_source;

/* What selects and configures the chain. Strings are borrowed; NULL or "" = unset. */
typedef struct awsc_env {
    const char *access_key, *secret_key, *session_token;
    const char *region;                          /* for the regional STS endpoint */
    const char *role_arn, *token_file, *session_name;
    const char *sts_endpoint;                    /* AWS_ENDPOINT_URL_STS */
    const char *container_full_uri, *container_relative_uri;
    const char *container_auth_token, *container_auth_token_file;
    const char *imds_endpoint;                   /* AWS_EC2_METADATA_SERVICE_ENDPOINT */
    bool imds_disabled;                          /* AWS_EC2_METADATA_DISABLED=true */
} awsc_env;

/* One set of credentials. Owned strings (awsc_creds_clear wipes and frees them). */
typedef struct awsc_creds {
    char *access_key, *secret_key;
    char *token;                                 /* NULL when none */
    int64_t expires_at;                          /* unix seconds; 0 = does not expire */
    awsc_source source;
} awsc_creds;

typedef struct awsc_provider awsc_provider;

/* The environment: static keys and region from 'c' (cfg's AWS_* entries), the rest from
 * getenv (the names above). */
void awsc_env_load(awsc_env *e, const cfg *c);
/* Which source the chain uses for 'e': the first configured one, in the SDKs' order
 * (IMDS last, unless disabled; AWSC_NONE when disabled and nothing else is set). */
awsc_source awsc_pick(const awsc_env *e);
const char *awsc_source_name(awsc_source s);     /* "environment", "web identity", ... */

/* A provider for 'e' (copied; does no network I/O): NULL with SW_E_STORAGE permanent
 * when the configuration is incomplete or invalid (one static key without the other,
 * a token file without a role ARN or the reverse, a container URI that is not
 * http(s), a plain-http full URI to a host other than loopback or the ECS/EKS link-local
 * addresses, nothing configured and IMDS disabled). Free with awsc_provider_free(). */
awsc_provider *awsc_provider_new(const awsc_env *e, sw_err *err);
void awsc_provider_free(awsc_provider *p);       /* NULL-safe */
awsc_source awsc_provider_source(const awsc_provider *p);

/* The credentials to sign the next request with, copied into *out (clear it with
 * awsc_creds_clear). Static keys are returned as they are. Temporary credentials come
 * from the process-wide cache, fetched on first use and refreshed from awsc_refresh_at()
 * on: by one thread, while the others go on with the current ones as long as they are
 * valid; a failed refresh keeps the current ones until they expire (and is tried again
 * after a few seconds). Thread-safe. 0, or -1 with err: SW_E_STORAGE naming the source,
 * permanent when the source refused (4xx, e.g. STS AccessDenied) or none answers,
 * retryable when it failed transiently (5xx, timeouts). */
int awsc_get(awsc_provider *p, awsc_creds *out, sw_err *err);
/* S3 refused credentials with this access key id (ExpiredToken, InvalidToken,
 * InvalidAccessKeyId): when they are the cached ones, drop them so the next awsc_get
 * fetches new ones. Returns whether anything was dropped (false for static keys). */
bool awsc_invalidate(awsc_provider *p, const char *access_key);
void awsc_creds_clear(awsc_creds *c);            /* wipes the secret and token; NULL-safe */

/* ---- pure helpers (tests/unit/test_aws_creds.c) ------------------------------------ */
/* When to refresh credentials obtained at 'obtained' that expire at 'expires' (unix s):
 * 5 minutes before expiry, or at half-life when they live less than 10 minutes.
 * INT64_MAX when expires is 0 (never). */
int64_t awsc_refresh_at(int64_t obtained, int64_t expires);
/* Whether credentials expiring at 'expires' (0 = never) may still sign a request at
 * 'now': until AWSC_EXPIRY_MARGIN_S before the expiry. */
#define AWSC_EXPIRY_MARGIN_S 5
bool awsc_usable(int64_t now, int64_t expires);
/* An STS AssumeRoleWithWebIdentity answer body[0..n) (NUL-ended): 0 with *out filled
 * (source AWSC_WEB_IDENTITY), or -1 with the error <Code> (or a reason) in code (size cn). */
int awsc_parse_sts(const char *body, size_t n, awsc_creds *out, char *code, size_t cn);
/* A container-endpoint or IMDS answer (JSON AccessKeyId, SecretAccessKey, Token,
 * Expiration; IMDS adds "Code": "Success"): 0 with *out filled, or -1 with a reason in
 * why (size wn; never a secret). */
int awsc_parse_json(const char *body, size_t n, awsc_creds *out, char *why, size_t wn);

#endif
