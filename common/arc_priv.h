/* common/arc_priv.h — helpers shared by arc.c, arc_write.c and arc_extract.c only.
 * Owns: the errno-to-sw_err filler, sorted directory listing and the per-thread UTF-8
 * locale scope. Not part of the module's interface: include common/arc.h instead. */
#ifndef SW_COMMON_ARC_PRIV_H
#define SW_COMMON_ARC_PRIV_H
#include <locale.h>
#include <stddef.h>

#include "common/arc.h"
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

/* Store 'n' in 'l' (NULL = nothing to do): the live count of common/arc.h. */
void arc_live_set(arc_live *l, int64_t n);

/* ---- the member rules (arc_check.c), shared by arc_extract() and arc_check() ---- */

/* Normalize 'raw' into 'out' (ARC_MAX_PATH + 1 bytes): empty and "." components dropped;
 * a leading '/' or any ".." refused; the first component must be outputs or attachments.
 * Messages name member 'who' and say 'role' ("" or "hard link target: "). Returns 1 for the
 * archive root ("./"), which is skipped, 0 when fine, -1 refused (SW_E_UNSAFE_ARCHIVE). */
int arc_normalize(const char *raw, char *out, const char *who, const char *role, sw_err *err);
/* A symlink member 'name' (normalized) may point at 'target' only when, resolved from the
 * link's own folder, it stays inside the destination: relative, and ".." only leading
 * (docs/archive.md). 0, or -1 with SW_E_UNSAFE_ARCHIVE. */
int arc_check_target(const char *name, const char *target, sw_err *err);

#endif
