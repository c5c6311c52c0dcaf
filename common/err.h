/* common/err.h — the stable error codes of docs/contract.md §4 and the sw_err carrier.
 * Owns: the code enum, its name table, the permanent/retryable default, and the
 * Celery exception name. Lower layers fill an sw_err at the failure site and stay
 * quiet; the dispatcher logs once. Messages never hold a secret. */
#ifndef SW_COMMON_ERR_H
#define SW_COMMON_ERR_H
#include <stdbool.h>

typedef enum sw_code {
    SW_OK = 0,
    SW_E_INVALID_PAYLOAD,
    SW_E_UNKNOWN_JOB_TYPE,
    SW_E_WORKSPACE_MISSING,
    SW_E_SNAPSHOT_NOT_FOUND,
    SW_E_UNSAFE_ARCHIVE,
    SW_E_ARCHIVE_TOO_LARGE,
    SW_E_PORT_EXHAUSTED,
    SW_E_STORAGE,
    SW_E_DATABASE,
    SW_E_BACKEND,
    SW_E_TIMEOUT,
    SW_E_INTERNAL,
    SW_CODE_COUNT
} sw_code;

typedef struct sw_err {
    sw_code code;     /* SW_OK when no error */
    bool retryable;   /* whether another attempt may succeed */
    char msg[256];    /* names the key/host/field; never a secret */
} sw_err;

/* Fill 'e' (may be NULL) with code, retryable flag and message; returns -1. */
int sw_errf(sw_err *e, sw_code code, bool retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Like sw_errf with the code's default retryable flag (docs/contract.md §4). */
int sw_errc(sw_err *e, sw_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sw_err_clear(sw_err *e);
const char *sw_code_name(sw_code c);          /* "storage_error"; "ok" for SW_OK */
bool sw_code_from_name(const char *name, sw_code *out); /* false when unknown */
bool sw_code_retryable(sw_code c);            /* the default of docs/contract.md §4 */
const char *sw_code_exc_type(sw_code c);      /* CamelCase for Celery: "UnsafeArchive" */

#endif
