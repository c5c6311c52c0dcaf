/* jobs/sandbox_k8s_sleep.c — the kubernetes half of the sleep job (jobs/sandbox.h
 * sb_k8s_list_sessions, sb_k8s_teardown): list the session folders in the pod, delete the
 * sandbox's service and pod. Owns: the names of those two objects and the uid-fenced delete.
 * Does not own: the pods/exec and REST transport (common/k8s.h), the session flows
 * (jobs/sandbox_k8s.c). Kept apart from sandbox_k8s.c so the lifecycle work and the backend
 * could be written in parallel; sb_k8s_ops points its list_sessions and teardown here.
 *
 * Names: pod and service are both {SNAPWORKER_K8S_POD_PREFIX}{first 8 characters of the
 * sandbox id} (Onyx names them alike). A delete is fenced on the uid a GET just read, so a
 * sandbox re-created under the same name meanwhile is never deleted (409 = error, retried). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/k8s.h"
#include "common/xmalloc.h"
#include "jobs/sandbox.h"

#define LS_OUT_MAX (256 * 1024)   /* bytes of `ls` output read (about 6500 sessions) */

/* A client per call: sleep runs once per idle sandbox, rarely enough that the credentials
 * are simply read again (sandbox_k8s.c keeps one per process for the hot paths). */
static k8s_client *client(const cfg *c, sw_err *err)
{
    return k8s_client_new(c, err);
}

static void object_name(const cfg *c, const char *sandbox_id, char *out, size_t n)
{
    snprintf(out, n, "%s%.8s", c->k8s_pod_prefix ? c->k8s_pod_prefix : "sandbox-", sandbox_id);
}

/* GET then DELETE with the uid precondition. 404 at either step = already gone. */
static int delete_fenced(k8s_client *k, const char *kind, const char *name, sw_err *err)
{
    char *body = NULL;
    int st = k8s_get(k, kind, name, &body, err);
    if (st < 0) return -1;
    if (st == 404) return 0;
    json_t *o = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    const char *uid = json_string_value(json_object_get(json_object_get(o, "metadata"), "uid"));
    char *u = uid ? xstrdup(uid) : NULL;
    json_decref(o);
    st = k8s_delete(k, kind, name, u, err);
    free(u);
    return st < 0 ? -1 : 0;   /* 2xx or 404: done */
}

int sb_k8s_teardown(const cfg *c, const char *sandbox_id, sw_err *err)
{
    char name[128];
    object_name(c, sandbox_id, name, sizeof name);
    k8s_client *k = client(c, err);
    if (!k) return -1;
    int rc = delete_fenced(k, "services", name, err);
    if (rc == 0) rc = delete_fenced(k, "pods", name, err);
    k8s_client_free(k);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* `ls -1A /workspace/sessions` in the sync container: argv only, no shell, bounded by
 * SNAPWORKER_K8S_EXEC_TIMEOUT_S. A missing folder (ls exits non-zero) counts as no sessions,
 * and so does a missing pod (the exec fails and a GET says 404): there is nothing left to
 * snapshot, and the sleep goes on to its transaction and teardown (jobs/sandbox.h). */
int sb_k8s_list_sessions(const cfg *c, const char *sandbox_id, char ***ids, size_t *n,
                         sw_err *err)
{
    char pod[128], one[SW_UUID_LEN + 1];
    *ids = xcalloc(1, sizeof **ids);
    *n = 0;
    object_name(c, sandbox_id, pod, sizeof pod);
    k8s_client *k = client(c, err);
    if (!k) return -1;
    const char *argv[] = {"ls", "-1A", "/workspace/sessions", NULL};
    char *out = xmalloc(LS_OUT_MAX);
    out[0] = '\0';
    k8s_exec_req r = {.pod = pod, .container = c->k8s_sync_container, .argv = argv,
                      .name = "list sessions", .in_len = -1, .out_buf = out,
                      .out_cap = LS_OUT_MAX,
                      .deadline_ms = job_now_ms() + (int64_t)c->k8s_exec_timeout_s * 1000};
    k8s_exec_res res = {0};
    int rc = k8s_exec(k, &r, &res, err);
    if (rc != 0) {
        sw_err e2;
        if (k8s_get(k, "pods", pod, NULL, &e2) == 404) {   /* no pod: no sessions */
            sw_err_clear(err);
            rc = 0;
        }
    }
    k8s_client_free(k);
    if (rc == 0 && res.exit_code == 0) {
        size_t cap = 1;
        char *save = NULL;
        for (char *t = strtok_r(out, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
            if (!id_uuid_lower(t, one) || strcmp(one, t) != 0) continue;
            if (*n + 1 >= cap) {
                cap = cap * 2 + 8;
                *ids = xrealloc(*ids, cap * sizeof **ids);
            }
            (*ids)[(*n)++] = xstrdup(one);
            (*ids)[*n] = NULL;
        }
        qsort(*ids, *n, sizeof **ids, by_name);
    }
    free(out);
    return rc;
}
