/* common/lazy_curl.c — the libcurl functions snapworker calls (the s3:// store and the
 * Kubernetes client, common/k8s*.c), forwarded
 * into libcurl.so.4 loaded on first use (common/lazylib.h). Owns only this symbol list and
 * the forwarders, with curl.h's prototypes (included: the compiler checks them).
 * curl's type-checking macros would rewrite the definitions of the two variadic
 * functions, so they are off here (and only here: callers keep their checks). */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <stdarg.h>

#include "common/lazylib_priv.h"

#undef curl_easy_setopt
#undef curl_easy_getinfo

#define SYMS(X)                                                                           \
    X(curl_easy_cleanup) X(curl_easy_escape) X(curl_easy_getinfo) X(curl_easy_init)      \
    X(curl_easy_pause) X(curl_easy_perform) X(curl_easy_recv) X(curl_easy_reset)         \
    X(curl_easy_send) X(curl_easy_setopt) X(curl_easy_strerror) X(curl_free)             \
    X(curl_global_init)                                                                   \
    X(curl_multi_add_handle) X(curl_multi_cleanup) X(curl_multi_info_read)               \
    X(curl_multi_init) X(curl_multi_perform) X(curl_multi_poll)                          \
    X(curl_multi_remove_handle) X(curl_multi_strerror) X(curl_slist_append)              \
    X(curl_slist_free_all)

LAZY_DEFINE(lazy_curl_def, "libcurl.so.4", SYMS);

#define FN(name) LAZY_FN(LAZY_CURL, name)

/* The one argument after 'option' has the type its number range says (curl.h
 * CURLOPTTYPE_*), and libcurl reads it back with va_arg by that same rule (setopt.c),
 * so pass it on as exactly that type: long, a data pointer, a function pointer or a
 * curl_off_t. Below CURLOPTTYPE_LONG's range nothing is defined: passed as long. */
typedef void (*any_fn)(void);

CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    CURLcode (*f)(CURL *, CURLoption, ...) = FN(curl_easy_setopt);
    CURLcode rc;
    va_list ap;
    va_start(ap, option);
    if (option < CURLOPTTYPE_OBJECTPOINT) rc = f(curl, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT) rc = f(curl, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T) rc = f(curl, option, va_arg(ap, any_fn));
    else if (option < CURLOPTTYPE_BLOB) rc = f(curl, option, va_arg(ap, curl_off_t));
    else rc = f(curl, option, va_arg(ap, void *));   /* struct curl_blob * */
    va_end(ap);
    return rc;
}

/* Every CURLINFO takes one pointer to where the answer goes. */
CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    va_list ap;
    va_start(ap, info);
    void *out = va_arg(ap, void *);
    va_end(ap);
    return FN(curl_easy_getinfo)(curl, info, out);
}

void curl_easy_cleanup(CURL *curl) { FN(curl_easy_cleanup)(curl); }

char *curl_easy_escape(CURL *handle, const char *string, int length)
{
    return FN(curl_easy_escape)(handle, string, length);
}

CURL *curl_easy_init(void) { return FN(curl_easy_init)(); }
CURLcode curl_easy_pause(CURL *handle, int bitmask) { return FN(curl_easy_pause)(handle, bitmask); }
CURLcode curl_easy_perform(CURL *curl) { return FN(curl_easy_perform)(curl); }

CURLcode curl_easy_recv(CURL *curl, void *buffer, size_t buflen, size_t *n)
{
    return FN(curl_easy_recv)(curl, buffer, buflen, n);
}

void curl_easy_reset(CURL *curl) { FN(curl_easy_reset)(curl); }

CURLcode curl_easy_send(CURL *curl, const void *buffer, size_t buflen, size_t *n)
{
    return FN(curl_easy_send)(curl, buffer, buflen, n);
}

void curl_free(void *p) { FN(curl_free)(p); }
const char *curl_easy_strerror(CURLcode code) { return FN(curl_easy_strerror)(code); }
CURLcode curl_global_init(long flags) { return FN(curl_global_init)(flags); }

CURLMcode curl_multi_add_handle(CURLM *multi_handle, CURL *curl_handle)
{
    return FN(curl_multi_add_handle)(multi_handle, curl_handle);
}

CURLMcode curl_multi_cleanup(CURLM *multi_handle) { return FN(curl_multi_cleanup)(multi_handle); }

CURLMsg *curl_multi_info_read(CURLM *multi_handle, int *msgs_in_queue)
{
    return FN(curl_multi_info_read)(multi_handle, msgs_in_queue);
}

CURLM *curl_multi_init(void) { return FN(curl_multi_init)(); }

CURLMcode curl_multi_perform(CURLM *multi_handle, int *running_handles)
{
    return FN(curl_multi_perform)(multi_handle, running_handles);
}

CURLMcode curl_multi_poll(CURLM *multi_handle, struct curl_waitfd extra_fds[],
                          unsigned int extra_nfds, int timeout_ms, int *ret)
{
    return FN(curl_multi_poll)(multi_handle, extra_fds, extra_nfds, timeout_ms, ret);
}

CURLMcode curl_multi_remove_handle(CURLM *multi_handle, CURL *curl_handle)
{
    return FN(curl_multi_remove_handle)(multi_handle, curl_handle);
}

const char *curl_multi_strerror(CURLMcode code) { return FN(curl_multi_strerror)(code); }

struct curl_slist *curl_slist_append(struct curl_slist *list, const char *data)
{
    return FN(curl_slist_append)(list, data);
}

void curl_slist_free_all(struct curl_slist *list) { FN(curl_slist_free_all)(list); }
