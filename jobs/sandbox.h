/* jobs/sandbox.h — the sandbox backend interface the snapshot, restore and regenerate jobs
 * act on: one ops table per backend, chosen by SANDBOX_BACKEND.
 *   jobs/sandbox.c        what every backend shares: the session handle and backend table,
 *                         regenerate-args parsing, rendering AGENTS.md/opencode.json into
 *                         memory, atomic writes through a dirfd, errno mapping, cancellation
 *   jobs/sandbox_local.c  sessions are folders on this host (sb_local_ops)
 *   jobs/webapp.c         the local dev server (spawn, pid record, stop)
 *   jobs/sandbox_k8s.c    sessions live in a pod (sb_k8s_ops, docs/kubernetes.md)
 * Does not own: ports, rows and the store (the jobs call common/db.h and common/store.h),
 * archive formats (common/arc.h), or the bytes of AGENTS.md/opencode.json (jobs/onyx.h).
 * Why an ops table: the jobs are written once; a backend only says where a session lives and
 * how its files are read, swapped and started (one file per backend, as the store has store_file.c and store_s3.c).
 *
 *   {sessions_dir}/                      local: {SANDBOX_BASE_PATH}/{sandbox_id}/sessions
 *                                        kubernetes: /workspace/sessions (in the pod)
 *       {session_id}/            outputs/ attachments/ files@ AGENTS.md opencode.json(0600)
 *                                nextjs.pid nextjs.log
 *       .staging-{session_id}-{job_id}/   a restore being extracted (removed on any exit)
 *       .config-{session_id}-{job_id}/    old config kept aside while it is rewritten
 *   {SNAPWORKER_STATE_DIR}/webapp-{session_id}   local: the dev server the worker started
 * Everything below the base may be written by a sandbox: the local backend follows no
 * symlink there (docs/jobs.md "What a hostile sandbox cannot do"). */
#ifndef SW_JOBS_SANDBOX_H
#define SW_JOBS_SANDBOX_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/arc.h"
#include "common/cfg.h"
#include "common/err.h"
#include "common/ids.h"
#include "jobs/job.h"
#include "jobs/onyx.h"

#define SB_PATH_MAX 4096

typedef struct sb_ops sb_ops;

typedef struct sb_session {
    const cfg *cfg;                        /* borrowed, outlives the session */
    const sb_ops *ops;                     /* the backend */
    const job_ctx *ctx;                    /* borrowed, may be NULL (tests): cancel/deadline */
    char job_id[129];                      /* names the staging folder */
    char sandbox_id[SW_UUID_LEN + 1];      /* lowercased */
    char session_id[SW_UUID_LEN + 1];      /* lowercased */
    /* Paths in the backend's own filesystem (the host for local, the pod for kubernetes);
     * used to name things in messages and by the backend, never by the jobs to open files. */
    char sessions_dir[SB_PATH_MAX];        /* local: {base}/{sandbox}/sessions; k8s: /workspace/sessions */
    char dir[SB_PATH_MAX];                 /* {sessions_dir}/{session} */
    void *backend_priv;                    /* the backend's own state (e.g. the pod); freed by ops->release */
    const excl *exclude;                   /* borrowed, may be NULL: what ops->archive leaves out
                                              (patterns relative to the session folder) */
    arc_live *live;                        /* borrowed, may be NULL: ops->archive and
                                              ops->stage_extract keep their member count so
                                              far in it (progress events) */
} sb_session;

typedef enum sb_state {
    SB_NO_SESSION,     /* no session directory */
    SB_NO_OUTPUTS,     /* session directory without outputs/ */
    SB_WORKSPACE,      /* outputs/ is a directory: "the workspace exists" */
} sb_state;

/* Regenerate inputs (docs/jobs.md "regenerate"); strings are borrowed from the args json. */
typedef struct sb_config {
    onyx_llm llm;                /* any field may be NULL */
    int nextjs_port;             /* 0 = none */
    bool use_demo_data;          /* default true, as Onyx's demo_data_enabled */
    char **disabled_tools;       /* owned, NULL-terminated; the args' list or OPENCODE_DISABLED_TOOLS */
    const char *user_name, *user_role; /* NULL = none */
    bool include_org_info;       /* default false */
    const char *files_target;    /* NULL = the backend's default target */
} sb_config;

typedef struct sb_stage sb_stage;  /* a restore being prepared next to the session */
typedef struct sb_cfgkeep sb_cfgkeep; /* a session's config files kept aside during a restore */

typedef struct sb_webapp {
    pid_t pid;                   /* 0 = not started (no outputs/web/package.json) */
    unsigned long long start_ticks; /* /proc/PID/stat starttime of pid */
} sb_webapp;

struct sb_ops {
    const char *name;                                                   /* "local" */
    /* Fill s->sessions_dir and s->dir (and s->backend_priv) from the validated ids. */
    int (*locate)(sb_session *s, sw_err *err);
    /* Free what locate put in s->backend_priv; NULL = nothing to free. */
    void (*release)(sb_session *s);
    int (*state)(const sb_session *s, sb_state *out, sw_err *err);
    /* The `files` link target when the args give none: demo data or the user's files, as a
     * path in the backend's filesystem. 0, or -1 with SW_E_BACKEND (too long). */
    int (*files_default)(const sb_session *s, bool demo, char *out, size_t n, sw_err *err);
    /* Stream outputs/ (and non-empty attachments/) as tar.gz into sink (arc_write_session). */
    int (*archive)(const sb_session *s, arc_sink_fn sink, void *arg, arc_stats *st, sw_err *err);
    /* A fresh, empty staging folder for this job (leftovers of the session removed first). */
    sb_stage *(*stage_begin)(const sb_session *s, sw_err *err);
    /* Extract an archive into the stage (arc_extract, the configured limits). */
    int (*stage_extract)(sb_stage *g, arc_source_fn src, void *arg, arc_stats *st, sw_err *err);
    /* Lay out a fresh workspace in the stage: outputs/ from the template (or empty). */
    int (*stage_fresh)(sb_stage *g, sw_err *err);
    /* Move outputs/ and attachments/ into the session (created when missing). */
    int (*stage_swap)(sb_stage *g, sw_err *err);
    /* Undo a swap: the session's outputs/ and attachments/ as they were before it. */
    int (*stage_unswap)(sb_stage *g, sw_err *err);
    void (*stage_end)(sb_stage *g);    /* remove the staging folder and free g; NULL-safe */
    /* Write files@, AGENTS.md, opencode.json (each atomically); appends names to 'written'.
     * The bytes come from sb_config_render. */
    int (*write_config)(const sb_session *s, const sb_config *c, json_t *written, sw_err *err);
    /* Keep the session's files@, AGENTS.md and opencode.json aside, or note that they are
     * absent, so config_restore can put exactly those back after a failed attempt. These three
     * may be NULL (the backend keeps nothing). */
    sb_cfgkeep *(*config_keep)(const sb_session *s, sw_err *err);
    int (*config_restore)(sb_cfgkeep *k, sw_err *err); /* as before config_keep; 0 or -1 */
    void (*config_drop)(sb_cfgkeep *k);  /* remove the kept copies and free k; NULL-safe */
    /* Start the dev server on 'port' (stopping a recorded previous one first). */
    int (*webapp_start)(const sb_session *s, int port, sb_webapp *out, sw_err *err);
    /* Stop a server this job started (after a failed restore); NULL-safe no-op for pid 0. */
    void (*webapp_stop)(const sb_session *s, const sb_webapp *w);
    /* ---- sandbox-level (the sleep job, docs/lifecycle.md); no session involved ---- */
    /* The sandbox's session folder names that are canonical UUIDs (lowercased), sorted, into
     * *ids (owned, NULL-terminated, free with onyx_strv_free) and *n. No sessions folder (or
     * no sandbox) is 0 with *n = 0. -1 with SW_E_BACKEND. NULL = the backend cannot list. */
    int (*list_sessions)(const cfg *c, const char *sandbox_id, char ***ids, size_t *n,
                         sw_err *err);
    /* Stop what runs for the sandbox: local, the dev servers this worker recorded for its
     * sessions; kubernetes, DELETE the service and the pod (404 = done). Idempotent: 0 when
     * nothing is left running. -1 with SW_E_BACKEND. */
    int (*teardown)(const cfg *c, const char *sandbox_id, sw_err *err);
};

extern const sb_ops sb_local_ops;
/* The kubernetes backend (jobs/sandbox_k8s.c) exports its table through this function. */
extern const sb_ops sb_k8s_ops;
const sb_ops *sb_k8s_ops_get(void);
/* The kubernetes halves of list_sessions and teardown (jobs/sandbox_k8s_sleep.c), for
 * sb_k8s_ops to point at: `ls` of /workspace/sessions in the sync container (a pod that a GET
 * says is gone: no sessions), and DELETE of
 * the service and the pod named prefix + sandbox_id[0:8], each with the uid precondition
 * read by a GET first (a re-created object of the same name is never deleted). */
int sb_k8s_list_sessions(const cfg *c, const char *sandbox_id, char ***ids, size_t *n,
                         sw_err *err);
int sb_k8s_teardown(const cfg *c, const char *sandbox_id, sw_err *err);
/* The ops table for c->sandbox_backend, or NULL with a permanent SW_E_BACKEND ("not built
 * in"). */
const sb_ops *sb_backend_ops(const cfg *c, sw_err *err);

/* ---- sandbox.c: shared by every backend ------------------------------------------ */

/* Fill 's' for the job's backend and ids (revalidated and lowercased here); ctx may be NULL.
 * 0, or -1 with SW_E_INVALID_PAYLOAD (bad id), SW_E_BACKEND permanent (unsupported backend,
 * path too long) or the backend's locate error. Release with sb_session_close (also after -1). */
int sb_session_init(sb_session *s, const cfg *c, const job_ctx *ctx, const char *job_id,
                    const char *sandbox_id, const char *session_id, sw_err *err);
void sb_session_close(sb_session *s);          /* ops->release; NULL-safe, idempotent */
bool sb_cancelled(const sb_session *s);        /* job_cancelled(ctx); false without ctx */

/* Parse the regenerate args of 'args' (object or NULL) into 'out' (free with
 * sb_config_free). Wrong types, a port outside 0..65535 or a bad files_target are
 * SW_E_INVALID_PAYLOAD naming the field (never its value). */
int sb_config_parse(const json_t *args, const cfg *c, sb_config *out, sw_err *err);
void sb_config_free(sb_config *sc);            /* frees disabled_tools only; NULL-safe */
/* 0 when 't' may be a files link target: absolute, no "." or ".." segment, no control
 * characters, shorter than SB_PATH_MAX; else -1 with SW_E_INVALID_PAYLOAD. */
int sb_files_target_check(const char *t, sw_err *err);
/* The `files` link target of 'c' into out (size n): c->files_target, else the backend's
 * files_default. 0 or -1 (the backend's error). */
int sb_files_target(const sb_session *s, const sb_config *c, char *out, size_t n, sw_err *err);
/* Render the bytes of AGENTS.md (SNAPWORKER_AGENTS_TEMPLATE or the built-in one) and
 * opencode.json for 'c', with 'files_target' as the knowledge path. Both are rendered before
 * either is returned, so a backend writes nothing when rendering fails. On 0 the caller frees
 * *agents and *opencode; on -1 both are NULL and 'err' holds SW_E_INVALID_PAYLOAD (bad
 * UTF-8), SW_E_BACKEND permanent (template unreadable or over 1 MiB) or SW_E_INTERNAL. */
int sb_config_render(const sb_session *s, const sb_config *c, const char *files_target,
                     char **agents, size_t *agents_len, char **opencode, size_t *opencode_len,
                     sw_err *err);
/* The default files link target for the local backend into out (size n): demo data or the
 * user's files with {sandbox_id} substituted. 0, or -1 with SW_E_BACKEND when too long. */
int sb_local_files_default(const cfg *c, const char *sandbox_id, bool demo, char *out, size_t n,
                           sw_err *err);
/* Write 'len' bytes to name in dirfd atomically: a temp file beside it (O_EXCL|O_NOFOLLOW),
 * fsync, rename over. 'dir' only names the folder in messages. 0 or -1 with SW_E_BACKEND. */
int sb_write_atomic(int dirfd, const char *dir, const char *name, const char *data, size_t len,
                    mode_t mode, sw_err *err);
/* Point name in dirfd at 'target' atomically (temp symlink + rename); a dangling target is fine. */
int sb_symlink_atomic(int dirfd, const char *dir, const char *name, const char *target,
                      sw_err *err);
/* Fill 'err' with SW_E_BACKEND (retryable) "OP PATH: strerror(e)"; returns -1. */
int sb_errno(sw_err *err, int e, const char *op, const char *path);
/* openat(dirfd, rel, flags, mode) that follows no symlink in any component of 'rel' and never
 * leaves dirfd: openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) where the kernel has it, else a
 * walk with O_NOFOLLOW per component. O_NOFOLLOW and O_CLOEXEC are added. 'rel' is relative,
 * '/'-separated, without "." or "..". The fd, or -1 with errno (a symlink on the way gives
 * ELOOP or, with O_DIRECTORY, ENOTDIR; "."/".." EXDEV). */
int sb_open_beneath(int dirfd, const char *rel, int flags, mode_t mode);
void sb_beneath_use_openat2(bool on);          /* tests: false forces the per-component walk */
/* The worker's state folder: SNAPWORKER_STATE_DIR, else $XDG_DATA_HOME/snapworker/state,
 * ~/.local/share/snapworker/state or /var/tmp/snapworker/state. 0, or -1 when too long. */
int sb_state_dir(const cfg *c, char *out, size_t n);
/* Create (0700) and open the state folder: an O_DIRECTORY fd, or -1 with a permanent
 * SW_E_BACKEND when it lies under SANDBOX_BASE_PATH or is not this user's (mode forced 0700). */
int sb_state_dir_open(const cfg *c, sw_err *err);

/* ---- local dev server (webapp.c) ------------------------------------------------ */
/* Split 'cmd' on runs of spaces/tabs and replace each "{port}" with the port. Returns an
 * owned NULL-terminated argv (free with onyx_strv_free), or NULL when cmd has no word. */
char **sb_webapp_argv(const char *cmd, int port);
/* A copy of 'env' (NULL-terminated "K=V" strings) without secrets: AWS_*, DATABASE_URL,
 * REDIS_URL, CELERY_*, SNAPWORKER_*. Caller frees with onyx_strv_free. */
char **sb_webapp_envp(char *const *env);
/* /proc/PID/stat starttime (clock ticks since boot) into *out; -1 when no such process. */
int sb_proc_start_ticks(pid_t pid, unsigned long long *out);
/* Start the configured dev server in outputs/web of the session open at 'sfd' (borrowed; see
 * webapp.c): out->pid 0 when there is no package.json. The previous server of the session is
 * stopped first (sb_webapp_stop_recorded). 0, or -1 with SW_E_BACKEND (spawn failed, npm
 * install failed, server exited or did not answer within SNAPWORKER_WEBAPP_WAIT_S, state
 * folder unusable) or SW_E_TIMEOUT. */
int sb_webapp_start(const sb_session *s, int sfd, int port, sb_webapp *out, sw_err *err);
/* Stop the server this worker (or an earlier one with the same state folder) recorded for the
 * session, when the record still matches the process: SIGTERM to its process group, SIGKILL
 * after 5 s. Never reads the sandbox's nextjs.pid. 0 = nothing left running (or nothing
 * recorded), -1 with SW_E_BACKEND when it would not die or the state folder is unusable. */
int sb_webapp_stop_recorded(const sb_session *s, sw_err *err);
/* sb_webapp_stop_recorded for every session of 'sandbox_id' that has a record in the state
 * folder (the sessions' folders need not exist any more). 0, or -1 with SW_E_BACKEND naming
 * the first server that would not stop (the others are still stopped). */
int sb_webapp_stop_sandbox(const cfg *c, const char *sandbox_id, sw_err *err);
/* Stop 'w' (only if /proc still shows its start time) and remove the records naming it;
 * sfd (borrowed, -1 = unknown) is the session folder holding nextjs.pid. */
void sb_webapp_stop(const sb_session *s, int sfd, const sb_webapp *w);
/* `snapworker __devserver FD ARGV...` (argv[0] is "__devserver"): the start gate a dev server
 * is spawned behind (webapp.c). Blocks reading one byte from FD: on the go byte it execs ARGV
 * (PATH lookup as posix_spawnp's) in this process, and when that fails sends the errno back
 * on FD and returns SB_WEBAPP_GATE_EXEC_FAILED; on EOF or anything else it returns
 * SB_WEBAPP_GATE_CLOSED without exec'ing; 2 on bad usage. Reads no configuration. */
int sb_webapp_gate_main(int argc, char **argv);
#define SB_WEBAPP_GATE_FD 3            /* where the gate finds its end of the socketpair */
#define SB_WEBAPP_GATE_CLOSED 125      /* exit status: closed before the go byte, nothing ran */
#define SB_WEBAPP_GATE_EXEC_FAILED 127 /* exit status: the exec failed (errno sent back) */

#endif
