/* tests/fuzz/fuzz_k8s_status.c — libFuzzer harness for the metav1.Status decoders
 * (common/k8s_status.c): any bytes as the pods/exec status channel (k8s_exec_status) and
 * as the body of a refused REST call or upgrade (k8s_http_error_msg).
 * Invariants beyond the sanitizers:
 *  - the kind is one of the five; SUCCESS gives exit code 0, EXIT a code 0..255, the other
 *    kinds leave it alone; NONE only for blank input; FAILURE a non-empty message, NUL-ended
 *    and without control characters, and the other kinds an empty one and code 0;
 *  - the message is the same whatever the size of the caller's buffer, up to truncation;
 *  - the error text starts with what the caller named, fits its buffer, is NUL-ended and
 *    holds no control characters (it goes into logs and the dead stream). */
#include <ctype.h>
#include <string.h>

#include "common/k8s_priv.h"
#include "tests/fuzz/fuzz.h"

static void check_clean(const char *s, size_t cap)
{
    CHECK(memchr(s, '\0', cap));
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) CHECK(*p >= 0x20 && *p != 0x7f);
}

static void check_exec_status(const char *s, size_t n)
{
    int ec = -7;
    long code = -7;
    char msg[128], small[8];
    k8s_status_kind k = k8s_exec_status(s, n, &ec, &code, msg, sizeof msg);
    CHECK(k >= K8S_ST_SUCCESS && k <= K8S_ST_GARBAGE);
    if (k == K8S_ST_SUCCESS) CHECK(ec == 0);
    if (k == K8S_ST_EXIT) CHECK(ec >= 0 && ec <= 255);
    if (k != K8S_ST_SUCCESS && k != K8S_ST_EXIT) CHECK(ec == -7);
    if (k == K8S_ST_NONE) {
        for (size_t i = 0; i < n; i++) CHECK(isspace((unsigned char)s[i]));
    }
    if (k == K8S_ST_FAILURE) CHECK(msg[0]);
    else CHECK(msg[0] == '\0');
    if (k != K8S_ST_FAILURE) CHECK(code == 0);
    check_clean(msg, sizeof msg);

    int ec2 = -7;
    long code2 = -7;
    CHECK(k8s_exec_status(s, n, &ec2, &code2, small, sizeof small) == k);
    CHECK(ec2 == ec && code2 == code);
    CHECK(!strncmp(small, msg, sizeof small - 1));
    check_clean(small, sizeof small);
}

static void check_error_msg(const char *b, size_t n)
{
    char out[200], tiny[16];
    k8s_http_error_msg("GET pods/x", 503, b, n, out, sizeof out);
    CHECK(!strncmp(out, "GET pods/x: ", 12));
    check_clean(out, sizeof out);
    k8s_http_error_msg("GET pods/x", 503, b, n, tiny, sizeof tiny);
    check_clean(tiny, sizeof tiny);
    CHECK(!strncmp(out, tiny, strlen(tiny)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_exec_status((const char *)data, size);
    check_error_msg((const char *)data, size);
    return 0;
}
