/* worker/jobproc.c — the daemon's side of job processes (worker/jobproc.h, docs/processes.md).
 *
 * An executor thread that runs a heavy job spawns `/proc/self/exe <config flags> __job PPID`
 * with posix_spawn (the daemon is multithreaded: no fork), hands it the job over a
 * socketpair (the child's end as fd 3), then serves it until it exits: memo writes and
 * enqueues go through the daemon's own job_ctx hooks (Redis stays in the daemon), progress
 * events likewise, and the final frame carries the result or the sw_err. Meanwhile the
 * thread watches the cancel flag and the deadline: either sends SIGTERM (the job process
 * turns it into its cancel flag, so a job stops at its next checkpoint) and, if the process
 * is still there SNAPWORKER_JOB_KILL_GRACE_S later, SIGKILL. The process is reaped with
 * wait4 (its peak RSS comes with it) once its pidfd is readable; a process that died without
 * a final frame ends its job `internal`, retryable, naming the signal or the exit status. */
#include "worker/jobproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"
#include "worker/jobwire.h"

extern char **environ;

static char **g_argv;   /* program + config flags, then "__job", PPID, NULL */
static int g_nargs;
static char g_ppid[24];
static char g_sub[] = "__job";
static char **g_envp;   /* the job process's environment */
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

void jobproc_init(int nargs, char **argv)
{
    g_nargs = nargs;
    g_argv = xcalloc((size_t)nargs + 3, sizeof *g_argv);
    for (int i = 0; i < nargs; i++) g_argv[i] = argv[i];
    snprintf(g_ppid, sizeof g_ppid, "%d", (int)getpid());
    g_argv[nargs] = g_sub;
    g_argv[nargs + 1] = g_ppid;
}

/* The daemon's environment less what only the daemon needs: the Redis and Celery URLs
 * (a job process never talks to Redis: everything goes through the channel) and the HTTP
 * token. DATABASE_URL, AWS_* and the rest of the configuration stay: the job needs them. */
static bool daemon_only(const char *kv)
{
    static const char *const names[] = {"REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                                        "SNAPWORKER_HTTP_TOKEN"};
    size_t klen = strcspn(kv, "=");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (klen == strlen(names[i]) && strncmp(kv, names[i], klen) == 0) return true;
    return false;
}

static void env_build(void)
{
    size_t n = 0;
    while (environ && environ[n]) n++;
    g_envp = xcalloc(n + 1, sizeof *g_envp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strchr(environ[i], '=') && !daemon_only(environ[i])) g_envp[k++] = xstrdup(environ[i]);
}

/* SNAPWORKER_TEST_HOOKS=1, read once (a noop job asks it, and noop is the hot path) */
static int hooks_on = -1;
static void hooks_read(void)
{
    const char *h = getenv("SNAPWORKER_TEST_HOOKS");
    hooks_on = h && strcmp(h, "1") == 0;
}
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static bool test_hooks(void)
{
    pthread_once(&hooks_once, hooks_read);
    return hooks_on == 1;
}

bool jobproc_wanted(const job_req *req)
{
    if (!req || !*req->type) return false;
    if (strcmp(req->type, "noop") != 0) return true;
    return test_hooks() && json_object_get(req->args, "crash") != NULL;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- spawning --------------------------------------------------------- */

typedef struct jproc {
    pid_t pid;
    int fd;       /* our end of the channel */
    int pidfd;    /* -1 when pidfd_open is not available */
} jproc;

static int spawn(jproc *jp, sw_err *err)
{
    pthread_once(&env_once, env_build);
    if (!g_argv) return sw_errf(err, SW_E_INTERNAL, false, "job processes not initialised");
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return sw_errf(err, SW_E_INTERNAL, true, "job process channel: %s", strerror(errno));
    /* the child's end must not already be fd 3 (dup2 onto itself would keep CLOEXEC) */
    int cfd = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
    close(sv[1]);
    if (cfd < 0) {
        close(sv[0]);
        return sw_errf(err, SW_E_INTERNAL, true, "job process channel: %s", strerror(errno));
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM, SIGXFSZ,
                  SIGSEGV, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&dfl, sigs[i]);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, cfd, 3);
    posix_spawn_file_actions_addclosefrom_np(&fa, 4);
    posix_spawnattr_init(&at);
    /* its own process group: a terminal's ^C reaches the daemon, which decides */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    int e = posix_spawn(&jp->pid, "/proc/self/exe", &fa, &at, g_argv, g_envp);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    close(cfd);
    if (e != 0) {
        close(sv[0]);
        return sw_errf(err, SW_E_INTERNAL, true, "cannot start a job process: %s", strerror(e));
    }
    jp->fd = sv[0];
#ifdef SYS_pidfd_open
    jp->pidfd = (int)syscall(SYS_pidfd_open, jp->pid, 0);
#else
    jp->pidfd = -1;
#endif
    return 0;
}

/* ---- the spare: a started job process waiting for this thread's next job ----
 * Spawning costs little in the daemon (posix_spawn returns once the exec happened), but the
 * job process then loads ~50 shared libraries before it can start: tens of ms on a busy
 * machine. So a thread that ran a job in a process starts the next one right after (when
 * SNAPWORKER_JOB_SPARE=1), and that one waits, blocked reading its request, until this
 * thread's next heavy job. It is this thread's child (PR_SET_PDEATHSIG follows the thread),
 * holds nothing of any job, and is killed and reaped when the thread exits. */
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void proc_close(jproc *jp, bool kill_it)
{
    if (kill_it) kill(jp->pid, SIGKILL);
    close(jp->fd);
    waitpid(jp->pid, NULL, 0);
    if (jp->pidfd >= 0) close(jp->pidfd);
}

static void spare_destroy(void *p)
{
    proc_close(p, true);
    free(p);
}

static void spare_key_make(void) { (void)pthread_key_create(&spare_key, spare_destroy); }

/* This thread's spare, if it is still there (it may have been killed meanwhile). */
static bool spare_take(jproc *out)
{
    pthread_once(&spare_once, spare_key_make);
    jproc *sp = pthread_getspecific(spare_key);
    if (!sp) return false;
    pthread_setspecific(spare_key, NULL);
    struct pollfd p = {.fd = sp->pidfd >= 0 ? sp->pidfd : sp->fd, .events = POLLIN};
    bool dead = poll(&p, 1, 0) != 0 || kill(sp->pid, 0) != 0;
    if (dead) {
        proc_close(sp, true);
        free(sp);
        return false;
    }
    *out = *sp;
    free(sp);
    return true;
}

static void spare_make(const cfg *c)
{
    if (!c->job_spare) return;
    pthread_once(&spare_once, spare_key_make);
    if (pthread_getspecific(spare_key)) return;
    jproc *sp = xcalloc(1, sizeof *sp);
    sw_err e;
    if (spawn(sp, &e) < 0) {
        free(sp);
        return;
    }
    pthread_setspecific(spare_key, sp);
}

/* ---- serving one job process ------------------------------------------ */

/* An undo (on_dead) runs after the cancel or the deadline that ended its job: neither stops
 * it, as neither stopped it in-process; this bound does (then SIGTERM, grace, SIGKILL). */
#define ON_DEAD_LIMIT_MS (300 * 1000)

typedef struct session {
    job_ctx *ctx;
    int64_t stop_at_ms;     /* > 0: the cancel flag and the deadline are ignored; stop then */
    jproc jp;
    jw_reader rd;
    json_t *done;           /* the final frame, when it came */
    int64_t spawn_ns, started_ns;
    int bad;                /* a malformed frame: the process is killed */
} session;

static json_t *err_obj(const sw_err *e)
{
    return json_pack("{s:s,s:s,s:b}", "code", sw_code_name(e->code), "message", e->msg,
                     "retryable", e->retryable);
}

static void err_from(const json_t *o, sw_err *e)
{
    sw_code code = SW_E_INTERNAL;
    const char *name = json_string_value(json_object_get(o, "code"));
    if (!name || !sw_code_from_name(name, &code) || code == SW_OK) code = SW_E_INTERNAL;
    const char *msg = json_string_value(json_object_get(o, "message"));
    sw_errf(e, code, json_is_true(json_object_get(o, "retryable")), "%s",
            msg ? msg : "job process failed without a message");
}

static void reply(session *s, int rc, const sw_err *e)
{
    json_t *m = json_pack("{s:s,s:i}", "t", "reply", "rc", rc);
    if (rc < 0) json_object_set_new(m, "err", err_obj(e));
    /* a reply is small; the child is blocked reading it */
    int fl = fcntl(s->jp.fd, F_GETFL);
    fcntl(s->jp.fd, F_SETFL, fl & ~O_NONBLOCK);
    (void)jw_send(s->jp.fd, m);
    fcntl(s->jp.fd, F_SETFL, fl);
    json_decref(m);
}

static void handle(session *s, json_t *m)
{
    const char *t = json_string_value(json_object_get(m, "t"));
    job_ctx *ctx = s->ctx;
    sw_err e;
    sw_err_clear(&e);
    if (!t) {
        s->bad = 1;
    } else if (!strcmp(t, "started")) {
        s->started_ns = json_integer_value(json_object_get(m, "ns"));
    } else if (!strcmp(t, "memo_set")) {
        const char *name = json_string_value(json_object_get(m, "name"));
        const char *value = json_string_value(json_object_get(m, "value"));
        int rc = name && value && ctx->memo_set ? ctx->memo_set(ctx, name, value, &e)
                                                : sw_errc(&e, SW_E_INTERNAL, "bad memo request");
        reply(s, rc, &e);
    } else if (!strcmp(t, "enqueue")) {
        const char *p = json_string_value(json_object_get(m, "payload"));
        int rc = p && ctx->enqueue ? ctx->enqueue(ctx, p, &e)
                                   : sw_errc(&e, SW_E_INTERNAL, "enqueue not available here");
        reply(s, rc, &e);
    } else if (!strcmp(t, "progress")) {
        json_t *en = json_object_get(m, "entries");
        if (ctx->progress)
            ctx->progress(ctx, json_integer_value(json_object_get(m, "bytes")),
                          json_is_integer(en) ? json_integer_value(en) : -1);
    } else if (!strcmp(t, "done")) {
        json_decref(s->done);
        s->done = json_incref(m);
        if (json_is_true(json_object_get(m, "pg_used"))) metrics_pg_connecting(0);
        if (json_is_true(json_object_get(m, "store_used"))) metrics_mark_store_used();
        json_int_t pgr = json_integer_value(json_object_get(m, "pg_reconnects"));
        if (pgr > 0) metrics_count(MC_PG_RECONNECTS, (uint64_t)pgr);
    } else {
        s->bad = 1;
    }
}

static void drain_frames(session *s)
{
    json_t *m;
    int r;
    while ((r = jw_next(&s->rd, &m)) == 1) {
        handle(s, m);
        json_decref(m);
    }
    if (r < 0) s->bad = 1;
}

static const char *sig_name(int sig, char *buf, size_t n)
{
    const char *a = sigabbrev_np(sig);
    if (a) snprintf(buf, n, "SIG%s", a);
    else snprintf(buf, n, "signal %d", sig);
    return buf;
}

/* Serve the process until it is reaped; *status and *ru are wait4's. */
static void serve(session *s, int *status, struct rusage *ru, bool *stopped)
{
    const cfg *c = s->ctx->cfg;
    int64_t grace_ms = (int64_t)c->job_kill_grace_s * 1000;
    int64_t kill_at = 0;
    bool term_sent = false, kill_sent = false, reaped = false;
    fcntl(s->jp.fd, F_SETFL, fcntl(s->jp.fd, F_GETFL) | O_NONBLOCK);
    while (!reaped) {
        int64_t now = job_now_ms();
        int64_t deadline = s->stop_at_ms > 0 ? s->stop_at_ms : s->ctx->deadline_ms;
        bool stop = (s->stop_at_ms <= 0 && s->ctx->cancel && atomic_load(s->ctx->cancel)) ||
                    (deadline > 0 && now >= deadline) || s->bad;
        if (s->done && !term_sent && !kill_at) kill_at = now + grace_ms + 1000; /* must exit now */
        if (stop && !term_sent && !s->done) {
            kill(s->jp.pid, SIGTERM);   /* the job process's cancel flag */
            term_sent = true;
            kill_at = now + (s->bad ? 0 : grace_ms);
        }
        if (kill_at && !kill_sent && now >= kill_at) {
            kill(s->jp.pid, SIGKILL);
            kill_sent = true;
        }
        int64_t wait = 100; /* the cancel flag is polled */
        if (kill_at && !kill_sent && kill_at - now < wait) wait = kill_at - now;
        if (!term_sent && deadline > 0 && deadline - now < wait) wait = deadline - now;
        if (wait < 0) wait = 0;
        struct pollfd p[2];
        int n = 0;
        if (!s->rd.eof) p[n++] = (struct pollfd){.fd = s->jp.fd, .events = POLLIN};
        if (s->jp.pidfd >= 0) p[n++] = (struct pollfd){.fd = s->jp.pidfd, .events = POLLIN};
        if (n == 0) { /* no pidfd and the channel closed: the process is exiting */
            wait4(s->jp.pid, status, 0, ru);
            break;
        }
        int pr = poll(p, (nfds_t)n, (int)wait);
        if (pr < 0 && errno != EINTR) break;
        if (!s->rd.eof && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (jw_fill(&s->rd, s->jp.fd) < 0) s->rd.eof = 1;
            drain_frames(s);
        }
        if (s->jp.pidfd >= 0) {
            if (p[n - 1].revents & POLLIN) reaped = wait4(s->jp.pid, status, 0, ru) == s->jp.pid;
        } else {
            reaped = wait4(s->jp.pid, status, WNOHANG, ru) == s->jp.pid;
        }
    }
    /* what it wrote before it went */
    if (!s->rd.eof) jw_fill(&s->rd, s->jp.fd);
    drain_frames(s);
    *stopped = term_sent;
}

int jobproc_run(job_ctx *ctx, jp_op op, const json_t *memo, json_t **result, sw_err *err)
{
    session s = {.ctx = ctx, .jp = {.pid = -1, .fd = -1, .pidfd = -1}};
    if (result) *result = NULL;
    char *payload = payload_dump(ctx->req);
    json_t *mo = memo ? json_incref((json_t *)memo) : json_object();
    json_t *req = json_pack("{s:s,s:s,s:s,s:i,s:I,s:o,s:b}", "t", "job", "op",
                            op == JP_ON_DEAD ? "on_dead" : "run", "payload", payload, "attempt",
                            ctx->attempt, "deadline_ms", (json_int_t)ctx->deadline_ms, "memo", mo,
                            "cancel", ctx->cancel && atomic_load(ctx->cancel));
    free(payload);
    if (op == JP_ON_DEAD) s.stop_at_ms = job_now_ms() + ON_DEAD_LIMIT_MS;
    s.spawn_ns = mono_ns();
    bool spare = spare_take(&s.jp);
    if (!spare && spawn(&s.jp, err) < 0) {
        json_decref(req);
        return -1;
    }
    int fl = fcntl(s.jp.fd, F_GETFL);
    fcntl(s.jp.fd, F_SETFL, fl & ~O_NONBLOCK);
    (void)jw_send(s.jp.fd, req); /* a child that died first is seen when it is reaped */
    json_decref(req);

    int status = 0;
    bool stopped = false;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    serve(&s, &status, &ru, &stopped);
    close(s.jp.fd);
    if (s.jp.pidfd >= 0) close(s.jp.pidfd);

    int rc = -1;
    char how[48], sn[24];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "signal %s", sig_name(WTERMSIG(status), sn, sizeof sn));
    else
        snprintf(how, sizeof how, "status %d", WEXITSTATUS(status));
    if (s.done) {
        json_t *d = s.done;
        if (json_integer_value(json_object_get(d, "rc")) == 0) {
            rc = 0;
            if (result) *result = json_incref(json_object_get(d, "result"));
        } else {
            err_from(json_object_get(d, "err"), err);
        }
    } else if (WIFSIGNALED(status) && stopped) {
        sw_errf(err, SW_E_INTERNAL, true,
                "job process stopped by the worker (%s) after a cancel, a lost lease or its "
                "deadline", sig_name(WTERMSIG(status), sn, sizeof sn));
    } else if (WIFSIGNALED(status)) {
        sw_errf(err, SW_E_INTERNAL, true, "job process killed by signal %d (%s)",
                WTERMSIG(status), sig_name(WTERMSIG(status), sn, sizeof sn));
    } else {
        sw_errf(err, SW_E_INTERNAL, true, "job process exited with status %d without an outcome",
                WEXITSTATUS(status));
    }
    log_line l;
    log_begin(&l, SW_LOG_INFO, "job_process");
    log_str(&l, "job", ctx->req->id);
    log_str(&l, "type", ctx->req->type);
    log_str(&l, "op", op == JP_ON_DEAD ? "on_dead" : "run");
    log_int(&l, "pid", s.jp.pid);
    log_str(&l, "exit", how);
    log_int(&l, "spawn_us", s.started_ns ? (s.started_ns - s.spawn_ns) / 1000 : -1);
    log_int(&l, "spare", spare);
    log_int(&l, "ms", (mono_ns() - s.spawn_ns) / 1000000);
    log_int(&l, "peak_rss_kb", ru.ru_maxrss);
    log_end(&l);
    json_decref(s.done);
    jw_reader_free(&s.rd);
    spare_make(ctx->cfg);   /* for this thread's next heavy job */
    return rc;
}

void jobproc_gc(const cfg *c, const char *prefix, int64_t budget_ms)
{
    session s = {.jp = {.pid = -1, .fd = -1, .pidfd = -1}};
    atomic_int never = 0;
    job_req none;
    memset(&none, 0, sizeof none);
    job_ctx ctx = {.cfg = c, .req = &none, .cancel = &never,
                   .deadline_ms = job_now_ms() + budget_ms + 60000};
    s.ctx = &ctx;
    sw_err e;
    if (spawn(&s.jp, &e) < 0) {
        log_msg(SW_LOG_WARN, "store_gc", "prefix", prefix, "error", e.msg, NULL);
        return;
    }
    json_t *req = json_pack("{s:s,s:s,s:I}", "t", "gc", "prefix", prefix, "budget_ms",
                            (json_int_t)budget_ms);
    (void)jw_send(s.jp.fd, req);
    json_decref(req);
    int status = 0;
    bool stopped = false;
    struct rusage ru;
    serve(&s, &status, &ru, &stopped);
    close(s.jp.fd);
    if (s.jp.pidfd >= 0) close(s.jp.pidfd);
    json_decref(s.done);
    jw_reader_free(&s.rd);
}
