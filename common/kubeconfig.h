/* common/kubeconfig.h — where the Kubernetes API is and how to authenticate to it.
 * Owns: reading a kubeconfig (YAML, the subset kubeconfigs are written in, JSON included) and
 * resolving its current context into a k8s_creds; the in-cluster service-account fallback.
 * Does not own: HTTP, TLS handles, re-reading a rotating token (common/k8s.c does that with
 * creds->token_file).
 * Rules follow client-go (facts: docs/kubernetes.md): "-data" fields are base64 of PEM and
 * override the path fields; relative paths resolve against the kubeconfig's folder; tokenFile
 * wins over token; insecure-skip-tls-verify only when the file says so; exec plugins and
 * auth-providers are refused with a clear message rather than ignored.
 * Errors: SW_E_BACKEND, not retryable, naming the file and the field ("KUBECONFIG
 * /x/config: context 'dev' names cluster 'c1', which is not defined"), never a secret value. */
#ifndef SW_COMMON_KUBECONFIG_H
#define SW_COMMON_KUBECONFIG_H
#include <stdbool.h>
#include <stddef.h>

#include "common/cfg.h"
#include "common/err.h"

typedef struct k8s_creds {
    char *server;          /* "https://host:port" (no trailing slash) */
    char *ca_pem;          /* CA bundle bytes (PEM), or NULL = ca_file or system roots */
    size_t ca_len;
    char *ca_file;         /* CA path (in-cluster, or certificate-authority), or NULL */
    bool insecure;         /* insecure-skip-tls-verify: true */
    char *tls_server_name; /* tls-server-name, or NULL */
    char *token;           /* static bearer token (secret), or NULL */
    char *token_file;      /* re-read when it rotates (wins over token), or NULL */
    char *cert_pem, *key_pem;   /* client certificate and key (PEM bytes), or NULL */
    size_t cert_len, key_len;
    char *cert_file, *key_file; /* or paths */
    char *namespace_;      /* the context's namespace (or in-cluster namespace file), or NULL */
    char *source;          /* "KUBECONFIG /path (context NAME)" or "in-cluster": for messages */
} k8s_creds;

/* Parse kubeconfig text (len bytes; need not be NUL-terminated) whose file lives in folder
 * 'base_dir' (relative paths resolve against it; file-referenced CA/cert/key are NOT read
 * here, only their resolved paths stored). 'what' names the file in messages. 0 or -1. */
int kubeconfig_parse(const char *text, size_t len, const char *base_dir, const char *what,
                     k8s_creds *out, sw_err *err);
/* c->kubeconfig when non-empty (a ':'-separated list: the first file that exists is used, and
 * a parse error in it is an error, not a reason to try the next; merging across files is not
 * supported and said so in docs/kubernetes.md), else in-cluster:
 * KUBERNETES_SERVICE_HOST/_PORT (IPv6 bracketed) and the service-account token, ca.crt and
 * namespace under 'sa_dir' (NULL = /var/run/secrets/kubernetes.io/serviceaccount). 0 or -1. */
int k8s_creds_load(const cfg *c, const char *sa_dir, k8s_creds *out, sw_err *err);
void k8s_creds_free(k8s_creds *cr);   /* frees the fields, wipes secrets first; NULL-safe */

#endif
