/* common/excl.c — snapshot exclude patterns (common/excl.h): a small segment matcher.
 * Why our own and not fnmatch(3): `**` across folders is not POSIX, and fnmatch's brackets
 * and backslashes would make names with those characters behave differently on the two
 * backends. The matcher is recursive only at `**`, bounded by the path's segment count. */
#include "common/excl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"

struct excl {
    char **pat;
    size_t n;
};

excl *excl_new(void) { return xcalloc(1, sizeof(excl)); }

void excl_free(excl *x)
{
    if (!x) return;
    for (size_t i = 0; i < x->n; i++) free(x->pat[i]);
    free(x->pat);
    free(x);
}

size_t excl_count(const excl *x) { return x ? x->n : 0; }
const char *excl_get(const excl *x, size_t i) { return x && i < x->n ? x->pat[i] : NULL; }

/* Normalize into out (size >= strlen(pat)+1): strip "./" prefixes and trailing '/'. */
static int normalize(const char *pat, char *out, char *why, size_t n)
{
    size_t len = strlen(pat);
    if (len > EXCL_MAX_LEN) {
        snprintf(why, n, "exclude pattern longer than %d bytes", EXCL_MAX_LEN);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)pat[i] < 0x20 || pat[i] == 0x7f) {
            snprintf(why, n, "exclude pattern with a control character");
            return -1;
        }
    while (pat[0] == '.' && pat[1] == '/') pat += 2;
    len = strlen(pat);
    while (len > 0 && pat[len - 1] == '/') len--;
    if (len == 0) {
        snprintf(why, n, "empty exclude pattern");
        return -1;
    }
    if (pat[0] == '/') {
        snprintf(why, n, "exclude pattern '%.64s' is absolute (patterns are relative to the "
                 "session folder)", pat);
        return -1;
    }
    memcpy(out, pat, len);
    out[len] = '\0';
    for (char *s = out;;) {  /* each segment: non-empty, not "." or ".." */
        char *e = strchr(s, '/');
        size_t sl = e ? (size_t)(e - s) : strlen(s);
        if (sl == 0 || (sl == 1 && s[0] == '.') || (sl == 2 && s[0] == '.' && s[1] == '.')) {
            snprintf(why, n, "exclude pattern '%.64s' has an empty, '.' or '..' segment", out);
            return -1;
        }
        if (!e) break;
        s = e + 1;
    }
    return 0;
}

int excl_add(excl *x, const char *pat, char *why, size_t n)
{
    if (x->n >= EXCL_MAX_PATTERNS) {
        snprintf(why, n, "more than %d exclude patterns", EXCL_MAX_PATTERNS);
        return -1;
    }
    char *p = xmalloc(strlen(pat) + 1);
    if (normalize(pat, p, why, n) != 0) {
        free(p);
        return -1;
    }
    x->pat = xrealloc(x->pat, (x->n + 1) * sizeof *x->pat);
    x->pat[x->n++] = p;
    return 0;
}

int excl_add_csv(excl *x, const char *csv, char *why, size_t n)
{
    if (!csv) return 0;
    char *copy = xstrdup(csv), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ' || *t == '\t') t++;
        size_t l = strlen(t);
        while (l > 0 && (t[l - 1] == ' ' || t[l - 1] == '\t')) t[--l] = '\0';
        if (l) rc = excl_add(x, t, why, n);
    }
    free(copy);
    return rc;
}

/* One name against one segment pattern [p, pe): '*' any run, '?' one character. Iterative
 * with one backtrack point, as every single-star matcher: linear in practice. */
static bool seg_match(const char *p, const char *pe, const char *s, const char *se)
{
    const char *star = NULL, *retry = NULL;
    while (s < se) {
        if (p < pe && *p == '*') {
            while (p < pe && *p == '*') p++;
            star = p;
            retry = s;
        } else if (p < pe && (*p == '?' || *p == *s)) {
            p++;
            s++;
        } else if (star) {
            p = star;
            s = ++retry;
        } else {
            return false;
        }
    }
    while (p < pe && *p == '*') p++;
    return p == pe;
}

static const char *seg_end(const char *s)
{
    const char *e = strchr(s, '/');
    return e ? e : s + strlen(s);
}

static bool match_from(const char *p, const char *s)
{
    if (!*p) return !*s;
    const char *pe = seg_end(p);
    const char *pnext = *pe ? pe + 1 : pe;
    if (pe - p == 2 && p[0] == '*' && p[1] == '*') {
        for (const char *t = s;;) {  /* zero or more whole segments of s */
            if (match_from(pnext, t)) return true;
            if (!*t) return false;
            const char *te = seg_end(t);
            t = *te ? te + 1 : te;
        }
    }
    if (!*s) return false;
    const char *se = seg_end(s);
    if (!seg_match(p, pe, s, se)) return false;
    if (!*pe) return !*se;  /* the pattern ends here: the path must too */
    if (!*se) return false;
    return match_from(pnext, se + 1);
}

bool excl_match_one(const char *pat, const char *path)
{
    return pat && path && match_from(pat, path);
}

bool excl_match(const excl *x, const char *path)
{
    if (!x) return false;
    for (size_t i = 0; i < x->n; i++)
        if (match_from(x->pat[i], path)) return true;
    return false;
}
