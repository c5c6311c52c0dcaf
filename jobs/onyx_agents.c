/* jobs/onyx_agents.c — AGENTS.md rendered the way Onyx renders it: a template whose
 * {{PLACEHOLDERS}} are replaced by plain string replacement, one after another, in
 * Onyx's order (docs/onyx-compat.md "AGENTS.md").
 * Owns: each placeholder's value, including the skills scan with its DESC algorithm and
 * the knowledge-sources listing (our own format). Does not own: the template text (an
 * operator's file or the built-in jobs/templates/AGENTS.md) or writing the result. */
#include "jobs/onyx.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/embedded.h"
#include "common/xmalloc.h"

#define NO_DESCRIPTION "No description available."
#define NO_SKILLS "No skills available."
#define NO_KNOWLEDGE "No knowledge sources available."
#define KNOWLEDGE_MAX_ENTRIES 200   /* a huge files/ must not swamp the agent's context */

static const char ORG_INFO_SECTION[] =
    "## Organization\n"
    "\n"
    "`files/org_info/` describes the organization you work in: its teams, who leads them and\n"
    "who reports to whom, and a profile of the person you are helping. Look there first when a\n"
    "request names people, teams or owners.\n";

/* ------------------------------------------------------------------ simple values */

/* Python str.title() for ASCII: a letter after a letter is lowered, any other letter is
 * raised. Non-ASCII bytes are copied and count as letters (Python would case them too). */
static char *title_case(const char *s)
{
    char *t = xstrdup(s);
    bool prev_cased = false;
    for (char *p = t; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 'a' && c <= 'z') { if (!prev_cased) *p = (char)(c - 32); prev_cased = true; }
        else if (c >= 'A' && c <= 'Z') { if (prev_cased) *p = (char)(c + 32); prev_cased = true; }
        else prev_cased = c >= 0x80;
    }
    return t;
}

char *onyx_provider_display(const char *provider)
{
    static const char *const names[][2] = {
        {"openai", "OpenAI"}, {"anthropic", "Anthropic"}, {"azure", "Azure OpenAI"},
        {"google", "Google AI"}, {"bedrock", "AWS Bedrock"}, {"vertex", "Google Vertex AI"},
    };
    if (!provider || !*provider) return xstrdup("Unknown");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(provider, names[i][0])) return xstrdup(names[i][1]);
    return title_case(provider);
}

static char *user_context(const onyx_agents_in *in)
{
    if (in->use_demo_data || !in->user_name || !*in->user_name) return xstrdup("");
    if (in->user_role && *in->user_role)
        return xasprintf("You are assisting **%s**, %s, with their work.", in->user_name, in->user_role);
    return xasprintf("You are assisting **%s** with their work.", in->user_name);
}

static char *disabled_section(const char *const *tools)
{
    if (!tools || !tools[0]) return xstrdup("");
    onyx_buf b = {0};
    onyx_buf_puts(&b, "\n**Disabled Tools**: ");
    for (size_t i = 0; tools[i]; i++) {
        if (i) onyx_buf_puts(&b, ", ");
        onyx_buf_puts(&b, tools[i]);
    }
    onyx_buf_puts(&b, "\n");
    return onyx_buf_take(&b);
}

char *onyx_replace_all(const char *s, const char *needle, const char *rep)
{
    onyx_buf b = {0};
    size_t nlen = strlen(needle);
    const char *hit;
    while ((hit = strstr(s, needle)) != NULL) {
        onyx_buf_add(&b, s, (size_t)(hit - s));
        onyx_buf_puts(&b, rep);
        s = hit + nlen;
    }
    onyx_buf_puts(&b, s);
    return onyx_buf_take(&b);
}

/* ------------------------------------------------------------------ skills */

/* Whole file as a NUL-terminated string, or NULL (unreadable, holds a NUL, over
 * SLURP_MAX_BYTES, or not a regular file: a FIFO planted as SKILL.md must not block the
 * job, nor a device feed it forever). */
#define SLURP_MAX_BYTES (1024 * 1024)
static char *slurp(const char *path, size_t *len)
{
    onyx_buf b = {0};
    char chunk[8192];
    size_t n;
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SLURP_MAX_BYTES) {
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return NULL;
    }
    while (b.len <= SLURP_MAX_BYTES && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        onyx_buf_add(&b, chunk, n);
    bool bad = ferror(f) != 0 || b.len > SLURP_MAX_BYTES;
    fclose(f);
    size_t got = b.len;
    char *text = onyx_buf_take(&b);
    *len = strlen(text);
    if (bad || *len != got) { free(text); return NULL; }
    return text;
}

/* Python's text mode reads "\r\n" and a lone "\r" as "\n" (universal newlines). */
static void universal_newlines(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r == '\r') { *w++ = '\n'; if (r[1] == '\n') r++; }
        else *w++ = *r;
    }
    *w = '\0';
}

/* One line of the DESC walk; returns false when the walk stops. */
static bool desc_line(onyx_buf *d, const char *line, size_t n)
{
    size_t off, len = onyx_py_strip(line, n, &off);
    if (len == 0) return d->len == 0;          /* blank: skip before text, stop after */
    if (line[off] == '#') return true;
    if (d->len) onyx_buf_add(d, " ", 1);
    onyx_buf_add(d, line + off, len);
    return onyx_utf8_count(d->data, d->len) <= 100;
}

/* docs/onyx-compat.md DESC, counted in code points as Python's len() does. Like Onyx, any
 * read or decode failure gives the "No description available." fallback. */
char *onyx_skill_description(const char *skill_md_path)
{
    size_t len;
    char *text = slurp(skill_md_path, &len);
    if (!text || !onyx_utf8_valid(text)) { free(text); return xstrdup(NO_DESCRIPTION); }
    universal_newlines(text);
    onyx_buf d = {0};
    for (const char *p = text;;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (!desc_line(&d, p, n) || !nl) break;
        p = nl + 1;
    }
    free(text);
    if (d.len == 0) { free(d.data); return xstrdup(NO_DESCRIPTION); }
    if (onyx_utf8_count(d.data, d.len) > 120) {
        size_t cut = 0;
        for (size_t cps = 0; cps < 117; cps++) {   /* keep the first 117 code points */
            cut++;
            while (((unsigned char)d.data[cut] & 0xC0) == 0x80) cut++;
        }
        d.len = cut;
        d.data[cut] = '\0';
        onyx_buf_puts(&d, "...");
    }
    return onyx_buf_take(&d);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names in 'dir' (no "." or ".."), sorted bytewise (= code point order for UTF-8);
 * NULL when the folder cannot be opened. Caller frees with onyx_strv_free. */
static char **sorted_entries(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d) return NULL;
    size_t n = 0, cap = 16;
    char **v = xmalloc(cap * sizeof *v);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (n + 1 >= cap) v = xrealloc(v, (cap *= 2) * sizeof *v);
        v[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    v[n] = NULL;
    qsort(v, n, sizeof *v, cmp_names);
    *count = n;
    return v;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);   /* follows symlinks, as Python */
}

/* Folders whose name is not UTF-8 are left out: AGENTS.md stays valid UTF-8. */
char *onyx_skills_section(const char *skills_dir)
{
    size_t n = 0;
    char **names = skills_dir && *skills_dir ? sorted_entries(skills_dir, &n) : NULL;
    onyx_buf b = {0};
    struct stat st;
    for (size_t i = 0; i < n; i++) {
        char *dir = xasprintf("%s/%s", skills_dir, names[i]);
        char *md = xasprintf("%s/SKILL.md", dir);
        if (onyx_utf8_valid(names[i]) && is_dir(dir) && stat(md, &st) == 0) {
            char *desc = onyx_skill_description(md);
            if (b.len) onyx_buf_puts(&b, "\n");
            onyx_buf_puts(&b, "- **");
            onyx_buf_puts(&b, names[i]);
            onyx_buf_puts(&b, "**: ");
            onyx_buf_puts(&b, desc);
            free(desc);
        }
        free(md);
        free(dir);
    }
    onyx_strv_free(names);
    if (b.len == 0) return xstrdup(NO_SKILLS);
    return onyx_buf_take(&b);
}

/* ------------------------------------------------------------------ knowledge sources */

static bool listable(const char *name)
{
    if (name[0] == '.' || !onyx_utf8_valid(name)) return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7F || *p == '`') return false;
    return true;
}

/* Our own format (Onyx's differs by version): "- `NAME/`" per folder, "- `NAME`" per
 * other entry, sorted, hidden and unprintable names skipped, at most
 * KNOWLEDGE_MAX_ENTRIES lines plus a count of the rest. A list without a heading, so it
 * also fits Onyx's template ("Here's what's available:\n\n{{KNOWLEDGE_SOURCES_SECTION}}"). */
char *onyx_knowledge_section(const char *files_path)
{
    if (!files_path) return xstrdup("");
    size_t n = 0, shown = 0, more = 0;
    char **names = sorted_entries(files_path, &n);
    onyx_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (!listable(names[i])) continue;
        if (shown == KNOWLEDGE_MAX_ENTRIES) { more++; continue; }
        char *path = xasprintf("%s/%s", files_path, names[i]);
        char *line = xasprintf("%s- `%s%s`", shown ? "\n" : "", names[i], is_dir(path) ? "/" : "");
        onyx_buf_puts(&b, line);
        free(line);
        free(path);
        shown++;
    }
    onyx_strv_free(names);
    if (more) {
        char *line = xasprintf("\n- ... and %zu more", more);
        onyx_buf_puts(&b, line);
        free(line);
    }
    if (b.len == 0) return xstrdup(NO_KNOWLEDGE);
    return onyx_buf_take(&b);
}

/* ------------------------------------------------------------------ rendering */

static int check_inputs(const onyx_agents_in *in, sw_err *err)
{
    const onyx_llm *llm = in->llm;
    if (llm && !onyx_utf8_valid(llm->provider))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "llm_config.provider is not valid UTF-8");
    if (llm && !onyx_utf8_valid(llm->model_name))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "llm_config.model_name is not valid UTF-8");
    if (!onyx_utf8_valid(in->user_name))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "user_name is not valid UTF-8");
    if (!onyx_utf8_valid(in->user_role))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "user_role is not valid UTF-8");
    for (size_t i = 0; in->disabled_tools && in->disabled_tools[i]; i++)
        if (!onyx_utf8_valid(in->disabled_tools[i]))
            return sw_errc(err, SW_E_INVALID_PAYLOAD, "disabled_tools[%zu] is not valid UTF-8", i);
    return 0;
}

/* Replacement is sequential, in Onyx's order, so a value holding a later placeholder is
 * expanded exactly as Python's chained str.replace() would expand it. */
char *onyx_agents_md(const char *template_text, const onyx_agents_in *in, sw_err *err)
{
    static const onyx_agents_in defaults = {0};
    static const char *const keys[] = {
        "{{USER_CONTEXT}}", "{{LLM_PROVIDER_NAME}}", "{{LLM_MODEL_NAME}}", "{{NEXTJS_PORT}}",
        "{{DISABLED_TOOLS_SECTION}}", "{{AVAILABLE_SKILLS_SECTION}}", "{{ORG_INFO_SECTION}}",
        "{{KNOWLEDGE_SOURCES_SECTION}}",
    };
    enum { NKEYS = sizeof keys / sizeof keys[0] };
    char *vals[NKEYS] = {0};
    char *out = NULL;
    const char *model;
    size_t len;
    if (!in) in = &defaults;
    if (!template_text && !(template_text = embedded_get("jobs/templates/AGENTS.md", &len))) {
        sw_errc(err, SW_E_INTERNAL, "built-in template jobs/templates/AGENTS.md is missing");
        goto out;
    }
    if (check_inputs(in, err) < 0) goto out;
    model = in->llm ? in->llm->model_name : NULL;
    vals[0] = user_context(in);
    vals[1] = onyx_provider_display(in->llm ? in->llm->provider : NULL);
    vals[2] = xstrdup(model && *model ? model : "Unknown");
    vals[3] = in->nextjs_port ? xasprintf("%d", in->nextjs_port) : xstrdup("Unknown");
    vals[4] = disabled_section(in->disabled_tools);
    vals[5] = onyx_skills_section(in->skills_dir);
    vals[6] = xstrdup(in->include_org_info ? ORG_INFO_SECTION : "");
    vals[7] = onyx_knowledge_section(in->files_path);
    out = xstrdup(template_text);
    for (size_t i = 0; i < NKEYS; i++) {
        char *next = onyx_replace_all(out, keys[i], vals[i]);
        free(out);
        out = next;
    }
out:
    for (size_t i = 0; i < NKEYS; i++) free(vals[i]);
    return out;
}
