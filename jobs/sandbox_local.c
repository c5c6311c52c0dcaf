/* jobs/sandbox_local.c — the local sandbox backend: sessions are folders on this host.
 * Owns: the local layout (jobs/sandbox.h diagram), the staging folder of a restore and its
 * swap into place, the atomic writes of files@/AGENTS.md/opencode.json, and the session
 * handle and regenerate-args parsing every backend shares (sections below).
 * Does not own: archive bytes and tree walks (common/arc.h), the dev server (webapp.c),
 * ports and rows (the jobs call common/db.h).
 * Why staging + swap: a restore must never leave a half-extracted outputs/ where Onyx (or the
 * next job) would take it for a workspace, so everything lands in a sibling folder on the same
 * filesystem and is moved in with rename(2)/renameat2(RENAME_EXCHANGE) only when complete. */
#include "jobs/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fdio.h"
#include "common/xmalloc.h"

#define TEMPLATE_MAX_BYTES (1024 * 1024)  /* an AGENTS.md template larger than this is refused */

/* ------------------------------------------------------------------ shared helpers */

int sb_errno(sw_err *err, int e, const char *op, const char *path)
{
    char buf[128];
    const char *s = strerror_r(e, buf, sizeof buf); /* GNU variant returns the text */
    return sw_errf(err, SW_E_BACKEND, true, "%s %s: %s", op, path, s);
}

int sb_session_init(sb_session *s, const cfg *c, const job_ctx *ctx, const char *job_id,
                    const char *sandbox_id, const char *session_id, sw_err *err)
{
    memset(s, 0, sizeof *s);
    s->cfg = c;
    s->ctx = ctx;
    if (!id_valid_job(job_id)) return sw_errc(err, SW_E_INVALID_PAYLOAD, "invalid job id");
    snprintf(s->job_id, sizeof s->job_id, "%s", job_id);
    if (!id_uuid_lower(sandbox_id, s->sandbox_id))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "sandbox_id: expected a UUID");
    if (!id_uuid_lower(session_id, s->session_id))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "session_id: expected a UUID");
    const char *backend = c->sandbox_backend ? c->sandbox_backend : "local";
    if (strcmp(backend, "local") != 0)
        return sw_errf(err, SW_E_BACKEND, false, "sandbox backend '%s' is not built in", backend);
    s->ops = &sb_local_ops;
    return s->ops->locate(s, err);
}

bool sb_cancelled(const sb_session *s)
{
    return s->ctx && job_cancelled(s->ctx);
}

/* ------------------------------------------------------------------ regenerate args */

static int opt_string(const json_t *o, const char *key, const char *field, const char **out,
                      sw_err *err)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "%s: expected a string or null", field);
    *out = json_string_value(v);
    return 0;
}

static int opt_bool(const json_t *o, const char *key, bool *out, sw_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.%s: expected a boolean or null", key);
    *out = json_is_true(v);
    return 0;
}

static int parse_llm(const json_t *args, onyx_llm *llm, sw_err *err)
{
    json_t *l = json_object_get(args, "llm_config");
    if (!l || json_is_null(l)) return 0;
    if (!json_is_object(l))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.llm_config: expected an object or null");
    if (opt_string(l, "provider", "args.llm_config.provider", &llm->provider, err) ||
        opt_string(l, "model_name", "args.llm_config.model_name", &llm->model_name, err) ||
        opt_string(l, "api_key", "args.llm_config.api_key", &llm->api_key, err) ||
        opt_string(l, "api_base", "args.llm_config.api_base", &llm->api_base, err))
        return -1;
    return 0;
}

static int parse_tools(const json_t *args, const cfg *c, sb_config *out, sw_err *err)
{
    json_t *t = json_object_get(args, "disabled_tools");
    if (!t || json_is_null(t)) {
        out->disabled_tools = onyx_split_tools(c->opencode_disabled_tools);
        return 0;
    }
    if (!json_is_array(t))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.disabled_tools: expected a list or null");
    size_t n = json_array_size(t), k = 0;
    char **v = xcalloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(t, i);
        if (!json_is_string(e)) {
            onyx_strv_free(v);
            return sw_errc(err, SW_E_INVALID_PAYLOAD,
                           "args.disabled_tools[%zu]: expected a string", i);
        }
        if (json_string_length(e) > 0) v[k++] = xstrdup(json_string_value(e));
    }
    out->disabled_tools = v;
    return 0;
}

int sb_config_parse(const json_t *args, const cfg *c, sb_config *out, sw_err *err)
{
    memset(out, 0, sizeof *out);
    out->use_demo_data = true; /* Onyx: build_session.demo_data_enabled defaults to true */
    if (args && !json_is_null(args) && !json_is_object(args))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "args: expected an object");
    json_t *port = json_object_get(args, "nextjs_port");
    if (port && !json_is_null(port)) {
        if (!json_is_integer(port) || json_integer_value(port) < 0 ||
            json_integer_value(port) > 65535)
            return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.nextjs_port: expected 0..65535 or null");
        out->nextjs_port = (int)json_integer_value(port);
    }
    if (parse_llm(args, &out->llm, err) || opt_bool(args, "use_demo_data", &out->use_demo_data, err) ||
        opt_bool(args, "include_org_info", &out->include_org_info, err) ||
        opt_string(args, "user_name", "args.user_name", &out->user_name, err) ||
        opt_string(args, "user_role", "args.user_role", &out->user_role, err) ||
        opt_string(args, "files_target", "args.files_target", &out->files_target, err))
        return -1;
    if (out->files_target && sb_files_target_check(out->files_target, err) != 0) return -1;
    return parse_tools(args, c, out, err);
}

void sb_config_free(sb_config *sc)
{
    if (!sc) return;
    onyx_strv_free(sc->disabled_tools);
    sc->disabled_tools = NULL;
}

int sb_files_target_check(const char *t, sw_err *err)
{
    size_t n = strlen(t);
    if (t[0] != '/' || n >= SB_PATH_MAX)
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.files_target: expected an absolute path");
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.files_target: control character");
    for (const char *seg = t + 1; seg && *seg;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.files_target: '.' or '..' segment");
        seg = end ? end + 1 : NULL;
    }
    return 0;
}

int sb_local_files_default(const cfg *c, const char *sandbox_id, bool demo, char *out, size_t n,
                           sw_err *err)
{
    const char *base = c->sandbox_base_path;
    char *v;
    if (demo)
        v = c->demo_data_path && *c->demo_data_path ? xstrdup(c->demo_data_path)
                                                     : xasprintf("%s/demo_data", base);
    else if (c->user_files_path && *c->user_files_path)
        v = onyx_replace_all(c->user_files_path, "{sandbox_id}", sandbox_id);
    else
        v = xasprintf("%s/%s/files", base, sandbox_id);
    int rc = 0;
    if (strlen(v) >= n) rc = sw_errf(err, SW_E_BACKEND, false, "files link target too long");
    else memcpy(out, v, strlen(v) + 1);
    free(v);
    return rc;
}

/* ------------------------------------------------------------------ atomic writes */

static void tmp_name(const char *name, char *out, size_t n)
{
    unsigned long long r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = (unsigned long long)getpid() ^ (unsigned long long)&r;
    snprintf(out, n, ".%s.swtmp-%016llx", name, r);
}

int sb_write_atomic(int dirfd, const char *dir, const char *name, const char *data, size_t len,
                    mode_t mode, sw_err *err)
{
    char tmp[300], path[SB_PATH_MAX + 300];
    tmp_name(name, tmp, sizeof tmp);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) return sb_errno(err, errno, "create", path);
    int rc = -1;
    if (fd_write_all(fd, data, len) != 0 || fchmod(fd, mode) != 0 || fsync(fd) != 0) {
        sb_errno(err, errno, "write", path);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        sb_errno(err, errno, "close", path);
        goto out;
    }
    fd = -1;
    if (renameat(dirfd, tmp, dirfd, name) != 0) {
        sb_errno(err, errno, "rename into", path);
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) close(fd);
    if (rc != 0) unlinkat(dirfd, tmp, 0);
    return rc;
}

int sb_symlink_atomic(int dirfd, const char *dir, const char *name, const char *target,
                      sw_err *err)
{
    char tmp[300], path[SB_PATH_MAX + 300];
    tmp_name(name, tmp, sizeof tmp);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (symlinkat(target, dirfd, tmp) != 0) return sb_errno(err, errno, "symlink", path);
    if (renameat(dirfd, tmp, dirfd, name) != 0) {
        int e = errno;
        unlinkat(dirfd, tmp, 0);
        return sb_errno(err, e, "rename into", path);
    }
    return 0;
}

/* ------------------------------------------------------------------ layout */

static int local_locate(sb_session *s, sw_err *err)
{
    const char *base = s->cfg->sandbox_base_path;
    if (!base || base[0] != '/')
        return sw_errf(err, SW_E_BACKEND, false, "SANDBOX_BASE_PATH must be an absolute path");
    int n1 = snprintf(s->sessions_dir, sizeof s->sessions_dir, "%s/%s/sessions", base, s->sandbox_id);
    int n2 = snprintf(s->dir, sizeof s->dir, "%s/%s", s->sessions_dir, s->session_id);
    if (n1 < 0 || n2 < 0 || (size_t)n2 >= sizeof s->dir - 256)
        return sw_errf(err, SW_E_BACKEND, false, "SANDBOX_BASE_PATH too long");
    return 0;
}

static int local_state(const sb_session *s, sb_state *out, sw_err *err)
{
    struct stat st;
    char p[SB_PATH_MAX + 16];
    if (lstat(s->dir, &st) != 0) {
        if (errno != ENOENT && errno != ENOTDIR) return sb_errno(err, errno, "stat", s->dir);
        *out = SB_NO_SESSION;
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        *out = SB_NO_SESSION;
        return 0;
    }
    snprintf(p, sizeof p, "%s/outputs", s->dir);
    if (lstat(p, &st) != 0) {
        if (errno != ENOENT) return sb_errno(err, errno, "stat", p);
        *out = SB_NO_OUTPUTS;
        return 0;
    }
    *out = S_ISDIR(st.st_mode) ? SB_WORKSPACE : SB_NO_OUTPUTS;
    return 0;
}

static int local_archive(const sb_session *s, arc_sink_fn sink, void *arg, arc_stats *st,
                         sw_err *err)
{
    return arc_write_session(s->dir, s->cfg->gzip_level, sink, arg, st, err);
}

/* mkdir -p for a trusted path (the configured base plus validated ids). */
static int mkdirs(const char *path, mode_t mode, sw_err *err)
{
    char p[SB_PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != '\0') continue;
        char c = *q;
        *q = '\0';
        if (mkdir(p, mode) != 0 && errno != EEXIST) return sb_errno(err, errno, "mkdir", p);
        *q = c;
        if (!c) break;
    }
    return 0;
}

/* ------------------------------------------------------------------ config files */

static char *read_template(const char *path, sw_err *err)
{
    FILE *f = fopen(path, "rbe");
    if (!f) {
        sb_errno(err, errno, "open AGENTS.md template", path);
        err->retryable = false;
        return NULL;
    }
    char *buf = xmalloc(TEMPLATE_MAX_BYTES + 1);
    size_t n = fread(buf, 1, TEMPLATE_MAX_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > TEMPLATE_MAX_BYTES) {
        free(buf);
        sw_errf(err, SW_E_BACKEND, false, "AGENTS.md template %s: unreadable or over 1 MiB", path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static int local_write_config(const sb_session *s, const sb_config *c, json_t *written,
                              sw_err *err)
{
    char target[SB_PATH_MAX];
    char *tmpl = NULL, *agents = NULL, *opencode = NULL;
    int rc = -1;
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s", s->dir);
        return sb_errno(err, errno, "open", s->dir);
    }
    if (c->files_target) snprintf(target, sizeof target, "%s", c->files_target);
    else if (sb_local_files_default(s->cfg, s->sandbox_id, c->use_demo_data, target,
                                    sizeof target, err) != 0)
        goto out;
    if (sb_symlink_atomic(dfd, s->dir, "files", target, err) != 0) goto out;
    if (written) json_array_append_new(written, json_string("files"));

    if (s->cfg->agents_template && *s->cfg->agents_template &&
        !(tmpl = read_template(s->cfg->agents_template, err)))
        goto out;
    onyx_agents_in in = {
        .llm = &c->llm, .nextjs_port = c->nextjs_port, .use_demo_data = c->use_demo_data,
        .user_name = c->user_name, .user_role = c->user_role,
        .disabled_tools = (const char *const *)c->disabled_tools,
        .include_org_info = c->include_org_info, .skills_dir = s->cfg->skills_dir,
        .files_path = target,
    };
    if (!(agents = onyx_agents_md(tmpl, &in, err))) goto out;
    if (sb_write_atomic(dfd, s->dir, "AGENTS.md", agents, strlen(agents), 0644, err) != 0) goto out;
    if (written) json_array_append_new(written, json_string("AGENTS.md"));

    if (!(opencode = onyx_opencode_json(&c->llm, (const char *const *)c->disabled_tools, err)))
        goto out;
    if (sb_write_atomic(dfd, s->dir, "opencode.json", opencode, strlen(opencode), 0644, err) != 0)
        goto out;
    if (written) json_array_append_new(written, json_string("opencode.json"));
    rc = 0;
out:
    free(tmpl);
    free(agents);
    free(opencode);
    close(dfd);
    return rc;
}

/* ------------------------------------------------------------------ staging and swap */

enum { SWAP_NONE, SWAP_MOVED, SWAP_EXCHANGED };

struct sb_stage {
    const sb_session *s;
    char path[SB_PATH_MAX + 256]; /* {sessions_dir}/.staging-{session}-{job} */
    bool created_session;        /* stage_swap made the session directory */
    int swapped[2];              /* SWAP_* for attachments, outputs */
};

static const char *const swap_names[2] = {"attachments", "outputs"}; /* outputs last: it marks the workspace */

/* Remove staging folders of this session left by a crashed attempt (the session lock
 * guarantees no live job of the session owns one). */
static int remove_leftovers(const sb_session *s, sw_err *err)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, ".staging-%s-", s->session_id);
    DIR *d = opendir(s->sessions_dir);
    if (!d) return errno == ENOENT ? 0 : sb_errno(err, errno, "opendir", s->sessions_dir);
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0) continue;
        char p[SB_PATH_MAX + 256];
        snprintf(p, sizeof p, "%s/%s", s->sessions_dir, de->d_name);
        rc = arc_rmtree(p, err);
    }
    closedir(d);
    return rc;
}

static sb_stage *local_stage_begin(const sb_session *s, sw_err *err)
{
    if (mkdirs(s->sessions_dir, 0755, err) != 0 || remove_leftovers(s, err) != 0) return NULL;
    sb_stage *g = xcalloc(1, sizeof *g);
    g->s = s;
    snprintf(g->path, sizeof g->path, "%s/.staging-%s-%s", s->sessions_dir, s->session_id, s->job_id);
    if (mkdir(g->path, 0700) != 0) {
        sb_errno(err, errno, "mkdir", g->path);
        free(g);
        return NULL;
    }
    return g;
}

/* outputs/ and attachments/ of the stage must be real directories (an archive may hold
 * neither, or only outputs/); anything else at those names is refused. */
static int stage_dirs(sb_stage *g, sw_code code, sw_err *err)
{
    for (int i = 0; i < 2; i++) {
        char p[SB_PATH_MAX + 300];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", g->path, swap_names[i]);
        if (lstat(p, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                return sw_errc(err, code, "member %s/ is not a directory", swap_names[i]);
            continue;
        }
        if (errno != ENOENT || mkdir(p, 0755) != 0) return sb_errno(err, errno, "mkdir", p);
    }
    return 0;
}

static int local_stage_extract(sb_stage *g, arc_source_fn src, void *arg, arc_stats *st,
                               sw_err *err)
{
    arc_limits lim = {g->s->cfg->max_restore_bytes, g->s->cfg->max_restore_entries};
    if (arc_extract(src, arg, g->path, &lim, st, err) != 0) return -1;
    return stage_dirs(g, SW_E_UNSAFE_ARCHIVE, err);
}

static int local_stage_fresh(sb_stage *g, sw_err *err)
{
    const char *tmpl = g->s->cfg->outputs_template;
    if (tmpl && *tmpl) {
        char p[SB_PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/outputs", g->path);
        if (arc_copytree(tmpl, p, err) != 0) return -1;
    }
    return stage_dirs(g, SW_E_BACKEND, err);
}

/* Move stage/NAME to session/NAME: a plain rename when the session has none, else an
 * exchange (the old one lands in the stage and goes away with it, or comes back on undo). */
static int swap_one(int gfd, int sfd, const char *name, int *how, const char *spath, sw_err *err)
{
    struct stat st;
    if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) return sb_errno(err, errno, "stat in", spath);
        if (renameat(gfd, name, sfd, name) != 0) return sb_errno(err, errno, "rename into", spath);
        *how = SWAP_MOVED;
        return 0;
    }
    if (renameat2(gfd, name, sfd, name, RENAME_EXCHANGE) != 0)
        return sb_errno(err, errno, "exchange into", spath);
    *how = SWAP_EXCHANGED;
    return 0;
}

static int unswap_one(int gfd, int sfd, const char *name, int *how, const char *spath, sw_err *err)
{
    int rc = 0;
    if (*how == SWAP_MOVED && renameat(sfd, name, gfd, name) != 0)
        rc = sb_errno(err, errno, "move back out of", spath);
    if (*how == SWAP_EXCHANGED && renameat2(gfd, name, sfd, name, RENAME_EXCHANGE) != 0)
        rc = sb_errno(err, errno, "exchange back in", spath);
    if (rc == 0) *how = SWAP_NONE;
    return rc;
}

static int open_pair(sb_stage *g, int *gfd, int *sfd, sw_err *err)
{
    *gfd = open(g->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (*gfd < 0) return sb_errno(err, errno, "open", g->path);
    *sfd = open(g->s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (*sfd < 0) {
        int e = errno;
        close(*gfd);
        return sb_errno(err, e, "open", g->s->dir);
    }
    return 0;
}

static int local_stage_swap(sb_stage *g, sw_err *err)
{
    const char *dir = g->s->dir;
    if (mkdir(dir, 0755) == 0) g->created_session = true;
    else if (errno != EEXIST) return sb_errno(err, errno, "mkdir", dir);
    int gfd, sfd;
    if (open_pair(g, &gfd, &sfd, err) != 0) return -1;
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++)
        rc = swap_one(gfd, sfd, swap_names[i], &g->swapped[i], dir, err);
    if (rc != 0) {
        sw_err e2;
        for (int i = 1; i >= 0; i--) unswap_one(gfd, sfd, swap_names[i], &g->swapped[i], dir, &e2);
    } else if (fsync(sfd) != 0) {
        rc = sb_errno(err, errno, "fsync", dir);
    }
    close(gfd);
    close(sfd);
    if (rc != 0 && g->created_session && rmdir(dir) == 0) g->created_session = false;
    return rc;
}

/* After a swap the job failed later: put back what was there. A session directory this job
 * created goes away entirely (config files and the log written since included). */
static int local_stage_unswap(sb_stage *g, sw_err *err)
{
    int gfd, sfd;
    if (open_pair(g, &gfd, &sfd, err) != 0) return -1;
    int rc = 0;
    for (int i = 1; i >= 0; i--)
        if (unswap_one(gfd, sfd, swap_names[i], &g->swapped[i], g->s->dir, err) != 0) rc = -1;
    close(gfd);
    close(sfd);
    if (rc == 0 && g->created_session) {
        rc = arc_rmtree(g->s->dir, err);
        if (rc == 0) g->created_session = false;
    }
    return rc;
}

static void local_stage_end(sb_stage *g)
{
    if (!g) return;
    sw_err e;
    arc_rmtree(g->path, &e);
    free(g);
}

static int local_webapp_start(const sb_session *s, int port, sb_webapp *out, sw_err *err)
{
    return sb_webapp_start(s, port, out, err);
}

const sb_ops sb_local_ops = {
    .name = "local",
    .locate = local_locate,
    .state = local_state,
    .archive = local_archive,
    .stage_begin = local_stage_begin,
    .stage_extract = local_stage_extract,
    .stage_fresh = local_stage_fresh,
    .stage_swap = local_stage_swap,
    .stage_unswap = local_stage_unswap,
    .stage_end = local_stage_end,
    .write_config = local_write_config,
    .webapp_start = local_webapp_start,
    .webapp_stop = sb_webapp_stop,
};
