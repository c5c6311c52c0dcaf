/* common/redact.c — the secret-field rule and its copies and scrubs (common/redact.h).
 *
 * Why two ways of hiding: by name (a member called *key*, *secret*, *token*,
 * *password*) covers everything that is shown as JSON; by value (the strings those
 * members held in this job's payload) covers free text such as an error message
 * that a job or a library built by quoting its input. The by-name rule is the
 * contract; the by-value scrub is a second fence for text that has no names.
 *
 * The lexical fallback for broken JSON never fails: it copies what it does not
 * understand and hides each value that follows a secret name up to the end of
 * that value, even when the text is cut inside it. */
#include "common/redact.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"

#define MIN_SCRUB_LEN 4 /* shorter values would match ordinary words */

bool redact_name_is_secret(const char *name)
{
    static const char *const marks[] = {"key", "secret", "token", "password"};
    if (!name) return false;
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
        if (strcasestr(name, marks[i])) return true;
    return false;
}

static bool hidden(const char *name, const char *const *also)
{
    if (redact_name_is_secret(name)) return true;
    for (; also && *also; also++)
        if (strcmp(name, *also) == 0) return true;
    return false;
}

static json_t *copy(const json_t *v, const char *const *also)
{
    if (!v) return NULL;
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            json_object_set_new(o, k, hidden(k, also) ? json_string(REDACTED) : copy(x, also));
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        for (size_t i = 0; i < json_array_size(v); i++)
            json_array_append_new(a, copy(json_array_get(v, i), also));
        return a;
    }
    return json_deep_copy(v);
}

json_t *redact_json(const json_t *v) { return copy(v, NULL); }

/* ---- broken JSON text ---------------------------------------------------- */

typedef struct obuf {
    char *p;
    size_t len, cap;
} obuf;

static void put(obuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* t[i] is '"': the index after the closing quote, or len when the text ends first. */
static size_t skip_string(const char *t, size_t len, size_t i)
{
    for (size_t k = i + 1; k < len; k++) {
        if (t[k] == '\\') k++;
        else if (t[k] == '"') return k + 1;
    }
    return len;
}

/* One JSON value starting at t[j] (strings, nesting and scalars), tolerating a cut. */
static size_t skip_value(const char *t, size_t len, size_t j)
{
    if (j >= len) return len;
    if (t[j] == '"') return skip_string(t, len, j);
    if (t[j] == '{' || t[j] == '[') {
        int depth = 0;
        for (size_t k = j; k < len;) {
            if (t[k] == '"') {
                k = skip_string(t, len, k);
                continue;
            }
            if (t[k] == '{' || t[k] == '[') depth++;
            else if ((t[k] == '}' || t[k] == ']') && --depth == 0) return k + 1;
            k++;
        }
        return len;
    }
    size_t k = j;
    while (k < len && !strchr(",}] \t\r\n", t[k])) k++;
    return k;
}

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* The member name between the quotes, escapes decoded (\uXXXX outside ASCII as '?'),
 * so "api_\u006bey" is still recognised. Caller frees. */
static char *unescape_name(const char *s, size_t n)
{
    char *o = xmalloc(n + 1), *w = o;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            *w++ = s[i];
            continue;
        }
        char e = s[++i];
        if (e == 'u' && i + 4 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0 &&
            hexv(s[i + 3]) >= 0 && hexv(s[i + 4]) >= 0) {
            int cp = hexv(s[i + 1]) << 12 | hexv(s[i + 2]) << 8 | hexv(s[i + 3]) << 4 |
                     hexv(s[i + 4]);
            *w++ = cp > 0 && cp < 0x80 ? (char)cp : '?';
            i += 4;
        } else {
            *w++ = e;
        }
    }
    *w = '\0';
    return o;
}

static char *lexical(const char *t, size_t len, const char *const *also)
{
    obuf b = {0};
    put(&b, "", 0);
    for (size_t i = 0; i < len;) {
        if (t[i] != '"') {
            size_t k = i;
            while (k < len && t[k] != '"') k++;
            put(&b, t + i, k - i);
            i = k;
            continue;
        }
        size_t end = skip_string(t, len, i);
        put(&b, t + i, end - i);
        size_t j = end;
        while (j < len && isspace((unsigned char)t[j])) j++;
        if (j < len && t[j] == ':' && end - i >= 2 && t[end - 1] == '"') {
            char *name = unescape_name(t + i + 1, end - i - 2);
            bool hide = hidden(name, also);
            free(name);
            if (hide) {
                put(&b, t + end, j + 1 - end); /* spaces and the colon */
                j++;
                while (j < len && isspace((unsigned char)t[j])) j++;
                put(&b, "\"" REDACTED "\"", strlen(REDACTED) + 2);
                i = skip_value(t, len, j);
                continue;
            }
        }
        i = end;
    }
    return b.p;
}

char *redact_json_text(const char *text, size_t len, const char *const *also)
{
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY, &je);
    if (!v) return lexical(text, len, also);
    json_t *r = copy(v, also);
    json_decref(v);
    char *s = json_dumps(r, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(r);
    return s ? s : lexical(text, len, also);
}

/* ---- by value -------------------------------------------------------------- */

static void add_value(redact_values *rv, const char *s)
{
    if (strlen(s) < MIN_SCRUB_LEN) return;
    for (size_t i = 0; i < rv->n; i++)
        if (strcmp(rv->v[i], s) == 0) return;
    if (rv->n == rv->cap) {
        rv->cap = rv->cap ? rv->cap * 2 : 4;
        rv->v = xrealloc(rv->v, rv->cap * sizeof *rv->v);
    }
    rv->v[rv->n++] = s;
}

static void collect(const json_t *v, bool secret, redact_values *rv)
{
    if (json_is_string(v)) {
        if (secret) add_value(rv, json_string_value(v));
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) collect(x, secret || redact_name_is_secret(k), rv);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) collect(json_array_get(v, i), secret, rv);
    }
}

void redact_values_collect(const json_t *v, redact_values *out)
{
    memset(out, 0, sizeof *out);
    if (v) collect(v, false, out);
}

void redact_values_free(redact_values *rv)
{
    if (!rv) return;
    free(rv->v);
    memset(rv, 0, sizeof *rv);
}

void redact_text_values(char *buf, size_t cap, const redact_values *rv)
{
    if (!buf || !rv || cap == 0) return;
    for (size_t i = 0; i < rv->n; i++) {
        size_t vlen = strlen(rv->v[i]);
        char *hit;
        /* vlen >= 4 > strlen("***"): every replacement shrinks the text */
        while ((hit = strstr(buf, rv->v[i]))) {
            size_t rl = strlen(REDACTED);
            memcpy(hit, REDACTED, rl);
            memmove(hit + rl, hit + vlen, strlen(hit + vlen) + 1);
        }
    }
}

void redact_json_values(json_t *v, const redact_values *rv)
{
    if (!v || !rv || rv->n == 0) return;
    if (json_is_string(v)) {
        bool any = false;
        for (size_t i = 0; i < rv->n && !any; i++) any = strstr(json_string_value(v), rv->v[i]);
        if (!any) return;
        char *s = xstrdup(json_string_value(v));
        redact_text_values(s, strlen(s) + 1, rv);
        json_string_set(v, s);
        free(s);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) redact_json_values(x, rv);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) redact_json_values(json_array_get(v, i), rv);
    }
}

void redact_json_error(const char *text, char *out, size_t n)
{
    if (!n) return;
    const char *near = strstr(text, " near ");
    size_t len = near ? (size_t)(near - text) : strlen(text);
    snprintf(out, n, "%.*s", (int)len, text);
}
