/* common/yaml.c — the kubeconfig YAML subset, read into jansson (contract: yaml.h).
 * Owns: a line-oriented recursive-descent reader: block mappings/sequences found by
 * indentation, scalars (plain, '…', "…", |, >), flow collections ([…], {…}, so JSON too).
 * Does not own: the meaning of the tree (kubeconfig.c).
 * Why this shape: kubeconfigs are written by kubectl/go-yaml or by hand in a small subset,
 * and a reader that refuses the rest with a line number beats a general one we must trust.
 * Safety: every read goes through at(), which returns -1 past the end; recursion only
 * happens through collections and is bounded by YML_MAX_DEPTH; the input is bounded by
 * YML_MAX_BYTES. Scratch buffers are wiped before they are freed (they held tokens).
 *
 *   next_content ─► parse_at ─┬─ "- "      ─► parse_block_seq ─► item: parse_node/parse_at…
 *   (skips blank               ├─ "key: "   ─► parse_block_map ─► value: parse_node/inline
 *    and comment lines)        └─ otherwise ─► parse_inline: | > [ { " ' or a plain scalar
 */
#include "common/yaml.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"

enum { Y_END = -1, Y_DOC = -2, Y_ERR = -3 }; /* next_content() results besides a column */

typedef struct yp {
    const char *s;
    size_t n;       /* bytes in s */
    size_t i;       /* cursor */
    size_t bol;     /* offset of the cursor line's first byte */
    int line;       /* 1-based line of the cursor */
    int depth;      /* collections open around the cursor */
    bool failed;    /* the first error is kept */
    yml_error *e;
} yp;

typedef struct sbuf {
    char *b;        /* NUL-terminated when non-NULL */
    size_t len, cap;
} sbuf;

/* ------------------------------------------------------------------ helpers */

static void sb_putn(sbuf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->len + n + 1) cap *= 2;
        char *nb = xmalloc(cap);
        if (b->b) {
            memcpy(nb, b->b, b->len);
            explicit_bzero(b->b, b->cap);
            free(b->b);
        }
        b->b = nb;
        b->cap = cap;
    }
    memcpy(b->b + b->len, p, n);
    b->len += n;
    b->b[b->len] = '\0';
}

static void sb_putc(sbuf *b, char c) { sb_putn(b, &c, 1); }

static void sb_repeat(sbuf *b, char c, int times)
{
    for (int k = 0; k < times; k++) sb_putc(b, c);
}

static void sb_truncate(sbuf *b, size_t len)
{
    if (b->b && len < b->len) {
        b->len = len;
        b->b[len] = '\0';
    }
}

static void sb_free(sbuf *b)
{
    if (b->b) {
        explicit_bzero(b->b, b->cap);
        free(b->b);
    }
    memset(b, 0, sizeof *b);
}

__attribute__((format(printf, 2, 3)))
static int fail(yp *p, const char *fmt, ...)
{
    if (p->failed) return -1;
    p->failed = true;
    if (!p->e) return -1;
    char what[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    p->e->line = p->line;
    snprintf(p->e->msg, sizeof p->e->msg, "line %d: %s", p->line, what);
    return -1;
}

/* The byte at offset k, or -1 past the end: the only way the input is read. */
static int at(const yp *p, size_t k) { return k < p->n ? (unsigned char)p->s[k] : -1; }
static int ch(const yp *p, size_t ahead) { return p->i + ahead < p->i ? -1 : at(p, p->i + ahead); }

static bool is_eol(int c) { return c == '\n' || c == '\r' || c == -1; }
static bool is_blank(int c) { return c == ' ' || c == '\t'; }
static bool is_ws_eol(int c) { return is_blank(c) || is_eol(c); }
static bool is_flow_ind(int c) { return c == ',' || c == '[' || c == ']' || c == '{' || c == '}'; }
static bool is_dash_item(const yp *p) { return ch(p, 0) == '-' && is_ws_eol(ch(p, 1)); }

static void newline(yp *p)
{
    if (ch(p, 0) == '\r' && ch(p, 1) == '\n') p->i += 2;
    else if (ch(p, 0) == '\r' || ch(p, 0) == '\n') p->i += 1;
    else return;
    p->line++;
    p->bol = p->i;
}

static void skip_blanks(yp *p)
{
    while (is_blank(ch(p, 0))) p->i++;
}

static void skip_to_eol(yp *p)
{
    while (!is_eol(ch(p, 0))) p->i++;
}

/* After a value: blanks, an optional comment, then the end of the line (consumed). */
static int end_line(yp *p)
{
    skip_blanks(p);
    if (ch(p, 0) == '#') skip_to_eol(p);
    if (!is_eol(ch(p, 0))) return fail(p, "unexpected text after the value");
    newline(p);
    return 0;
}

static bool is_doc_marker(const yp *p)
{
    if (p->i != p->bol) return false;
    int c = ch(p, 0);
    return (c == '-' || c == '.') && ch(p, 1) == c && ch(p, 2) == c && is_ws_eol(ch(p, 3));
}

/* Move to the first content of the next non-blank, non-comment line (or stay on the current
 * one when only indentation precedes the cursor). Its column, Y_END at the end of input,
 * Y_DOC on a "---"/"..." line (cursor on it), Y_ERR on a tab in indentation. */
static int next_content(yp *p)
{
    size_t k = p->bol;
    while (k < p->i && p->s[k] == ' ') k++;
    if (k == p->i) p->i = p->bol;
    for (;;) {
        while (ch(p, 0) == ' ') p->i++;
        int c = ch(p, 0);
        if (c == '\t') {
            skip_blanks(p);
            c = ch(p, 0);
            if (c != '#' && !is_eol(c)) {
                fail(p, "tab character in indentation (YAML allows only spaces)");
                return Y_ERR;
            }
        }
        if (c == '#') {
            skip_to_eol(p);
            c = ch(p, 0);
        }
        if (c == -1) return Y_END;
        if (c == '\n' || c == '\r') {
            newline(p);
            continue;
        }
        if (is_doc_marker(p)) return Y_DOC;
        size_t col = p->i - p->bol;
        if (col > YML_MAX_BYTES) col = YML_MAX_BYTES; /* cannot happen: input is bounded */
        return (int)col;
    }
}

/* ------------------------------------------------------------------ scalars */

/* A plain scalar's text becomes a boolean, a null or a string; numbers stay strings. */
static json_t *plain_value(yp *p, const sbuf *b)
{
    const char *s = b->b ? b->b : "";
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return json_true();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return json_false();
    if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
        return json_null();
    json_t *v = json_stringn(s, b->len);
    if (!v) fail(p, "invalid UTF-8");
    return v;
}

static json_t *string_value(yp *p, const sbuf *b)
{
    json_t *v = json_stringn(b->b ? b->b : "", b->len);
    if (!v) fail(p, "invalid UTF-8");
    return v;
}

/* Indicators that may not start a plain scalar, each with the reason it is refused. */
static int check_plain_start(yp *p, bool flow)
{
    int c = ch(p, 0), d = ch(p, 1);
    switch (c) {
    case '&': return fail(p, "anchors (&) are not supported");
    case '*': return fail(p, "aliases (*) are not supported");
    case '!': return fail(p, "tags (!) are not supported");
    case '%': case '@': case '`': return fail(p, "a plain value cannot start with '%c'", c);
    case '|': case '>':
        return fail(p, "a block scalar (%c) cannot appear %s", c, flow ? "in a flow collection"
                                                                       : "here");
    case ',': case ']': case '}': case '[': case '{': return fail(p, "unexpected '%c'", c);
    case '#': return fail(p, "unexpected comment");
    case '?':
        if (is_ws_eol(d) || (flow && is_flow_ind(d)))
            return fail(p, "complex keys (?) are not supported");
        return 0;
    case ':': case '-':
        if (is_ws_eol(d) || (flow && is_flow_ind(d))) return fail(p, "unexpected '%c'", c);
        return 0;
    default: return 0;
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Read 'digits' hex digits at the cursor; -1 when one is missing. */
static long read_hex(yp *p, int digits)
{
    long v = 0;
    for (int k = 0; k < digits; k++) {
        int h = hexval(ch(p, 0));
        if (h < 0) return -1;
        v = v * 16 + h;
        p->i++;
    }
    return v;
}

static void put_utf8(sbuf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_putn(b, u, n);
}

/* \x, \u, \U: a code point; a \u high surrogate must be followed by a \u low one (JSON). */
static int read_code_point(yp *p, int kind, sbuf *b)
{
    int digits = kind == 'x' ? 2 : kind == 'u' ? 4 : 8;
    long cp = read_hex(p, digits);
    if (cp < 0) return fail(p, "\\%c needs %d hex digits", kind, digits);
    if (cp >= 0xD800 && cp <= 0xDBFF && kind == 'u' && ch(p, 0) == '\\' && ch(p, 1) == 'u') {
        p->i += 2;
        long lo = read_hex(p, 4);
        if (lo < 0xDC00 || lo > 0xDFFF) return fail(p, "\\u escape: unpaired surrogate");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0) return fail(p, "NUL characters are not supported");
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return fail(p, "\\%c escape is not a valid code point", kind);
    put_utf8(b, (uint32_t)cp);
    return 0;
}

/* One escape of a double-quoted scalar, the cursor on the backslash. */
static int read_escape(yp *p, sbuf *b)
{
    int c = ch(p, 1);
    p->i += 2;
    switch (c) {
    case 'a': sb_putc(b, '\a'); return 0;
    case 'b': sb_putc(b, '\b'); return 0;
    case 't': case '\t': sb_putc(b, '\t'); return 0;
    case 'n': sb_putc(b, '\n'); return 0;
    case 'v': sb_putc(b, '\v'); return 0;
    case 'f': sb_putc(b, '\f'); return 0;
    case 'r': sb_putc(b, '\r'); return 0;
    case 'e': sb_putc(b, '\x1b'); return 0;
    case ' ': case '"': case '/': case '\\': sb_putc(b, (char)c); return 0;
    case 'N': put_utf8(b, 0x85); return 0;
    case '_': put_utf8(b, 0xA0); return 0;
    case 'L': put_utf8(b, 0x2028); return 0;
    case 'P': put_utf8(b, 0x2029); return 0;
    case 'x': case 'u': case 'U': return read_code_point(p, c, b);
    case '0': return fail(p, "NUL characters are not supported");
    default:
        p->i -= 2;
        if (c > ' ' && c < 0x7f) return fail(p, "unknown escape '\\%c'", c);
        return fail(p, "unknown escape");
    }
}

/* A '…' or "…" scalar, possibly over several lines (a line break folds to a space, an empty
 * line to a newline, "\" at the end of a line joins). The cursor ends after the quote. */
static int read_quoted(yp *p, sbuf *b)
{
    int q = ch(p, 0), start_line = p->line;
    size_t keep = 0; /* b->len up to the last byte that line folding must not trim */
    p->i++;
    for (;;) {
        int c = ch(p, 0);
        if (c == -1) {
            p->line = start_line;
            return fail(p, "unterminated quoted string");
        }
        if (c == q && q == '\'' && ch(p, 1) == '\'') {
            sb_putc(b, '\'');
            p->i += 2;
            keep = b->len;
        } else if (c == q) {
            p->i++;
            return 0;
        } else if (q == '"' && c == '\\' && is_eol(ch(p, 1))) {
            p->i++;
            newline(p);
            skip_blanks(p);
            keep = b->len;
        } else if (q == '"' && c == '\\') {
            if (read_escape(p, b) < 0) return -1;
            keep = b->len;
        } else if (c == '\n' || c == '\r') {
            sb_truncate(b, keep);
            newline(p);
            int empty = 0;
            for (;;) {
                skip_blanks(p);
                if (ch(p, 0) != '\n' && ch(p, 0) != '\r') break;
                newline(p);
                empty++;
            }
            if (empty) sb_repeat(b, '\n', empty);
            else sb_putc(b, ' ');
            keep = b->len;
        } else {
            sb_putc(b, (char)c);
            p->i++;
            if (!is_blank(c)) keep = b->len;
        }
    }
}

/* The rest of one line of a block plain scalar (trailing blanks trimmed). 1 when a comment
 * ended it (no continuation lines may follow), 0, or -1 on ": " (a mapping in a value). */
static int read_plain_line(yp *p, sbuf *b)
{
    size_t keep = b->len;
    for (;;) {
        int c = ch(p, 0);
        if (is_eol(c)) {
            sb_truncate(b, keep);
            return 0;
        }
        if (c == ':' && is_ws_eol(ch(p, 1)))
            return fail(p, "': ' inside a plain value (quote the value)");
        if (c == '#' && p->i > p->bol && is_blank(at(p, p->i - 1))) {
            sb_truncate(b, keep);
            skip_to_eol(p);
            return 1;
        }
        sb_putc(b, (char)c);
        p->i++;
        if (!is_blank(c)) keep = b->len;
    }
}

/* A plain scalar in block context: continuation lines indented deeper than 'parent' fold
 * into it (one space, or a newline per empty line). The cursor ends at a line start. */
static json_t *parse_plain_block(yp *p, int parent)
{
    sbuf b = {0};
    json_t *v = NULL;
    int r = read_plain_line(p, &b);
    while (r == 0 && ch(p, 0) != -1) {
        size_t si = p->i, sbol = p->bol;
        int sline = p->line, empty = 0;
        newline(p);
        for (;;) {
            while (is_blank(ch(p, 0))) p->i++;
            if (ch(p, 0) != '\n' && ch(p, 0) != '\r') break;
            newline(p);
            empty++;
        }
        size_t sp = p->bol;
        while (sp < p->i && p->s[sp] == ' ') sp++;
        int c = ch(p, 0);
        if (c == -1 || c == '#' || (long)(sp - p->bol) <= parent || sp != p->i ||
            is_doc_marker(p)) {
            /* not a continuation (or a tab in its indentation): leave it to the caller */
            p->i = si;
            p->bol = sbol;
            p->line = sline;
            break;
        }
        if (empty) sb_repeat(&b, '\n', empty);
        else sb_putc(&b, ' ');
        r = read_plain_line(p, &b);
    }
    if (r < 0 || end_line(p) < 0) goto out;
    v = plain_value(p, &b);
out:
    sb_free(&b);
    return v;
}

/* | or > : literal or folded block scalar with optional chomping (-, +) and indentation
 * indicator (1-9, relative to 'parent'). The cursor ends at a line start. */
static json_t *parse_block_scalar(yp *p, int parent)
{
    bool folded = ch(p, 0) == '>';
    int chomp = 0, indicator = 0; /* chomp: 0 clip, -1 strip, +1 keep */
    p->i++;
    for (int k = 0; k < 2; k++) {
        int c = ch(p, 0);
        if ((c == '-' || c == '+') && !chomp) {
            chomp = c == '-' ? -1 : 1;
            p->i++;
        } else if (c >= '1' && c <= '9' && !indicator) {
            indicator = c - '0';
            p->i++;
        }
    }
    if (end_line(p) < 0) return NULL;

    int ind = parent + indicator;
    if (!indicator) { /* the first non-empty line sets the indentation */
        size_t k = p->i, lb = p->bol;
        for (;;) {
            while (at(p, k) == ' ') k++;
            int c = at(p, k);
            if (c == '\r' || c == '\n') {
                k += (c == '\r' && at(p, k + 1) == '\n') ? 2 : 1;
                lb = k;
                continue;
            }
            ind = c == -1 ? parent + 1 : (int)(k - lb);
            break;
        }
        if (ind <= parent) ind = parent + 1; /* nothing indented enough: an empty scalar */
    }
    if (ind < 0) ind = 0;

    sbuf b = {0};
    int pending = 0;                 /* empty lines not yet written */
    bool any = false, prev_normal = false;
    for (;;) {
        int k = 0;
        while (k < ind && ch(p, 0) == ' ') {
            p->i++;
            k++;
        }
        int c = ch(p, 0);
        if (c == -1) break;
        if (k < ind && c != '\n' && c != '\r') { /* less indented: the scalar ended */
            p->i = p->bol;
            break;
        }
        if (ind == 0 && is_doc_marker(p)) break; /* k == 0: the cursor is at the line start */
        if (c == '\n' || c == '\r') {
            pending++;
            newline(p);
            continue;
        }
        size_t start = p->i;
        skip_to_eol(p);
        bool normal = !is_blank(c);
        if (!any) sb_repeat(&b, '\n', pending);
        else if (!folded || !prev_normal || !normal) sb_repeat(&b, '\n', pending + 1);
        else if (pending) sb_repeat(&b, '\n', pending);
        else sb_putc(&b, ' ');
        sb_putn(&b, p->s + start, p->i - start);
        any = true;
        prev_normal = normal;
        pending = 0;
        newline(p);
    }
    if (any && chomp >= 0) sb_putc(&b, '\n');
    if (chomp > 0) sb_repeat(&b, '\n', pending);
    json_t *v = string_value(p, &b);
    sb_free(&b);
    return v;
}

/* ------------------------------------------------------------------ flow collections */

static void skip_flow_ws(yp *p)
{
    for (;;) {
        int c = ch(p, 0);
        if (is_blank(c)) p->i++;
        else if (c == '\n' || c == '\r') newline(p);
        else if (c == '#' && (p->i == p->bol || is_blank(at(p, p->i - 1)))) skip_to_eol(p);
        else return;
    }
}

/* A plain scalar inside [...] or {...}: ends at a flow indicator, ": ", " #" or the line. */
static void read_plain_flow(yp *p, sbuf *b)
{
    size_t keep = b->len;
    for (;;) {
        int c = ch(p, 0);
        if (is_eol(c) || is_flow_ind(c)) break;
        if (c == ':' && (is_ws_eol(ch(p, 1)) || is_flow_ind(ch(p, 1)))) break;
        if (c == '#' && is_blank(at(p, p->i - 1))) break;
        sb_putc(b, (char)c);
        p->i++;
        if (!is_blank(c)) keep = b->len;
    }
    sb_truncate(b, keep);
}

static json_t *parse_flow(yp *p);

static json_t *parse_flow_node(yp *p)
{
    int c = ch(p, 0);
    sbuf b = {0};
    json_t *v = NULL;
    if (c == '[' || c == '{') return parse_flow(p);
    if (c == -1) {
        fail(p, "unexpected end of input in a flow collection");
        return NULL;
    }
    if (c == '"' || c == '\'') {
        if (read_quoted(p, &b) == 0) v = string_value(p, &b);
    } else if (check_plain_start(p, true) == 0) {
        read_plain_flow(p, &b);
        v = plain_value(p, &b);
    }
    sb_free(&b);
    return v;
}

/* Add key → v to obj (v is stolen); errors name 'key_line', where the key was. */
static int obj_put(yp *p, json_t *obj, const sbuf *key, json_t *v, int key_line)
{
    const char *k = key->b ? key->b : "";
    int rc = 0, line = p->line;
    p->line = key_line;
    if (json_object_get(obj, k)) {
        json_decref(v);
        rc = fail(p, "duplicate key");
    } else if (json_object_set_new(obj, k, v) < 0) {
        rc = fail(p, "invalid UTF-8 in a key");
    }
    p->line = line;
    return rc;
}

static int flow_seq_items(yp *p, json_t *arr, int start_line)
{
    for (;;) {
        skip_flow_ws(p);
        int c = ch(p, 0);
        if (c == ']') break;
        if (c == -1) {
            p->line = start_line;
            return fail(p, "unterminated flow sequence '['");
        }
        json_t *v = parse_flow_node(p);
        if (!v || json_array_append_new(arr, v) < 0) return -1;
        skip_flow_ws(p);
        c = ch(p, 0);
        if (c == ',') p->i++;
        else if (c == -1) continue; /* reported as unterminated above */
        else if (c == ':') return fail(p, "mappings inside flow sequences are not supported");
        else if (c != ']') return fail(p, "expected ',' or ']'");
    }
    p->i++;
    return 0;
}

static int flow_map_items(yp *p, json_t *obj, int start_line)
{
    for (;;) {
        skip_flow_ws(p);
        int c = ch(p, 0);
        if (c == '}') break;
        if (c == -1) {
            p->line = start_line;
            return fail(p, "unterminated flow mapping '{'");
        }
        sbuf key = {0};
        json_t *v = NULL;
        int rc = 0, key_line = p->line;
        if (c == '"' || c == '\'') rc = read_quoted(p, &key);
        else if (c == '[' || c == '{') rc = fail(p, "collections as keys are not supported");
        else if ((rc = check_plain_start(p, true)) == 0) read_plain_flow(p, &key);
        if (rc == 0) {
            skip_flow_ws(p);
            c = ch(p, 0);
            if (c == ':') {
                p->i++;
                skip_flow_ws(p);
                c = ch(p, 0);
                v = (c == ',' || c == '}' || c == -1) ? json_null() : parse_flow_node(p);
            } else if (c == ',' || c == '}' || c == -1) {
                v = json_null();
            } else {
                fail(p, "expected ':' after a key");
            }
            rc = v ? obj_put(p, obj, &key, v, key_line) : -1;
        }
        sb_free(&key);
        if (rc < 0) return -1;
        skip_flow_ws(p);
        c = ch(p, 0);
        if (c == ',') p->i++;
        else if (c != '}' && c != -1) return fail(p, "expected ',' or '}'");
    }
    p->i++;
    return 0;
}

/* [...] or {...}, possibly over several lines (tabs are fine here, as in JSON). */
static json_t *parse_flow(yp *p)
{
    bool seq = ch(p, 0) == '[';
    int start_line = p->line;
    if (++p->depth > YML_MAX_DEPTH) {
        fail(p, "nesting deeper than %d levels", YML_MAX_DEPTH);
        p->depth--;
        return NULL;
    }
    p->i++;
    json_t *v = seq ? json_array() : json_object();
    int rc = seq ? flow_seq_items(p, v, start_line) : flow_map_items(p, v, start_line);
    p->depth--;
    if (rc < 0) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* ------------------------------------------------------------------ block collections */

static json_t *parse_node(yp *p, int parent, bool seq_at_parent);
static json_t *parse_at(yp *p, int parent);

/* Does a "key:" start at the cursor (":" followed by a blank or the end of the line)? */
static bool looks_like_key(const yp *p)
{
    size_t k = p->i;
    int c = at(p, k);
    if (c == '"' || c == '\'') {
        for (k++;; k++) {
            int d = at(p, k);
            if (is_eol(d)) return false; /* a quoted scalar over lines: a value */
            if (d == c && c == '\'' && at(p, k + 1) == '\'') k++;
            else if (d == c) break;
            else if (c == '"' && d == '\\') {
                if (is_eol(at(p, k + 1))) return false;
                k++;
            }
        }
        for (k++; is_blank(at(p, k)); k++) {}
        return at(p, k) == ':' && is_ws_eol(at(p, k + 1));
    }
    if (c == '[' || c == '{') return false;
    for (;; k++) {
        int d = at(p, k);
        if (is_eol(d)) return false;
        if (d == ':' && is_ws_eol(at(p, k + 1))) return true;
        if (d == '#' && k > p->i && is_blank(at(p, k - 1))) return false;
    }
}

/* The key at the cursor, through its ':' (looks_like_key() said there is one). */
static int read_key(yp *p, sbuf *key)
{
    int c = ch(p, 0);
    if (c == '"' || c == '\'') {
        if (read_quoted(p, key) < 0) return -1;
        skip_blanks(p);
    } else {
        if (check_plain_start(p, false) < 0) return -1;
        size_t keep = 0;
        while (!(ch(p, 0) == ':' && is_ws_eol(ch(p, 1)))) {
            int d = ch(p, 0);
            if (is_eol(d)) return fail(p, "expected ':' after a key"); /* not reached */
            sb_putc(key, (char)d);
            p->i++;
            if (!is_blank(d)) keep = key->len;
        }
        sb_truncate(key, keep);
        if (key->len == 0) return fail(p, "empty key");
        if (!strcmp(key->b, "<<")) return fail(p, "merge keys (<<) are not supported");
    }
    if (ch(p, 0) != ':') return fail(p, "expected ':' after a key");
    p->i++;
    return 0;
}

/* A value after "key: " or "- " on the same line. The cursor ends at a line start. */
static json_t *parse_inline(yp *p, int parent)
{
    int c = ch(p, 0);
    json_t *v = NULL;
    if (c == '|' || c == '>') return parse_block_scalar(p, parent);
    if (c == '[' || c == '{') {
        v = parse_flow(p);
    } else if (c == '"' || c == '\'') {
        sbuf b = {0};
        if (read_quoted(p, &b) == 0) v = string_value(p, &b);
        sb_free(&b);
    } else {
        if (check_plain_start(p, false) < 0) return NULL;
        return parse_plain_block(p, parent);
    }
    if (v && end_line(p) < 0) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

static int enter(yp *p)
{
    if (++p->depth > YML_MAX_DEPTH) return fail(p, "nesting deeper than %d levels", YML_MAX_DEPTH);
    return 0;
}

/* Keys at column 'col' (the cursor is on the first one). Ends on the first line indented
 * less, with the cursor there. */
static json_t *parse_block_map(yp *p, int col)
{
    json_t *obj = json_object();
    if (enter(p) < 0) goto fail;
    for (;;) {
        if (is_dash_item(p)) {
            fail(p, "a sequence item where a key was expected");
            goto fail;
        }
        if (!looks_like_key(p)) {
            fail(p, "expected 'key: value'");
            goto fail;
        }
        sbuf key = {0};
        json_t *v = NULL;
        int key_line = p->line;
        if (read_key(p, &key) == 0) {
            skip_blanks(p);
            int c = ch(p, 0);
            if (c == '#' || is_eol(c)) v = end_line(p) < 0 ? NULL : parse_node(p, col, true);
            else v = parse_inline(p, col);
        }
        int rc = v ? obj_put(p, obj, &key, v, key_line) : -1;
        sb_free(&key);
        if (rc < 0) goto fail;
        int n = next_content(p);
        if (n == Y_ERR) goto fail;
        if (n == Y_END || n == Y_DOC || n < col) break;
        if (n > col) {
            fail(p, "unexpected indentation");
            goto fail;
        }
    }
    p->depth--;
    return obj;
fail:
    p->depth--;
    json_decref(obj);
    return NULL;
}

/* Items "- " at column 'col' (the cursor is on the first dash). Ends on the first line
 * indented less, or at the same column without a dash (the parent mapping's next key). */
static json_t *parse_block_seq(yp *p, int col)
{
    json_t *arr = json_array();
    if (enter(p) < 0) goto fail;
    for (;;) {
        p->i++; /* the dash */
        skip_blanks(p);
        int c = ch(p, 0);
        json_t *v;
        if (c == '#' || is_eol(c)) {
            v = end_line(p) < 0 ? NULL : parse_node(p, col, false);
        } else {
            int here = (int)(p->i - p->bol);
            if (is_dash_item(p)) v = parse_block_seq(p, here);
            else if (looks_like_key(p)) v = parse_block_map(p, here);
            else v = parse_inline(p, col);
        }
        if (!v || json_array_append_new(arr, v) < 0) goto fail;
        int n = next_content(p);
        if (n == Y_ERR) goto fail;
        if (n == Y_END || n == Y_DOC || n < col) break;
        if (n > col) {
            fail(p, "unexpected indentation");
            goto fail;
        }
        if (!is_dash_item(p)) break;
    }
    p->depth--;
    return arr;
fail:
    p->depth--;
    json_decref(arr);
    return NULL;
}

/* A content line at the cursor whose column is deeper than 'parent'. */
static json_t *parse_at(yp *p, int parent)
{
    int col = (int)(p->i - p->bol);
    if (is_dash_item(p)) return parse_block_seq(p, col);
    if (looks_like_key(p)) return parse_block_map(p, col);
    return parse_inline(p, parent);
}

/* The value of "key:" or "-" whose line ended: on the next lines, deeper than 'parent' (or a
 * sequence at the parent's own column, as kubectl writes lists, when 'seq_at_parent'); an
 * empty value is null. */
static json_t *parse_node(yp *p, int parent, bool seq_at_parent)
{
    int n = next_content(p);
    if (n == Y_ERR) return NULL;
    if (n == Y_END || n == Y_DOC) return json_null();
    if (n > parent) return parse_at(p, parent);
    if (seq_at_parent && n == parent && is_dash_item(p)) return parse_block_seq(p, n);
    return json_null();
}

/* ------------------------------------------------------------------ documents */

/* On a "---" or "..." line: the start marker is allowed once, before any content. */
static int doc_marker(yp *p, bool content_seen)
{
    bool start = ch(p, 0) == '-';
    if (start && content_seen) return fail(p, "several documents are not supported");
    p->i += 3;
    skip_blanks(p);
    if (start && ch(p, 0) != '#' && !is_eol(ch(p, 0)))
        return fail(p, "content on the '---' line is not supported");
    if (end_line(p) < 0) return -1;
    if (start) return 0;
    int n = next_content(p); /* "...": only comments may follow */
    if (n == Y_ERR) return -1;
    if (n != Y_END) return fail(p, "several documents are not supported");
    return 0;
}

json_t *yml_load(const char *text, size_t len, yml_error *e)
{
    yp p = {.s = text, .n = len, .line = 1, .e = e};
    json_t *root = NULL;
    if (e) memset(e, 0, sizeof *e);
    if (len > YML_MAX_BYTES) {
        fail(&p, "input is %zu bytes, over the %u MiB limit", len, YML_MAX_BYTES >> 20);
        return NULL;
    }
    if (!text) p.n = 0;
    const char *nul = p.n ? memchr(text, '\0', p.n) : NULL;
    if (nul) {
        for (const char *q = text; q < nul; q++) p.line += *q == '\n';
        fail(&p, "NUL byte in the input");
        return NULL;
    }
    if (p.n >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) p.i = p.bol = 3; /* UTF-8 BOM */

    int n = next_content(&p);
    if (n == Y_DOC) {
        bool end = ch(&p, 0) == '.';
        if (doc_marker(&p, false) < 0) return NULL;
        if (end) return json_null();
        n = next_content(&p);
    }
    if (n == Y_ERR) return NULL;
    if (n >= 0 && ch(&p, 0) == '%') {
        fail(&p, "directives (%%) are not supported");
        return NULL;
    }
    if (n == Y_DOC) {
        if (doc_marker(&p, true) < 0) return NULL;
        return json_null();
    }
    root = n >= 0 ? parse_at(&p, -1) : json_null();
    if (!root) return NULL;
    n = next_content(&p);
    if (n == Y_DOC && doc_marker(&p, true) == 0) return root;
    if (n == Y_END) return root;
    if (n >= 0) fail(&p, "unexpected content (its indentation matches no open block)");
    json_decref(root);
    return NULL;
}
