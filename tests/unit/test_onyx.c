/* tests/unit/test_onyx.c — the Onyx-compatible renderers (jobs/onyx.h).
 * opencode.json and most AGENTS.md expectations are bytes written by Python
 * (tests/fixtures-gen/gen_onyx.py, committed under tests/unit/fixtures/onyx/);
 * our own formats (knowledge sources, edge cases) are checked against literals here.
 * Runs from the repository root so the fixtures are found by relative path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/xmalloc.h"
#include "jobs/onyx.h"

#define FIX "tests/unit/fixtures/onyx/"

/* ------------------------------------------------------------------ helpers */

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open fixture %s (run from the repository root)", path);
    onyx_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) onyx_buf_add(&b, chunk, n);
    fclose(f);
    return onyx_buf_take(&b);
}

static void write_file(const char *path, const char *data)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, strlen(data), f), strlen(data));
    assert_int_equal(fclose(f), 0);
}

static char *make_tmpdir(void)
{
    char *dir = xstrdup("/tmp/test_onyx.XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void rm_tree(char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) fail_msg("%s:%d: %s", path, jerr.line, jerr.text);
    return j;
}

/* A NULL-terminated borrowed view of a JSON array of strings; NULL for JSON null. */
static const char **strv_of(json_t *arr)
{
    if (!json_is_array(arr)) return NULL;
    const char **v = xcalloc(json_array_size(arr) + 1, sizeof *v);
    for (size_t i = 0; i < json_array_size(arr); i++) v[i] = json_string_value(json_array_get(arr, i));
    return v;
}

static bool llm_of(json_t *j, onyx_llm *out)
{
    if (!json_is_object(j)) return false;
    out->provider = json_string_value(json_object_get(j, "provider"));
    out->model_name = json_string_value(json_object_get(j, "model_name"));
    out->api_key = json_string_value(json_object_get(j, "api_key"));
    out->api_base = json_string_value(json_object_get(j, "api_base"));
    return true;
}

static void assert_bytes(const char *what, const char *got, const char *want)
{
    if (!got || strcmp(got, want) != 0)
        fail_msg("%s differs\n--- got ---\n%s\n--- want ---\n%s", what, got ? got : "(NULL)", want);
}

static char *agents(const char *tmpl, const onyx_agents_in *in)
{
    sw_err err = {0};
    char *s = onyx_agents_md(tmpl, in, &err);
    if (!s) fail_msg("onyx_agents_md: %s", err.msg);
    return s;
}

/* ------------------------------------------------------------------ opencode.json */

static void opencode_matches_python_json_dumps_for_every_fixture_case(void **state)
{
    (void)state;
    json_t *cases = load_json(FIX "opencode_cases.json");
    size_t i;
    json_t *c;
    assert_true(json_array_size(cases) >= 20);
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        onyx_llm llm = {0};
        bool have = llm_of(json_object_get(c, "llm"), &llm);
        const char **tools = strv_of(json_object_get(c, "disabled_tools"));
        sw_err err = {0};
        char *got = onyx_opencode_json(have ? &llm : NULL, tools, &err);
        char *path = xasprintf(FIX "opencode_%s.json", name);
        char *want = read_all(path);
        assert_bytes(path, got, want);
        free(want);
        free(path);
        free(got);
        free(tools);
    }
    json_decref(cases);
}

static void opencode_other_provider_without_key_is_an_empty_object(void **state)
{
    (void)state;
    onyx_llm llm = {"ollama", "llama3", NULL, NULL};
    const char *tools[] = {"question", "todowrite", NULL};
    char *got = onyx_opencode_json(&llm, tools, NULL);
    const char *head = "{\"$schema\": \"https://opencode.ai/config.json\", \"model\": \"ollama/llama3\", "
                       "\"provider\": {\"ollama\": {}}, \"permission\": {\"bash\": {\"rm\": \"deny\", ";
    const char *tail = "\"question\": \"deny\", \"webfetch\": \"allow\", \"external_directory\": {\"*\": \"deny\", "
                       "\"/workspace/files\": \"allow\", \"/workspace/files/**\": \"allow\", "
                       "\"/workspace/demo_data\": \"allow\", \"/workspace/demo_data/**\": \"allow\"}, "
                       "\"todowrite\": \"deny\"}}";
    assert_non_null(got);
    assert_memory_equal(got, head, strlen(head));
    assert_string_equal(got + strlen(got) - strlen(tail), tail);
    free(got);
}

static void opencode_rejects_invalid_utf8_in_every_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xff", "a\x80z", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
        "\xe4\xb8", "\xf0\x9f\x98", "\xc3", "\xf8\x88\x80\x80\x80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int field = 0; field < 5; field++) {
            onyx_llm llm = {"openai", "gpt-4o", "key", "https://x"};
            const char *tools[] = {"question", NULL, NULL};
            if (field == 0) llm.provider = bad[i];
            if (field == 1) llm.model_name = bad[i];
            if (field == 2) llm.api_key = bad[i];
            if (field == 3) llm.api_base = bad[i];
            if (field == 4) tools[1] = bad[i];
            sw_err err = {0};
            assert_null(onyx_opencode_json(&llm, tools, &err));
            assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
            assert_null(strstr(err.msg, bad[i]));   /* names the field, never the value */
        }
    }
}

static void utf8_decoder_accepts_the_boundaries_and_counts_code_points(void **state)
{
    (void)state;
    assert_true(onyx_utf8_valid("\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"));
    assert_true(onyx_utf8_valid(NULL));
    assert_int_equal(onyx_utf8_count("a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", 10), 4);
    size_t off, len = onyx_py_strip("\xc2\xa0\x1c x y\t\xe3\x80\x80", 11, &off);
    assert_int_equal(off, 4);
    assert_int_equal(len, 3);
}

/* ------------------------------------------------------------------ onyx_split_tools */

static void split_tools(const char *csv, const char *const *want)
{
    char **v = onyx_split_tools(csv);
    size_t i = 0;
    for (; want[i]; i++) {
        assert_non_null(v[i]);
        assert_string_equal(v[i], want[i]);
    }
    assert_null(v[i]);
    onyx_strv_free(v);
}

static void split_tools_trims_and_drops_empties(void **state)
{
    (void)state;
    split_tools(NULL, (const char *const[]){NULL});
    split_tools("", (const char *const[]){NULL});
    split_tools(" , ,,\t", (const char *const[]){NULL});
    split_tools("question", (const char *const[]){"question", NULL});
    split_tools("a, b,c", (const char *const[]){"a", "b", "c", NULL});
    split_tools(" question ,, webfetch ,", (const char *const[]){"question", "webfetch", NULL});
    split_tools("\ttodo write\n,x", (const char *const[]){"todo write", "x", NULL});
    split_tools(",lead", (const char *const[]){"lead", NULL});
    split_tools("\xc2\xa0\xc3\xa9t\xc3\xa9 ", (const char *const[]){"\xc3\xa9t\xc3\xa9", NULL});
    split_tools("dup,dup", (const char *const[]){"dup", "dup", NULL});
    onyx_strv_free(NULL);
}

/* ------------------------------------------------------------------ AGENTS.md */

static void agents_builtin_template_matches_python_rendering(void **state)
{
    (void)state;
    json_t *cases = load_json(FIX "agents_cases.json");
    size_t i;
    json_t *c;
    assert_true(json_array_size(cases) >= 4);
    json_array_foreach(cases, i, c) {
        onyx_llm llm = {0};
        onyx_agents_in in = {0};
        in.llm = llm_of(json_object_get(c, "llm"), &llm) ? &llm : NULL;
        in.nextjs_port = (int)json_integer_value(json_object_get(c, "nextjs_port"));
        in.use_demo_data = json_is_true(json_object_get(c, "use_demo_data"));
        in.user_name = json_string_value(json_object_get(c, "user_name"));
        in.user_role = json_string_value(json_object_get(c, "user_role"));
        const char **tools = strv_of(json_object_get(c, "disabled_tools"));
        in.disabled_tools = tools;
        in.include_org_info = json_is_true(json_object_get(c, "include_org_info"));
        in.skills_dir = json_string_value(json_object_get(c, "skills_dir"));
        char *got = agents(NULL, &in);
        char *path = xasprintf(FIX "agents_%s.md", json_string_value(json_object_get(c, "name")));
        char *want = read_all(path);
        assert_bytes(path, got, want);
        assert_null(strstr(got, "{{"));
        free(want);
        free(path);
        free(got);
        free(tools);
    }
    json_decref(cases);
}

static void agents_builtin_template_leaves_no_placeholder_with_every_input_set(void **state)
{
    (void)state;
    char *files = make_tmpdir();
    char *sub = xasprintf("%s/Slack", files);
    assert_int_equal(mkdir(sub, 0700), 0);
    onyx_llm llm = {"anthropic", "claude-sonnet-4-5", "k", NULL};
    const char *tools[] = {"question", NULL};
    onyx_agents_in in = {&llm, 3011, false, "Ada", "CTO", tools, true, FIX "skills", files};
    char *got = agents(NULL, &in);
    assert_null(strstr(got, "{{"));
    assert_non_null(strstr(got, "- `Slack/`"));
    assert_non_null(strstr(got, "You are assisting **Ada**, CTO, with their work."));
    assert_non_null(strstr(got, "## Organization"));
    free(got);
    got = agents(NULL, NULL);                  /* all defaults */
    assert_null(strstr(got, "{{"));
    assert_non_null(strstr(got, "No skills available."));
    free(got);
    free(sub);
    rm_tree(files);
}

static void user_context_follows_demo_data_name_and_role(void **state)
{
    (void)state;
    static const struct { bool demo; const char *name, *role, *want; } cases[] = {
        {false, "Ada", "Staff Engineer", "You are assisting **Ada**, Staff Engineer, with their work."},
        {false, "Ada", NULL, "You are assisting **Ada** with their work."},
        {false, "Ada", "", "You are assisting **Ada** with their work."},
        {false, NULL, "CTO", ""},
        {false, "", "CTO", ""},
        {true, "Ada", "CTO", ""},
        {false, "Zo\xc3\xab", "\xe4\xb8\xad", "You are assisting **Zo\xc3\xab**, \xe4\xb8\xad, with their work."},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        onyx_agents_in in = {0};
        in.use_demo_data = cases[i].demo;
        in.user_name = cases[i].name;
        in.user_role = cases[i].role;
        char *got = agents("<{{USER_CONTEXT}}>", &in);
        char *want = xasprintf("<%s>", cases[i].want);
        assert_string_equal(got, want);
        free(want);
        free(got);
    }
}

static void provider_display_names_match_python_title(void **state)
{
    (void)state;
    json_t *titles = load_json(FIX "titles.json");
    const char *key;
    json_t *val;
    json_object_foreach(titles, key, val) {
        char *got = onyx_provider_display(key);
        assert_string_equal(got, json_string_value(val));
        free(got);
    }
    json_decref(titles);
    static const char *const fixed[][2] = {
        {"openai", "OpenAI"}, {"anthropic", "Anthropic"}, {"azure", "Azure OpenAI"},
        {"google", "Google AI"}, {"bedrock", "AWS Bedrock"}, {"vertex", "Google Vertex AI"}, {"", "Unknown"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        char *got = onyx_provider_display(fixed[i][0]);
        assert_string_equal(got, fixed[i][1]);
        free(got);
    }
    char *got = onyx_provider_display(NULL);
    assert_string_equal(got, "Unknown");
    free(got);
}

static void model_port_and_disabled_tools_values(void **state)
{
    (void)state;
    const char *tmpl = "{{LLM_PROVIDER_NAME}}|{{LLM_MODEL_NAME}}|{{NEXTJS_PORT}}|{{DISABLED_TOOLS_SECTION}}|";
    onyx_llm llm = {"google", "gemini", NULL, NULL};
    const char *tools[] = {"question", "webfetch", NULL};
    onyx_agents_in in = {.llm = &llm, .nextjs_port = 3012, .disabled_tools = tools};
    char *got = agents(tmpl, &in);
    assert_string_equal(got, "Google AI|gemini|3012|\n**Disabled Tools**: question, webfetch\n|");
    free(got);
    onyx_llm empty = {"", "", NULL, NULL};
    const char *none[] = {NULL};
    onyx_agents_in in2 = {.llm = &empty, .nextjs_port = 0, .disabled_tools = none};
    got = agents(tmpl, &in2);
    assert_string_equal(got, "Unknown|Unknown|Unknown||");
    free(got);
}

static void org_info_section_only_when_asked(void **state)
{
    (void)state;
    onyx_agents_in in = {0};
    char *got = agents("[{{ORG_INFO_SECTION}}]", &in);
    assert_string_equal(got, "[]");
    free(got);
    in.include_org_info = true;
    got = agents("[{{ORG_INFO_SECTION}}]", &in);
    assert_true(strncmp(got, "[## Organization\n\n", 18) == 0);
    assert_non_null(strstr(got, "files/org_info/"));
    free(got);
}

static void replacement_is_sequential_like_python_str_replace(void **state)
{
    (void)state;
    onyx_llm llm = {"openai", "gpt-4o", NULL, NULL};
    onyx_agents_in in = {.llm = &llm, .user_name = "{{LLM_MODEL_NAME}}"};
    char *got = agents("{{USER_CONTEXT}} {{ USER_CONTEXT}} {{UNKNOWN}}", &in);
    assert_string_equal(got, "You are assisting **gpt-4o** with their work. {{ USER_CONTEXT}} {{UNKNOWN}}");
    free(got);
    got = onyx_replace_all("aaaa", "aa", "b");
    assert_string_equal(got, "bb");
    free(got);
    got = onyx_replace_all("xaaay", "aa", "");
    assert_string_equal(got, "xay");
    free(got);
}

static void agents_rejects_invalid_utf8_inputs(void **state)
{
    (void)state;
    onyx_llm bad_model = {"openai", "gpt\xff", NULL, NULL};
    onyx_llm bad_provider = {"\xc0\x80", "m", NULL, NULL};
    const char *bad_tools[] = {"ok", "\xed\xa0\x80", NULL};
    onyx_agents_in ins[] = {
        {.llm = &bad_model}, {.llm = &bad_provider}, {.user_name = "A\xe4\xb8"},
        {.user_name = "A", .user_role = "\x80"}, {.disabled_tools = bad_tools},
    };
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
        sw_err err = {0};
        assert_null(onyx_agents_md("{{USER_CONTEXT}}", &ins[i], &err));
        assert_int_equal(err.code, SW_E_INVALID_PAYLOAD);
    }
}

/* ------------------------------------------------------------------ skills */

static void copy_fixture(const char *dir, const char *rel)
{
    char *src = xasprintf(FIX "skills/%s", rel);
    char *dst = xasprintf("%s/%s", dir, rel);
    char *folder = xstrdup(dst);
    *strrchr(folder, '/') = '\0';
    mkdir(folder, 0700);
    char *data = read_all(src);
    write_file(dst, data);
    free(data);
    free(folder);
    free(dst);
    free(src);
}

static void skills_section_from_a_temp_dir_with_three_folders(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    copy_fixture(dir, "alpha-long/SKILL.md");      /* description over 120 chars */
    copy_fixture(dir, "beta-headings/SKILL.md");   /* only headings */
    copy_fixture(dir, "charlie-noskill/README.md"); /* no SKILL.md: not listed */
    char *stray = xasprintf("%s/SKILL.md", dir);    /* a file at the top is no skill */
    write_file(stray, "top-level file\n");
    char *want = read_all(FIX "skills_three.txt");
    char *got = onyx_skills_section(dir);
    assert_bytes("skills_three", got, want);
    assert_non_null(strstr(got, "...\n- **beta-headings**: No description available."));
    assert_null(strstr(got, "charlie"));
    char *tmpl = xasprintf("## Skills\n\n{{AVAILABLE_SKILLS_SECTION}}\n");
    onyx_agents_in in = {.skills_dir = dir};
    char *md = agents(tmpl, &in);
    char *want_md = xasprintf("## Skills\n\n%s\n", want);
    assert_string_equal(md, want_md);
    free(want_md);
    free(md);
    free(tmpl);
    free(got);
    free(want);
    free(stray);
    rm_tree(dir);
}

static void skills_section_matches_python_for_every_desc_edge_case(void **state)
{
    (void)state;
    char *want = read_all(FIX "skills_all.txt");
    char *got = onyx_skills_section(FIX "skills");
    assert_bytes("skills_all", got, want);
    free(got);
    free(want);
}

static void no_skills_when_dir_missing_empty_or_unset(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    const char *dirs[] = {NULL, "", "/nonexistent/skills", dir, FIX "skills/juliet.txt"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char *got = onyx_skills_section(dirs[i]);
        assert_string_equal(got, "No skills available.");
        free(got);
    }
    rm_tree(dir);
}

static void skill_description_edge_cases(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *path = xasprintf("%s/SKILL.md", dir);
    static const struct { const char *text, *want; } cases[] = {
        {"# T\n\nFirst para\nstill first\n\nsecond para\n", "First para still first"},
        {"\n\n  \n# H\n  ## H2\nText\n", "Text"},
        {"line\r\n\r\nafter\r\n", "line"},
        {"one\rtwo\r\rthree", "one two"},
        {"   \n\t\n", "No description available."},
        {"# only\n", "No description available."},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(path, cases[i].text);
        char *got = onyx_skill_description(path);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
    FILE *f = fopen(path, "wb");            /* a NUL byte: our documented fallback */
    assert_non_null(f);
    fwrite("ab\0cd\n", 1, 6, f);
    fclose(f);
    char *got = onyx_skill_description(path);
    assert_string_equal(got, "No description available.");
    free(got);
    got = onyx_skill_description("/nonexistent/SKILL.md");
    assert_string_equal(got, "No description available.");
    free(got);
    free(path);
    rm_tree(dir);
}

/* ------------------------------------------------------------------ knowledge sources */

static void knowledge_section_lists_top_level_entries_sorted(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    const char *folders[] = {"Slack", "google_drive", ".hidden_dir", NULL};
    const char *files[] = {"notes.txt", ".env", "bad`tick", "line\nbreak", "\xc3\xa9t\xc3\xa9.md", "bad\xff", NULL};
    for (size_t i = 0; folders[i]; i++) {
        char *p = xasprintf("%s/%s", dir, folders[i]);
        assert_int_equal(mkdir(p, 0700), 0);
        free(p);
    }
    for (size_t i = 0; files[i]; i++) {
        char *p = xasprintf("%s/%s", dir, files[i]);
        write_file(p, "x");
        free(p);
    }
    char *target = xasprintf("%s/Slack", dir), *link = xasprintf("%s/linked", dir);
    assert_int_equal(symlink(target, link), 0);
    char *dangling = xasprintf("%s/zz-dangling", dir);
    assert_int_equal(symlink("/nonexistent/target", dangling), 0);
    char *got = onyx_knowledge_section(dir);
    assert_string_equal(got, "- `Slack/`\n- `google_drive/`\n- `linked/`\n- `notes.txt`\n"
                             "- `zz-dangling`\n- `\xc3\xa9t\xc3\xa9.md`");
    free(got);
    onyx_agents_in in = {.files_path = dir};
    got = agents("<{{KNOWLEDGE_SOURCES_SECTION}}>", &in);
    assert_true(strncmp(got, "<- `Slack/`\n", 12) == 0);
    free(got);
    free(dangling);
    free(target);
    free(link);
    rm_tree(dir);
}

static void knowledge_section_unknown_missing_empty_and_capped(void **state)
{
    (void)state;
    char *got = onyx_knowledge_section(NULL);
    assert_string_equal(got, "");
    free(got);
    got = onyx_knowledge_section("/nonexistent/files");
    assert_string_equal(got, "No knowledge sources available.");
    free(got);
    char *dir = make_tmpdir();
    got = onyx_knowledge_section(dir);
    assert_string_equal(got, "No knowledge sources available.");
    free(got);
    for (int i = 0; i < 205; i++) {
        char *p = xasprintf("%s/f%03d", dir, i);
        write_file(p, "");
        free(p);
    }
    got = onyx_knowledge_section(dir);
    assert_true(strncmp(got, "- `f000`\n", 9) == 0);
    assert_non_null(strstr(got, "\n- `f199`\n- ... and 5 more"));
    assert_null(strstr(got, "f200"));
    free(got);
    rm_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(opencode_matches_python_json_dumps_for_every_fixture_case),
        cmocka_unit_test(opencode_other_provider_without_key_is_an_empty_object),
        cmocka_unit_test(opencode_rejects_invalid_utf8_in_every_input),
        cmocka_unit_test(utf8_decoder_accepts_the_boundaries_and_counts_code_points),
        cmocka_unit_test(split_tools_trims_and_drops_empties),
        cmocka_unit_test(agents_builtin_template_matches_python_rendering),
        cmocka_unit_test(agents_builtin_template_leaves_no_placeholder_with_every_input_set),
        cmocka_unit_test(user_context_follows_demo_data_name_and_role),
        cmocka_unit_test(provider_display_names_match_python_title),
        cmocka_unit_test(model_port_and_disabled_tools_values),
        cmocka_unit_test(org_info_section_only_when_asked),
        cmocka_unit_test(replacement_is_sequential_like_python_str_replace),
        cmocka_unit_test(agents_rejects_invalid_utf8_inputs),
        cmocka_unit_test(skills_section_from_a_temp_dir_with_three_folders),
        cmocka_unit_test(skills_section_matches_python_for_every_desc_edge_case),
        cmocka_unit_test(no_skills_when_dir_missing_empty_or_unset),
        cmocka_unit_test(skill_description_edge_cases),
        cmocka_unit_test(knowledge_section_lists_top_level_entries_sorted),
        cmocka_unit_test(knowledge_section_unknown_missing_empty_and_capped),
    };
    return cmocka_run_group_tests_name("onyx", tests, NULL, NULL);
}
