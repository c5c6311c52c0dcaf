/* jobs/onyx.h — the Onyx-compatible renderers: a session's opencode.json and AGENTS.md.
 * Owns: the bytes of both files (docs/onyx-compat.md "opencode.json" and "AGENTS.md"), the
 * OPENCODE_DISABLED_TOOLS list syntax, and the small helpers the two renderers share.
 * Does not own: writing the files, the `files` symlink, or where the values come from
 * (the regenerate job reads its args and the config, then calls these).
 * Why: an Onyx deployment hands this work to snapworker and must see the same files. */
#ifndef SW_JOBS_ONYX_H
#define SW_JOBS_ONYX_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct onyx_llm { const char *provider, *model_name, *api_key, *api_base; } onyx_llm; /* any may be NULL */

/* opencode.json bytes exactly as Python json.dumps(cfg) (", " and ": " separators, ensure_ascii with lowercase \uXXXX,
   surrogate pairs outside the BMP, no trailing newline). disabled_tools: NULL-terminated array (NULL or empty = none).
   NULL llm or NULL/"" provider: no "model" and "provider": {}; NULL/"" model: no "model", no "models"
   (docs/onyx-compat.md). Caller frees. Invalid UTF-8 in inputs -> return NULL with SW_E_INVALID_PAYLOAD in err. */
char *onyx_opencode_json(const onyx_llm *llm, const char *const *disabled_tools, sw_err *err);

typedef struct onyx_agents_in {
    const onyx_llm *llm; int nextjs_port; /* 0 = none */ bool use_demo_data; const char *user_name, *user_role;
    const char *const *disabled_tools; bool include_org_info; const char *skills_dir; /* NULL/"" = none */
    const char *files_path; /* knowledge files path, NULL = unknown */
} onyx_agents_in;

/* Render AGENTS.md: template (NUL-terminated; NULL = the built-in jobs/templates/AGENTS.md) with every placeholder replaced
   by plain string replacement as docs/onyx-compat.md says. NULL 'in' = all defaults. Caller frees. Invalid UTF-8 in the
   provider, model, user name/role or a disabled tool -> NULL with SW_E_INVALID_PAYLOAD; no built-in template -> SW_E_INTERNAL. */
char *onyx_agents_md(const char *template_text, const onyx_agents_in *in, sw_err *err);

/* Parse OPENCODE_DISABLED_TOOLS-style "a, b,c" into a NULL-terminated array (trimmed, empties dropped). Free with onyx_strv_free. */
char **onyx_split_tools(const char *csv);   /* NULL csv -> empty array; never returns NULL */
void onyx_strv_free(char **v);              /* NULL-safe; frees each string and the array */

/* ---- AGENTS.md pieces, public for tests; each returns an owned string (caller frees) ---- */
char *onyx_provider_display(const char *provider);   /* "OpenAI", ..., Title-Cased other, "Unknown" for NULL/"" */
char *onyx_skill_description(const char *skill_md_path); /* DESC of docs/onyx-compat.md; "No description available." on any error */
char *onyx_skills_section(const char *skills_dir);   /* "- **DIR**: DESC" lines, or "No skills available." */
char *onyx_knowledge_section(const char *files_path); /* "" when NULL; list of top-level entries; see docs/onyx-compat.md */
char *onyx_replace_all(const char *s, const char *needle, const char *rep); /* Python str.replace; needle non-empty */

/* ---- helpers shared by onyx_opencode.c and onyx_agents.c ---- */
typedef struct onyx_buf { char *data; size_t len, cap; } onyx_buf; /* growable string; {0} is empty */
void onyx_buf_add(onyx_buf *b, const char *s, size_t n);  /* append n bytes; data stays NUL-terminated */
void onyx_buf_puts(onyx_buf *b, const char *s);           /* append a C string */
char *onyx_buf_take(onyx_buf *b);                         /* the string (never NULL, caller frees); b reset to {0} */
/* Decode one strict UTF-8 character at s (no overlongs, surrogates or > U+10FFFF): bytes used, or -1. */
int onyx_utf8_next(const char *s, uint32_t *cp);
bool onyx_utf8_valid(const char *s);                      /* NULL counts as valid */
size_t onyx_utf8_count(const char *s, size_t n);          /* code points in n bytes of valid UTF-8 */
/* Python str.strip() on n bytes of valid UTF-8: *start gets the offset, returns the stripped length. */
size_t onyx_py_strip(const char *s, size_t n, size_t *start);

#endif
