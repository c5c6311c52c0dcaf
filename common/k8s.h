/* common/k8s.h — a Kubernetes API client on libcurl: credentials, REST on pods and services,
 * and pods/exec over WebSocket (common/ws.h). No kubectl, no shell.
 * Owns: finding the cluster (KUBECONFIG's current context, else in-cluster), TLS verified
 * against the cluster CA, the bearer token (re-read when it rotates), GET and DELETE of pods
 * and services with the API's Status errors turned into messages, and running one command in
 * a container with stdin/stdout streamed through callbacks.
 * Does not own: what the commands are (jobs/sandbox_k8s.c), the WebSocket framing (ws.c).
 * Split: k8s.c (client, REST), kubeconfig.c (parsing), k8s_exec.c (pods/exec), k8s_status.c
 * (metav1.Status decoding; helpers in k8s_priv.h).
 * Errors: SW_E_BACKEND everywhere; the message names the pod/service and the HTTP status or
 * Status reason, never the token or a command's data. A transport failure (connect, reset,
 * 5xx, 429, a dropped exec stream, an exec with no status) is retryable; 401/403/404 and a
 * command that exits non-zero are not (the caller may still decide otherwise). */
#ifndef SW_COMMON_K8S_H
#define SW_COMMON_K8S_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/cfg.h"
#include "common/err.h"

typedef struct k8s_client k8s_client;

/* Credentials from c->kubeconfig (when non-empty) or the in-cluster service account; the
 * namespace is c->k8s_namespace. Caller frees with k8s_client_free(). NULL with err filled
 * (SW_E_BACKEND, not retryable: "KUBECONFIG /path: context 'x' has no cluster", ...). The
 * client is safe to share between threads (the token is re-read under a lock). */
k8s_client *k8s_client_new(const cfg *c, sw_err *err);
void k8s_client_free(k8s_client *k);            /* NULL-safe */
const char *k8s_client_server(const k8s_client *k);     /* "https://host:port", borrowed */
const char *k8s_client_namespace(const k8s_client *k);  /* borrowed */

/* GET or DELETE /api/v1/namespaces/{ns}/{kind}/{name} (kind "pods" or "services").
 * Returns the HTTP status (200..299) with the body in *body (caller frees, may be NULL when
 * not wanted), 404 as the value 404 with *body NULL (the caller decides: DELETE treats it as
 * done), or -1 with err filled ("pods sandbox-1234abcd: 401 Unauthorized: <Status.message>").
 * DELETE sends {"preconditions":{"uid":uid}} when uid is non-NULL (a re-created object of the
 * same name is never deleted: 409 is an error). */
int k8s_get(k8s_client *k, const char *kind, const char *name, char **body, sw_err *err);
int k8s_delete(k8s_client *k, const char *kind, const char *name, const char *uid,
               sw_err *err);

/* ------------------------------------------------------------------ pods/exec */

/* Produce up to n bytes of stdin into buf: the count, 0 at end of input, -1 to abort the
 * command (err filled by the callback's owner; k8s_exec returns -1 with its own message). */
typedef ssize_t (*k8s_in_fn)(void *arg, char *buf, size_t n);
/* Consume n bytes of stdout: 0, or -1 to abort the command. */
typedef int (*k8s_out_fn)(void *arg, const char *buf, size_t n);

typedef struct k8s_exec_req {
    const char *pod;               /* validated name, e.g. "sandbox-0b6f6a0e" */
    const char *container;         /* required (sandbox pods have two) */
    const char *const *argv;       /* NULL-terminated; each item is one command= parameter */
    const char *name;              /* short name for messages ("snapshot tar"), never data */
    k8s_in_fn in;                  /* NULL = no stdin (stdin=false) */
    void *in_arg;
    int64_t in_len;                /* exact stdin length when known (v4 has no EOF: scripts
                                      use `head -c N`), -1 unknown */
    k8s_out_fn out;                /* NULL = stdout collected into out_buf (bounded) */
    void *out_arg;
    char *out_buf;                 /* when out is NULL: up to out_cap-1 bytes, NUL-ended */
    size_t out_cap;
    char *err_buf;                 /* stderr, up to err_cap-1 bytes kept, NUL-ended; may be NULL */
    size_t err_cap;
    int64_t deadline_ms;           /* job_now_ms()-style monotonic deadline; 0 = none */
    atomic_int *cancel;            /* non-zero: stop now (may be NULL) */
} k8s_exec_req;

typedef struct k8s_exec_res {
    int exit_code;                 /* 0..255 from the status channel */
    bool v5;                       /* v5.channel.k8s.io was negotiated (else v4) */
    int64_t bytes_in, bytes_out;   /* stdin sent, stdout received */
} k8s_exec_res;

/* Run r->argv in r->pod/r->container and wait for its status. 0 when the command ran to the
 * end and the status channel said so (res->exit_code 0 or the non-zero code: the caller turns
 * a non-zero code into its own error with err_buf), -1 with err filled otherwise: upgrade
 * refused (HTTP status and Status message; 404 = "pod not found"), stream dropped or closed
 * without a status (retryable), deadline passed or cancelled (SW_E_TIMEOUT), a callback
 * returned -1. Memory is bounded whatever the pod sends. */
int k8s_exec(k8s_client *k, const k8s_exec_req *r, k8s_exec_res *res, sw_err *err);

#endif
