/* common/err.c — error code names and the sw_err fillers. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    const char *exc;
    bool retryable;
} codes[SW_CODE_COUNT] = {
    [SW_OK] = {"ok", "Ok", false},
    [SW_E_INVALID_PAYLOAD] = {"invalid_payload", "InvalidPayload", false},
    [SW_E_UNKNOWN_JOB_TYPE] = {"unknown_job_type", "UnknownJobType", false},
    [SW_E_WORKSPACE_MISSING] = {"workspace_missing", "WorkspaceMissing", false},
    [SW_E_SNAPSHOT_NOT_FOUND] = {"snapshot_not_found", "SnapshotNotFound", false},
    [SW_E_UNSAFE_ARCHIVE] = {"unsafe_archive", "UnsafeArchive", false},
    [SW_E_ARCHIVE_TOO_LARGE] = {"archive_too_large", "ArchiveTooLarge", false},
    [SW_E_PORT_EXHAUSTED] = {"port_exhausted", "PortExhausted", true},
    [SW_E_STORAGE] = {"storage_error", "StorageError", true},
    [SW_E_DATABASE] = {"database_error", "DatabaseError", true},
    [SW_E_BACKEND] = {"backend_error", "BackendError", true},
    [SW_E_TIMEOUT] = {"timeout", "Timeout", true},
    [SW_E_INTERNAL] = {"internal", "Internal", true},
};

__attribute__((format(printf, 4, 0)))
static int vfill(sw_err *e, sw_code code, bool retryable, const char *fmt, va_list ap)
{
    if (!e) return -1;
    e->code = code;
    e->retryable = retryable;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return -1;
}

int sw_errf(sw_err *e, sw_code code, bool retryable, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfill(e, code, retryable, fmt, ap);
    va_end(ap);
    return -1;
}

int sw_errc(sw_err *e, sw_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfill(e, code, sw_code_retryable(code), fmt, ap);
    va_end(ap);
    return -1;
}

void sw_err_clear(sw_err *e)
{
    if (!e) return;
    e->code = SW_OK;
    e->retryable = false;
    e->msg[0] = '\0';
}

const char *sw_code_name(sw_code c)
{
    return (c >= 0 && c < SW_CODE_COUNT) ? codes[c].name : "internal";
}

bool sw_code_from_name(const char *name, sw_code *out)
{
    for (int i = 0; name && i < SW_CODE_COUNT; i++) {
        if (strcmp(codes[i].name, name) == 0) {
            *out = (sw_code)i;
            return true;
        }
    }
    return false;
}

bool sw_code_retryable(sw_code c)
{
    return (c >= 0 && c < SW_CODE_COUNT) ? codes[c].retryable : true;
}

const char *sw_code_exc_type(sw_code c)
{
    return (c >= 0 && c < SW_CODE_COUNT) ? codes[c].exc : "Internal";
}
