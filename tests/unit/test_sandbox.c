/* tests/unit/test_sandbox.c — the local sandbox backend and the job types, without servers.
 * Covers jobs/sandbox.h: session paths and id validation, regenerate args parsing, the
 * files link targets, atomic config writes into a temp dir, staging + swap + undo, the dev
 * server's argv/env, its start gate and pid files (with /bin/sleep as a stand-in); and the parts of the
 * snapshot/restore/regenerate jobs that are decided before any database or store is touched.
 * Each test gets its own temp folder (removed at the end). This binary is its own dev-server
 * gate: /proc/self/exe is this binary here, so main dispatches `__devserver` as
 * worker/main.c does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/arc.h"
#include "common/cfg.h"
#include "common/payload.h"
#include "common/xmalloc.h"
#include "jobs/jobs.h"
#include "jobs/onyx.h"
#include "jobs/sandbox.h"

#define SB "0B6F6A0E-6A43-4C43-9C3E-3C1F7F0F2F11"
#define SB_LC "0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11"
#define SS "7d9a3c1e-1111-4c43-9c3e-3c1f7f0f2f22"

extern char **environ;

typedef struct fx {
    char root[256];   /* temp folder */
    char base[300];   /* {root}/base: SANDBOX_BASE_PATH */
    char outside[300]; /* {root}/outside: a folder no job may touch */
    cfg c;
} fx;

/* ------------------------------------------------------------------ helpers */

static void set_str(char **field, const char *v)
{
    free(*field);
    *field = xstrdup(v);
}

static int setup(void **state)
{
    fx *f = xcalloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/sw-unit-sb-XXXXXX");
    if (!mkdtemp(f->root)) return -1;
    snprintf(f->base, sizeof f->base, "%s/base", f->root);
    snprintf(f->outside, sizeof f->outside, "%s/outside", f->root);
    mkdir(f->base, 0755);
    char statedir[300];
    snprintf(statedir, sizeof statedir, "%s/worker-state", f->root);
    setenv("SNAPWORKER_STATE_DIR", statedir, 1); /* the worker's own records, outside the base */
    char prog[] = "test_sandbox", *argv[] = {prog, NULL}, err[512];
    int argi = 1;
    bool help;
    if (cfg_load(&f->c, 1, argv, &argi, &help, err, sizeof err) != 0) return -1;
    set_str(&f->c.sandbox_base_path, f->base);
    set_str(&f->c.sandbox_backend, "local");
    set_str(&f->c.opencode_disabled_tools, "question");
    set_str(&f->c.agents_template, "");
    set_str(&f->c.outputs_template, "");
    set_str(&f->c.demo_data_path, "");
    set_str(&f->c.user_files_path, "");
    set_str(&f->c.skills_dir, "");
    set_str(&f->c.webapp_cmd, "npm run dev -- -p {port}");
    f->c.webapp_npm_install = false;
    f->c.webapp_wait_s = 0;
    *state = f;
    return 0;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int teardown(void **state)
{
    fx *f = *state;
    nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    cfg_free(&f->c);
    free(f);
    return 0;
}

static void session(fx *f, sb_session *s)
{
    sw_err e;
    assert_int_equal(sb_session_init(s, &f->c, NULL, "job-1", SB, SS, &e), 0);
}

static void mkpath(const char *p)
{
    char b[4096];
    snprintf(b, sizeof b, "%s", p);
    for (char *q = b + 1; *q; q++)
        if (*q == '/') {
            *q = '\0';
            mkdir(b, 0755);
            *q = '/';
        }
    mkdir(b, 0755);
}

static void put_file(const char *path, const char *data)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs(data, fp);
    fclose(fp);
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    onyx_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) onyx_buf_add(&b, chunk, n);
    fclose(fp);
    return onyx_buf_take(&b);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, prefix)) n++;
    closedir(d);
    return n;
}

static json_t *args_of(const char *json)
{
    json_error_t je;
    json_t *a = json_loads(json, 0, &je);
    assert_non_null(a);
    return a;
}

/* A job_ctx without worker: memo kept in a json object, no thread resources. */
typedef struct fake_job {
    job_ctx ctx;
    job_req req;
    atomic_int cancel;
    json_t *memo;
    int memo_gets, memo_sets;   /* calls seen (a spy: "nothing happened" is checkable) */
} fake_job;

static const char *fake_memo_get(job_ctx *ctx, const char *name)
{
    fake_job *j = ctx->worker_priv;
    j->memo_gets++;
    return json_string_value(json_object_get(j->memo, name));
}

static int fake_memo_set(job_ctx *ctx, const char *name, const char *value, sw_err *err)
{
    (void)err;
    fake_job *j = ctx->worker_priv;
    j->memo_sets++;
    json_object_set_new(j->memo, name, json_string(value));
    return 0;
}

static void fake_init(fake_job *j, fx *f, const char *type, const char *args_json)
{
    memset(j, 0, sizeof *j);
    char *p = xasprintf("{\"id\":\"job-1\",\"type\":\"%s\",\"tenant_id\":\"public\","
                        "\"sandbox_id\":\"%s\",\"session_id\":\"%s\",\"args\":%s}",
                        type, SB, SS, args_json);
    sw_err e;
    assert_int_equal(payload_parse(p, strlen(p), &j->req, &e), 0);
    free(p);
    j->memo = json_object();
    j->ctx = (job_ctx){.cfg = &f->c, .req = &j->req, .attempt = 1, .cancel = &j->cancel,
                       .memo_get = fake_memo_get, .memo_set = fake_memo_set, .worker_priv = j};
}

static void fake_free(fake_job *j)
{
    payload_free(&j->req);
    json_decref(j->memo);
}

/* ------------------------------------------------------------------ paths and ids */

static void session_path_is_base_sandbox_sessions_session_lowercased(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    char want[512];
    snprintf(want, sizeof want, "%s/%s/sessions/%s", f->base, SB_LC, SS);
    assert_string_equal(s.dir, want);
    snprintf(want, sizeof want, "%s/%s/sessions", f->base, SB_LC);
    assert_string_equal(s.sessions_dir, want);
    assert_string_equal(s.ops->name, "local");
}

static void session_init_refuses_bad_ids_relative_base_and_other_backends(void **state)
{
    fx *f = *state;
    sb_session s;
    sw_err e;
    assert_int_equal(sb_session_init(&s, &f->c, NULL, "job-1", "../../etc", SS, &e), -1);
    assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
    assert_int_equal(sb_session_init(&s, &f->c, NULL, "job-1", SB, "x/../y", &e), -1);
    assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
    assert_int_equal(sb_session_init(&s, &f->c, NULL, "bad/id", SB, SS, &e), -1);
    assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
    set_str(&f->c.sandbox_backend, "kubernetes");
    assert_int_equal(sb_session_init(&s, &f->c, NULL, "job-1", SB, SS, &e), -1);
    assert_int_equal(e.code, SW_E_BACKEND);
    assert_false(e.retryable);
    set_str(&f->c.sandbox_backend, "local");
    set_str(&f->c.sandbox_base_path, "relative/base");
    assert_int_equal(sb_session_init(&s, &f->c, NULL, "job-1", SB, SS, &e), -1);
    assert_int_equal(e.code, SW_E_BACKEND);
}

static void files_target_must_be_absolute_without_dot_segments_or_controls(void **state)
{
    (void)state;
    sw_err e;
    assert_int_equal(sb_files_target_check("/data/files", &e), 0);
    assert_int_equal(sb_files_target_check("/workspace/demo_data/", &e), 0);
    assert_int_equal(sb_files_target_check("/a/..b/c", &e), 0);
    assert_int_equal(sb_files_target_check("data/files", &e), -1);
    assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
    assert_int_equal(sb_files_target_check("/data/../etc", &e), -1);
    assert_int_equal(sb_files_target_check("/data/./x", &e), -1);
    assert_int_equal(sb_files_target_check("/data/..", &e), -1);
    assert_int_equal(sb_files_target_check("/data/a\nb", &e), -1);
    assert_int_equal(sb_files_target_check("", &e), -1);
}

static void files_link_defaults_follow_demo_flag_and_substitute_sandbox_id(void **state)
{
    fx *f = *state;
    char out[4096], want[512];
    sw_err e;
    assert_int_equal(sb_local_files_default(&f->c, SB_LC, true, out, sizeof out, &e), 0);
    snprintf(want, sizeof want, "%s/demo_data", f->base);
    assert_string_equal(out, want);
    assert_int_equal(sb_local_files_default(&f->c, SB_LC, false, out, sizeof out, &e), 0);
    snprintf(want, sizeof want, "%s/%s/files", f->base, SB_LC);
    assert_string_equal(out, want);
    set_str(&f->c.demo_data_path, "/srv/demo");
    set_str(&f->c.user_files_path, "/srv/users/{sandbox_id}/knowledge");
    assert_int_equal(sb_local_files_default(&f->c, SB_LC, true, out, sizeof out, &e), 0);
    assert_string_equal(out, "/srv/demo");
    assert_int_equal(sb_local_files_default(&f->c, SB_LC, false, out, sizeof out, &e), 0);
    assert_string_equal(out, "/srv/users/" SB_LC "/knowledge");
}

/* ------------------------------------------------------------------ regenerate args */

static void config_defaults_demo_on_and_tools_from_the_environment(void **state)
{
    fx *f = *state;
    sb_config c;
    sw_err e;
    set_str(&f->c.opencode_disabled_tools, "question, webfetch");
    assert_int_equal(sb_config_parse(NULL, &f->c, &c, &e), 0);
    assert_true(c.use_demo_data);
    assert_false(c.include_org_info);
    assert_int_equal(c.nextjs_port, 0);
    assert_null(c.llm.provider);
    assert_string_equal(c.disabled_tools[0], "question");
    assert_string_equal(c.disabled_tools[1], "webfetch");
    assert_null(c.disabled_tools[2]);
    sb_config_free(&c);
}

static void config_disabled_tools_replace_the_default_and_empty_list_means_none(void **state)
{
    fx *f = *state;
    sb_config c;
    sw_err e;
    json_t *a = args_of("{\"disabled_tools\": []}");
    assert_int_equal(sb_config_parse(a, &f->c, &c, &e), 0);
    assert_null(c.disabled_tools[0]);
    sb_config_free(&c);
    json_decref(a);
    a = args_of("{\"disabled_tools\": [\"bash\", \"\", \"edit\"], \"use_demo_data\": false,"
                " \"nextjs_port\": 3011, \"user_name\": \"Ada\", \"include_org_info\": true,"
                " \"llm_config\": {\"provider\": \"openai\", \"model_name\": \"gpt\", \"api_key\": null}}");
    assert_int_equal(sb_config_parse(a, &f->c, &c, &e), 0);
    assert_string_equal(c.disabled_tools[0], "bash");
    assert_string_equal(c.disabled_tools[1], "edit");
    assert_null(c.disabled_tools[2]);
    assert_false(c.use_demo_data);
    assert_true(c.include_org_info);
    assert_int_equal(c.nextjs_port, 3011);
    assert_string_equal(c.user_name, "Ada");
    assert_string_equal(c.llm.provider, "openai");
    assert_null(c.llm.api_key);
    sb_config_free(&c);
    json_decref(a);
}

static void config_wrong_types_are_invalid_payload_without_the_value(void **state)
{
    fx *f = *state;
    const char *bad[] = {
        "{\"llm_config\": {\"api_key\": 12345}}", "{\"llm_config\": \"sk-secret\"}",
        "{\"nextjs_port\": 70000}", "{\"nextjs_port\": \"3010\"}", "{\"use_demo_data\": 1}",
        "{\"disabled_tools\": \"bash\"}", "{\"disabled_tools\": [1]}", "{\"user_name\": 5}",
        "{\"files_target\": \"../x\"}", "{\"include_org_info\": \"yes\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_config c;
        sw_err e;
        json_t *a = args_of(bad[i]);
        assert_int_equal(sb_config_parse(a, &f->c, &c, &e), -1);
        assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
        assert_null(strstr(e.msg, "sk-secret"));
        assert_null(strstr(e.msg, "12345"));
        sb_config_free(&c);
        json_decref(a);
    }
}

static void config_render_gives_the_onyx_bytes_without_touching_the_session(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    json_t *a = args_of("{\"llm_config\": {\"provider\": \"openai\", \"model_name\": \"gpt\","
                        " \"api_key\": \"sk-x\"}, \"nextjs_port\": 3013}");
    sb_config c;
    sw_err e;
    assert_int_equal(sb_config_parse(a, &f->c, &c, &e), 0);
    char target[256], *agents, *oc;
    size_t alen, olen;
    assert_int_equal(sb_files_target(&s, &c, target, sizeof target, &e), 0);
    assert_int_equal(sb_config_render(&s, &c, target, &agents, &alen, &oc, &olen, &e), 0);
    char *want = onyx_opencode_json(&c.llm, (const char *const *)c.disabled_tools, &e);
    assert_string_equal(oc, want);
    assert_int_equal(olen, strlen(want));
    assert_int_equal(alen, strlen(agents));
    assert_non_null(strstr(agents, "3013"));
    assert_false(exists(s.dir)); /* rendering writes nothing */
    free(want);
    free(agents);
    free(oc);
    /* an unreadable template: nothing rendered, a permanent backend_error */
    set_str(&f->c.agents_template, "/nonexistent/AGENTS.md");
    assert_int_equal(sb_config_render(&s, &c, target, &agents, &alen, &oc, &olen, &e), -1);
    assert_null(agents);
    assert_null(oc);
    assert_int_equal(e.code, SW_E_BACKEND);
    assert_false(e.retryable);
    sb_config_free(&c);
    json_decref(a);
    sb_session_close(&s);
}

/* ------------------------------------------------------------------ regenerate */

static void regenerate_writes_files_link_agents_and_opencode_atomically(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    mkpath(s.dir);
    char p[4600];
    snprintf(p, sizeof p, "%s/AGENTS.md", s.dir);
    put_file(p, "old");
    fake_job j;
    fake_init(&j, f, "regenerate",
              "{\"llm_config\": {\"provider\": \"anthropic\", \"model_name\": \"claude\","
              " \"api_key\": \"sk-ant-secret\"}, \"nextjs_port\": 3012, \"use_demo_data\": false}");
    json_t *res = NULL;
    sw_err e;
    assert_int_equal(job_regenerate_run(&j.ctx, &res, &e), 0);
    char *txt = json_dumps(res, JSON_COMPACT);
    assert_string_equal(txt, "{\"written\":[\"files\",\"AGENTS.md\",\"opencode.json\"]}");
    assert_null(strstr(txt, "sk-ant"));
    free(txt);
    json_decref(res);

    char link[4096], want[512];
    snprintf(p, sizeof p, "%s/files", s.dir);
    ssize_t n = readlink(p, link, sizeof link - 1);
    assert_true(n > 0);
    link[n] = '\0';
    snprintf(want, sizeof want, "%s/%s/files", f->base, SB_LC);
    assert_string_equal(link, want); /* dangling is fine */

    onyx_llm llm = {"anthropic", "claude", "sk-ant-secret", NULL};
    const char *tools[] = {"question", NULL};
    char *expect = onyx_opencode_json(&llm, tools, &e);
    snprintf(p, sizeof p, "%s/opencode.json", s.dir);
    char *got = slurp(p);
    assert_string_equal(got, expect);
    free(got);
    free(expect);
    snprintf(p, sizeof p, "%s/AGENTS.md", s.dir);
    got = slurp(p);
    assert_non_null(strstr(got, "3012"));
    assert_null(strstr(got, "{{"));
    free(got);
    assert_int_equal(count_prefix(s.dir, ".swtmp-"), 0);
    struct stat st;
    snprintf(p, sizeof p, "%s/opencode.json", s.dir);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600); /* issue 10: it holds the api key */
    snprintf(p, sizeof p, "%s/AGENTS.md", s.dir);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    fake_free(&j);
}

static void regenerate_uses_files_target_and_configured_template(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    mkpath(s.dir);
    char tmpl[512], p[4600];
    snprintf(tmpl, sizeof tmpl, "%s/tmpl.md", f->root);
    put_file(tmpl, "port={{NEXTJS_PORT}} model={{LLM_MODEL_NAME}}\n");
    set_str(&f->c.agents_template, tmpl);
    fake_job j;
    fake_init(&j, f, "regenerate", "{\"files_target\": \"/workspace/files\"}");
    json_t *res = NULL;
    sw_err e;
    assert_int_equal(job_regenerate_run(&j.ctx, &res, &e), 0);
    json_decref(res);
    snprintf(p, sizeof p, "%s/AGENTS.md", s.dir);
    char *got = slurp(p);
    assert_string_equal(got, "port=Unknown model=Unknown\n");
    free(got);
    char link[256];
    snprintf(p, sizeof p, "%s/files", s.dir);
    ssize_t n = readlink(p, link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    assert_string_equal(link, "/workspace/files");
    fake_free(&j);
}

static void regenerate_without_session_dir_is_workspace_missing(void **state)
{
    fx *f = *state;
    fake_job j;
    fake_init(&j, f, "regenerate", "{}");
    json_t *res = NULL;
    sw_err e;
    assert_int_equal(job_regenerate_run(&j.ctx, &res, &e), -1);
    assert_int_equal(e.code, SW_E_WORKSPACE_MISSING);
    assert_false(e.retryable);
    assert_null(res);
    fake_free(&j);
}

/* ------------------------------------------------------------------ snapshot / restore, pre-server */

static void snapshot_of_missing_session_or_without_outputs(void **state)
{
    fx *f = *state;
    fake_job j;
    fake_init(&j, f, "snapshot", "{}");
    json_t *res = NULL;
    sw_err e;
    assert_int_equal(job_snapshot_run(&j.ctx, &res, &e), -1);
    assert_int_equal(e.code, SW_E_WORKSPACE_MISSING);
    sb_session s;
    session(f, &s);
    mkpath(s.dir);
    assert_int_equal(job_snapshot_run(&j.ctx, &res, &e), 0);
    char *txt = json_dumps(res, JSON_COMPACT);
    assert_string_equal(txt, "{\"empty\":true}");
    free(txt);
    json_decref(res);
    fake_free(&j);
    fake_init(&j, f, "snapshot", "{\"snapshot_id\": \"../x\"}");
    assert_int_equal(job_snapshot_run(&j.ctx, &res, &e), -1);
    assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
    fake_free(&j);
}

static void restore_refuses_a_snapshot_path_of_another_tenant_or_session(void **state)
{
    fx *f = *state;
    const char *bad[] = {
        "other/snapshots/" SS "/0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11.tar.gz",
        "public/snapshots/" SB_LC "/0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11.tar.gz",
        "public/snapshots/" SS "/../../x/0b6f6a0e-6a43-4c43-9c3e-3c1f7.tar.gz",
        "public/snapshots/" SS "/0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11.tar",
        "public/snapshots/" SS "/0b6f6a0e_6a43_4c43_9c3e_3c1f7f0f2f11.tar.gz",
        "/public/snapshots/" SS "/0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11.tar.gz",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *args = xasprintf("{\"snapshot_storage_path\": \"%s\"}", bad[i]);
        fake_job j;
        fake_init(&j, f, "restore", args);
        json_t *res = NULL;
        sw_err e;
        assert_int_equal(job_restore_run(&j.ctx, &res, &e), -1);
        assert_int_equal(e.code, SW_E_INVALID_PAYLOAD);
        assert_null(json_object_get(j.memo, "port_before")); /* refused before any port work */
        fake_free(&j);
        free(args);
    }
}

static void restore_on_dead_without_memo_does_nothing(void **state)
{
    fx *f = *state;
    fake_job j;
    fake_init(&j, f, "restore", "{}");
    sw_err e;
    sw_err_clear(&e);
    assert_int_equal(job_restore_on_dead(&j.ctx, &e), 0);
    /* it asked once whether the port was touched, and stopped there: no memo written,
     * no database (the context has none: reaching for it would fail), no error */
    assert_int_equal(j.memo_gets, 1);
    assert_int_equal(j.memo_sets, 0);
    assert_int_equal(json_object_size(j.memo), 0);
    assert_int_equal(e.code, SW_OK);
    /* the same call with the port recorded does reach for the database: the spy sees it */
    json_object_set_new(j.memo, "port_before", json_string("3000"));
    assert_int_equal(job_restore_on_dead(&j.ctx, &e), -1);
    assert_int_equal(e.code, SW_E_INTERNAL);
    assert_true(j.memo_gets > 1);
    fake_free(&j);
}

/* The table wires each name to its behaviour: a job looked up by name and run through
 * the table does what that type does (no values of the table are repeated here). */
static void job_table_runs_each_type_by_its_name(void **state)
{
    fx *f = *state;
    assert_null(job_lookup("nope"));
    assert_null(job_lookup(""));
    const char *names[] = {"noop", "snapshot", "restore", "regenerate", "sleep", "sweep", "prune"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const job_type *t = job_lookup(names[i]);
        assert_non_null(t);
        assert_string_equal(t->name, names[i]);
        assert_non_null(t->run);
        assert_true(t->default_timeout_s > 0);
    }
    /* noop through the table succeeds with its result */
    fake_job j;
    fake_init(&j, f, "noop", "{}");
    json_t *res = NULL;
    sw_err e;
    assert_int_equal(job_lookup("noop")->run(&j.ctx, &res, &e), 0);
    assert_true(json_is_true(json_object_get(res, "ok")));
    json_decref(res);
    fake_free(&j);
    /* the sandbox types, each on a session that has no workspace and without their
     * arguments, fail the way that type fails, before any work */
    const struct { const char *type, *args; sw_code code; } sandbox_types[] = {
        {"snapshot", "{}", SW_E_WORKSPACE_MISSING},   /* nothing to archive */
        {"restore", "{\"snapshot_storage_path\": \"../x.tar.gz\"}", SW_E_INVALID_PAYLOAD},
        {"regenerate", "{}", SW_E_WORKSPACE_MISSING}}; /* nothing to write into */
    for (size_t i = 0; i < 3; i++) {
        fake_init(&j, f, sandbox_types[i].type, sandbox_types[i].args);
        res = NULL;
        assert_int_equal(job_lookup(sandbox_types[i].type)->run(&j.ctx, &res, &e), -1);
        assert_int_equal(e.code, sandbox_types[i].code);
        assert_null(res);
        assert_int_equal(j.memo_sets, 0);
        fake_free(&j);
    }
    /* only restore has an undo, and it is the port rollback: it reaches for the database
     * once the port was recorded (none here) */
    fake_init(&j, f, "restore", "{}");
    json_object_set_new(j.memo, "port_before", json_string("3000"));
    assert_non_null(job_lookup("restore")->on_dead);
    assert_int_equal(job_lookup("restore")->on_dead(&j.ctx, &e), -1);
    assert_int_equal(e.code, SW_E_INTERNAL);
    fake_free(&j);
    assert_null(job_lookup("snapshot")->on_dead);
    assert_null(job_lookup("regenerate")->on_dead);
}

/* ------------------------------------------------------------------ staging and swap */

static void fresh_stage_swaps_into_a_new_session_and_unswap_removes_it(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    char tmpl[512], p[4600];
    snprintf(tmpl, sizeof tmpl, "%s/template/web", f->root);
    mkpath(tmpl);
    snprintf(p, sizeof p, "%s/package.json", tmpl);
    put_file(p, "{}");
    snprintf(tmpl, sizeof tmpl, "%s/template", f->root);
    set_str(&f->c.outputs_template, tmpl);
    /* a staging folder left by a crashed attempt of another job of this session */
    char stale[4600];
    snprintf(stale, sizeof stale, "%s/.staging-%s-old-job/outputs", s.sessions_dir, SS);
    mkpath(stale);
    sw_err e;
    sb_stage *g = s.ops->stage_begin(&s, &e);
    assert_non_null(g);
    assert_int_equal(count_prefix(s.sessions_dir, "old-job"), 0);
    assert_int_equal(s.ops->stage_fresh(g, &e), 0);
    assert_int_equal(s.ops->stage_swap(g, &e), 0);
    snprintf(p, sizeof p, "%s/outputs/web/package.json", s.dir);
    assert_true(exists(p));
    snprintf(p, sizeof p, "%s/attachments", s.dir);
    assert_true(exists(p));
    sb_state st;
    assert_int_equal(s.ops->state(&s, &st, &e), 0);
    assert_int_equal(st, SB_WORKSPACE);
    assert_int_equal(s.ops->stage_unswap(g, &e), 0);
    assert_false(exists(s.dir)); /* the job created it: gone again */
    s.ops->stage_end(g);
    assert_int_equal(count_prefix(s.sessions_dir, ".staging-"), 0);
}

static void swap_exchanges_existing_attachments_and_unswap_brings_them_back(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    char p[4600];
    snprintf(p, sizeof p, "%s/attachments", s.dir);
    mkpath(p);
    snprintf(p, sizeof p, "%s/attachments/mine.txt", s.dir);
    put_file(p, "user upload");
    sw_err e;
    sb_stage *g = s.ops->stage_begin(&s, &e);
    assert_non_null(g);
    assert_int_equal(s.ops->stage_fresh(g, &e), 0);
    assert_int_equal(s.ops->stage_swap(g, &e), 0);
    assert_false(exists(p));
    snprintf(p, sizeof p, "%s/outputs", s.dir);
    assert_true(exists(p));
    assert_int_equal(s.ops->stage_unswap(g, &e), 0);
    assert_false(exists(p));
    snprintf(p, sizeof p, "%s/attachments/mine.txt", s.dir);
    char *got = slurp(p);
    assert_string_equal(got, "user upload");
    free(got);
    s.ops->stage_end(g);
    assert_true(exists(s.dir)); /* it existed before: kept */
}

static ssize_t bytes_src(void *arg, void *buf, size_t n, sw_err *err)
{
    (void)err;
    const char **p = arg;
    size_t left = strlen(*p);
    if (n > left) n = left;
    memcpy(buf, *p, n);
    *p += n;
    return (ssize_t)n;
}

static void extract_of_garbage_is_unsafe_archive_and_leaves_no_stage(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    sw_err e;
    sb_stage *g = s.ops->stage_begin(&s, &e);
    assert_non_null(g);
    const char *data = "this is not a tar archive at all, just some bytes.............";
    assert_int_equal(s.ops->stage_extract(g, bytes_src, &data, NULL, &e), -1);
    assert_true(e.code == SW_E_UNSAFE_ARCHIVE);
    s.ops->stage_end(g);
    assert_int_equal(count_prefix(s.sessions_dir, ".staging-"), 0);
    assert_false(exists(s.dir));
}

/* ------------------------------------------------------------------ dev server */

static void webapp_argv_splits_on_spaces_and_substitutes_port(void **state)
{
    (void)state;
    char **v = sb_webapp_argv("npm run dev -- -p {port}", 3015);
    const char *want[] = {"npm", "run", "dev", "--", "-p", "3015", NULL};
    for (int i = 0; want[i]; i++) assert_string_equal(v[i], want[i]);
    assert_null(v[6]);
    onyx_strv_free(v);
    v = sb_webapp_argv("  /usr/bin/python3\t-m  http.server {port}  --bind=127.0.0.1:{port} ", 8000);
    const char *want2[] = {"/usr/bin/python3", "-m", "http.server", "8000", "--bind=127.0.0.1:8000", NULL};
    for (int i = 0; want2[i]; i++) assert_string_equal(v[i], want2[i]);
    assert_null(v[5]);
    onyx_strv_free(v);
    assert_null(sb_webapp_argv("   ", 1));
    assert_null(sb_webapp_argv("", 1));
    v = sb_webapp_argv("echo '{port} x'", 9);
    assert_string_equal(v[1], "'9"); /* no shell: quotes are plain characters */
    onyx_strv_free(v);
}

static void webapp_env_drops_secrets_and_keeps_the_rest(void **state)
{
    (void)state;
    const char *env[] = {"PATH=/usr/bin", "AWS_SECRET_ACCESS_KEY=x", "AWS_SESSION_TOKEN=y",
                   "DATABASE_URL=postgresql://u:p@h/d", "REDIS_URL=redis://:pw@h", "CELERY_BROKER_URL=r",
                   "SNAPWORKER_STORE=s3://b", "HOME=/root", "REDIS_URLX=kept", "NODE_ENV=development",
                   "DATABASE_URL_RO=kept", "PGPASSWORD=pw", NULL};
    char **v = sb_webapp_envp((char *const *)env);
    const char *want[] = {"PATH=/usr/bin", "HOME=/root", "REDIS_URLX=kept", "NODE_ENV=development",
                          "DATABASE_URL_RO=kept", NULL};
    for (int i = 0; want[i]; i++) assert_string_equal(v[i], want[i]);
    assert_null(v[5]);
    onyx_strv_free(v);
}

static void proc_start_ticks_of_self_and_of_a_missing_pid(void **state)
{
    (void)state;
    unsigned long long t = 0;
    assert_int_equal(sb_proc_start_ticks(getpid(), &t), 0);
    assert_true(t > 0);
    assert_int_equal(sb_proc_start_ticks(999999999, &t), -1);
}

static void webapp_not_started_without_package_json(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    char p[4600];
    snprintf(p, sizeof p, "%s/outputs/web", s.dir);
    mkpath(p);
    sb_webapp w;
    sw_err e;
    assert_int_equal(s.ops->webapp_start(&s, 3010, &w, &e), 0);
    assert_int_equal(w.pid, 0);
    snprintf(p, sizeof p, "%s/nextjs.pid", s.dir);
    assert_false(exists(p));
}

static bool proc_env_has(pid_t pid, const char *name)
{
    char path[64], buf[65536];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    size_t len = strlen(name);
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
        if (strncmp(buf + i, name, len) == 0 && buf[i + (ssize_t)len] == '=') return true;
    return false;
}

static void webapp_spawns_records_pid_and_replaces_the_previous_instance(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    char p[4600];
    snprintf(p, sizeof p, "%s/outputs/web", s.dir);
    mkpath(p);
    snprintf(p, sizeof p, "%s/outputs/web/package.json", s.dir);
    put_file(p, "{}");
    set_str(&f->c.webapp_cmd, "/bin/sleep {port}");
    setenv("REDIS_URL", "redis://:pw@127.0.0.1:1/0", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "shh", 1);
    sb_webapp w1, w2;
    sw_err e;
    assert_int_equal(s.ops->webapp_start(&s, 300, &w1, &e), 0);
    assert_true(w1.pid > 0);
    assert_false(proc_env_has(w1.pid, "REDIS_URL"));
    assert_false(proc_env_has(w1.pid, "AWS_SECRET_ACCESS_KEY"));
    assert_true(proc_env_has(w1.pid, "PATH") || getenv("PATH") == NULL);
    assert_int_equal(getsid(w1.pid), w1.pid); /* own session */
    snprintf(p, sizeof p, "%s/nextjs.pid", s.dir);
    char *txt = slurp(p);
    assert_int_equal(atoi(txt), w1.pid);
    free(txt);
    /* a second start stops the first (its start time matches the record) */
    assert_int_equal(s.ops->webapp_start(&s, 300, &w2, &e), 0);
    assert_true(w2.pid > 0 && w2.pid != w1.pid);
    unsigned long long t;
    char stpath[64];
    snprintf(stpath, sizeof stpath, "/proc/%d", (int)w1.pid);
    for (int i = 0; i < 100 && exists(stpath); i++) usleep(20000); /* reaped by its thread */
    assert_false(exists(stpath));
    /* the worker's record is 0600 in its state folder (0700); one whose start time no
     * longer matches is never signalled */
    char st_dir[4096], rec[4600], fake[256];
    assert_int_equal(sb_state_dir(&f->c, st_dir, sizeof st_dir), 0);
    struct stat sst;
    assert_int_equal(stat(st_dir, &sst), 0);
    assert_int_equal(sst.st_mode & 0777, 0700);
    snprintf(rec, sizeof rec, "%s/webapp-%s", st_dir, SS);
    assert_int_equal(stat(rec, &sst), 0);
    assert_int_equal(sst.st_mode & 0777, 0600);
    snprintf(fake, sizeof fake, "v1 %d 1 %s %s\n", (int)w2.pid, SB_LC, SS);
    put_file(rec, fake);
    assert_int_equal(sb_webapp_stop_recorded(&s, &e), 0);
    assert_int_equal(sb_proc_start_ticks(w2.pid, &t), 0);
    assert_int_equal(t, w2.start_ticks);
    s.ops->webapp_stop(&s, &w2);
    snprintf(stpath, sizeof stpath, "/proc/%d", (int)w2.pid);
    for (int i = 0; i < 100 && exists(stpath); i++) usleep(20000);
    assert_false(exists(stpath));
    unsetenv("REDIS_URL");
    unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void webapp_missing_command_is_a_permanent_backend_error(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    char p[4600];
    snprintf(p, sizeof p, "%s/outputs/web", s.dir);
    mkpath(p);
    snprintf(p, sizeof p, "%s/outputs/web/package.json", s.dir);
    put_file(p, "{}");
    set_str(&f->c.webapp_cmd, "/nonexistent/dev-server {port}");
    sb_webapp w;
    sw_err e;
    assert_int_equal(s.ops->webapp_start(&s, 3010, &w, &e), -1);
    assert_int_equal(e.code, SW_E_BACKEND);
    assert_false(e.retryable);
}


/* ------------------------------------------------------------------ issue 10: a hostile sandbox */

/* Everything under 'dir' (names, kinds, bytes, link targets) as one string, links unfollowed. */
static void describe_into(const char *dir, const char *rel, onyx_buf *b)
{
    char path[4600];
    snprintf(path, sizeof path, "%s%s%s", dir, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *de;
    char **names = NULL;
    size_t n = 0;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        for (size_t k = i + 1; k < n; k++)
            if (strcmp(names[i], names[k]) > 0) { char *t = names[i]; names[i] = names[k]; names[k] = t; }
    for (size_t i = 0; i < n; i++) {
        char r[4600], p[9300];
        snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        snprintf(p, sizeof p, "%s/%s", dir, r);
        struct stat st;
        lstat(p, &st);
        onyx_buf_puts(b, r);
        if (S_ISLNK(st.st_mode)) {
            char t[4096];
            ssize_t k = readlink(p, t, sizeof t - 1);
            t[k > 0 ? k : 0] = '\0';
            onyx_buf_puts(b, " -> ");
            onyx_buf_puts(b, t);
        } else if (S_ISDIR(st.st_mode)) {
            onyx_buf_puts(b, "/\n");
            describe_into(dir, r, b);
            continue;
        } else {
            char *data = slurp(p);
            onyx_buf_puts(b, " = ");
            onyx_buf_puts(b, data ? data : "?");
            free(data);
        }
        onyx_buf_puts(b, "\n");
        free(names[i]);
        names[i] = NULL;
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static char *describe(const char *dir)
{
    onyx_buf b = {0};
    describe_into(dir, "", &b);
    return onyx_buf_take(&b);
}

enum { AT_SANDBOX, AT_SESSIONS, AT_SESSION, AT_OUTPUTS };
static const char *const at_names[] = {"sandbox", "sessions", "session", "outputs"};

/* Make layout position 'at' of the test session a symlink to f->outside, which holds what
 * the real folder would (an outputs/ with a secret). */
static void plant_link(fx *f, const sb_session *s, int at)
{
    char real[4600], link[4600], p[9300];
    mkpath(f->outside);
    switch (at) {
    case AT_SANDBOX:
        snprintf(real, sizeof real, "%s/sessions/%s", f->outside, SS);
        snprintf(link, sizeof link, "%s/%s", f->base, SB_LC);
        break;
    case AT_SESSIONS:
        snprintf(real, sizeof real, "%s/%s", f->outside, SS);
        snprintf(link, sizeof link, "%s", s->sessions_dir);
        break;
    case AT_SESSION:
        snprintf(real, sizeof real, "%s", f->outside);
        snprintf(link, sizeof link, "%s", s->dir);
        break;
    default: /* outputs@ -> outside, which holds web/secret.txt */
        snprintf(real, sizeof real, "%s", f->outside);
        mkpath(s->dir);
        snprintf(link, sizeof link, "%s/outputs", s->dir);
        break;
    }
    if (at == AT_OUTPUTS) snprintf(p, sizeof p, "%s/web", real);
    else snprintf(p, sizeof p, "%s/outputs/web", real);
    mkpath(p);
    strcat(p, "/secret.txt");
    put_file(p, "host secret");
    char parent[4600];
    snprintf(parent, sizeof parent, "%s", link);
    *strrchr(parent, '/') = '\0';
    mkpath(parent);
    assert_int_equal(symlink(f->outside, link), 0);
}

static void unplant(fx *f)
{
    nftw(f->outside, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    char b[300];
    snprintf(b, sizeof b, "%s", f->base);
    nftw(b, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(f->base, 0755);
}

static void regression_issue10_symlinked_folder_regenerate_writes_nothing_outside(void **state)
{
    fx *f = *state;
    for (int k = 0; k < 2 * (AT_OUTPUTS + 1); k++) {
        int at = k % (AT_OUTPUTS + 1);
        sb_beneath_use_openat2(k <= AT_OUTPUTS); /* then again with the per-component walk */
        sb_session s;
        session(f, &s);
        plant_link(f, &s, at);
        char *before = describe(f->outside);
        fake_job j;
        fake_init(&j, f, "regenerate", "{\"llm_config\": {\"provider\": \"openai\", \"api_key\": \"sk-leak\"}}");
        json_t *res = NULL;
        sw_err e;
        int rc = job_regenerate_run(&j.ctx, &res, &e);
        char *after = describe(f->outside);
        print_message("position %s: rc %d code %d\n", at_names[at], rc, rc ? (int)e.code : 0);
        assert_int_equal(rc, -1);
        assert_int_equal(e.code, SW_E_BACKEND);
        assert_false(e.retryable);
        assert_string_equal(after, before);
        free(before);
        free(after);
        json_decref(res);
        fake_free(&j);
        unplant(f);
    }
}

static void regression_issue10_symlinked_folder_snapshot_reads_nothing_outside(void **state)
{
    fx *f = *state;
    for (int at = AT_SANDBOX; at <= AT_OUTPUTS; at++) {
        sb_session s;
        session(f, &s);
        plant_link(f, &s, at);
        fake_job j;
        fake_init(&j, f, "snapshot", "{}");
        json_t *res = NULL;
        sw_err e;
        int rc = job_snapshot_run(&j.ctx, &res, &e);
        print_message("position %s: rc %d code %d\n", at_names[at], rc, rc ? (int)e.code : 0);
        assert_int_equal(rc, -1);
        assert_int_equal(e.code, SW_E_BACKEND); /* refused before any store is opened */
        assert_false(e.retryable);
        json_decref(res);
        fake_free(&j);
        unplant(f);
    }
}

/* The backend steps of a restore up to the swap; the first failure's rc. */
static int restore_steps(const sb_session *s, sw_err *e)
{
    sb_state st;
    if (s->ops->state(s, &st, e) != 0) return -1;
    sb_stage *g = s->ops->stage_begin(s, e);
    if (!g) return -1;
    int rc = s->ops->stage_fresh(g, e);
    if (rc == 0) rc = s->ops->stage_swap(g, e);
    s->ops->stage_end(g);
    return rc;
}

static void regression_issue10_symlinked_folder_restore_extracts_nothing_outside(void **state)
{
    fx *f = *state;
    for (int k = 0; k < 2 * (AT_OUTPUTS + 1); k++) {
        int at = k % (AT_OUTPUTS + 1);
        sb_beneath_use_openat2(k <= AT_OUTPUTS); /* then again with the per-component walk */
        sb_session s;
        session(f, &s);
        plant_link(f, &s, at);
        char *before = describe(f->outside);
        sw_err e;
        int rc = restore_steps(&s, &e);
        char *after = describe(f->outside);
        print_message("position %s: rc %d code %d\n", at_names[at], rc, rc ? (int)e.code : 0);
        assert_int_equal(rc, -1);
        assert_int_equal(e.code, SW_E_BACKEND);
        assert_false(e.retryable);
        assert_string_equal(after, before);
        free(before);
        free(after);
        unplant(f);
    }
    sb_beneath_use_openat2(true);
}

static pid_t spawn_sleeper(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        execl("/bin/sleep", "sleep", "60", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static bool alive(pid_t pid)
{
    return kill(pid, 0) == 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

static void web_session(const sb_session *s)
{
    char p[4600];
    snprintf(p, sizeof p, "%s/outputs/web", s->dir);
    mkpath(p);
    snprintf(p, sizeof p, "%s/outputs/web/package.json", s->dir);
    put_file(p, "{}");
}

static void wait_proc_gone(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    for (int i = 0; i < 250 && exists(path); i++) usleep(20000);
}

static void regression_issue10_forged_pid_file_never_signals_a_foreign_process(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    web_session(&s);
    set_str(&f->c.webapp_cmd, "/bin/sleep {port}");
    pid_t victim = spawn_sleeper();
    unsigned long long t;
    usleep(50000);
    assert_int_equal(sb_proc_start_ticks(victim, &t), 0);
    /* the sandbox writes a perfectly consistent record naming the victim */
    char p[4600], txt[64];
    snprintf(p, sizeof p, "%s/nextjs.pid", s.dir);
    snprintf(txt, sizeof txt, "%d\n", (int)victim);
    put_file(p, txt);
    snprintf(p, sizeof p, "%s/nextjs.pid.start", s.dir);
    snprintf(txt, sizeof txt, "%d %llu\n", (int)victim, t);
    put_file(p, txt);
    sb_webapp w = {0};
    sw_err e;
    assert_int_equal(s.ops->webapp_start(&s, 300, &w, &e), 0);
    assert_true(w.pid > 0);
    usleep(100000);
    assert_true(alive(victim));
    /* nextjs.pid is still written for Onyx */
    snprintf(p, sizeof p, "%s/nextjs.pid", s.dir);
    char *got = slurp(p);
    assert_int_equal(atoi(got), w.pid);
    free(got);
    /* the worker's own record still stops the server it started, even with nextjs.pid
     * pointing elsewhere again */
    snprintf(txt, sizeof txt, "%d\n", (int)victim);
    put_file(p, txt);
    sb_webapp w2 = {0};
    assert_int_equal(s.ops->webapp_start(&s, 301, &w2, &e), 0);
    wait_proc_gone(w.pid);
    snprintf(p, sizeof p, "/proc/%d", (int)w.pid);
    assert_false(exists(p));
    assert_true(alive(victim));
    s.ops->webapp_stop(&s, &w2);
    wait_proc_gone(w2.pid);
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
}

static void regression_issue10_a_record_never_signals_us_even_when_it_names_us(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    /* the worker's state folder is refused under SANDBOX_BASE_PATH */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/state", f->base);
    char *keep = xstrdup(f->c.state_dir);
    set_str(&f->c.state_dir, bad);
    sw_err e;
    assert_int_equal(sb_state_dir_open(&f->c, &e), -1);
    assert_int_equal(e.code, SW_E_BACKEND);
    assert_false(e.retryable);
    set_str(&f->c.state_dir, keep);
    free(keep);
    /* even a record in the worker's own folder that names this process is not signalled:
     * it leads no session of its own (and is us) */
    char st_dir[4096], rec[4600], txt[256];
    unsigned long long t;
    assert_int_equal(sb_state_dir(&f->c, st_dir, sizeof st_dir), 0);
    int fd = sb_state_dir_open(&f->c, &e);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sb_proc_start_ticks(getpid(), &t), 0);
    snprintf(rec, sizeof rec, "%s/webapp-%s", st_dir, SS);
    snprintf(txt, sizeof txt, "v1 %d %llu %s %s\n", (int)getpid(), t, SB_LC, SS);
    put_file(rec, txt);
    assert_int_equal(sb_webapp_stop_recorded(&s, &e), 0);
    /* nor one that names a sleeper but another session */
    pid_t victim = spawn_sleeper();
    usleep(50000);
    assert_int_equal(sb_proc_start_ticks(victim, &t), 0);
    snprintf(txt, sizeof txt, "v1 %d %llu %s %s\n", (int)victim, t, SB_LC, "00000000-0000-4000-8000-000000000000");
    put_file(rec, txt);
    assert_int_equal(sb_webapp_stop_recorded(&s, &e), 0);
    usleep(50000);
    assert_true(alive(victim));
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
}

static void webapp_missing_command_fails_after_the_gate_and_leaves_no_record(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    web_session(&s);
    char st_dir[4096], rec[4600], p[4600];
    assert_int_equal(sb_state_dir(&f->c, st_dir, sizeof st_dir), 0);
    snprintf(rec, sizeof rec, "%s/webapp-%s", st_dir, SS);
    snprintf(p, sizeof p, "%s/nextjs.pid", s.dir);
    /* the message is the one posix_spawnp gave before the gate, for a path and a bare name */
    const char *cmds[] = {"/nonexistent/dev-server {port}", "sw-no-such-dev-server {port}"};
    const char *msgs[] = {"spawn /nonexistent/dev-server: No such file or directory",
                          "spawn sw-no-such-dev-server: No such file or directory"};
    for (int i = 0; i < 2; i++) {
        set_str(&f->c.webapp_cmd, cmds[i]);
        sb_webapp w;
        sw_err e;
        assert_int_equal(s.ops->webapp_start(&s, 3010, &w, &e), -1);
        assert_int_equal(e.code, SW_E_BACKEND);
        assert_false(e.retryable);
        assert_string_equal(e.msg, msgs[i]);
        assert_false(exists(rec));
        assert_false(exists(p));
    }
}

/* The gate as sb_webapp_start starts it: this binary as `__devserver 3 ARGV...`, its end of
 * a socketpair at fd 3 (and nothing else above 2); *ours gets the other end. */
static pid_t gate_spawn(char *const *args, int *ours)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int theirs = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
    assert_true(theirs >= 0);
    close(sv[1]);
    char *argv[16] = {(char *)"test_sandbox", (char *)"__devserver", (char *)"3"};
    for (int i = 0; args[i] && i < 12; i++) argv[3 + i] = args[i];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, theirs, SB_WEBAPP_GATE_FD);
    posix_spawn_file_actions_addclosefrom_np(&fa, SB_WEBAPP_GATE_FD + 1);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(theirs);
    *ours = sv[0];
    return pid;
}

static int exit_status(pid_t pid)
{
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void webapp_gate_closed_before_the_go_byte_exits_without_exec(void **state)
{
    fx *f = *state;
    char marker[400], script[600];
    snprintf(marker, sizeof marker, "%s/ran", f->root);
    snprintf(script, sizeof script, "echo $$ > %s", marker);
    char *args[] = {(char *)"/bin/sh", (char *)"-c", script, NULL};
    int ours;
    pid_t pid = gate_spawn(args, &ours);
    usleep(100000);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), 0); /* waiting for its go byte */
    close(ours); /* as when the job process dies before its record */
    assert_int_equal(exit_status(pid), SB_WEBAPP_GATE_CLOSED);
    assert_false(exists(marker));
}

static void webapp_gate_execs_in_its_own_pid_on_the_go_byte_or_reports_the_errno(void **state)
{
    fx *f = *state;
    char marker[400], script[1000], noshebang[400];
    snprintf(marker, sizeof marker, "%s/ran", f->root);
    snprintf(script, sizeof script, "echo $$ > %s; ls /proc/self/fd | wc -l >> %s", marker, marker);
    /* a bare name found on PATH, as posix_spawnp finds it */
    char *args[] = {(char *)"sh", (char *)"-c", script, NULL};
    int ours, e = 0;
    pid_t pid = gate_spawn(args, &ours);
    unsigned long long t0, t1;
    assert_int_equal(sb_proc_start_ticks(pid, &t0), 0);
    assert_int_equal(send(ours, "g", 1, MSG_NOSIGNAL), 1);
    assert_int_equal(recv(ours, &e, sizeof e, 0), 0); /* EOF: the exec closed its end */
    for (int i = 0; i < 100 && !exists(marker); i++) usleep(20000);
    assert_int_equal(sb_proc_start_ticks(pid, &t1), 0);
    assert_int_equal(t1, t0); /* same process: the record written before still verifies */
    assert_int_equal(exit_status(pid), 0);
    char *got = slurp(marker);
    assert_non_null(got);
    assert_int_equal(atoi(got), pid);
    /* the gate's fd is not passed on: 0-2 and the one `ls` opens for /proc/self/fd */
    assert_int_equal(atoi(strchr(got, '\n') + 1), 4);
    free(got);
    close(ours);
    /* exec failures come back as the errno: missing, and a file without #! (no /bin/sh) */
    snprintf(noshebang, sizeof noshebang, "%s/noshebang", f->root);
    put_file(noshebang, "echo hi\n");
    chmod(noshebang, 0755);
    const char *cmds[] = {"/nonexistent/dev-server", "sw-no-such-dev-server", noshebang};
    const int want[] = {ENOENT, ENOENT, ENOEXEC};
    for (int i = 0; i < 3; i++) {
        char *bad[] = {(char *)cmds[i], NULL};
        pid = gate_spawn(bad, &ours);
        assert_int_equal(send(ours, "g", 1, MSG_NOSIGNAL), 1);
        assert_int_equal(recv(ours, &e, sizeof e, MSG_WAITALL), (ssize_t)sizeof e);
        assert_int_equal(e, want[i]);
        assert_int_equal(exit_status(pid), SB_WEBAPP_GATE_EXEC_FAILED);
        close(ours);
    }
}

/* A FIFO where a file is read would block the job forever (fopen waits for a writer). */
static void regression_issue10_a_fifo_as_template_or_skill_never_blocks_rendering(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    char p[600];
    snprintf(p, sizeof p, "%s/skills/alpha", f->base);
    mkpath(p);
    strcat(p, "/SKILL.md");
    assert_int_equal(mkfifo(p, 0644), 0);
    snprintf(p, sizeof p, "%s/skills", f->base);
    set_str(&f->c.skills_dir, p);
    sb_config c;
    sw_err e;
    assert_int_equal(sb_config_parse(NULL, &f->c, &c, &e), 0);
    char *agents, *oc;
    size_t alen, olen;
    alarm(20); /* the old code hangs here */
    assert_int_equal(sb_config_render(&s, &c, "/data", &agents, &alen, &oc, &olen, &e), 0);
    assert_non_null(strstr(agents, "- **alpha**: No description available."));
    free(agents);
    free(oc);
    snprintf(p, sizeof p, "%s/tmpl.fifo", f->root);
    assert_int_equal(mkfifo(p, 0644), 0);
    set_str(&f->c.agents_template, p);
    assert_int_equal(sb_config_render(&s, &c, "/data", &agents, &alen, &oc, &olen, &e), -1);
    assert_int_equal(e.code, SW_E_BACKEND);
    assert_false(e.retryable);
    alarm(0);
    sb_config_free(&c);
}

static void regression_issue10_nextjs_log_hardlink_or_symlink_is_never_written_through(void **state)
{
    fx *f = *state;
    sb_session s;
    session(f, &s);
    web_session(&s);
    set_str(&f->c.webapp_cmd, "/bin/echo server-output {port}");
    mkpath(f->outside);
    char victim[400], p[4600];
    snprintf(victim, sizeof victim, "%s/passwd", f->outside);
    put_file(victim, "root:x:0:0\n");
    for (int kind = 0; kind < 2; kind++) {
        snprintf(p, sizeof p, "%s/nextjs.log", s.dir);
        unlink(p);
        if (kind == 0) assert_int_equal(link(victim, p), 0);
        else assert_int_equal(symlink(victim, p), 0);
        sb_webapp w = {0};
        sw_err e;
        int rc = s.ops->webapp_start(&s, 300, &w, &e);
        print_message("%s: rc %d\n", kind ? "symlink" : "hardlink", rc);
        assert_int_equal(rc, 0);
        wait_proc_gone(w.pid);
        char *got = slurp(victim);
        assert_string_equal(got, "root:x:0:0\n");
        free(got);
        struct stat st;
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_nlink, 1);
        s.ops->webapp_stop(&s, &w);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "__devserver")) return sb_webapp_gate_main(argc - 1, argv + 1);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(session_path_is_base_sandbox_sessions_session_lowercased),
        T(session_init_refuses_bad_ids_relative_base_and_other_backends),
        T(files_target_must_be_absolute_without_dot_segments_or_controls),
        T(files_link_defaults_follow_demo_flag_and_substitute_sandbox_id),
        T(config_defaults_demo_on_and_tools_from_the_environment),
        T(config_disabled_tools_replace_the_default_and_empty_list_means_none),
        T(config_wrong_types_are_invalid_payload_without_the_value),
        T(config_render_gives_the_onyx_bytes_without_touching_the_session),
        T(regenerate_writes_files_link_agents_and_opencode_atomically),
        T(regenerate_uses_files_target_and_configured_template),
        T(regenerate_without_session_dir_is_workspace_missing),
        T(snapshot_of_missing_session_or_without_outputs),
        T(restore_refuses_a_snapshot_path_of_another_tenant_or_session),
        T(restore_on_dead_without_memo_does_nothing),
        T(job_table_runs_each_type_by_its_name),
        T(fresh_stage_swaps_into_a_new_session_and_unswap_removes_it),
        T(swap_exchanges_existing_attachments_and_unswap_brings_them_back),
        T(extract_of_garbage_is_unsafe_archive_and_leaves_no_stage),
        T(webapp_argv_splits_on_spaces_and_substitutes_port),
        T(webapp_env_drops_secrets_and_keeps_the_rest),
        T(proc_start_ticks_of_self_and_of_a_missing_pid),
        T(webapp_not_started_without_package_json),
        T(webapp_spawns_records_pid_and_replaces_the_previous_instance),
        T(webapp_missing_command_is_a_permanent_backend_error),
        T(regression_issue10_symlinked_folder_regenerate_writes_nothing_outside),
        T(regression_issue10_symlinked_folder_snapshot_reads_nothing_outside),
        T(regression_issue10_symlinked_folder_restore_extracts_nothing_outside),
        T(regression_issue10_forged_pid_file_never_signals_a_foreign_process),
        T(regression_issue10_a_record_never_signals_us_even_when_it_names_us),
        T(regression_issue10_nextjs_log_hardlink_or_symlink_is_never_written_through),
        T(regression_issue10_a_fifo_as_template_or_skill_never_blocks_rendering),
        T(webapp_missing_command_fails_after_the_gate_and_leaves_no_record),
        T(webapp_gate_closed_before_the_go_byte_exits_without_exec),
        T(webapp_gate_execs_in_its_own_pid_on_the_go_byte_or_reports_the_errno),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
