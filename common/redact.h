/* common/redact.h — hiding secrets of job payloads from people (docs/operations.md "Secrets in payloads").
 * Owns: the rule that says which fields are secret, and the copies and scrubs that
 * apply it to JSON values, to JSON text that may be broken or cut, and to plain
 * text (error messages) that might quote a secret's value.
 * Does not own: where it is applied (the worker, before a result or error is
 * written anywhere; the CLI, before anything is printed).
 *
 * The rule: an object member is secret when its name contains "key", "secret",
 * "token" or "password", in any case (so llm_config.api_key, apiKey, AWS_SECRET,
 * refresh_token, PASSWORD). Its value, whatever its type (string, number, object,
 * array, null), is shown as the string "***". Arrays are walked, so objects inside
 * arrays are redacted too. The original is never modified by the copying calls. */
#ifndef SW_COMMON_REDACT_H
#define SW_COMMON_REDACT_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define REDACTED "***"

/* True when a member named 'name' holds a secret (the rule above). */
bool redact_name_is_secret(const char *name);

/* A deep copy of 'v' with every secret member's value replaced by "***". New
 * reference (caller json_decref()s it); NULL when v is NULL. 'v' is untouched. */
json_t *redact_json(const json_t *v);

/* A printable copy of JSON text that may be malformed or cut short (a dead entry
 * keeps at most 1 MiB): parsed and redacted when it parses, else scanned
 * lexically and every value after a secret member name replaced by "***" up to
 * the end of that value (or of the text). 'also' (may be NULL) is a NULL-ended
 * list of further member names to hide (e.g. a Celery envelope's base64 "body").
 * Caller frees. */
char *redact_json_text(const char *text, size_t len, const char *const *also);

/* The string values of every secret member in 'v' (deep), at least 4 bytes long,
 * for scrubbing text that might quote them. Borrowed from 'v': valid while it is. */
typedef struct redact_values {
    const char **v;
    size_t n, cap;
} redact_values;
void redact_values_collect(const json_t *v, redact_values *out); /* out zeroed first */
void redact_values_free(redact_values *rv);                      /* the array only */

/* Replace each occurrence of a collected value in the NUL-terminated 'buf'
 * (capacity 'cap') by "***", in place; the result is cut to fit. */
void redact_text_values(char *buf, size_t cap, const redact_values *rv);
/* The same over every string of 'v' (keys kept), in place. */
void redact_json_values(json_t *v, const redact_values *rv);

/* jansson's error text without its "near '<input>'" tail, which quotes the
 * input and so may quote a secret. Writes into out (size n). */
void redact_json_error(const char *text, char *out, size_t n);

#endif
