/* jobs/onyx_opencode.c — opencode.json exactly as Onyx's Python json.dumps(cfg) writes it,
 * plus the helpers both Onyx renderers share (buffer, strict UTF-8, Python strip, tool lists).
 * Owns: the top-level key order, the per-provider model options, the permission table and a
 * json.dumps-compatible string escaper. Does not own: writing the file (the regenerate job).
 * Why a serializer of our own: jansson's JSON_ENSURE_ASCII writes "\u00F8" where Python
 * writes "\u00f8" (docs/onyx-compat.md), and an Onyx deployment expects Python's exact bytes. */
#include "jobs/onyx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"

/* ------------------------------------------------------------------ shared helpers */

void onyx_buf_add(onyx_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void onyx_buf_puts(onyx_buf *b, const char *s)
{
    onyx_buf_add(b, s, strlen(s));
}

char *onyx_buf_take(onyx_buf *b)
{
    char *p = b->data ? b->data : xstrdup("");
    *b = (onyx_buf){0};
    return p;
}

int onyx_utf8_next(const char *s, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    int n;
    uint32_t c, min;
    if (u[0] < 0x80) { *cp = u[0]; return 1; }
    if ((u[0] & 0xE0) == 0xC0)      { n = 2; c = u[0] & 0x1F; min = 0x80; }
    else if ((u[0] & 0xF0) == 0xE0) { n = 3; c = u[0] & 0x0F; min = 0x800; }
    else if ((u[0] & 0xF8) == 0xF0) { n = 4; c = u[0] & 0x07; min = 0x10000; }
    else return -1;
    for (int i = 1; i < n; i++) {
        if ((u[i] & 0xC0) != 0x80) return -1;   /* also stops at the terminating NUL */
        c = (c << 6) | (u[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
    *cp = c;
    return n;
}

bool onyx_utf8_valid(const char *s)
{
    uint32_t cp;
    if (!s) return true;
    while (*s) {
        int n = onyx_utf8_next(s, &cp);
        if (n < 0) return false;
        s += n;
    }
    return true;
}

size_t onyx_utf8_count(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) count++;
    return count;
}

/* Exactly the code points for which Python's str.isspace() is true. */
static bool py_isspace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t onyx_py_strip(const char *s, size_t n, size_t *start)
{
    size_t a = 0, z = n;
    uint32_t cp;
    while (a < z) {
        int k = onyx_utf8_next(s + a, &cp);
        if (k < 0 || !py_isspace(cp)) break;
        a += (size_t)k;
    }
    while (z > a) {
        size_t b = z - 1;   /* step back to the first byte of the last character */
        while (b > a && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
        if (onyx_utf8_next(s + b, &cp) < 0 || !py_isspace(cp)) break;
        z = b;
    }
    *start = a;
    return z - a;
}

char **onyx_split_tools(const char *csv)
{
    size_t cap = 1;
    const char *p = csv ? csv : "";
    for (const char *q = p; *q; q++) cap += *q == ',';
    char **v = xcalloc(cap + 1, sizeof *v);
    size_t k = 0;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        size_t off, len = onyx_py_strip(p, (size_t)(end - p), &off);
        if (len) v[k++] = xstrndup(p + off, len);
        if (!*end) break;
        p = end + 1;
    }
    v[k] = NULL;
    return v;
}

void onyx_strv_free(char **v)
{
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

/* ------------------------------------------------------------------ JSON writing */

/* Append s (valid UTF-8) as a JSON string the way Python's json.dumps does with
 * ensure_ascii=True: two-character escapes for " \ \n \r \t \b \f, lowercase \u00XX
 * for other controls and 0x7f, lowercase \uXXXX for everything non-ASCII, surrogate
 * pairs above U+FFFF, and '/' left alone. */
static void json_str(onyx_buf *b, const char *s)
{
    char tmp[16];
    onyx_buf_add(b, "\"", 1);
    while (*s) {
        uint32_t c;
        int n = onyx_utf8_next(s, &c);
        if (n < 0) abort();                 /* callers validate first */
        s += n;
        const char *esc = NULL;
        switch (c) {
        case '"':  esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default: break;
        }
        if (esc) {
            onyx_buf_puts(b, esc);
        } else if (c >= 0x20 && c < 0x7F) {
            tmp[0] = (char)c;
            onyx_buf_add(b, tmp, 1);
        } else if (c < 0x10000) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)c);
            onyx_buf_puts(b, tmp);
        } else {
            c -= 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800u + (unsigned)(c >> 10),
                     0xDC00u + (unsigned)(c & 0x3FF));
            onyx_buf_puts(b, tmp);
        }
    }
    onyx_buf_add(b, "\"", 1);
}

/* ------------------------------------------------------------------ opencode.json
 *
 *  {"$schema": "https://opencode.ai/config.json",
 *   "model": "<provider>/<model>",                     only with provider and model
 *   "provider": {"<provider>": {                       empty {} without a provider
 *       "options": {"apiKey": K}, "api": B,            each only when non-empty
 *       "models": {"<model>": {"options": OPTS}}}},    only when OPTS non-empty
 *   "permission": {bash, edit, ..., external_directory, <disabled tool>: "deny"...}}
 */

/* The model OPTS of a provider family as JSON text, or NULL (none). Exact match, as Onyx. */
static const char *model_opts(const char *provider)
{
    static const char reasoning[] = "{\"reasoningEffort\": \"high\"}";
    static const char thinking[] = "{\"thinking\": {\"type\": \"enabled\", \"budgetTokens\": 16000}}";
    static const char google[] = "{\"thinking_budget\": 16000, \"thinking_level\": \"high\"}";
    if (!strcmp(provider, "openai") || !strcmp(provider, "azure")) return reasoning;
    if (!strcmp(provider, "anthropic") || !strcmp(provider, "bedrock")) return thinking;
    if (!strcmp(provider, "google")) return google;
    return NULL;
}

static void write_provider(onyx_buf *b, const char *provider, const char *model,
                           const char *api_key, const char *api_base)
{
    const char *opts = model_opts(provider);
    const char *sep = "";
    onyx_buf_puts(b, "{");
    if (api_key) {
        onyx_buf_puts(b, "\"options\": {\"apiKey\": ");
        json_str(b, api_key);
        onyx_buf_puts(b, "}");
        sep = ", ";
    }
    if (api_base) {
        onyx_buf_puts(b, sep);
        onyx_buf_puts(b, "\"api\": ");
        json_str(b, api_base);
        sep = ", ";
    }
    if (opts && model) {
        onyx_buf_puts(b, sep);
        onyx_buf_puts(b, "\"models\": {");
        json_str(b, model);
        onyx_buf_puts(b, ": {\"options\": ");
        onyx_buf_puts(b, opts);
        onyx_buf_puts(b, "}}");
    }
    onyx_buf_puts(b, "}");
}

static const char *const BASH_DENY[] = {
    "rm", "ssh", "scp", "sftp", "ftp", "telnet", "nc", "netcat", "tac", "nl", "od", "xxd",
    "hexdump", "strings", "base64", NULL,
};

static char *bash_permission(void)
{
    onyx_buf b = {0};
    onyx_buf_puts(&b, "{");
    for (const char *const *p = BASH_DENY; *p; p++) {
        json_str(&b, *p);
        onyx_buf_puts(&b, ": \"deny\", ");
    }
    onyx_buf_puts(&b, "\"*\": \"allow\"}");
    return onyx_buf_take(&b);
}

typedef struct perm_entry { const char *key; const char *json; } perm_entry; /* both borrowed */

/* The permission object: Onyx's fixed table, then each disabled tool set to "deny"
 * (an existing key keeps its place, a new one goes last: Python dict assignment). */
static void write_permission(onyx_buf *b, const char *const *disabled)
{
    static const char allow[] = "\"allow\"", deny[] = "\"deny\"";
    static const char no_cfg_edit[] =
        "{\"opencode.json\": \"deny\", \"**/opencode.json\": \"deny\", \"*\": \"allow\"}";
    static const char no_cfg_read[] =
        "{\"*\": \"allow\", \"opencode.json\": \"deny\", \"**/opencode.json\": \"deny\"}";
    static const char ext_dirs[] =
        "{\"*\": \"deny\", \"/workspace/files\": \"allow\", \"/workspace/files/**\": \"allow\", "
        "\"/workspace/demo_data\": \"allow\", \"/workspace/demo_data/**\": \"allow\"}";
    char *bash = bash_permission();
    const perm_entry base[] = {
        {"bash", bash}, {"edit", no_cfg_edit}, {"write", no_cfg_edit}, {"read", no_cfg_read},
        {"grep", no_cfg_read}, {"glob", no_cfg_read}, {"list", allow}, {"lsp", allow},
        {"patch", allow}, {"skill", allow}, {"question", allow}, {"webfetch", allow},
        {"external_directory", ext_dirs},
    };
    size_t nbase = sizeof base / sizeof base[0], nd = 0, n = nbase;
    while (disabled && disabled[nd]) nd++;
    perm_entry *e = xmalloc((nbase + nd) * sizeof *e);
    memcpy(e, base, sizeof base);
    for (size_t i = 0; i < nd; i++) {
        size_t j = 0;
        while (j < n && strcmp(e[j].key, disabled[i]) != 0) j++;
        if (j == n) e[n++].key = disabled[i];
        e[j].json = deny;
    }
    onyx_buf_puts(b, "{");
    for (size_t i = 0; i < n; i++) {
        if (i) onyx_buf_puts(b, ", ");
        json_str(b, e[i].key);
        onyx_buf_puts(b, ": ");
        onyx_buf_puts(b, e[i].json);
    }
    onyx_buf_puts(b, "}");
    free(e);
    free(bash);
}

static const char *nonempty(const char *s)
{
    return s && *s ? s : NULL;
}

/* Onyx builds this from a dict and json.dumps; it has no answer for a missing provider
 * or model ("None/None"), so we drop what cannot be written (docs/onyx-compat.md). Empty
 * strings count as missing, as Onyx's truthiness tests do for the key and the base. */
char *onyx_opencode_json(const onyx_llm *llm, const char *const *disabled_tools, sw_err *err)
{
    static const onyx_llm none = {0};
    if (!llm) llm = &none;
    const char *fields[] = {llm->provider, llm->model_name, llm->api_key, llm->api_base};
    const char *names[] = {"provider", "model_name", "api_key", "api_base"};
    for (size_t i = 0; i < 4; i++)
        if (!onyx_utf8_valid(fields[i])) {
            sw_errc(err, SW_E_INVALID_PAYLOAD, "llm_config.%s is not valid UTF-8", names[i]);
            return NULL;
        }
    for (size_t i = 0; disabled_tools && disabled_tools[i]; i++)
        if (!onyx_utf8_valid(disabled_tools[i])) {
            sw_errc(err, SW_E_INVALID_PAYLOAD, "disabled_tools[%zu] is not valid UTF-8", i);
            return NULL;
        }
    const char *provider = nonempty(llm->provider), *model = nonempty(llm->model_name);
    onyx_buf b = {0};
    onyx_buf_puts(&b, "{\"$schema\": \"https://opencode.ai/config.json\"");
    if (provider && model) {
        char *joined = xasprintf("%s/%s", provider, model);
        onyx_buf_puts(&b, ", \"model\": ");
        json_str(&b, joined);
        free(joined);
    }
    onyx_buf_puts(&b, ", \"provider\": {");
    if (provider) {
        json_str(&b, provider);
        onyx_buf_puts(&b, ": ");
        write_provider(&b, provider, model, nonempty(llm->api_key), nonempty(llm->api_base));
    }
    onyx_buf_puts(&b, "}, \"permission\": ");
    write_permission(&b, disabled_tools);
    onyx_buf_puts(&b, "}");
    return onyx_buf_take(&b);
}
