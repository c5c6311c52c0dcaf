/* jobs/sandbox_local.c — the local sandbox backend (sb_local_ops): sessions are folders on
 * this host. Owns: the local layout (jobs/sandbox.h diagram), the default `files` targets,
 * the staging folder of a restore and its swap into place, and where files@/AGENTS.md/
 * opencode.json land. Does not own: what every backend shares (sandbox.c: args, rendering,
 * atomic writes), archive bytes and tree walks (common/arc.h), the dev server (webapp.c),
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

static int local_files_default(const sb_session *s, bool demo, char *out, size_t n, sw_err *err)
{
    return sb_local_files_default(s->cfg, s->sandbox_id, demo, out, n, err);
}

/* Everything is rendered first (sb_config_render), so a bad input writes nothing. */
static int local_write_config(const sb_session *s, const sb_config *c, json_t *written,
                              sw_err *err)
{
    char target[SB_PATH_MAX];
    char *agents = NULL, *opencode = NULL;
    size_t agents_len, opencode_len;
    int rc = -1;
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s", s->dir);
        return sb_errno(err, errno, "open", s->dir);
    }
    if (sb_files_target(s, c, target, sizeof target, err) != 0 ||
        sb_config_render(s, c, target, &agents, &agents_len, &opencode, &opencode_len, err) != 0)
        goto out;
    if (sb_symlink_atomic(dfd, s->dir, "files", target, err) != 0) goto out;
    if (written) json_array_append_new(written, json_string("files"));
    if (sb_write_atomic(dfd, s->dir, "AGENTS.md", agents, agents_len, 0644, err) != 0) goto out;
    if (written) json_array_append_new(written, json_string("AGENTS.md"));
    if (sb_write_atomic(dfd, s->dir, "opencode.json", opencode, opencode_len, 0644, err) != 0)
        goto out;
    if (written) json_array_append_new(written, json_string("opencode.json"));
    rc = 0;
out:
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
    .webapp_start = local_webapp_start,
    .webapp_stop = sb_webapp_stop,
};
