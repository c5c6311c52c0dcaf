/* worker/cmdv.h — a growable argv for Redis commands.
 * All arguments live in one buffer (one allocation per growth, not per argument):
 * a batch script call carries thousands of small arguments. */
#ifndef SW_WORKER_CMDV_H
#define SW_WORKER_CMDV_H
#include <stddef.h>

typedef struct cmdv {
    int argc, cap;
    char *buf;            /* arguments, each NUL-terminated, back to back */
    size_t len, bcap;     /* bytes used / allocated in buf */
    size_t *offs, *lens;  /* per argument: offset in buf, length */
    const char **argv;    /* built by cv_argv() */
} cmdv;

void cv_init(cmdv *v);
void cv_free(cmdv *v);                       /* frees everything; v reusable after cv_init */
void cv_addn(cmdv *v, const char *s, size_t n);
void cv_add(cmdv *v, const char *s);
void cv_addcat(cmdv *v, const char *a, const char *b); /* one argument: a then b */
void cv_addll(cmdv *v, long long x);         /* decimal, without printf */
void cv_addf(cmdv *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cv_cat(cmdv *dst, const cmdv *src);     /* append all of src's arguments */
void cv_set(cmdv *v, int i, const char *s);  /* replace argument i */
const char **cv_argv(cmdv *v);               /* argv pointers (valid until the next change) */
char *cv_resp(const cmdv *v, size_t *len);   /* the command in RESP, NUL after (malloc'd); argc > 0 */

#endif
