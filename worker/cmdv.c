/* worker/cmdv.c — growable argv in one buffer, formatted to RESP in one pass. */
#include "worker/cmdv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"

void cv_init(cmdv *v) { memset(v, 0, sizeof *v); }

void cv_free(cmdv *v)
{
    free(v->buf);
    free(v->offs);
    free(v->lens);
    free(v->argv);
    cv_init(v);
}

/* Append an argument of n bytes and return where to write them. */
static char *push(cmdv *v, size_t n)
{
    if (v->argc == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 32;
        v->offs = xrealloc(v->offs, (size_t)v->cap * sizeof *v->offs);
        v->lens = xrealloc(v->lens, (size_t)v->cap * sizeof *v->lens);
    }
    if (v->len + n + 1 > v->bcap) {
        size_t want = v->bcap ? v->bcap * 2 : 1024;
        while (want < v->len + n + 1) want *= 2;
        v->buf = xrealloc(v->buf, want);
        v->bcap = want;
    }
    char *p = v->buf + v->len;
    p[n] = '\0';
    v->offs[v->argc] = v->len;
    v->lens[v->argc] = n;
    v->len += n + 1;
    v->argc++;
    return p;
}

void cv_addn(cmdv *v, const char *s, size_t n) { memcpy(push(v, n), s, n); }

void cv_add(cmdv *v, const char *s) { cv_addn(v, s, strlen(s)); }

void cv_addcat(cmdv *v, const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *p = push(v, na + nb);
    memcpy(p, a, na);
    memcpy(p + na, b, nb);
}

static size_t fmt_ull(char *out, unsigned long long x)
{
    char tmp[24];
    size_t n = 0;
    do tmp[n++] = (char)('0' + x % 10);
    while ((x /= 10) != 0);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

void cv_addll(cmdv *v, long long x)
{
    char s[24];
    size_t n = 0;
    if (x < 0) s[n++] = '-';
    n += fmt_ull(s + n, x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x);
    cv_addn(v, s, n);
}

void cv_addf(cmdv *v, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) abort();
    if ((size_t)n < sizeof small) {
        cv_addn(v, small, (size_t)n);
        return;
    }
    char *big = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    cv_addn(v, big, (size_t)n);
    free(big);
}

void cv_cat(cmdv *dst, const cmdv *src)
{
    for (int i = 0; i < src->argc; i++) cv_addn(dst, src->buf + src->offs[i], src->lens[i]);
}

void cv_set(cmdv *v, int i, const char *s)
{
    /* append the new text and repoint argument i (the old bytes stay unused) */
    int argc = v->argc;
    cv_addn(v, s, strlen(s));
    v->offs[i] = v->offs[argc];
    v->lens[i] = v->lens[argc];
    v->argc = argc;
}

char *cv_resp(const cmdv *v, size_t *len)
{
    /* *argc CRLF, then per argument $len CRLF bytes CRLF (at most 20 digits each) */
    size_t cap = 1 + 20 + 2 + 1; /* + a NUL after the command: hiredis peeks past args */
    for (int i = 0; i < v->argc; i++) cap += 1 + 20 + 2 + v->lens[i] + 2;
    char *out = xmalloc(cap), *p = out;
    *p++ = '*';
    p += fmt_ull(p, (unsigned long long)v->argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < v->argc; i++) {
        *p++ = '$';
        p += fmt_ull(p, (unsigned long long)v->lens[i]);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, v->buf + v->offs[i], v->lens[i]);
        p += v->lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    *len = (size_t)(p - out);
    *p = '\0'; /* not counted in len */
    return out;
}

const char **cv_argv(cmdv *v)
{
    v->argv = xrealloc(v->argv, (size_t)(v->argc ? v->argc : 1) * sizeof *v->argv);
    for (int i = 0; i < v->argc; i++) v->argv[i] = v->buf + v->offs[i];
    return v->argv;
}
