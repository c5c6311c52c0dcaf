/* common/xmalloc.h — allocation wrappers that abort on out-of-memory.
 * Owns: nothing but the abort policy. A job that dies with the process is
 * recovered by lease reclaim, so OOM needs no error path through every call. */
#ifndef SW_COMMON_XMALLOC_H
#define SW_COMMON_XMALLOC_H
#include <stddef.h>

void *xmalloc(size_t n);                 /* never NULL; caller frees with free() */
void *xcalloc(size_t n, size_t size);    /* zeroed; never NULL */
void *xrealloc(void *p, size_t n);       /* never NULL */
char *xstrdup(const char *s);            /* NULL-safe: NULL in, NULL out */
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* caller frees */

#endif
