/* worker/cmdv.c — growable argv for redisAsyncCommandArgv, one buffer for all. */
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

void cv_addn(cmdv *v, const char *s, size_t n)
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
    memcpy(v->buf + v->len, s, n);
    v->buf[v->len + n] = '\0';
    v->offs[v->argc] = v->len;
    v->lens[v->argc] = n;
    v->len += n + 1;
    v->argc++;
}

void cv_add(cmdv *v, const char *s) { cv_addn(v, s, strlen(s)); }

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

const char **cv_argv(cmdv *v)
{
    v->argv = xrealloc(v->argv, (size_t)(v->argc ? v->argc : 1) * sizeof *v->argv);
    for (int i = 0; i < v->argc; i++) v->argv[i] = v->buf + v->offs[i];
    return v->argv;
}
