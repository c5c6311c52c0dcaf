/* jobs/webapp.c — start a session's dev server on the local backend (ONYX-COMPAT "Dev server").
 * Owns: the argv of SNAPWORKER_WEBAPP_CMD, the child's environment, `npm install`, the
 * nextjs.pid / nextjs.pid.start / nextjs.log files, stopping a recorded previous instance,
 * reaping, and the optional readiness probe. Does not own: the port (the restore job
 * allocates it) or the session layout (sandbox_local.c).
 *
 * No shell anywhere: posix_spawnp with an argv split on spaces and an explicit envp from
 * which secrets are dropped. The child gets its own session (POSIX_SPAWN_SETSID, so its pid
 * is also its process-group id and the whole group can be signalled), /dev/null as stdin,
 * nextjs.log (append) as stdout and stderr, default signal dispositions, an empty mask and
 * no inherited descriptors beyond 0-2 (addclosefrom_np: Redis and PostgreSQL sockets of the
 * worker must not leak into it). posix_spawn cannot double-fork, so the server stays our
 * child: each one gets a tiny detached thread blocked in waitpid(pid) that reaps it whenever
 * it exits (no zombies, and no waitpid(-1) that could steal another child's status).
 *
 * Pid files: nextjs.pid holds just "PID\n" (what Onyx's `kill $(cat nextjs.pid)` expects);
 * nextjs.pid.start holds "PID STARTTIME\n" with the /proc/PID/stat start time. A previous
 * instance is signalled only when both agree and /proc still shows that start time, so a
 * recycled pid is never killed. Both are written atomically (.start first). */
#include "jobs/sandbox.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/xmalloc.h"

extern char **environ;

#define STOP_TERM_MS 5000     /* SIGTERM grace before SIGKILL */
#define STOP_KILL_MS 2000     /* after SIGKILL, how long until we call it stuck */
#define PROBE_EVERY_MS 200    /* readiness probe interval */
#define REAPER_STACK (256 * 1024)

static void sleep_ms(int ms)
{
    struct timespec d = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
}

/* ------------------------------------------------------------------ argv and env */

char **sb_webapp_argv(const char *cmd, int port)
{
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    size_t cap = 8, n = 0;
    char **v = xcalloc(cap, sizeof *v);
    for (const char *p = cmd; *p;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        size_t len = strcspn(p, " \t");
        char *word = xstrndup(p, len);
        if (n + 2 > cap) v = xrealloc(v, (cap *= 2) * sizeof *v);
        v[n++] = onyx_replace_all(word, "{port}", portbuf);
        v[n] = NULL;
        free(word);
        p += len;
    }
    if (n == 0) {
        free(v);
        return NULL;
    }
    return v;
}

static bool secret_var(const char *kv)
{
    static const char *const prefixes[] = {"AWS_", "CELERY_", "SNAPWORKER_"};
    static const char *const names[] = {"DATABASE_URL", "REDIS_URL", "PGPASSWORD"};
    size_t klen = strcspn(kv, "=");
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(kv, prefixes[i], strlen(prefixes[i])) == 0) return true;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (klen == strlen(names[i]) && strncmp(kv, names[i], klen) == 0) return true;
    return false;
}

char **sb_webapp_envp(char *const *env)
{
    size_t n = 0;
    while (env && env[n]) n++;
    char **v = xcalloc(n + 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strchr(env[i], '=') && !secret_var(env[i])) v[k++] = xstrdup(env[i]);
    return v;
}

/* ------------------------------------------------------------------ /proc */

/* Start time (field 22) and state (field 3) of /proc/PID/stat. The command name (field 2)
 * may hold spaces and parentheses, so parsing starts after the last ')'. */
static int proc_stat(pid_t pid, unsigned long long *ticks, char *state)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    p++;
    char st = 0;
    unsigned long long v = 0;
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ') p++;
        if (!*p) return -1;
        if (field == 3) st = *p;
        if (field == 22) v = strtoull(p, NULL, 10);
        p += strcspn(p, " ");
    }
    *ticks = v;
    if (state) *state = st;
    return 0;
}

int sb_proc_start_ticks(pid_t pid, unsigned long long *out)
{
    return proc_stat(pid, out, NULL);
}

/* Still the process we started: same start time, not a zombie. */
static bool same_alive(pid_t pid, unsigned long long ticks)
{
    unsigned long long t;
    char st;
    return pid > 0 && proc_stat(pid, &t, &st) == 0 && t == ticks && st != 'Z' && st != 'X';
}

/* ------------------------------------------------------------------ reaping and stopping */

static void *reap_main(void *arg)
{
    pid_t pid = (pid_t)(intptr_t)arg;
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return NULL;
}

static void reap_later(pid_t pid)
{
    pthread_attr_t a;
    pthread_t t;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, REAPER_STACK);
    pthread_create(&t, &a, reap_main, (void *)(intptr_t)pid); /* on failure: a zombie at worst */
    pthread_attr_destroy(&a);
}

static bool wait_gone(pid_t pid, unsigned long long ticks, int ms)
{
    for (int waited = 0; waited < ms; waited += 20) {
        if (!same_alive(pid, ticks)) return true;
        sleep_ms(20);
    }
    return !same_alive(pid, ticks);
}

/* SIGTERM to the group (the server's own session), then SIGKILL. 0 once it is gone. */
static int stop_verified(pid_t pid, unsigned long long ticks)
{
    if (!same_alive(pid, ticks)) return 0;
    if (kill(-pid, SIGTERM) != 0) kill(pid, SIGTERM);
    if (wait_gone(pid, ticks, STOP_TERM_MS)) {
        kill(-pid, SIGKILL); /* stragglers of the group; ESRCH when none */
        return 0;
    }
    if (kill(-pid, SIGKILL) != 0) kill(pid, SIGKILL);
    return wait_gone(pid, ticks, STOP_KILL_MS) ? 0 : -1;
}

static bool read_small(int dfd, const char *name, char *buf, size_t n)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r <= 0) return false;
    buf[r] = '\0';
    return true;
}

/* The recorded instance: pid from nextjs.pid, start time from nextjs.pid.start (same pid). */
static bool recorded(int dfd, pid_t *pid, unsigned long long *ticks)
{
    char a[64], b[96];
    long p1 = 0, p2 = 0;
    unsigned long long t = 0;
    if (!read_small(dfd, "nextjs.pid", a, sizeof a) || !read_small(dfd, "nextjs.pid.start", b, sizeof b))
        return false;
    if (sscanf(a, "%ld", &p1) != 1 || sscanf(b, "%ld %llu", &p2, &t) != 2) return false;
    if (p1 <= 1 || p1 != p2) return false;
    *pid = (pid_t)p1;
    *ticks = t;
    return true;
}

int sb_webapp_stop_recorded(const char *session_dir, sw_err *err)
{
    int dfd = open(session_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return 0;
    pid_t pid;
    unsigned long long ticks;
    bool have = recorded(dfd, &pid, &ticks);
    close(dfd);
    if (!have) return 0; /* nothing we can prove is ours: never signal a guess */
    if (stop_verified(pid, ticks) != 0)
        return sw_errf(err, SW_E_BACKEND, true, "previous dev server %d of %s would not stop",
                       (int)pid, session_dir);
    return 0;
}

void sb_webapp_stop(const sb_session *s, const sb_webapp *w)
{
    if (!w || w->pid <= 0) return;
    stop_verified(w->pid, w->start_ticks);
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return;
    pid_t pid;
    unsigned long long ticks;
    if (recorded(dfd, &pid, &ticks) && pid == w->pid && ticks == w->start_ticks) {
        unlinkat(dfd, "nextjs.pid", 0);
        unlinkat(dfd, "nextjs.pid.start", 0);
    }
    close(dfd);
}

/* ------------------------------------------------------------------ spawning */

static int spawn(const sb_session *s, char **argv, const char *cwd, pid_t *pid, sw_err *err)
{
    char logpath[SB_PATH_MAX + 16];
    snprintf(logpath, sizeof logpath, "%s/nextjs.log", s->dir);
    char **envp = sb_webapp_envp(environ);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&dfl, sigs[i]);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, logpath, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawn_file_actions_addchdir_np(&fa, cwd);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    int e = posix_spawnp(pid, argv[0], &fa, &at, argv, envp);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    onyx_strv_free(envp);
    if (e != 0) {
        sb_errno(err, e, "spawn", argv[0]);
        if (e == ENOENT || e == EACCES || e == ENOEXEC) err->retryable = false;
        return -1;
    }
    return 0;
}

/* `npm install` in cwd, waited for; killed (whole group) when the job is cancelled. */
static int npm_install(const sb_session *s, const char *cwd, sw_err *err)
{
    char *argv[] = {(char *)"npm", (char *)"install", NULL};
    pid_t pid;
    if (spawn(s, argv, cwd, &pid, err) != 0) return -1;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) return sb_errno(err, errno, "waitpid npm install in", cwd);
        if (sb_cancelled(s)) {
            kill(-pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return sw_errc(err, SW_E_TIMEOUT, "npm install in %s cancelled", cwd);
        }
        sleep_ms(50);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return sw_errf(err, SW_E_BACKEND, true, "npm install in %s failed (status %d, see nextjs.log)",
                       cwd, status);
    return 0;
}

/* ------------------------------------------------------------------ readiness */

/* One HTTP/1.0 GET / on 127.0.0.1 or ::1: the status code, or -1 when nothing answered. */
static int probe_family(int family, int port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int code = -1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&ss, len) == 0) {
        char req[128], resp[64];
        int n = snprintf(req, sizeof req, "GET / HTTP/1.0\r\nHost: localhost:%d\r\n\r\n", port);
        size_t got = 0;
        if (send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
            ssize_t r;
            while (got < sizeof resp - 1 && (r = recv(fd, resp + got, sizeof resp - 1 - got, 0)) > 0)
                got += (size_t)r;
        }
        resp[got] = '\0';
        int c;
        if (sscanf(resp, "HTTP/%*d.%*d %d", &c) == 1) code = c;
    }
    close(fd);
    return code;
}

static int wait_ready(const sb_session *s, const sb_webapp *w, int port, sw_err *err)
{
    int64_t until = job_now_ms() + (int64_t)s->cfg->webapp_wait_s * 1000;
    for (;;) {
        int code = probe_family(AF_INET, port);
        if (code < 0) code = probe_family(AF_INET6, port);
        if (code >= 0 && code < 500) return 0;
        if (!same_alive(w->pid, w->start_ticks))
            return sw_errf(err, SW_E_BACKEND, true, "dev server of %s exited (see nextjs.log)", s->dir);
        if (sb_cancelled(s)) return sw_errc(err, SW_E_TIMEOUT, "waiting for port %d cancelled", port);
        if (job_now_ms() >= until)
            return sw_errf(err, SW_E_BACKEND, true, "dev server did not answer below 500 on port %d "
                           "within %d s", port, s->cfg->webapp_wait_s);
        sleep_ms(PROBE_EVERY_MS);
    }
}

/* ------------------------------------------------------------------ start */

static bool is_kind(const char *path, mode_t kind)
{
    struct stat st;
    return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == kind;
}

static int record(const sb_session *s, const sb_webapp *w, sw_err *err)
{
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return sb_errno(err, errno, "open", s->dir);
    char a[32], b[64];
    snprintf(a, sizeof a, "%d\n", (int)w->pid);
    snprintf(b, sizeof b, "%d %llu\n", (int)w->pid, w->start_ticks);
    int rc = sb_write_atomic(dfd, s->dir, "nextjs.pid.start", b, strlen(b), 0644, err);
    if (rc == 0) rc = sb_write_atomic(dfd, s->dir, "nextjs.pid", a, strlen(a), 0644, err);
    close(dfd);
    return rc;
}

int sb_webapp_start(const sb_session *s, int port, sb_webapp *out, sw_err *err)
{
    char outputs[SB_PATH_MAX + 16], web[SB_PATH_MAX + 16], probe[SB_PATH_MAX + 32];
    memset(out, 0, sizeof *out);
    snprintf(outputs, sizeof outputs, "%s/outputs", s->dir);
    snprintf(web, sizeof web, "%s/outputs/web", s->dir);
    snprintf(probe, sizeof probe, "%s/package.json", web);
    /* outputs/ and web/ are the agent's: refuse to chdir through a symlink it planted */
    if (!is_kind(outputs, S_IFDIR) || !is_kind(web, S_IFDIR) || !is_kind(probe, S_IFREG)) return 0;
    if (sb_webapp_stop_recorded(s->dir, err) != 0) return -1;
    snprintf(probe, sizeof probe, "%s/node_modules", web);
    if (s->cfg->webapp_npm_install && !is_kind(probe, S_IFDIR) && npm_install(s, web, err) != 0)
        return -1;
    if (sb_cancelled(s)) return sw_errc(err, SW_E_TIMEOUT, "dev server start cancelled");
    char **argv = sb_webapp_argv(s->cfg->webapp_cmd, port);
    if (!argv) return sw_errf(err, SW_E_BACKEND, false, "SNAPWORKER_WEBAPP_CMD is empty");
    sb_webapp w = {0};
    int rc = spawn(s, argv, web, &w.pid, err);
    onyx_strv_free(argv);
    if (rc != 0) return -1;
    if (sb_proc_start_ticks(w.pid, &w.start_ticks) != 0) {
        while (waitpid(w.pid, NULL, 0) < 0 && errno == EINTR) {
        }
        return sw_errf(err, SW_E_BACKEND, true, "dev server of %s exited at once (see nextjs.log)",
                       s->dir);
    }
    reap_later(w.pid);
    if (record(s, &w, err) != 0 || (s->cfg->webapp_wait_s > 0 && wait_ready(s, &w, port, err) != 0)) {
        sb_webapp_stop(s, &w);
        return -1;
    }
    *out = w;
    return 0;
}
