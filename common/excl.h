/* common/excl.h — snapshot exclude patterns (docs/lifecycle.md "Snapshot excludes"): parse, validate, match.
 * Owns: the pattern grammar. Patterns are relative to the session folder and matched against
 * archive member names ("outputs/web/node_modules"), segment by segment:
 *   `*`   any run of characters within one name (never a '/'), `?` one character of a name,
 *   `**`  as a whole segment: zero or more folders ("outputs/ ** /.next" without the spaces);
 *         inside a name it means `*`.
 * A pattern that names a folder leaves out everything below it. "./" in front and "/" at
 * the end are ignored; an empty pattern, an absolute one, "." or ".." segments and control
 * characters are refused. No character classes and no escapes: names in a session are
 * matched literally apart from the two wildcards.
 * Does not own: where the walk happens (common/arc_write.c) or how the kubernetes backend
 * hands patterns to tar (docs/lifecycle.md). */
#ifndef SW_COMMON_EXCL_H
#define SW_COMMON_EXCL_H
#include <stdbool.h>
#include <stddef.h>

#define EXCL_MAX_PATTERNS 256
#define EXCL_MAX_LEN 1024      /* bytes of one pattern */

typedef struct excl excl;

excl *excl_new(void);                 /* an empty set; caller frees with excl_free() */
void excl_free(excl *x);              /* NULL-safe */
/* Add one pattern (normalized copy). 0, or -1 with a reason in 'why' (size n) naming the
 * pattern's position, never more than its first 64 bytes. */
int excl_add(excl *x, const char *pat, char *why, size_t n);
/* Add each comma-separated pattern of 'csv' (blank items are skipped; spaces around an item
 * are trimmed). 0 or -1 with 'why' as excl_add. */
int excl_add_csv(excl *x, const char *csv, char *why, size_t n);
size_t excl_count(const excl *x);                 /* NULL-safe: 0 */
const char *excl_get(const excl *x, size_t i);    /* normalized pattern, borrowed */
/* true when 'path' (a member name relative to the session folder, '/'-separated) matches one
 * of the patterns. NULL set: false. */
bool excl_match(const excl *x, const char *path);
/* One normalized pattern against one path (exposed for tests). */
bool excl_match_one(const char *pat, const char *path);

#endif
