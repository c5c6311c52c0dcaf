/* common/ids.h — validation of every id before it becomes a path or a key, and
 * the deterministic UUIDv5 used for snapshot ids.
 * Owns: the id grammars of docs/contract.md §2. Nothing here allocates. */
#ifndef SW_COMMON_IDS_H
#define SW_COMMON_IDS_H
#include <stdbool.h>
#include <stddef.h>

#define SW_UUID_LEN 36

bool id_valid_job(const char *s);     /* [A-Za-z0-9_.:-]{1,128} */
bool id_valid_tenant(const char *s);  /* [A-Za-z0-9_-]{1,63} */
bool id_valid_uuid(const char *s);    /* canonical 8-4-4-4-12 hex, any case */
/* Copy a valid UUID lowercased into out[37]; false (out untouched) when invalid. */
bool id_uuid_lower(const char *s, char out[SW_UUID_LEN + 1]);
/* UUIDv5 in the URL namespace of 'name' (RFC 4122), lowercase, into out[37]. */
void id_uuid5_url(const char *name, char out[SW_UUID_LEN + 1]);
/* A random UUIDv4 (from getrandom), lowercase, into out[37]. */
void id_uuid4(char out[SW_UUID_LEN + 1]);

#endif
