/* jobs/sandbox_k8s.c — the kubernetes sandbox backend (sb_k8s_ops): sessions live in the
 * sandbox pod, reached through pods/exec (common/k8s.h). Owns: the pod and container names,
 * the in-pod layout (/workspace/sessions/{session}), the shell scripts run there (constants;
 * every datum is a positional parameter), the spool that holds a restore's archive while it
 * is checked, the swap journal that makes a crashed restore converge, the per-session folder
 * the old config is kept in while it is rewritten (.config-{session}, see SH_KEEP), and the
 * process-wide API client. Does not own: the job flow (jobs/restore.c, snapshot.c, regenerate.c), the
 * archive rules (common/arc_check.c), the config bytes (sandbox.c, jobs/onyx.h), the
 * transport (common/k8s_exec.c).
 *
 * Containers: `sandbox` (cfg->k8s_sandbox_container) gets the config files and runs the dev
 * server; `file-sync` (cfg->k8s_sync_container) streams archives in and out and does the
 * staging, swap and state checks. Both mount the same /workspace volume.
 *
 * Why one client per process: it holds only the credentials (the token re-read under its
 * own lock, k8s.h says it is safe to share) and every exec is its own connection, so a
 * per-thread copy would buy nothing but more token files read. It is created on the first
 * job that needs it and kept for the life of the process (freed at exit by the OS).
 *
 * Why a journal for the swap: `mv` of two folders cannot be one atomic exchange as
 * renameat2 is on the local backend. The previous attachments/ go to {session}/.swap/ and
 * outputs/ moves in LAST (it marks the workspace), so "outputs/ present" is the commit
 * point; before it, stage_begin of the next attempt undoes what the journal records
 * (docs/kubernetes.md "Crash recovery"). */
#include "jobs/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fdio.h"
#include "common/k8s.h"
#include "common/xmalloc.h"

#define SESSIONS_DIR "/workspace/sessions"
#define ERR_KEEP 512                /* stderr bytes kept of a command */
#define OUT_KEEP 64                 /* stdout kept of a short command (a pid, a code) */
#define ERR_SHOWN 150               /* stderr bytes shown in a message */

/* ------------------------------------------------------------------ scripts
 * Each runs as  sh -c SCRIPT sh ARG...  — no datum is ever part of SCRIPT. Exit codes other
 * than 0 that a script uses on purpose are listed above it; anything else is a failure whose
 * stderr goes into the error. */

/* $1 session dir. 0 workspace (outputs/ is a directory), 3 no outputs/, 4 no session dir.
 * A symlink never counts. A swap journal left by a crash after its commit is tidied. */
static const char SH_STATE[] =
    "d=$1\n"
    "if [ -L /workspace/sessions ] || [ -L \"$d\" ] || [ ! -d \"$d\" ]; then exit 4; fi\n"
    "if [ -L \"$d/outputs\" ] || [ ! -d \"$d/outputs\" ]; then exit 3; fi\n"
    "if [ -d \"$d/.swap\" ] && [ ! -L \"$d/.swap\" ]; then rm -rf \"$d/.swap\"; fi\n"
    "exit 0\n";

/* $1 session dir. tar.gz of outputs/ and (when a non-empty real folder) attachments/ on
 * stdout. */
static const char SH_ARCHIVE[] =
    "d=$1\n"
    "if [ -d \"$d/attachments\" ] && [ ! -L \"$d/attachments\" ] &&\n"
    "   [ -n \"$(ls -A \"$d/attachments\" 2>/dev/null)\" ]; then\n"
    "  exec tar -c -z -f - -C \"$d\" outputs attachments\n"
    "fi\n"
    "exec tar -c -z -f - -C \"$d\" outputs\n";

/* $1 session dir. The names of outputs/ (and, as SH_ARCHIVE decides, attachments/) and of
 * everything below them, each ended by a NUL, relative to the session folder: find prints a
 * folder before its contents and a folder's subtree in one run (xlist_name relies on it). */
static const char SH_LIST[] =
    "cd \"$1\" || exit 1\n"
    "if [ -d attachments ] && [ ! -L attachments ] &&\n"
    "   [ -n \"$(ls -A attachments 2>/dev/null)\" ]; then\n"
    "  exec find outputs attachments -print0\n"
    "fi\n"
    "exec find outputs -print0\n";

/* $1 session dir, $2 byte count of the exclude list on stdin, $3 "1" = attachments/ too.
 * SH_ARCHIVE with `-X -`: tar reads the list (one exact member name a line, escaped by
 * xlist_escape) from its stdin before it archives. All $2 bytes are read even when tar
 * fails first (see SH_EXTRACT). */
static const char SH_ARCHIVE_X[] =
    "d=$1 n=$2 a=$3\n"
    "set -- outputs\n"
    "if [ \"$a\" = 1 ]; then set -- outputs attachments; fi\n"
    "head -c \"$n\" | { rc=0; tar -c -z -f - -X - -C \"$d\" \"$@\" || rc=$?; cat > /dev/null; exit $rc; }\n";

/* Undo an uncommitted swap of session $1 (outputs/ already out or never in): the journal's
 * markers say whether attachments/ is the restore's (then it goes) and what was there
 * before. Shared by stage_begin (crash recovery) and stage_unswap. */
#define SH_UNDO_FN                                                                        \
    "undo() {\n"                                                                          \
    "  j=\"$1/.swap\"\n"                                                                  \
    "  if [ -e \"$j/attachments\" ] || [ -L \"$j/attachments\" ] || [ -e \"$j/none\" ]; then\n" \
    "    rm -rf \"$1/attachments\"\n"                                                     \
    "    if [ -e \"$j/attachments\" ] || [ -L \"$j/attachments\" ]; then\n"               \
    "      mv \"$j/attachments\" \"$1/attachments\"\n"                                    \
    "    fi\n"                                                                            \
    "  fi\n"                                                                              \
    "  if [ -e \"$j/created\" ]; then rm -rf \"$1\"; else rm -rf \"$j\"; fi\n"            \
    "}\n"

/* $1 sessions dir, $2 session id, $3 staging dir. Leftover staging folders of the session
 * go; an uncommitted swap a crash left is undone; a fresh 0700 staging folder is made. */
static const char SH_BEGIN[] =
    "set -e\n" SH_UNDO_FN
    "mkdir -p \"$1\"\n"
    "rm -rf \"$1\"/.staging-\"$2\"-*\n"
    "d=\"$1/$2\"\n"
    "if [ -d \"$d/.swap\" ] && [ ! -L \"$d/.swap\" ]; then\n"
    "  if [ -d \"$d/outputs\" ]; then rm -rf \"$d/.swap\"; else undo \"$d\"; fi\n"
    "fi\n"
    "mkdir -m 0700 \"$3\"\n";

/* $1 byte count, $2 staging dir, $3 "gzip" or "none", $4 "1" = strip setuid/setgid/sticky.
 * Reads exactly $1 bytes of stdin (v4 cannot signal EOF), all of them even when tar fails
 * early: a process that exits with stdin unread makes the server reset the connection,
 * which can lose the exit status and stderr. umask 0: modes as archived. */
static const char SH_EXTRACT[] =
    "set -e\n"
    "umask 0\n"
    "z=; if [ \"$3\" = gzip ]; then z=-z; fi\n"
    "head -c \"$1\" | { rc=0; tar -x $z -o -f - -C \"$2\" || rc=$?; cat > /dev/null; exit $rc; }\n"
    "umask 022\n"
    "if [ \"$4\" = 1 ]; then\n"
    "  for n in outputs attachments; do\n"
    "    if [ -d \"$2/$n\" ]; then chmod -R ug-s,o-t \"$2/$n\"; fi\n"
    "  done\n"
    "fi\n"
    "mkdir -p \"$2/outputs\" \"$2/attachments\"\n";

/* $1 session dir, $2 staging dir. 5 staging incomplete, 6 outputs/ appeared meanwhile.
 * Journal first, then the previous attachments/ into it, then ours, outputs/ last. */
static const char SH_SWAP[] =
    "set -e\n"
    "d=$1 g=$2 j=\"$1/.swap\"\n"
    "if [ ! -d \"$g/outputs\" ] || [ ! -d \"$g/attachments\" ]; then exit 5; fi\n"
    "if [ -e \"$d/outputs\" ] || [ -L \"$d/outputs\" ]; then exit 6; fi\n"
    "if [ -d \"$d\" ]; then mkdir \"$j\"; else mkdir -p \"$d\"; mkdir \"$j\"; : > \"$j/created\"; fi\n"
    "if [ -e \"$d/attachments\" ] || [ -L \"$d/attachments\" ]; then\n"
    "  mv \"$d/attachments\" \"$j/attachments\"\n"
    "else : > \"$j/none\"; fi\n"
    "mv \"$g/attachments\" \"$d/attachments\"\n"
    "mv \"$g/outputs\" \"$d/outputs\"\n";

/* $1 session dir, $2 staging dir. outputs/ back out first (uncommit), then the undo. */
static const char SH_UNSWAP[] =
    "set -e\n" SH_UNDO_FN
    "d=$1 g=$2\n"
    "if [ ! -d \"$d/.swap\" ]; then exit 0; fi\n"
    "if [ -e \"$d/outputs\" ] || [ -L \"$d/outputs\" ]; then\n"
    "  rm -rf \"$g/outputs\"\n"
    "  mv \"$d/outputs\" \"$g/outputs\"\n"
    "fi\n"
    "undo \"$d\"\n";

/* $1 session dir, $2 staging dir, $3 "1" = the swap stands: drop its journal. */
static const char SH_END[] =
    "if [ \"$3\" = 1 ] && [ -d \"$1/outputs\" ]; then rm -rf \"$1/.swap\"; fi\n"
    "rm -rf \"$2\"\n";

/* $1 session dir, $2 files link target, $3 AGENTS.md length, $4 opencode.json length; stdin
 * holds the two files back to back. 3 no session dir. Each file goes to a temp name and is
 * renamed over the old one; the secret-bearing input is never group/world readable. */
static const char SH_CONFIG[] =
    "set -e\n"
    "d=$1\n"
    "if [ -L \"$d\" ] || [ ! -d \"$d\" ]; then exit 3; fi\n"
    "t=\"$d/.swtmp-$$\"\n"
    "trap 'rm -f \"$t\".in \"$t\".files \"$t\".agents \"$t\".oc' EXIT\n"
    "umask 077\n"
    "head -c \"$(($3 + $4))\" > \"$t.in\"\n"
    "ln -sfn \"$2\" \"$t.files\"\n"
    "mv -f -T \"$t.files\" \"$d/files\"\n"
    "head -c \"$3\" \"$t.in\" > \"$t.agents\"\n"
    "tail -c +\"$(($3 + 1))\" \"$t.in\" > \"$t.oc\"\n"
    "rm -f \"$t.in\"\n"
    "chmod 0644 \"$t.agents\"\n"
    "mv -f -T \"$t.agents\" \"$d/AGENTS.md\"\n"
    "chmod 0600 \"$t.oc\"\n"
    "mv -f -T \"$t.oc\" \"$d/opencode.json\"\n";

/* The config kept aside (config_keep/restore/drop): {sessions}/.config-{session}/ holds a
 * copy (cp -P -p: a link stays a link, modes and times kept, nothing followed) of each of
 * files, AGENTS.md, opencode.json, or NAME.absent when the session had none; a folder at
 * one of those names is left alone (the write fails on it). The marker `kept` (the job id)
 * is written last, so a folder without it is a keep that died half-way: the session's own
 * files are still the originals and it is made again. One with this job's id is a keep by
 * an earlier attempt of this job that died before its drop: the session may hold that
 * attempt's new files, so the kept copies are the originals and are reused, never
 * overwritten. One with another job's id was left by a job that ended (a drop that failed):
 * the session's files are what that job left, and are kept afresh. umask 077: the keep
 * folder and every copy in the making are the worker's only (opencode.json holds a key). */
#define SH_KEEP_MARK                                                                      \
    "m=; if [ -d \"$k\" ] && [ ! -L \"$k\" ] && [ -f \"$k/kept\" ] && [ ! -L \"$k/kept\" ]; then\n" \
    "  m=$(head -c 200 \"$k/kept\") || m=\n"                                           \
    "fi\n"

/* $1 session dir, $2 keep dir, $3 job id. 3 no session dir. */
static const char SH_KEEP[] =
    "set -e\n"
    "d=$1 k=$2\n"
    "if [ -L \"$d\" ] || [ ! -d \"$d\" ]; then exit 3; fi\n"
    "umask 077\n" SH_KEEP_MARK
    "if [ \"$m\" = \"$3\" ]; then exit 0; fi\n"
    "rm -rf \"$k\"\n"
    "mkdir \"$k\"\n"
    "for n in files AGENTS.md opencode.json; do\n"
    "  if [ -d \"$d/$n\" ] && [ ! -L \"$d/$n\" ]; then :\n"
    "  elif [ -e \"$d/$n\" ] || [ -L \"$d/$n\" ]; then cp -R -P -p \"$d/$n\" \"$k/$n\"\n"
    "  else : > \"$k/$n.absent\"; fi\n"
    "done\n"
    "printf '%s' \"$3\" > \"$k/kept.tmp\"\n"
    "mv -f \"$k/kept.tmp\" \"$k/kept\"\n";

/* $1 session dir, $2 keep dir, $3 job id. 3 no session dir, 4 no complete keep of this job.
 * Each kept copy is copied again (to a temp name, renamed over the new one) and an absent
 * one's new file removed; the keep folder is left whole until the drop, so running this
 * again (or a later attempt's keep) sees the same originals. */
static const char SH_KEEP_RESTORE[] =
    "set -e\n"
    "d=$1 k=$2\n"
    "if [ -L \"$d\" ] || [ ! -d \"$d\" ]; then exit 3; fi\n"
    "umask 077\n" SH_KEEP_MARK
    "if [ \"$m\" != \"$3\" ]; then exit 4; fi\n"
    "t=\"$d/.swtmp-$$\"\n"
    "trap 'rm -rf \"$t\"' EXIT\n"
    "for n in files AGENTS.md opencode.json; do\n"
    "  if [ -e \"$k/$n.absent\" ]; then\n"
    "    if [ -L \"$d/$n\" ] || { [ -e \"$d/$n\" ] && [ ! -d \"$d/$n\" ]; }; then rm -f \"$d/$n\"; fi\n"
    "  elif [ -e \"$k/$n\" ] || [ -L \"$k/$n\" ]; then\n"
    "    rm -rf \"$t\"\n"
    "    cp -R -P -p \"$k/$n\" \"$t\"\n"
    "    mv -f -T \"$t\" \"$d/$n\"\n"
    "  fi\n"
    "done\n";

/* $1 keep dir, $2 job id: removed when it is this job's. */
static const char SH_KEEP_DROP[] =
    "k=$1\n" SH_KEEP_MARK
    "if [ \"$m\" = \"$2\" ]; then rm -rf \"$k\"; fi\n";

/* Shell functions of the dev-server scripts: stop a server of session $d (its cwd must be
 * $web: a recycled pid or any other process is left alone), liveness, readiness. */
#define SH_WEB_FNS                                                                        \
    "web=\"$d/outputs/web\"\n"                                                            \
    "webp=$(cd \"$web\" 2>/dev/null && pwd -P)\n"                                         \
    "alive() {\n"                                                                         \
    "  s=$(sed 's/.*) //' \"/proc/$1/stat\" 2>/dev/null) || return 1\n"                  \
    "  case \"$s\" in Z*|X*|'') return 1;; esac\n"                                        \
    "}\n"                                                                                 \
    "stop() {\n"                                                                          \
    "  case \"$1\" in ''|*[!0-9]*) return 0;; esac\n"                                     \
    "  [ -n \"$webp\" ] && [ \"$(readlink \"/proc/$1/cwd\" 2>/dev/null)\" = \"$webp\" ] || return 0\n" \
    "  kill -TERM \"-$1\" 2>/dev/null || kill -TERM \"$1\" 2>/dev/null || :\n"         \
    "  i=0\n"                                                                             \
    "  while alive \"$1\" && [ $i -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i + 1)); done\n" \
    "  if alive \"$1\"; then kill -KILL \"-$1\" 2>/dev/null || kill -KILL \"$1\" 2>/dev/null || :; fi\n" \
    "}\n"

/* $1 session dir, $2 port, $3 wait seconds (0 = no probe), $4 "1" = npm install when
 * node_modules/ is missing, $5... the web app argv. Prints the pid, or 0 when outputs/web has
 * no package.json. 4 npm install failed, 5 the server exited, 6 no answer below 500 in
 * time, 7 neither curl nor wget to probe with. */
static const char SH_WEB_START[] =
    "d=$1 port=$2 wait=$3 npm=$4\n"
    "shift 4\n" SH_WEB_FNS
    "probe() {\n"
    "  for u in \"http://127.0.0.1:$port/\" \"http://[::1]:$port/\"; do\n"
    "    if command -v curl >/dev/null 2>&1; then\n"
    "      c=$(curl -s -o /dev/null -m 2 -w '%{http_code}' \"$u\" 2>/dev/null) || c=0\n"
    "    elif command -v wget >/dev/null 2>&1; then\n"
    "      c=$(wget -S -q -T 2 -O /dev/null \"$u\" 2>&1 |\n"
    "          sed -n 's/^ *HTTP\\/[0-9.]* \\([0-9][0-9][0-9]\\).*/\\1/p' | tail -n 1)\n"
    "    else echo 'neither curl nor wget in the container to probe the port' >&2; exit 7; fi\n"
    "    case \"$c\" in [1-4][0-9][0-9]) return 0;; esac\n"
    "  done\n"
    "  return 1\n"
    "}\n"
    "if [ -L \"$d/outputs\" ] || [ -L \"$web\" ] || [ ! -d \"$web\" ] || [ -L \"$web/package.json\" ] ||\n"
    "   [ ! -f \"$web/package.json\" ]; then echo 0; exit 0; fi\n"
    "if [ -f \"$d/nextjs.pid\" ]; then stop \"$(head -c 32 \"$d/nextjs.pid\")\"; fi\n"
    "rm -f \"$d/nextjs.pid\"\n"
    "cd \"$web\" || exit 1\n"
    "if [ \"$npm\" = 1 ] && [ ! -d node_modules ]; then\n"
    "  npm install >> \"$d/nextjs.log\" 2>&1 < /dev/null ||\n"
    "    { echo 'npm install failed (see nextjs.log)' >&2; exit 4; }\n"
    "fi\n"
    "setsid nohup \"$@\" >> \"$d/nextjs.log\" 2>&1 < /dev/null &\n"
    "pid=$!\n"
    "echo \"$pid\" > \"$d/.nextjs.pid.tmp\" && mv -f \"$d/.nextjs.pid.tmp\" \"$d/nextjs.pid\"\n"
    "if [ \"$wait\" -gt 0 ]; then\n"
    "  end=$(($(date +%s) + wait))\n"
    "  until probe; do\n"
    "    if ! alive \"$pid\"; then\n"
    "      rm -f \"$d/nextjs.pid\"; echo 'the dev server exited (see nextjs.log)' >&2; exit 5\n"
    "    fi\n"
    "    if [ \"$(date +%s)\" -ge \"$end\" ]; then\n"
    "      stop \"$pid\"; rm -f \"$d/nextjs.pid\"\n"
    "      echo \"the dev server did not answer below 500 on port $port within $wait s\" >&2; exit 6\n"
    "    fi\n"
    "    sleep 0.2 2>/dev/null || sleep 1\n"
    "  done\n"
    "fi\n"
    "echo \"$pid\"\n";

/* $1 session dir, $2 pid this job started: stopped when nextjs.pid still names it. */
static const char SH_WEB_STOP[] =
    "d=$1\n" SH_WEB_FNS
    "[ \"$(head -c 32 \"$d/nextjs.pid\" 2>/dev/null)\" = \"$2\" ] || exit 0\n"
    "stop \"$2\"\n"
    "rm -f \"$d/nextjs.pid\"\n";

/* ------------------------------------------------------------------ the client */

static pthread_mutex_t client_mu = PTHREAD_MUTEX_INITIALIZER;
static k8s_client *client;         /* one per process, kept (see the top of the file) */

static k8s_client *client_get(const cfg *c, sw_err *err)
{
    pthread_mutex_lock(&client_mu);
    if (!client) client = k8s_client_new(c, err);   /* a failure is not kept: tried again */
    k8s_client *k = client;
    pthread_mutex_unlock(&client_mu);
    return k;
}

typedef struct k8s_sess {
    k8s_client *k;                 /* borrowed from the process-wide client */
    char pod[128];
} k8s_sess;

static const char *pod_of(const sb_session *s)
{
    return ((const k8s_sess *)s->backend_priv)->pod;
}

/* ------------------------------------------------------------------ running commands */

typedef struct cmd {
    const char *container;
    const char *name;              /* for messages: never data */
    const char *const *argv;
    bool stream;                   /* bounded by the job deadline, not the short timeout */
    k8s_in_fn in;
    void *in_arg;
    int64_t in_len;
    k8s_out_fn out;
    void *out_arg;
    int exit_code;
    char out_buf[OUT_KEEP];
    char err_buf[ERR_KEEP];
} cmd;

/* Run c; 0 when it ran to its end (exit code in c->exit_code), -1 with err from k8s_exec:
 * pod not found / 401 / 403 (permanent, naming the pod), a dropped stream (retryable),
 * deadline or cancel (timeout). */
static int run(const sb_session *s, cmd *c, sw_err *err)
{
    const k8s_sess *p = s->backend_priv;
    int64_t deadline = s->ctx ? s->ctx->deadline_ms : 0;
    if (!c->stream) {
        int64_t short_dl = job_now_ms() + (int64_t)s->cfg->k8s_exec_timeout_s * 1000;
        if (!deadline || short_dl < deadline) deadline = short_dl;
    }
    k8s_exec_req r = {
        .pod = p->pod, .container = c->container, .argv = c->argv, .name = c->name,
        .in = c->in, .in_arg = c->in_arg, .in_len = c->in ? c->in_len : -1,
        .out = c->out, .out_arg = c->out_arg, .out_buf = c->out_buf, .out_cap = sizeof c->out_buf,
        .err_buf = c->err_buf, .err_cap = sizeof c->err_buf, .deadline_ms = deadline,
        .cancel = s->ctx ? s->ctx->cancel : NULL,
    };
    k8s_exec_res res;
    if (k8s_exec(p->k, &r, &res, err) != 0) return -1;
    c->exit_code = res.exit_code;
    return 0;
}

/* "NAME in pod POD exited N: <stderr, one line, bounded>". */
static int fail_exit(const sb_session *s, const cmd *c, bool retryable, sw_err *err)
{
    char e[ERR_SHOWN + 1];
    size_t n = 0;
    for (const unsigned char *q = (const unsigned char *)c->err_buf; *q && n < ERR_SHOWN; q++)
        e[n++] = *q < 0x20 || *q == 0x7f ? ' ' : (char)*q;
    while (n > 0 && e[n - 1] == ' ') n--;
    e[n] = '\0';
    return sw_errf(err, SW_E_BACKEND, retryable, "%s in pod %s exited %d%s%s", c->name, pod_of(s),
                   c->exit_code, n ? ": " : "", e);
}

static int run_ok(const sb_session *s, cmd *c, sw_err *err)
{
    if (run(s, c, err) != 0) return -1;
    return c->exit_code == 0 ? 0 : fail_exit(s, c, false, err);
}

/* ------------------------------------------------------------------ layout */

static int k8s_locate(sb_session *s, sw_err *err)
{
    k8s_sess *p = xcalloc(1, sizeof *p);
    s->backend_priv = p;
    const char *prefix = s->cfg->k8s_pod_prefix ? s->cfg->k8s_pod_prefix : "sandbox-";
    int n = snprintf(p->pod, sizeof p->pod, "%s%.8s", prefix, s->sandbox_id);
    if (n < 0 || (size_t)n >= sizeof p->pod)
        return sw_errf(err, SW_E_BACKEND, false, "SNAPWORKER_K8S_POD_PREFIX too long");
    snprintf(s->sessions_dir, sizeof s->sessions_dir, "%s", SESSIONS_DIR);
    snprintf(s->dir, sizeof s->dir, "%s/%s", SESSIONS_DIR, s->session_id);
    if (!(p->k = client_get(s->cfg, err))) return -1;
    return 0;
}

static void k8s_release(sb_session *s)
{
    free(s->backend_priv);
}

static int k8s_state(const sb_session *s, sb_state *out, sw_err *err)
{
    const char *argv[] = {"sh", "-c", SH_STATE, "sh", s->dir, NULL};
    cmd c = {.container = s->cfg->k8s_sync_container, .name = "state check", .argv = argv};
    if (run(s, &c, err) != 0) return -1;
    switch (c.exit_code) {
    case 0: *out = SB_WORKSPACE; return 0;
    case 3: *out = SB_NO_OUTPUTS; return 0;
    case 4: *out = SB_NO_SESSION; return 0;
    default: return fail_exit(s, &c, false, err);
    }
}

static int k8s_files_default(const sb_session *s, bool demo, char *out, size_t n, sw_err *err)
{
    (void)s;
    const char *v = demo ? "/workspace/demo_data" : "/workspace/files";
    if (strlen(v) >= n) return sw_errf(err, SW_E_BACKEND, false, "files link target too long");
    memcpy(out, v, strlen(v) + 1);
    return 0;
}

/* ------------------------------------------------------------------ snapshot */

typedef struct arch_out {
    arc_sink_fn sink;
    void *arg;
    arc_counter *count;
    bool sink_failed;
    sw_err sink_err;
} arch_out;

static int arch_out_cb(void *p, const char *buf, size_t n)
{
    arch_out *a = p;
    if (a->sink(a->arg, buf, n, &a->sink_err) != 0 ||
        arc_counter_feed(a->count, buf, n, &a->sink_err) != 0) {
        a->sink_failed = true;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ snapshot excludes
 * The pod's tar cannot apply our patterns (common/excl.h): GNU and busybox tar both take
 * `-X FILE` (busybox with FEATURE_TAR_FROM), but match each line unanchored (at any '/' of
 * a member name), as a glob (GNU: `*` crosses '/', busybox: it does not), GNU trims trailing
 * white space, and neither knows `**`. So the decision is made here, with excl_match() as on
 * local: SH_LIST names the tree, every top-most member that matches goes into the list as an
 * exact name (the wildcards escaped, so a line matches only that name), and tar gets the list
 * on stdin (SH_ARCHIVE_X). What a line cannot say exactly is refused before tar runs:
 *   - a name with a newline (the list is one name a line on both tars);
 *   - a member kept by the patterns whose name ENDS in an excluded name at a '/', e.g.
 *     "outputs/a/outputs/web/node_modules" when "outputs/web/node_modules" is excluded: both
 *     tars would leave it out too (unanchored), and neither has an anchor both accept.
 * Both are SW_E_INVALID_PAYLOAD naming the pattern (never the file name). docs/lifecycle.md
 * "Snapshot excludes on kubernetes". */

#define XLIST_NAME_MAX (64 * 1024)       /* one name from find */
#define XLIST_MAX (16 * 1024 * 1024)     /* bytes of names kept (the list and the candidates) */

typedef struct xlist {
    const excl *ex;
    char *cur;                     /* the name being read (up to its NUL) */
    size_t cur_len, cur_cap;
    char **tops;                   /* top-most excluded names, in find's order */
    size_t ntops, tops_cap;
    char **cand;                   /* kept names with an inner outputs/ or attachments/ */
    size_t ncand, cand_cap;
    size_t kept_bytes;
    bool attachments;              /* the listing has attachments/ */
    bool failed;
    sw_err err;
} xlist;

static void strv_push(char ***v, size_t *n, size_t *cap, char *s)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = s;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static void xlist_free(xlist *x)
{
    free(x->cur);
    strv_free(x->tops, x->ntops);
    strv_free(x->cand, x->ncand);
}

/* The first pattern that matches 'name' (for messages). */
static const char *xlist_pattern(const excl *ex, const char *name)
{
    for (size_t i = 0; i < excl_count(ex); i++)
        if (excl_match_one(excl_get(ex, i), name)) return excl_get(ex, i);
    return "?";
}

/* true when a component of 'name' after its first is "outputs" or "attachments": only such
 * a name can end in an excluded name (every one starts with a root). */
static bool has_inner_root(const char *name)
{
    for (const char *p = strchr(name, '/'); p; p = strchr(p + 1, '/'))
        if (!strncmp(p + 1, "outputs/", 8) || !strncmp(p + 1, "attachments/", 12) ||
            !strcmp(p + 1, "outputs") || !strcmp(p + 1, "attachments"))
            return true;
    return false;
}

/* One complete name from SH_LIST. */
static int xlist_name(xlist *x, const char *name, size_t len)
{
    if (!strcmp(name, "outputs")) return 0;
    if (!strcmp(name, "attachments")) {
        x->attachments = true;
        return 0;
    }
    if (strncmp(name, "outputs/", 8) != 0 && strncmp(name, "attachments/", 12) != 0)
        return sw_errf(&x->err, SW_E_BACKEND, false, "file list: a name outside outputs/ and "
                       "attachments/");
    if (x->ntops) {   /* below the last excluded folder: gone with it */
        const char *t = x->tops[x->ntops - 1];
        size_t tl = strlen(t);
        if (len > tl && name[tl] == '/' && !memcmp(name, t, tl)) return 0;
    }
    bool out = excl_match(x->ex, name);
    if (!out && !has_inner_root(name)) return 0;
    if (out && memchr(name, '\n', len))
        return sw_errf(&x->err, SW_E_INVALID_PAYLOAD, false, "exclude pattern '%.64s' matches a "
                       "name with a newline, which tar's exclude list cannot hold",
                       xlist_pattern(x->ex, name));
    if ((x->kept_bytes += len + 1) > XLIST_MAX)
        return sw_errf(&x->err, SW_E_BACKEND, false, "file list: over %d MiB of names to "
                       "exclude or check", XLIST_MAX >> 20);
    if (out) strv_push(&x->tops, &x->ntops, &x->tops_cap, xstrdup(name));
    else strv_push(&x->cand, &x->ncand, &x->cand_cap, xstrdup(name));
    return 0;
}

static int xlist_cb(void *p, const char *buf, size_t n)
{
    xlist *x = p;
    for (size_t i = 0; i < n && !x->failed; i++) {
        if (x->cur_len + 1 >= x->cur_cap) {
            if (x->cur_cap >= XLIST_NAME_MAX) {
                sw_errf(&x->err, SW_E_BACKEND, false, "file list: a name over %d bytes",
                        XLIST_NAME_MAX);
                x->failed = true;
                break;
            }
            x->cur_cap = x->cur_cap ? x->cur_cap * 2 : 256;
            x->cur = xrealloc(x->cur, x->cur_cap);
        }
        x->cur[x->cur_len] = buf[i];
        if (buf[i] != '\0') {
            x->cur_len++;
            continue;
        }
        if (xlist_name(x, x->cur, x->cur_len) != 0) x->failed = true;
        x->cur_len = 0;
    }
    return x->failed ? -1 : 0;
}

static int by_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A kept name that ends, at a '/', in an excluded one: tar would leave it out too. */
static int xlist_check(xlist *x)
{
    char **sorted = xmalloc((x->ntops + 1) * sizeof *sorted);
    memcpy(sorted, x->tops, x->ntops * sizeof *sorted);
    qsort(sorted, x->ntops, sizeof *sorted, by_str);
    int rc = 0;
    for (size_t i = 0; i < x->ncand && rc == 0; i++)
        for (const char *p = strchr(x->cand[i], '/'); p && rc == 0; p = strchr(p + 1, '/')) {
            const char *suffix = p + 1;
            char **hit = bsearch(&suffix, sorted, x->ntops, sizeof *sorted, by_str);
            if (hit)
                rc = sw_errf(&x->err, SW_E_INVALID_PAYLOAD, false, "exclude pattern '%.64s' "
                             "cannot be applied exactly by the pod's tar: a kept member's name "
                             "ends in a name it leaves out (tar's exclude list is unanchored)",
                             xlist_pattern(x->ex, *hit));
        }
    free(sorted);
    return rc;
}

/* One line of the exclude list for 'name' (no newline in it): tar's wildcards and '\'
 * escaped with '\' (both tars' fnmatch, and GNU's literal table, read "\*" as '*'); trailing
 * white space as a one-character bracket ("[ ]"), since GNU drops it from a line. */
static void xlist_escape(const char *name, char **buf, size_t *len, size_t *cap)
{
    size_t n = strlen(name), keep = n;
    while (keep > 0 && strchr(" \t\v\f\r", name[keep - 1])) keep--;
    size_t need = *len + 2 * keep + 3 * (n - keep) + 2;
    if (need > *cap) {
        *cap = need * 2;
        *buf = xrealloc(*buf, *cap);
    }
    char *o = *buf + *len;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (i >= keep) {
            *o++ = '[';
            *o++ = c;
            *o++ = ']';
            continue;
        }
        if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') *o++ = '\\';
        *o++ = c;
    }
    *o++ = '\n';
    *len = (size_t)(o - *buf);
}

/* SH_LIST in the pod, then the list for SH_ARCHIVE_X into *list (owned, *len bytes; 0 bytes
 * = nothing to leave out) and whether attachments/ goes in. */
static int exclude_list(const sb_session *s, char **list, size_t *len, bool *attachments,
                        sw_err *err)
{
    const char *argv[] = {"sh", "-c", SH_LIST, "sh", s->dir, NULL};
    xlist x = {.ex = s->exclude};
    cmd c = {.container = s->cfg->k8s_sync_container, .name = "snapshot file list",
             .argv = argv, .stream = true, .out = xlist_cb, .out_arg = &x};
    size_t cap = 0;
    int rc = run(s, &c, err);
    *list = NULL;
    *len = 0;
    if (rc != 0 && x.failed) *err = x.err;
    /* find's 1: something vanished or was unreadable while it walked; tar has the last word
     * on what exists (and fails on what it cannot read) */
    if (rc == 0 && c.exit_code != 0 && c.exit_code != 1) rc = fail_exit(s, &c, false, err);
    if (rc == 0 && x.cur_len) rc = sw_errf(err, SW_E_BACKEND, true, "snapshot file list in pod "
                                           "%s: cut short", pod_of(s));
    if (rc == 0 && xlist_check(&x) != 0) {
        *err = x.err;
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < x.ntops; i++) xlist_escape(x.tops[i], list, len, &cap);
    *attachments = x.attachments;
    xlist_free(&x);
    if (rc != 0) {
        free(*list);
        *list = NULL;
        *len = 0;
    }
    return rc;
}

typedef struct mem_in {
    const char *p;
    size_t n, off;
} mem_in;

static ssize_t mem_read(void *arg, char *buf, size_t n)
{
    mem_in *m = arg;
    if (n > m->n - m->off) n = m->n - m->off;
    memcpy(buf, m->p + m->off, n);
    m->off += n;
    return (ssize_t)n;
}

/* The pod's tar streams into the sink untouched (compressed all the way); a second thread
 * reads the same bytes to count members and file bytes, and to prove the stream is a whole
 * tar.gz before the store commits it. GNU tar's exit 1 ("file changed as we read it") is
 * accepted when that proof holds: the archive is complete, as arc_write_session's would be.
 * With exclude patterns, the file list comes first (above). */
static int k8s_archive(const sb_session *s, arc_sink_fn sink, void *arg, arc_stats *st,
                       sw_err *err)
{
    char *list = NULL, slen[32];
    size_t len = 0;
    bool att = false;
    if (excl_count(s->exclude) > 0 && exclude_list(s, &list, &len, &att, err) != 0) return -1;
    snprintf(slen, sizeof slen, "%zu", len);
    const char *plain[] = {"sh", "-c", SH_ARCHIVE, "sh", s->dir, NULL};
    const char *xargv[] = {"sh", "-c", SH_ARCHIVE_X, "sh", s->dir, slen, att ? "1" : "0", NULL};
    mem_in in = {list, len, 0};
    arch_out a = {.sink = sink, .arg = arg};
    if (!(a.count = arc_counter_start(s->live, err))) {
        free(list);
        return -1;
    }
    cmd c = {.container = s->cfg->k8s_sync_container, .name = "snapshot tar",
             .argv = len ? xargv : plain, .stream = true, .out = arch_out_cb, .out_arg = &a};
    if (len) {
        c.in = mem_read;
        c.in_arg = &in;
        c.in_len = (int64_t)len;
    }
    int rc = run(s, &c, err);
    free(list);
    if (rc != 0 && a.sink_failed) *err = a.sink_err;
    if (rc == 0 && c.exit_code != 0 && c.exit_code != 1) rc = fail_exit(s, &c, false, err);
    if (rc != 0) {
        arc_counter_abort(a.count);
        return -1;
    }
    arc_stats got;
    if (arc_counter_finish(a.count, &got, err) != 0) {
        if (c.exit_code != 0) return fail_exit(s, &c, false, err);
        return -1;
    }
    if (st) *st = got;
    return 0;
}

/* ------------------------------------------------------------------ spool */

/* A restore's compressed archive, held on local disk (unlinked at once) while it is checked,
 * then sent to the pod from the start. */
typedef struct spool {
    int fd;
    int64_t len, cap;              /* cap <= 0: unlimited */
    int64_t off;                   /* read position while sending */
} spool;

static int spool_open(spool *sp, int64_t cap, sw_err *err)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    sp->len = sp->off = 0;
    sp->cap = cap;
    sp->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (sp->fd >= 0) return 0;
    char path[SB_PATH_MAX];
    snprintf(path, sizeof path, "%s/snapworker-spool-XXXXXX", dir);
    sp->fd = mkostemp(path, O_CLOEXEC);
    if (sp->fd < 0) return sb_errno(err, errno, "create a spool file in", dir);
    unlink(path);
    return 0;
}

static void spool_close(spool *sp)
{
    if (sp->fd >= 0) close(sp->fd);
    sp->fd = -1;
}

static int spool_write(spool *sp, const void *buf, size_t n, sw_err *err)
{
    if (sp->cap > 0 && (int64_t)n > sp->cap - sp->len)
        return sw_errf(err, SW_E_ARCHIVE_TOO_LARGE, false,
                       "compressed archive over %lld bytes (the restore limits)", (long long)sp->cap);
    if (fd_write_all(sp->fd, buf, n) != 0) return sb_errno(err, errno, "write", "the spool file");
    sp->len += (int64_t)n;
    return 0;
}

static ssize_t spool_in(void *arg, char *buf, size_t n)
{
    spool *sp = arg;
    if (sp->off >= sp->len) return 0;
    if ((int64_t)n > sp->len - sp->off) n = (size_t)(sp->len - sp->off);
    for (;;) {
        ssize_t r = pread(sp->fd, buf, n, sp->off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;    /* the spool cannot shrink: short is an error */
        sp->off += r;
        return r;
    }
}

static int spool_sink(void *arg, const void *buf, size_t n, sw_err *err)
{
    return spool_write(arg, buf, n, err);
}

typedef struct tee_src {
    arc_source_fn src;
    void *arg;
    spool *sp;
} tee_src;

static ssize_t tee_read(void *p, void *buf, size_t n, sw_err *err)
{
    tee_src *t = p;
    ssize_t r = t->src(t->arg, buf, n, err);
    if (r > 0 && spool_write(t->sp, buf, (size_t)r, err) != 0) return -1;
    return r;
}

/* ------------------------------------------------------------------ restore */

struct sb_stage {
    const sb_session *s;
    char path[SB_PATH_MAX + 256];  /* {sessions}/.staging-{session}-{job} (in the pod) */
    bool swapped;                  /* the swap stands (not undone) */
};

static sb_stage *k8s_stage_begin(const sb_session *s, sw_err *err)
{
    sb_stage *g = xcalloc(1, sizeof *g);
    g->s = s;
    snprintf(g->path, sizeof g->path, "%s/.staging-%s-%s", s->sessions_dir, s->session_id, s->job_id);
    const char *argv[] = {"sh", "-c", SH_BEGIN, "sh", s->sessions_dir, s->session_id, g->path, NULL};
    cmd c = {.container = s->cfg->k8s_sync_container, .name = "staging setup", .argv = argv};
    if (run_ok(s, &c, err) != 0) {
        free(g);
        return NULL;
    }
    return g;
}

/* Send spool 'sp' (sp->len bytes) to the pod and extract it into the stage. */
static int send_extract(sb_stage *g, spool *sp, arc_compression comp, bool strip, sw_err *err)
{
    const sb_session *s = g->s;
    char len[32];
    snprintf(len, sizeof len, "%lld", (long long)sp->len);
    const char *argv[] = {"sh", "-c", SH_EXTRACT, "sh", len, g->path,
                          comp == ARC_COMP_GZIP ? "gzip" : "none", strip ? "1" : "0", NULL};
    sp->off = 0;
    cmd c = {.container = s->cfg->k8s_sync_container, .name = "restore tar", .argv = argv,
             .stream = true, .in = spool_in, .in_arg = sp, .in_len = sp->len};
    return run_ok(s, &c, err);
}

static int64_t spool_cap(const cfg *c)
{
    if (c->max_restore_bytes <= 0 || c->max_restore_entries <= 0) return 0;
    /* gzip never grows data by more than ~0.1%; a tar adds at most 1 KiB per member */
    return c->max_restore_bytes + c->max_restore_bytes / 64 + c->max_restore_entries * 1024 +
           (1 << 20);
}

/* The whole archive is read and checked (arc_check: the rules and limits of a local
 * extraction) while it is spooled; the store's size and sha256 are verified at its end;
 * only then does the pod get it. */
static int k8s_stage_extract(sb_stage *g, arc_source_fn src, void *arg, arc_stats *st,
                             sw_err *err)
{
    const cfg *c = g->s->cfg;
    spool sp;
    if (spool_open(&sp, spool_cap(c), err) != 0) return -1;
    tee_src t = {src, arg, &sp};
    arc_limits lim = {c->max_restore_bytes, c->max_restore_entries};
    arc_check_info info;
    char drain[64 * 1024];
    ssize_t r = 0;
    int rc = -1;
    if (arc_check(tee_read, &t, &lim, g->s->live, &info, err) != 0) goto out;
    while ((r = tee_read(&t, drain, sizeof drain, err)) > 0) {
    }
    if (r < 0) goto out;
    if (info.comp == ARC_COMP_ZSTD) {
        sw_errf(err, SW_E_UNSAFE_ARCHIVE, false,
                "zstd archive: the kubernetes backend restores tar.gz or plain tar only");
        goto out;
    }
    if (sb_cancelled(g->s)) {
        sw_errc(err, SW_E_TIMEOUT, "restore cancelled");
        goto out;
    }
    if (send_extract(g, &sp, info.comp, info.special_bits, err) != 0) goto out;
    if (st) *st = info.st;
    rc = 0;
out:
    spool_close(&sp);
    return rc;
}

static int k8s_stage_fresh(sb_stage *g, sw_err *err)
{
    const sb_session *s = g->s;
    const char *tmpl = s->cfg->outputs_template;
    if (!tmpl || !*tmpl) {
        char o[SB_PATH_MAX + 300], a[SB_PATH_MAX + 300];
        snprintf(o, sizeof o, "%s/outputs", g->path);
        snprintf(a, sizeof a, "%s/attachments", g->path);
        const char *argv[] = {"mkdir", "-p", o, a, NULL};
        cmd c = {.container = s->cfg->k8s_sync_container, .name = "fresh workspace", .argv = argv};
        return run_ok(s, &c, err);
    }
    spool sp;
    if (spool_open(&sp, 0, err) != 0) return -1;
    int rc = arc_write_tree(tmpl, "outputs", s->cfg->gzip_level, spool_sink, &sp, NULL, err);
    if (rc == 0) rc = send_extract(g, &sp, ARC_COMP_GZIP, true, err);
    spool_close(&sp);
    return rc;
}

static int k8s_stage_unswap(sb_stage *g, sw_err *err);

/* On any failure the swap may have stopped halfway (or even committed, when only the stream
 * dropped): it is undone at once, best effort; if that fails too, the journal stays and the
 * next attempt's stage_begin undoes it. */
static int k8s_stage_swap(sb_stage *g, sw_err *err)
{
    const sb_session *s = g->s;
    const char *argv[] = {"sh", "-c", SH_SWAP, "sh", s->dir, g->path, NULL};
    cmd c = {.container = s->cfg->k8s_sync_container, .name = "swap", .argv = argv};
    int rc = run(s, &c, err);
    if (rc == 0 && c.exit_code == 0) {
        g->swapped = true;
        return 0;
    }
    if (rc == 0) fail_exit(s, &c, false, err);
    sw_err e2;
    g->swapped = true;
    (void)k8s_stage_unswap(g, &e2);
    return -1;
}

static int k8s_stage_unswap(sb_stage *g, sw_err *err)
{
    const sb_session *s = g->s;
    const char *argv[] = {"sh", "-c", SH_UNSWAP, "sh", s->dir, g->path, NULL};
    cmd c = {.container = s->cfg->k8s_sync_container, .name = "swap undo", .argv = argv};
    if (run_ok(s, &c, err) != 0) return -1;
    g->swapped = false;
    return 0;
}

static void k8s_stage_end(sb_stage *g)
{
    if (!g) return;
    const sb_session *s = g->s;
    const char *argv[] = {"sh", "-c", SH_END, "sh", s->dir, g->path, g->swapped ? "1" : "0", NULL};
    cmd c = {.container = s->cfg->k8s_sync_container, .name = "staging cleanup", .argv = argv};
    sw_err e;
    (void)run_ok(s, &c, &e);   /* what is left is removed by the next stage_begin/state */
    free(g);
}

/* ------------------------------------------------------------------ config */

typedef struct two_bufs {
    const char *p[2];
    size_t n[2];
    int i;
    size_t off;
} two_bufs;

static ssize_t two_in(void *arg, char *buf, size_t n)
{
    two_bufs *t = arg;
    while (t->i < 2 && t->off == t->n[t->i]) {
        t->i++;
        t->off = 0;
    }
    if (t->i >= 2) return 0;
    size_t k = t->n[t->i] - t->off;
    if (k > n) k = n;
    memcpy(buf, t->p[t->i] + t->off, k);
    t->off += k;
    return (ssize_t)k;
}

/* Rendered first (a bad input writes nothing), then one exec: the bytes on stdin only. */
static int k8s_write_config(const sb_session *s, const sb_config *c, json_t *written,
                            sw_err *err)
{
    char target[SB_PATH_MAX], la[32], lo[32];
    char *agents = NULL, *opencode = NULL;
    size_t agents_len, opencode_len;
    int rc = -1;
    if (sb_files_target(s, c, target, sizeof target, err) != 0 ||
        sb_config_render(s, c, target, &agents, &agents_len, &opencode, &opencode_len, err) != 0)
        goto out;
    snprintf(la, sizeof la, "%zu", agents_len);
    snprintf(lo, sizeof lo, "%zu", opencode_len);
    const char *argv[] = {"sh", "-c", SH_CONFIG, "sh", s->dir, target, la, lo, NULL};
    two_bufs in = {{agents, opencode}, {agents_len, opencode_len}, 0, 0};
    cmd x = {.container = s->cfg->k8s_sandbox_container, .name = "config write", .argv = argv,
             .in = two_in, .in_arg = &in, .in_len = (int64_t)(agents_len + opencode_len)};
    if (run(s, &x, err) != 0) goto out;
    if (x.exit_code == 3) {
        sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s in pod %s", s->dir, pod_of(s));
        goto out;
    }
    if (x.exit_code != 0) {
        fail_exit(s, &x, false, err);
        goto out;
    }
    if (written) {
        json_array_append_new(written, json_string("files"));
        json_array_append_new(written, json_string("AGENTS.md"));
        json_array_append_new(written, json_string("opencode.json"));
    }
    rc = 0;
out:
    if (opencode) explicit_bzero(opencode, opencode_len);   /* it holds the api key */
    free(agents);
    free(opencode);
    return rc;
}

/* ------------------------------------------------------------------ config kept aside */

struct sb_cfgkeep {
    const sb_session *s;
    char path[SB_PATH_MAX + 64];   /* {sessions}/.config-{session} (in the pod) */
};

/* One exec (SH_KEEP): per session, not per job, so a crashed attempt's keep is found by the
 * next one (see SH_KEEP for what a leftover means). */
static sb_cfgkeep *k8s_config_keep(const sb_session *s, sw_err *err)
{
    sb_cfgkeep *k = xcalloc(1, sizeof *k);
    k->s = s;
    snprintf(k->path, sizeof k->path, "%s/.config-%s", s->sessions_dir, s->session_id);
    const char *argv[] = {"sh", "-c", SH_KEEP, "sh", s->dir, k->path, s->job_id, NULL};
    cmd c = {.container = s->cfg->k8s_sandbox_container, .name = "config keep", .argv = argv};
    int rc = run(s, &c, err);
    if (rc == 0 && c.exit_code == 3)
        rc = sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s in pod %s", s->dir,
                     pod_of(s));
    else if (rc == 0 && c.exit_code != 0)
        rc = fail_exit(s, &c, false, err);
    if (rc != 0) {
        free(k);
        return NULL;
    }
    return k;
}

static int k8s_config_restore(sb_cfgkeep *k, sw_err *err)
{
    const sb_session *s = k->s;
    const char *argv[] = {"sh", "-c", SH_KEEP_RESTORE, "sh", s->dir, k->path, s->job_id, NULL};
    cmd c = {.container = s->cfg->k8s_sandbox_container, .name = "config put back", .argv = argv};
    if (run(s, &c, err) != 0) return -1;
    if (c.exit_code == 3)
        return sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s in pod %s", s->dir,
                       pod_of(s));
    if (c.exit_code == 4)
        return sw_errf(err, SW_E_BACKEND, false, "config put back in pod %s: %s is not this job's",
                       pod_of(s), k->path);
    return c.exit_code == 0 ? 0 : fail_exit(s, &c, false, err);
}

/* Best effort: a keep left behind is this job's (reused by its next attempt) or, once the
 * job has ended, replaced by the next job's keep. */
static void k8s_config_drop(sb_cfgkeep *k)
{
    if (!k) return;
    const sb_session *s = k->s;
    const char *argv[] = {"sh", "-c", SH_KEEP_DROP, "sh", k->path, s->job_id, NULL};
    cmd c = {.container = s->cfg->k8s_sandbox_container, .name = "config keep cleanup",
             .argv = argv};
    sw_err e;
    (void)run_ok(s, &c, &e);
    free(k);
}

/* ------------------------------------------------------------------ dev server */

static int k8s_webapp_start(const sb_session *s, int port, sb_webapp *out, sw_err *err)
{
    memset(out, 0, sizeof *out);
    char **web = sb_webapp_argv(s->cfg->webapp_cmd, port);
    if (!web) return sw_errf(err, SW_E_BACKEND, false, "SNAPWORKER_WEBAPP_CMD is empty");
    size_t n = 0;
    while (web[n]) n++;
    char sport[16], swait[16];
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(swait, sizeof swait, "%d", s->cfg->webapp_wait_s);
    const char **argv = xcalloc(n + 9, sizeof *argv);
    size_t k = 0;
    argv[k++] = "sh";
    argv[k++] = "-c";
    argv[k++] = SH_WEB_START;
    argv[k++] = "sh";
    argv[k++] = s->dir;
    argv[k++] = sport;
    argv[k++] = swait;
    argv[k++] = s->cfg->webapp_npm_install ? "1" : "0";
    for (size_t i = 0; i < n; i++) argv[k++] = web[i];
    argv[k] = NULL;
    cmd c = {.container = s->cfg->k8s_sandbox_container, .name = "dev server start",
             .argv = argv, .stream = true};
    int rc = run(s, &c, err);
    if (rc == 0 && c.exit_code != 0)   /* as on local: npm, exit and readiness are retryable */
        rc = fail_exit(s, &c, c.exit_code >= 4 && c.exit_code <= 6, err);
    if (rc == 0) {
        char *end = NULL;
        long pid = strtol(c.out_buf, &end, 10);
        if (end == c.out_buf || pid < 0 || pid > 0x7fffffffL)
            rc = sw_errf(err, SW_E_BACKEND, true, "dev server start in pod %s: no pid reported",
                         pod_of(s));
        else out->pid = (pid_t)pid;
    }
    free(argv);
    onyx_strv_free(web);
    return rc;
}

static void k8s_webapp_stop(const sb_session *s, const sb_webapp *w)
{
    if (!w || w->pid <= 0) return;
    char spid[16];
    snprintf(spid, sizeof spid, "%d", (int)w->pid);
    const char *argv[] = {"sh", "-c", SH_WEB_STOP, "sh", s->dir, spid, NULL};
    cmd c = {.container = s->cfg->k8s_sandbox_container, .name = "dev server stop", .argv = argv};
    sw_err e;
    (void)run_ok(s, &c, &e);
}

const sb_ops sb_k8s_ops = {
    .name = "kubernetes",
    .locate = k8s_locate,
    .release = k8s_release,
    .state = k8s_state,
    .files_default = k8s_files_default,
    .archive = k8s_archive,
    .stage_begin = k8s_stage_begin,
    .stage_extract = k8s_stage_extract,
    .stage_fresh = k8s_stage_fresh,
    .stage_swap = k8s_stage_swap,
    .stage_unswap = k8s_stage_unswap,
    .stage_end = k8s_stage_end,
    .write_config = k8s_write_config,
    .config_keep = k8s_config_keep,
    .config_restore = k8s_config_restore,
    .config_drop = k8s_config_drop,
    .webapp_start = k8s_webapp_start,
    .webapp_stop = k8s_webapp_stop,
    .list_sessions = sb_k8s_list_sessions,   /* jobs/sandbox_k8s_sleep.c */
    .teardown = sb_k8s_teardown,
};

const sb_ops *sb_k8s_ops_get(void)
{
    return &sb_k8s_ops;
}
