/* worker/cmdv.h — a growable argv for Redis commands (owned copies + lengths). */
#ifndef SW_WORKER_CMDV_H
#define SW_WORKER_CMDV_H
#include <stddef.h>

typedef struct cmdv {
    int argc, cap;
    char **argv;    /* each owned */
    size_t *lens;
} cmdv;

void cv_init(cmdv *v);
void cv_free(cmdv *v);                       /* frees the strings; v reusable after cv_init */
void cv_addn(cmdv *v, const char *s, size_t n);
void cv_add(cmdv *v, const char *s);
void cv_addf(cmdv *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cv_set(cmdv *v, int i, const char *s);  /* replace argument i */

#endif
