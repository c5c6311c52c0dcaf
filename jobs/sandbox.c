/* jobs/sandbox.c — what every sandbox backend shares (jobs/sandbox.h "sandbox.c").
 * Owns: the session handle and the table of backends SANDBOX_BACKEND chooses from, the
 * regenerate args (sb_config), rendering AGENTS.md/opencode.json into memory, atomic writes
 * and symlink swaps relative to a directory fd, errno mapping, cancellation.
 * Also: opening a path beneath a directory without following symlinks, and the worker's own
 * state folder (where the records of what it started live, out of every sandbox's reach).
 * Does not own: where a session lives or how bytes reach it (sandbox_local.c, and the
 * kubernetes backend, which sends the rendered bytes to its pod on stdin), nor the bytes'
 * format (jobs/onyx.h).
 * Why apart: the kubernetes backend must produce exactly what the local one does, so both
 * render through one function and parse the args once. */
#include "jobs/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

/* ------------------------------------------------------------------ backends */

static const sb_ops *local_get(void)
{
    return &sb_local_ops;
}

/* SANDBOX_BACKEND name -> ops table. A name not listed fails a job with a permanent
 * backend_error ("not built in"), never at link time. */
static const struct {
    const char *name;
    const sb_ops *(*get)(void);
} backends[] = {
    {"local", local_get},
    {"kubernetes", sb_k8s_ops_get},   /* jobs/sandbox_k8s.c */
};

static const sb_ops *backend_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (strcmp(backends[i].name, name) == 0) return backends[i].get();
    return NULL;
}

const sb_ops *sb_backend_ops(const cfg *c, sw_err *err)
{
    const char *backend = c->sandbox_backend && *c->sandbox_backend ? c->sandbox_backend : "local";
    const sb_ops *ops = backend_lookup(backend);
    if (!ops) sw_errf(err, SW_E_BACKEND, false, "sandbox backend '%s' is not built in", backend);
    return ops;
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
    const char *backend = c->sandbox_backend && *c->sandbox_backend ? c->sandbox_backend : "local";
    const sb_ops *ops = backend_lookup(backend);
    if (!ops)
        return sw_errf(err, SW_E_BACKEND, false, "sandbox backend '%s' is not built in", backend);
    s->ops = ops;
    if (s->ops->locate(s, err) != 0) {
        sb_session_close(s); /* what locate kept before failing (the k8s pod handle) */
        return -1;
    }
    return 0;
}

void sb_session_close(sb_session *s)
{
    if (!s || !s->ops) return;
    if (s->ops->release) s->ops->release(s);
    s->backend_priv = NULL;
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

/* ------------------------------------------------------------------ config bytes */

/* A FIFO or device at the configured path would block or feed us forever: regular files only. */
static char *read_template(const char *path, sw_err *err)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        if (fd < 0) sb_errno(err, errno, "open AGENTS.md template", path);
        else sw_errf(err, SW_E_BACKEND, false, "AGENTS.md template %s: not a regular file", path);
        err->retryable = false;
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
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

int sb_files_target(const sb_session *s, const sb_config *c, char *out, size_t n, sw_err *err)
{
    if (!c->files_target) return s->ops->files_default(s, c->use_demo_data, out, n, err);
    if (strlen(c->files_target) >= n)
        return sw_errf(err, SW_E_BACKEND, false, "files link target too long");
    memcpy(out, c->files_target, strlen(c->files_target) + 1);
    return 0;
}

int sb_config_render(const sb_session *s, const sb_config *c, const char *files_target,
                     char **agents, size_t *agents_len, char **opencode, size_t *opencode_len,
                     sw_err *err)
{
    char *tmpl = NULL;
    int rc = -1;
    *agents = *opencode = NULL;
    if (s->cfg->agents_template && *s->cfg->agents_template &&
        !(tmpl = read_template(s->cfg->agents_template, err)))
        goto out;
    onyx_agents_in in = {
        .llm = &c->llm, .nextjs_port = c->nextjs_port, .use_demo_data = c->use_demo_data,
        .user_name = c->user_name, .user_role = c->user_role,
        .disabled_tools = (const char *const *)c->disabled_tools,
        .include_org_info = c->include_org_info, .skills_dir = s->cfg->skills_dir,
        .files_path = files_target,
    };
    if (!(*agents = onyx_agents_md(tmpl, &in, err))) goto out;
    if (!(*opencode = onyx_opencode_json(&c->llm, (const char *const *)c->disabled_tools, err)))
        goto out;
    *agents_len = strlen(*agents);
    *opencode_len = strlen(*opencode);
    rc = 0;
out:
    free(tmpl);
    if (rc != 0) {
        free(*agents);
        free(*opencode);
        *agents = *opencode = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------ beneath a directory */

static atomic_int openat2_state = 0; /* 0 = untried, 1 = works, -1 = the kernel lacks it */

void sb_beneath_use_openat2(bool on)
{
    atomic_store(&openat2_state, on ? 0 : -1);
}

/* One component at a time with O_NOFOLLOW: what openat2 does in one call. */
static int walk_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
    char buf[SB_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", rel) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int cur = dirfd;
    char *save = NULL, *comp = strtok_r(buf, "/", &save);
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        int fd = next ? openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                      : openat(cur, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
        int e = errno;
        if (cur != dirfd) close(cur);
        if (fd < 0) {
            errno = e;
            return -1;
        }
        cur = fd;
        comp = next;
    }
    return cur;
}

int sb_open_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
    if (!*rel || rel[0] == '/') {
        errno = EINVAL;
        return -1;
    }
    for (const char *c = rel; c && *c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL)
        if (c[0] == '.' && (c[1] == '/' || c[1] == '\0' || (c[1] == '.' && (c[2] == '/' || c[2] == '\0')))) {
            errno = EXDEV; /* "." and ".." are never part of a layout path */
            return -1;
        }
    if (atomic_load(&openat2_state) >= 0) {
        struct open_how how = {
            .flags = (unsigned long long)(flags | O_NOFOLLOW | O_CLOEXEC),
            .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
        if (fd >= 0) {
            atomic_store(&openat2_state, 1);
            return (int)fd;
        }
        /* ENOSYS: an old kernel; EPERM: a seccomp filter that does not know the call */
        if ((errno != ENOSYS && errno != EPERM) || atomic_load(&openat2_state) == 1) return -1;
        atomic_store(&openat2_state, -1);
    }
    return walk_beneath(dirfd, rel, flags, mode);
}

/* ------------------------------------------------------------------ the worker's state folder */

int sb_state_dir(const cfg *c, char *out, size_t n)
{
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    int k;
    if (c->state_dir && *c->state_dir) k = snprintf(out, n, "%s", c->state_dir);
    else if (xdg && xdg[0] == '/') k = snprintf(out, n, "%s/snapworker/state", xdg);
    else if (home && home[0] == '/') k = snprintf(out, n, "%s/.local/share/snapworker/state", home);
    else k = snprintf(out, n, "/var/tmp/snapworker/state");
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

/* 'inner' is 'outer' or lies below it (both made canonical when they exist). */
static bool path_within(const char *inner, const char *outer)
{
    char a[PATH_MAX], b[PATH_MAX];
    if (!realpath(inner, a)) snprintf(a, sizeof a, "%s", inner);
    if (!realpath(outer, b)) snprintf(b, sizeof b, "%s", outer);
    size_t lb = strlen(b);
    while (lb > 1 && b[lb - 1] == '/') b[--lb] = '\0';
    return strncmp(a, b, lb) == 0 && (a[lb] == '\0' || a[lb] == '/' || lb == 1);
}

int sb_state_dir_open(const cfg *c, sw_err *err)
{
    char dir[SB_PATH_MAX];
    if (sb_state_dir(c, dir, sizeof dir) != 0 || dir[0] != '/')
        return sw_errf(err, SW_E_BACKEND, false, "SNAPWORKER_STATE_DIR must be an absolute path");
    for (char *q = dir + 1;; q++) { /* mkdir -p; the folders we make are ours alone */
        if (*q != '/' && *q != '\0') continue;
        char ch = *q;
        *q = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) return sb_errno(err, errno, "mkdir", dir);
        *q = ch;
        if (!ch) break;
    }
    if (c->sandbox_base_path && *c->sandbox_base_path && path_within(dir, c->sandbox_base_path))
        return sw_errf(err, SW_E_BACKEND, false,
                       "SNAPWORKER_STATE_DIR %s lies under SANDBOX_BASE_PATH, where sandboxes write", dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return sb_errno(err, e, "open", dir);
    }
    if (st.st_uid != geteuid()) {
        close(fd);
        return sw_errf(err, SW_E_BACKEND, false, "SNAPWORKER_STATE_DIR %s is not owned by this user", dir);
    }
    if ((st.st_mode & 077) != 0 && fchmod(fd, 0700) != 0) {
        int e = errno;
        close(fd);
        return sb_errno(err, e, "chmod 0700", dir);
    }
    return fd;
}
