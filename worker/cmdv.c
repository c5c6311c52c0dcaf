/* worker/cmdv.c — growable argv for redisAsyncCommandArgv. */
#include "worker/cmdv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"

void cv_init(cmdv *v)
{
    v->argc = 0;
    v->cap = 0;
    v->argv = NULL;
    v->lens = NULL;
}

void cv_free(cmdv *v)
{
    for (int i = 0; i < v->argc; i++) free(v->argv[i]);
    free(v->argv);
    free(v->lens);
    cv_init(v);
}

void cv_addn(cmdv *v, const char *s, size_t n)
{
    if (v->argc == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->argv = xrealloc(v->argv, (size_t)v->cap * sizeof *v->argv);
        v->lens = xrealloc(v->lens, (size_t)v->cap * sizeof *v->lens);
    }
    v->argv[v->argc] = xstrndup(s, n);
    v->lens[v->argc] = n;
    v->argc++;
}

void cv_add(cmdv *v, const char *s) { cv_addn(v, s, strlen(s)); }

void cv_addf(cmdv *v, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof buf) {
        cv_addn(v, buf, (size_t)n);
        return;
    }
    va_start(ap, fmt);
    char *big = NULL;
    n = vasprintf(&big, fmt, ap);
    va_end(ap);
    if (n < 0) abort();
    cv_addn(v, big, (size_t)n);
    free(big);
}

void cv_set(cmdv *v, int i, const char *s)
{
    free(v->argv[i]);
    v->argv[i] = xstrdup(s);
    v->lens[i] = strlen(s);
}
