/* common/arc_priv.h — helpers shared by arc.c, arc_write.c and arc_extract.c only.
 * Owns: the errno-to-sw_err filler, sorted directory listing and the per-thread UTF-8
 * locale scope. Not part of the module's interface: include common/arc.h instead. */
#ifndef SW_COMMON_ARC_PRIV_H
#define SW_COMMON_ARC_PRIV_H
#include <locale.h>
#include <stddef.h>

#include "common/err.h"

/* Fill 'err' with SW_E_BACKEND "OP NAME: strerror(e)", retryable unless a permission or
 * read-only error; returns -1. */
int arc_errno(sw_err *err, int e, const char *op, const char *name);

/* The names in directory 'dfd' except "." and "..", sorted bytewise; 'dfd' stays open and
 * is not repositioned for the caller. Caller frees with arc_names_free(). 0 or -1. */
int arc_names(int dfd, const char *what, char ***names, size_t *n, sw_err *err);
void arc_names_free(char **names, size_t n);

/* libarchive converts pax names between UTF-8 and the thread's locale. Under "C" it
 * cannot, and writes every non-ASCII name as hdrcharset=BINARY (GNU tar warns and
 * ignores the keyword). enter() switches only the calling thread to C.UTF-8. */
typedef struct arc_locale {
    locale_t utf8;     /* the shared C.UTF-8 locale; (locale_t)0 when unavailable */
    locale_t prev;     /* the thread's locale before enter() */
} arc_locale;
void arc_locale_enter(arc_locale *l);
void arc_locale_leave(arc_locale *l);

#endif
