/* common/k8s_status.c — reading the API server's metav1.Status bodies into outcomes and
 * messages: the pods/exec status channel (exit code) and REST/upgrade error bodies.
 * Owns: the decoding rules only (pure: jansson, no I/O), so tests/unit/test_ws.c checks
 * them without a server. Does not own HTTP or the exec stream (k8s.c, k8s_exec.c).
 * Rules follow client-go's errorDecoderV4: Success → 0; Failure with reason
 * NonZeroExitCode → the cause whose reason is "ExitCode", its message a decimal 0..255;
 * any other Failure → its message; the message text is never parsed for meaning. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/k8s_priv.h"

/* Copy s into out[n], control characters replaced by '?'. */
static void copy_clean(const char *s, size_t sl, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < sl && o + 1 < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[o++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (n) out[o] = '\0';
}

static const char *str_field(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* An exit code as the kubelet writes it: decimal digits, 0..255. -1 otherwise. */
static int parse_exit(const char *s)
{
    if (!*s || strlen(s) > 3) return -1;
    int v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p)) return -1;
        v = v * 10 + (*p - '0');
    }
    return v <= 255 ? v : -1;
}

k8s_status_kind k8s_exec_status(const char *s, size_t n, int *exit_code, long *code, char *msg,
                                size_t msg_n)
{
    k8s_status_kind kind = K8S_ST_GARBAGE;
    json_t *root = NULL;
    if (msg_n) msg[0] = '\0';
    *code = 0;
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i])) i++;
    if (i == n) return K8S_ST_NONE;
    root = json_loadb(s, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) goto out;
    const char *status = str_field(root, "status");
    const char *reason = str_field(root, "reason");
    const char *message = str_field(root, "message");
    if (!strcmp(status, "Success")) {
        *exit_code = 0;
        kind = K8S_ST_SUCCESS;
        goto out;
    }
    if (strcmp(status, "Failure") != 0) goto out;
    if (!strcmp(reason, "NonZeroExitCode")) {
        json_t *causes = json_object_get(json_object_get(root, "details"), "causes");
        size_t k;
        json_t *c;
        json_array_foreach(causes, k, c) {
            if (strcmp(str_field(c, "reason"), "ExitCode") != 0) continue;
            int ec = parse_exit(str_field(c, "message"));
            if (ec >= 0) {
                *exit_code = ec;
                kind = K8S_ST_EXIT;
                goto out;
            }
        }
    }
    kind = K8S_ST_FAILURE;
    *code = (long)json_integer_value(json_object_get(root, "code"));
    const char *text = *message ? message : *reason ? reason : "Failure without a message";
    copy_clean(text, strlen(text), msg, msg_n);
out:
    json_decref(root);
    return kind;
}

void k8s_http_error_msg(const char *what, long http, const char *b, size_t n, char *out,
                        size_t out_n)
{
    json_t *root = n ? json_loadb(b, n, 0, NULL) : NULL;
    const char *kind = json_is_object(root) ? str_field(root, "kind") : "";
    char text[200] = "";
    if (!strcmp(kind, "Status")) {
        const char *reason = str_field(root, "reason"), *message = str_field(root, "message");
        char r[sizeof text], m[160];
        copy_clean(reason, strlen(reason), r, sizeof r);   /* both come from the server */
        copy_clean(message, strlen(message), m, sizeof m);
        snprintf(text, sizeof text, "%s%s%s", r, *r && *m ? ": " : "", m);
        snprintf(out, out_n, "%s: %ld%s%s", what, http, *text ? " " : "", text);
    } else {
        /* A plain-text body (x/net's handshake errors, proxies): its first line. */
        size_t l = 0;
        while (l < n && l < 120 && b[l] != '\n' && b[l] != '\r') l++;
        copy_clean(b, l, text, sizeof text);
        snprintf(out, out_n, "%s: HTTP %ld%s%s", what, http, *text ? ": " : "", text);
    }
    json_decref(root);
}

bool k8s_http_retryable(long http)
{
    return http >= 500 || http == 429;
}

bool k8s_valid_name(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if (!(islower((unsigned char)s[n]) || isdigit((unsigned char)s[n]) || s[n] == '-' ||
              s[n] == '.'))
            return false;
    return n > 0 && n <= 253;
}
