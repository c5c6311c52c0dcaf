/* common/embedded.h — files compiled into the binary by tools/embed.c:
 * the SQL files of migrations/ and the files of jobs/templates/. Lookup by repository path. */
#ifndef SW_COMMON_EMBEDDED_H
#define SW_COMMON_EMBEDDED_H
#include <stddef.h>

typedef struct embedded_file {
    const char *name;  /* repository path, e.g. "migrations/001_init.sql" */
    const char *data;  /* NUL-terminated contents */
    size_t len;        /* bytes, without the terminating NUL */
} embedded_file;

extern const embedded_file embedded_files[]; /* ends with {NULL, NULL, 0}, sorted by name */

/* Contents of 'name' (borrowed, static) or NULL; *len set when non-NULL. */
const char *embedded_get(const char *name, size_t *len);

#endif
