/* common/k8s_priv.h — what common/k8s.c, k8s_exec.c and k8s_status.c share, and the pure
 * helpers tests/unit/test_ws.c calls. Not for the rest of the worker: common/k8s.h is the
 * interface. */
#ifndef SW_COMMON_K8S_PRIV_H
#define SW_COMMON_K8S_PRIV_H
#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/k8s.h"
#include "common/kubeconfig.h"

#define K8S_TOKEN_REREAD_MS 60000   /* client-go re-reads a token file every minute */

struct k8s_client {
    k8s_creds cr;
    char *ns;                   /* namespace used in every path */
    char *base;                 /* scheme://authority[/prefix] for URLs (the TLS name's
                                   authority when tls-server-name is set) */
    char *host;                 /* the real authority "host:port" for the Host header */
    char *connect_to;           /* CURLOPT_CONNECT_TO entry, or NULL */
    char *path_prefix;          /* path of the server URL without trailing '/', "" if none */
    int timeout_s;              /* cfg->k8s_api_timeout_s: connect, REST total, silence */
    pthread_mutex_t mu;         /* guards token and token_read_ms */
    char *token;                /* current bearer token (secret), or NULL */
    int64_t token_read_ms;      /* monotonic ms of the last attempt to read token_file */
};

int64_t k8s_now_ms(void);
/* "Authorization: Bearer <token>" for the next request, re-reading the token file when
 * older than K8S_TOKEN_REREAD_MS (or at once when 'force'); NULL when the client has no
 * token (client certificate). Caller wipes and frees. *changed (may be NULL) tells whether
 * the re-read produced a token different from the one before. */
char *k8s_auth_line(k8s_client *k, bool force, bool *changed);
void k8s_wipe_free(char *s);   /* zero a secret string, then free it; NULL-safe */
/* Set TLS (CA, client cert, insecure), CONNECT_TO, protocols and the connect timeout on
 * 'e'. Uses CURLOPT_PRIVATE: release the handle with k8s_curl_done(). */
void k8s_curl_tls(k8s_client *k, CURL *e, long connect_timeout_ms);
void k8s_curl_done(CURL *e);   /* curl_easy_cleanup plus what k8s_curl_tls allocated; NULL-safe */

/* What a pods/exec status channel said. */
typedef enum k8s_status_kind {
    K8S_ST_SUCCESS,    /* "status":"Success": exit code 0 */
    K8S_ST_EXIT,       /* NonZeroExitCode with an ExitCode cause 0..255 */
    K8S_ST_FAILURE,    /* any other Failure: msg holds its message (or reason) */
    K8S_ST_NONE,       /* nothing (or only whitespace) arrived */
    K8S_ST_GARBAGE,    /* not a metav1.Status */
} k8s_status_kind;

/* Decode the concatenated channel-3 payloads s[0..n) (client-go's errorDecoderV4 rules).
 * *exit_code is set for SUCCESS (0) and EXIT; for FAILURE msg[msg_n] gets its text and
 * *code its "code" field (0 when absent). */
k8s_status_kind k8s_exec_status(const char *s, size_t n, int *exit_code, long *code, char *msg,
                                size_t msg_n);
/* A DNS-1123 object name as the API accepts in a path: [a-z0-9.-]{1,253}. */
bool k8s_valid_name(const char *s);
/* An error message for an HTTP answer 'http' with body b[0..n):
 * "<what>: 404 NotFound: pods \"x\" not found" when the body is a metav1.Status, else
 * "<what>: HTTP 503[: first line of a text body]". Control characters are replaced. */
void k8s_http_error_msg(const char *what, long http, const char *b, size_t n, char *out,
                        size_t out_n);
/* Whether an HTTP status is worth another attempt (5xx, 429). */
bool k8s_http_retryable(long http);

#endif
