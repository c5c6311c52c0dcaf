/* jobs/sandbox_local.c — the local sandbox backend (sb_local_ops): sessions are folders on
 * this host. Owns: the local layout (jobs/sandbox.h diagram), the default `files` targets,
 * the staging folder of a restore and its swap into place, and where files@/AGENTS.md/
 * opencode.json land. Does not own: what every backend shares (sandbox.c: args, rendering,
 * atomic writes), archive bytes and tree walks (common/arc.h), the dev server (webapp.c),
 * ports and rows (the jobs call common/db.h).
 * Why staging + swap: a restore must never leave a half-extracted outputs/ where Onyx (or the
 * next job) would take it for a workspace, so everything lands in a sibling folder on the same
 * filesystem and is moved in with rename(2)/renameat2(RENAME_EXCHANGE) only when complete.
 * Why directory fds: everything below SANDBOX_BASE_PATH may have been written by a sandbox.
 * Each folder of the layout ({sandbox_id}, sessions, {session_id}, outputs, attachments) is
 * opened from the base without following a symlink (sb_open_beneath), and all work happens
 * relative to those fds, so a planted link never leads a job outside (docs/jobs.md "What a
 * hostile sandbox cannot do"). The base itself is the operator's and may be a link. */
#include "jobs/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fdio.h"
#include "common/xmalloc.h"

/* ------------------------------------------------------------------ files link */

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

/* ------------------------------------------------------------------ layout */

enum { LV_SESSIONS = 2, LV_SESSION = 3 }; /* {sandbox}/sessions, {sandbox}/sessions/{session} */

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

/* mkdir -p for a trusted path (the configured base). */
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

static int refuse_link(sw_err *err, const char *path)
{
    return sw_errf(err, SW_E_BACKEND, false,
                   "refusing %s: a symbolic link where the sandbox layout has a folder", path);
}

/* An open below the base failed with 'e': name a symlink on the way (a permanent refusal),
 * else 1 for "missing" (ENOENT, or a non-folder when not creating), else -1. */
static int below_base_error(const sb_session *s, int base, int lv, int e, bool create, sw_err *err)
{
    const char *comp[3] = {s->sandbox_id, "sessions", s->session_id};
    char rel[256] = "", path[SB_PATH_MAX + 300];
    for (int i = 0; i < lv; i++) {
        struct stat st;
        size_t len = strlen(rel);
        snprintf(rel + len, sizeof rel - len, "%s%s", i ? "/" : "", comp[i]);
        snprintf(path, sizeof path, "%s/%s", s->cfg->sandbox_base_path, rel);
        if (fstatat(base, rel, &st, AT_SYMLINK_NOFOLLOW) != 0) break;
        if (S_ISLNK(st.st_mode)) return refuse_link(err, path);
        if (!S_ISDIR(st.st_mode)) {
            if (!create) return 1;
            return sw_errf(err, SW_E_BACKEND, false, "%s is not a folder", path);
        }
    }
    if (e == ENOENT && !create) return 1;
    if (e == ELOOP || e == EXDEV) return refuse_link(err, path); /* replaced meanwhile */
    return sb_errno(err, e, "open", path);
}

/* Open level 'lv' of the session's layout from the base, following no symlink below it (and
 * with 'create', making the missing folders 0755 on the way). 0 with *out, 1 when missing
 * (never with 'create'), -1 with err. */
static int local_open(const sb_session *s, int lv, bool create, int *out, sw_err *err)
{
    const char *base_path = s->cfg->sandbox_base_path;
    const char *comp[3] = {s->sandbox_id, "sessions", s->session_id};
    *out = -1;
    int base = open(base_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (base < 0 && errno == ENOENT && create) {
        if (mkdirs(base_path, 0755, err) != 0) return -1;
        base = open(base_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (base < 0) return errno == ENOENT ? 1 : sb_errno(err, errno, "open", base_path);
    int rc = 0, fd = -1;
    if (!create) {
        char rel[256];
        snprintf(rel, sizeof rel, "%s/sessions/%s", s->sandbox_id, s->session_id);
        if (lv == LV_SESSIONS) rel[strlen(s->sandbox_id) + strlen("/sessions")] = '\0';
        fd = sb_open_beneath(base, rel, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0) rc = below_base_error(s, base, lv, errno, false, err);
    } else {
        int cur = base;
        for (int i = 0; i < lv && rc == 0; i++) {
            if (mkdirat(cur, comp[i], 0755) != 0 && errno != EEXIST) {
                rc = sb_errno(err, errno, "mkdir in", i ? s->sessions_dir : base_path);
                break;
            }
            int nfd = sb_open_beneath(cur, comp[i], O_RDONLY | O_DIRECTORY, 0);
            if (nfd < 0) rc = below_base_error(s, base, lv, errno, true, err);
            if (cur != base) close(cur);
            cur = nfd;
        }
        fd = rc == 0 ? cur : -1;
        if (rc != 0 && cur >= 0 && cur != base) close(cur);
    }
    close(base);
    if (rc == 0) *out = fd;
    return rc;
}

/* outputs/ and attachments/ of a session: a symlink there is refused like one above. */
static int local_state(const sb_session *s, sb_state *out, sw_err *err)
{
    int sfd;
    int r = local_open(s, LV_SESSION, false, &sfd, err);
    if (r < 0) return -1;
    if (r == 1) {
        *out = SB_NO_SESSION;
        return 0;
    }
    static const char *const names[] = {"attachments", "outputs"};
    int rc = 0;
    *out = SB_NO_OUTPUTS;
    for (int i = 0; i < 2 && rc == 0; i++) {
        struct stat st;
        char p[SB_PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/%s", s->dir, names[i]);
        if (fstatat(sfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) rc = sb_errno(err, errno, "stat", p);
            continue;
        }
        if (S_ISLNK(st.st_mode)) rc = refuse_link(err, p);
        else if (i == 1 && S_ISDIR(st.st_mode)) *out = SB_WORKSPACE;
    }
    close(sfd);
    return rc;
}

static int local_archive(const sb_session *s, arc_sink_fn sink, void *arg, arc_stats *st,
                         sw_err *err)
{
    int sfd;
    int r = local_open(s, LV_SESSION, false, &sfd, err);
    if (r == 1) return sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s", s->dir);
    if (r < 0) return -1;
    int rc = arc_write_session_ex(sfd, s->dir, s->cfg->gzip_level, s->exclude, s->live, sink,
                                  arg, st, err);
    close(sfd);
    return rc;
}

/* ------------------------------------------------------------------ config files */

static int local_files_default(const sb_session *s, bool demo, char *out, size_t n, sw_err *err)
{
    return sb_local_files_default(s->cfg, s->sandbox_id, demo, out, n, err);
}

/* The session folder for writing config: missing is workspace_missing. */
static int open_session(const sb_session *s, int *sfd, sw_err *err)
{
    int r = local_open(s, LV_SESSION, false, sfd, err);
    if (r == 1) return sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s", s->dir);
    return r;
}

/* Everything is rendered first (sb_config_render), so a bad input writes nothing.
 * opencode.json holds the api key: 0600. */
static int local_write_config(const sb_session *s, const sb_config *c, json_t *written,
                              sw_err *err)
{
    char target[SB_PATH_MAX];
    char *agents = NULL, *opencode = NULL;
    size_t agents_len, opencode_len;
    int rc = -1, dfd;
    if (open_session(s, &dfd, err) != 0) return -1;
    if (sb_files_target(s, c, target, sizeof target, err) != 0 ||
        sb_config_render(s, c, target, &agents, &agents_len, &opencode, &opencode_len, err) != 0)
        goto out;
    if (sb_symlink_atomic(dfd, s->dir, "files", target, err) != 0) goto out;
    if (written) json_array_append_new(written, json_string("files"));
    if (sb_write_atomic(dfd, s->dir, "AGENTS.md", agents, agents_len, 0644, err) != 0) goto out;
    if (written) json_array_append_new(written, json_string("AGENTS.md"));
    if (sb_write_atomic(dfd, s->dir, "opencode.json", opencode, opencode_len, 0600, err) != 0)
        goto out;
    if (written) json_array_append_new(written, json_string("opencode.json"));
    rc = 0;
out:
    free(agents);
    free(opencode);
    close(dfd);
    return rc;
}

/* Config kept aside in {sessions}/.config-{session}-{job}/ (0700) as hard links to the very
 * inodes the session had (link(2) never follows or reads them), put back with rename(2).
 * A file the kernel will not let us link (fs.protected_hardlinks and a sandbox-owned file)
 * is moved aside instead; it is absent only until the new one is renamed in. */
enum { KEEP_ABSENT, KEEP_LINKED, KEEP_LEAVE };
static const char *const config_names[3] = {"files", "AGENTS.md", "opencode.json"};

struct sb_cfgkeep {
    const sb_session *s;
    int ssfd, kfd;               /* the sessions folder, the keep folder */
    char name[128];              /* .config-{session}-{job} */
    int how[3];                  /* KEEP_* per config_names */
};

static int remove_prefixed(int ssfd, const char *prefix, const char *what, sw_err *err);

static sb_cfgkeep *local_config_keep(const sb_session *s, sw_err *err)
{
    sb_cfgkeep *k = xcalloc(1, sizeof *k);
    char prefix[64];
    int sfd = -1;
    k->s = s;
    k->ssfd = k->kfd = -1;
    snprintf(prefix, sizeof prefix, ".config-%s-", s->session_id);
    snprintf(k->name, sizeof k->name, "%s%.60s", prefix, s->job_id);
    int r = local_open(s, LV_SESSIONS, false, &k->ssfd, err);
    if (r == 1) sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s", s->dir);
    if (r != 0) goto fail;
    if (open_session(s, &sfd, err) != 0 || remove_prefixed(k->ssfd, prefix, s->sessions_dir, err) != 0)
        goto fail;
    if (mkdirat(k->ssfd, k->name, 0700) != 0 ||
        (k->kfd = openat(k->ssfd, k->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        sb_errno(err, errno, "mkdir in", s->sessions_dir);
        goto fail;
    }
    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (fstatat(sfd, config_names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) { sb_errno(err, errno, "stat in", s->dir); goto fail; }
            k->how[i] = KEEP_ABSENT;
        } else if (S_ISDIR(st.st_mode)) {
            k->how[i] = KEEP_LEAVE; /* the write fails on it anyway; nothing to put back */
        } else if (linkat(sfd, config_names[i], k->kfd, config_names[i], 0) == 0 ||
                   renameat(sfd, config_names[i], k->kfd, config_names[i]) == 0) {
            k->how[i] = KEEP_LINKED; /* moved aside when it cannot be linked (protected_hardlinks) */
        } else if (errno == EXDEV) {
            k->how[i] = KEEP_LEAVE;  /* a mount point in between: nothing can be kept */
        } else {
            sb_errno(err, errno, "keep aside from", s->dir);
            goto fail;
        }
    }
    close(sfd);
    return k;
fail:
    if (sfd >= 0) close(sfd);
    if (k->kfd >= 0) {
        sw_err e2;
        close(k->kfd);
        arc_rmtree_at(k->ssfd, k->name, &e2);
    }
    if (k->ssfd >= 0) close(k->ssfd);
    free(k);
    return NULL;
}

static int local_config_restore(sb_cfgkeep *k, sw_err *err)
{
    int sfd, rc = 0;
    if (open_session(k->s, &sfd, err) != 0) return -1;
    for (int i = 0; i < 3; i++) {
        const char *n = config_names[i];
        if (k->how[i] == KEEP_LINKED && renameat(k->kfd, n, sfd, n) != 0)
            rc = sb_errno(err, errno, "put back into", k->s->dir);
        else if (k->how[i] == KEEP_LINKED)
            k->how[i] = KEEP_LEAVE;
        if (k->how[i] == KEEP_ABSENT && unlinkat(sfd, n, 0) != 0 && errno != ENOENT)
            rc = sb_errno(err, errno, "remove from", k->s->dir);
    }
    if (fsync(sfd) != 0 && rc == 0) rc = sb_errno(err, errno, "fsync", k->s->dir);
    close(sfd);
    return rc;
}

static void local_config_drop(sb_cfgkeep *k)
{
    if (!k) return;
    sw_err e;
    close(k->kfd);
    arc_rmtree_at(k->ssfd, k->name, &e);
    close(k->ssfd);
    free(k);
}

/* ------------------------------------------------------------------ staging and swap */

enum { SWAP_NONE, SWAP_MOVED, SWAP_EXCHANGED };

struct sb_stage {
    const sb_session *s;
    int ssfd, gfd;               /* the sessions folder and the stage, opened without links */
    char name[200];              /* .staging-{session}-{job} */
    char path[SB_PATH_MAX + 256]; /* {sessions_dir}/{name}, for messages */
    bool created_session;        /* stage_swap made the session directory */
    int swapped[2];              /* SWAP_* for attachments, outputs */
};

static const char *const swap_names[2] = {"attachments", "outputs"}; /* outputs last: it marks the workspace */

/* Remove entries of ssfd named PREFIX* left by a crashed attempt (the session lock
 * guarantees no live job of the session owns one). */
static int remove_prefixed(int ssfd, const char *prefix, const char *what, sw_err *err)
{
    int fd = fcntl(ssfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return sb_errno(err, errno, "opendir", what);
    }
    rewinddir(d);
    char **found = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0) continue;
        found = xrealloc(found, (n + 1) * sizeof *found);
        found[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) rc = arc_rmtree_at(ssfd, found[i], err);
        free(found[i]);
    }
    free(found);
    return rc;
}

static sb_stage *local_stage_begin(const sb_session *s, sw_err *err)
{
    char prefix[64];
    sb_stage *g = xcalloc(1, sizeof *g);
    g->s = s;
    g->gfd = -1;
    snprintf(prefix, sizeof prefix, ".staging-%s-", s->session_id);
    snprintf(g->name, sizeof g->name, "%s%.128s", prefix, s->job_id);
    snprintf(g->path, sizeof g->path, "%s/%s", s->sessions_dir, g->name);
    if (local_open(s, LV_SESSIONS, true, &g->ssfd, err) != 0) {
        free(g);
        return NULL;
    }
    if (remove_prefixed(g->ssfd, prefix, s->sessions_dir, err) != 0) goto fail;
    if (mkdirat(g->ssfd, g->name, 0700) != 0) {
        sb_errno(err, errno, "mkdir", g->path);
        goto fail;
    }
    g->gfd = openat(g->ssfd, g->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (g->gfd < 0) {
        sb_errno(err, errno, "open", g->path);
        goto fail;
    }
    return g;
fail:
    s->ops->stage_end(g);
    return NULL;
}

/* outputs/ and attachments/ of the stage must be real directories (an archive may hold
 * neither, or only outputs/); anything else at those names is refused. */
static int stage_dirs(sb_stage *g, sw_code code, sw_err *err)
{
    for (int i = 0; i < 2; i++) {
        struct stat st;
        if (fstatat(g->gfd, swap_names[i], &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (!S_ISDIR(st.st_mode))
                return sw_errc(err, code, "member %s/ is not a directory", swap_names[i]);
            continue;
        }
        if (errno != ENOENT || mkdirat(g->gfd, swap_names[i], 0755) != 0)
            return sb_errno(err, errno, "mkdir in", g->path);
    }
    return 0;
}

static int local_stage_extract(sb_stage *g, arc_source_fn src, void *arg, arc_stats *st,
                               sw_err *err)
{
    arc_limits lim = {g->s->cfg->max_restore_bytes, g->s->cfg->max_restore_entries};
    if (arc_extract_at(src, arg, g->gfd, g->path, &lim, g->s->live, st, err) != 0) return -1;
    return stage_dirs(g, SW_E_UNSAFE_ARCHIVE, err);
}

static int local_stage_fresh(sb_stage *g, sw_err *err)
{
    const char *tmpl = g->s->cfg->outputs_template;
    if (tmpl && *tmpl && arc_copytree_at(tmpl, g->gfd, "outputs", err) != 0) return -1;
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

/* The session folder below the stage's sessions fd, never through a link. */
static int open_stage_session(sb_stage *g, int *sfd, sw_err *err)
{
    *sfd = sb_open_beneath(g->ssfd, g->s->session_id, O_RDONLY | O_DIRECTORY, 0);
    if (*sfd >= 0) return 0;
    struct stat st;
    if (fstatat(g->ssfd, g->s->session_id, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        return refuse_link(err, g->s->dir);
    return sb_errno(err, errno, "open", g->s->dir);
}

static int local_stage_swap(sb_stage *g, sw_err *err)
{
    const char *dir = g->s->dir;
    if (mkdirat(g->ssfd, g->s->session_id, 0755) == 0) g->created_session = true;
    else if (errno != EEXIST) return sb_errno(err, errno, "mkdir", dir);
    int sfd, rc = 0;
    if (open_stage_session(g, &sfd, err) != 0) {
        rc = -1;
        goto out;
    }
    for (int i = 0; i < 2 && rc == 0; i++)
        rc = swap_one(g->gfd, sfd, swap_names[i], &g->swapped[i], dir, err);
    if (rc != 0) {
        sw_err e2;
        for (int i = 1; i >= 0; i--) unswap_one(g->gfd, sfd, swap_names[i], &g->swapped[i], dir, &e2);
    } else if (fsync(sfd) != 0) {
        rc = sb_errno(err, errno, "fsync", dir);
    }
    close(sfd);
out:
    if (rc != 0 && g->created_session && unlinkat(g->ssfd, g->s->session_id, AT_REMOVEDIR) == 0)
        g->created_session = false;
    return rc;
}

/* After a swap the job failed later: put back what was there. A session directory this job
 * created goes away entirely (config files and the log written since included). */
static int local_stage_unswap(sb_stage *g, sw_err *err)
{
    int sfd;
    if (open_stage_session(g, &sfd, err) != 0) return -1;
    int rc = 0;
    for (int i = 1; i >= 0; i--)
        if (unswap_one(g->gfd, sfd, swap_names[i], &g->swapped[i], g->s->dir, err) != 0) rc = -1;
    close(sfd);
    if (rc == 0 && g->created_session) {
        rc = arc_rmtree_at(g->ssfd, g->s->session_id, err);
        if (rc == 0) g->created_session = false;
    }
    return rc;
}

static void local_stage_end(sb_stage *g)
{
    if (!g) return;
    sw_err e;
    if (g->gfd >= 0) close(g->gfd);
    arc_rmtree_at(g->ssfd, g->name, &e);
    close(g->ssfd);
    free(g);
}

/* ------------------------------------------------------------------ dev server */

static int local_webapp_start(const sb_session *s, int port, sb_webapp *out, sw_err *err)
{
    int sfd;
    if (open_session(s, &sfd, err) != 0) return -1;
    int rc = sb_webapp_start(s, sfd, port, out, err);
    close(sfd);
    return rc;
}

static void local_webapp_stop(const sb_session *s, const sb_webapp *w)
{
    sw_err e;
    int sfd = -1;
    if (!w || w->pid <= 0) return;
    if (local_open(s, LV_SESSION, false, &sfd, &e) != 0) sfd = -1;
    sb_webapp_stop(s, sfd, w);
    if (sfd >= 0) close(sfd);
}

/* ------------------------------------------------------------------ sandbox level */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* {base}/{sandbox}/sessions opened without following a link; only names that are canonical
 * lowercase UUIDs count (any other folder is not a session snapworker could address). */
static int local_list_sessions(const cfg *c, const char *sandbox_id, char ***ids, size_t *n,
                               sw_err *err)
{
    char sb[SW_UUID_LEN + 1], rel[64], one[SW_UUID_LEN + 1];
    *ids = xcalloc(1, sizeof **ids);
    *n = 0;
    if (!id_uuid_lower(sandbox_id, sb)) return sw_errc(err, SW_E_INVALID_PAYLOAD, "sandbox_id: expected a UUID");
    int base = open(c->sandbox_base_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (base < 0) return errno == ENOENT ? 0 : sb_errno(err, errno, "open", c->sandbox_base_path);
    snprintf(rel, sizeof rel, "%s/sessions", sb);
    int fd = sb_open_beneath(base, rel, O_RDONLY | O_DIRECTORY, 0);
    int e = errno;
    close(base);
    if (fd < 0) {
        if (e == ENOENT) return 0;
        return sw_errf(err, SW_E_BACKEND, false, "%s/%s: %s", c->sandbox_base_path, rel,
                       e == ELOOP || e == ENOTDIR || e == EXDEV ? "a symlink on the way (refused)"
                                                                : strerror(e));
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return sb_errno(err, e, "list", rel);
    }
    size_t cap = 1;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!id_uuid_lower(de->d_name, one) || strcmp(one, de->d_name) != 0) continue;
        if (*n + 1 >= cap) {
            cap = cap * 2 + 8;
            *ids = xrealloc(*ids, cap * sizeof **ids);
        }
        (*ids)[(*n)++] = xstrdup(one);
        (*ids)[*n] = NULL;
    }
    closedir(d);
    qsort(*ids, *n, sizeof **ids, by_name);
    return 0;
}

static int local_teardown(const cfg *c, const char *sandbox_id, sw_err *err)
{
    return sb_webapp_stop_sandbox(c, sandbox_id, err);
}

const sb_ops sb_local_ops = {
    .name = "local",
    .locate = local_locate,
    .release = NULL, /* locate allocates nothing */
    .state = local_state,
    .files_default = local_files_default,
    .archive = local_archive,
    .stage_begin = local_stage_begin,
    .stage_extract = local_stage_extract,
    .stage_fresh = local_stage_fresh,
    .stage_swap = local_stage_swap,
    .stage_unswap = local_stage_unswap,
    .stage_end = local_stage_end,
    .write_config = local_write_config,
    .config_keep = local_config_keep,
    .config_restore = local_config_restore,
    .config_drop = local_config_drop,
    .webapp_start = local_webapp_start,
    .webapp_stop = local_webapp_stop,
    .list_sessions = local_list_sessions,
    .teardown = local_teardown,
};
