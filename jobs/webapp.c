/* jobs/webapp.c — start a session's dev server on the local backend (docs/jobs.md "Dev server").
 * Owns: the argv of SNAPWORKER_WEBAPP_CMD, the child's environment, `npm install`, the
 * record of the server it started, nextjs.pid and nextjs.log, stopping a recorded previous
 * instance, reaping, and the optional readiness probe. Does not own: the port (the restore job
 * allocates it) or the session layout (sandbox_local.c opens the session folder and passes
 * its fd; everything here works relative to it, never through a path the sandbox could
 * re-point).
 *
 * No shell anywhere: an argv split on spaces and an explicit envp from which secrets are
 * dropped. The child gets its own session (POSIX_SPAWN_SETSID, so its pid
 * is also its process-group id and the whole group can be signalled), /dev/null as stdin,
 * nextjs.log (append, opened here: a regular file with one link, never a planted symlink,
 * FIFO or hard link) as stdout and stderr, outputs/web as its working folder (by fd),
 * default signal dispositions, an empty mask and
 * no inherited descriptors beyond 0-2 (addclosefrom_np: Redis and PostgreSQL sockets of the
 * worker must not leak into it). posix_spawn cannot double-fork, so the server stays our
 * child: each one gets a tiny detached thread blocked in waitpid(pid) that reaps it whenever
 * it exits (no zombies, and no waitpid(-1) that could steal another child's status).
 *
 * The server starts behind a gate, so that it is recorded before it can run: the child is
 * this binary (/proc/self/exe) as `__devserver FD ARGV...` (sb_webapp_gate_main), blocked
 * reading one byte from its end of a socketpair. Only once the record below is written does
 * the job send that byte; the gate then execs the server in the same process (same pid, same
 * /proc start time: the record still verifies) and reports an exec failure back as an errno.
 * A job process that dies before the record closes its end, and the gate exits without
 * exec'ing anything, so no server outlives an attempt that did not record it.
 *
 * What was started is recorded where no sandbox can write: the worker's state folder
 * (sb_state_dir_open: 0700, this user's, outside SANDBOX_BASE_PATH), one file per session,
 *     webapp-{session_id}:  "v1 PID STARTTICKS SANDBOX_ID SESSION_ID\n"   (0600)
 * A previous server is signalled only when that record names this sandbox and session, /proc
 * still shows its start time, it leads its own session and process group (we spawn with
 * setsid), and it is not us, pid 1 or a group we are in. nextjs.pid ("PID\n", what Onyx's
 * `kill $(cat nextjs.pid)` expects) is still written into the session, but it is the
 * sandbox's file: nothing here reads it to decide what to signal. */
#include "jobs/sandbox.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#define GATE_GO 'g'           /* the byte that lets a gated server start */

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

typedef struct proc_info {
    char state;                   /* field 3 */
    long pgrp, sid;               /* fields 5 and 6 */
    unsigned long long ticks;     /* field 22: start time, clock ticks since boot */
} proc_info;

/* /proc/PID/stat. The command name (field 2) may hold spaces and parentheses, so parsing
 * starts after the last ')'. */
static int proc_stat(pid_t pid, proc_info *pi)
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
    memset(pi, 0, sizeof *pi);
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ') p++;
        if (!*p) return -1;
        if (field == 3) pi->state = *p;
        if (field == 5) pi->pgrp = strtol(p, NULL, 10);
        if (field == 6) pi->sid = strtol(p, NULL, 10);
        if (field == 22) pi->ticks = strtoull(p, NULL, 10);
        p += strcspn(p, " ");
    }
    return 0;
}

int sb_proc_start_ticks(pid_t pid, unsigned long long *out)
{
    proc_info pi;
    if (proc_stat(pid, &pi) != 0) return -1;
    *out = pi.ticks;
    return 0;
}

/* Still the server we started: same start time, not a zombie, leader of its own session and
 * process group (so kill(-pid) reaches only its group), and never us or a group we are in. */
static bool same_alive(pid_t pid, unsigned long long ticks)
{
    proc_info pi;
    if (pid <= 1 || pid == getpid() || pid == getpgrp() || pid == getsid(0)) return false;
    return proc_stat(pid, &pi) == 0 && pi.ticks == ticks && pi.state != 'Z' && pi.state != 'X' &&
           pi.pgrp == (long)pid && pi.sid == (long)pid;
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

/* ------------------------------------------------------------------ the record */

typedef struct webapp_rec {
    pid_t pid;
    unsigned long long ticks;
} webapp_rec;

static void rec_name(const sb_session *s, char *out, size_t n)
{
    snprintf(out, n, "webapp-%s", s->session_id);
}

/* The record of this session in the state folder 'stfd': true when present, well-formed and
 * naming this sandbox and session. */
static bool rec_read(int stfd, const sb_session *s, webapp_rec *r)
{
    char name[64], buf[256], sb[64], ss[64];
    long pid;
    unsigned long long t;
    rec_name(s, name, sizeof name);
    int fd = openat(stfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = '\0';
    if (sscanf(buf, "v1 %ld %llu %63s %63s", &pid, &t, sb, ss) != 4) return false;
    if (pid <= 1 || strcmp(sb, s->sandbox_id) != 0 || strcmp(ss, s->session_id) != 0) return false;
    r->pid = (pid_t)pid;
    r->ticks = t;
    return true;
}

static int rec_write(int stfd, const sb_session *s, const sb_webapp *w, sw_err *err)
{
    char name[64], buf[256], what[SB_PATH_MAX];
    rec_name(s, name, sizeof name);
    int n = snprintf(buf, sizeof buf, "v1 %d %llu %s %s\n", (int)w->pid, w->start_ticks,
                     s->sandbox_id, s->session_id);
    if (sb_state_dir(s->cfg, what, sizeof what) != 0) snprintf(what, sizeof what, "state folder");
    return sb_write_atomic(stfd, what, name, buf, (size_t)n, 0600, err);
}

static void rec_remove_if(int stfd, const sb_session *s, const sb_webapp *w)
{
    webapp_rec r;
    char name[64];
    if (!rec_read(stfd, s, &r) || r.pid != w->pid || r.ticks != w->start_ticks) return;
    rec_name(s, name, sizeof name);
    unlinkat(stfd, name, 0);
}

int sb_webapp_stop_recorded(const sb_session *s, sw_err *err)
{
    int stfd = sb_state_dir_open(s->cfg, err);
    if (stfd < 0) return -1;
    webapp_rec r;
    int rc = 0;
    if (rec_read(stfd, s, &r)) { /* nothing we can prove is ours: never signal a guess */
        if (stop_verified(r.pid, r.ticks) != 0)
            rc = sw_errf(err, SW_E_BACKEND, true, "previous dev server %d of %s would not stop",
                         (int)r.pid, s->dir);
        else
            rec_remove_if(stfd, s, &(sb_webapp){r.pid, r.ticks});
    }
    close(stfd);
    return rc;
}

/* Each record is named webapp-{session}; the record itself names the sandbox, so a session
 * of another sandbox is never touched (rec_read compares both ids). */
int sb_webapp_stop_sandbox(const cfg *c, const char *sandbox_id, sw_err *err)
{
    sb_session s;
    memset(&s, 0, sizeof s);
    s.cfg = c;
    if (!id_uuid_lower(sandbox_id, s.sandbox_id))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "sandbox_id: expected a UUID");
    int stfd = sb_state_dir_open(c, err);
    if (stfd < 0) return -1;
    int dfd = dup(stfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0) close(dfd);
        close(stfd);
        return sb_errno(err, errno, "list", "the state folder");
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "webapp-", 7) != 0 || !id_uuid_lower(e->d_name + 7, s.session_id) ||
            strcmp(s.session_id, e->d_name + 7) != 0)
            continue;
        sw_err one;
        if (sb_webapp_stop_recorded(&s, &one) != 0 && rc == 0) {
            *err = one;
            rc = -1;
        }
    }
    closedir(d);
    close(stfd);
    return rc;
}

void sb_webapp_stop(const sb_session *s, int sfd, const sb_webapp *w)
{
    if (!w || w->pid <= 0) return;
    stop_verified(w->pid, w->start_ticks);
    sw_err e;
    int stfd = sb_state_dir_open(s->cfg, &e);
    if (stfd < 0) return;
    webapp_rec r;
    if (rec_read(stfd, s, &r) && r.pid == w->pid && r.ticks == w->start_ticks) {
        rec_remove_if(stfd, s, w);
        if (sfd >= 0) unlinkat(sfd, "nextjs.pid", 0); /* it named this server: we wrote it last */
    }
    close(stfd);
}

/* ------------------------------------------------------------------ spawning */

/* nextjs.log in the session, for appending: whatever the sandbox left at that name (a symlink,
 * a FIFO, a hard link to a file elsewhere, ...) is replaced by a fresh regular file, so the
 * server's output never lands anywhere else and the open never blocks. */
static int open_log(const sb_session *s, int sfd, sw_err *err)
{
    for (int tries = 0; tries < 3; tries++) {
        int fd = openat(sfd, "nextjs.log",
                        O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
                        0644);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
            fcntl(fd, F_SETFL, O_APPEND) == 0)
            return fd;
        if (fd >= 0) close(fd);
        if (unlinkat(sfd, "nextjs.log", 0) != 0 && errno != ENOENT) break; /* a folder */
    }
    return sw_errf(err, SW_E_BACKEND, false, "%s/nextjs.log: not a regular file we can replace",
                   s->dir);
}

/* A command that is not there or cannot be run is permanent; anything else may pass. */
static int spawn_failed(int e, const char *cmd, sw_err *err)
{
    sb_errno(err, e, "spawn", cmd);
    if (e == ENOENT || e == EACCES || e == ENOEXEC) err->retryable = false;
    return -1;
}

/* argv in the folder open at 'cwdfd', output to 'logfd'; both borrowed. With gatefd >= 0
 * (borrowed) the child is this binary's start gate holding gatefd as SB_WEBAPP_GATE_FD, which
 * execs argv only when told to (gate_open); otherwise argv itself, found by posix_spawnp. */
static int spawn(char **argv, int cwdfd, int logfd, int gatefd, pid_t *pid, sw_err *err)
{
    char **envp = sb_webapp_envp(environ), **gv = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&dfl, sigs[i]);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, logfd, 1);
    posix_spawn_file_actions_adddup2(&fa, logfd, 2);
    posix_spawn_file_actions_addfchdir_np(&fa, cwdfd);
    if (gatefd >= 0) posix_spawn_file_actions_adddup2(&fa, gatefd, SB_WEBAPP_GATE_FD);
    posix_spawn_file_actions_addclosefrom_np(&fa, gatefd >= 0 ? SB_WEBAPP_GATE_FD + 1 : 3);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    int e;
    if (gatefd >= 0) {
        /* snapworker __devserver FD ARGV...: the same binary, as worker/jobproc.c starts job
         * processes (a helper binary could be a different version) */
        static char prog[] = "snapworker", sub[] = "__devserver";
        char fdbuf[16];
        size_t n = 0;
        while (argv[n]) n++;
        gv = xcalloc(n + 4, sizeof *gv);
        snprintf(fdbuf, sizeof fdbuf, "%d", SB_WEBAPP_GATE_FD);
        gv[0] = prog;
        gv[1] = sub;
        gv[2] = fdbuf;
        memcpy(gv + 3, argv, n * sizeof *gv);
        e = posix_spawn(pid, "/proc/self/exe", &fa, &at, gv, envp);
    } else {
        e = posix_spawnp(pid, argv[0], &fa, &at, argv, envp);
    }
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    onyx_strv_free(envp);
    free(gv);
    if (e != 0 && gatefd >= 0) return sb_errno(err, e, "spawn the start gate of", argv[0]);
    if (e != 0) return spawn_failed(e, argv[0], err);
    return 0;
}

/* ------------------------------------------------------------------ the start gate */

/* posix_spawnp's lookup (glibc's __execvpex), so that a gated server is found as an ungated
 * one was: a name with a '/' as it is (relative to outputs/web), else each entry of PATH in
 * turn (unset: /bin:/usr/bin; an empty entry is the working folder), EACCES from any entry
 * winning over a later ENOENT, and no /bin/sh for a file without #! (execvp's fallback).
 * Returns only on failure, with errno set. */
static void exec_path(char **argv)
{
    const char *file = argv[0], *path = getenv("PATH");
    bool eacces = false;
    if (!*file) {
        errno = ENOENT;
        return;
    }
    if (strchr(file, '/')) {
        execve(file, argv, environ);
        return;
    }
    if (!path) path = "/bin:/usr/bin";
    size_t flen = strlen(file);
    errno = ENOENT;
    for (const char *p = path;;) {
        size_t dlen = strcspn(p, ":");
        char full[PATH_MAX];
        if (dlen + flen + 2 <= sizeof full) {
            memcpy(full, p, dlen);
            size_t k = dlen;
            if (dlen) full[k++] = '/';
            memcpy(full + k, file, flen + 1);
            execve(full, argv, environ);
            switch (errno) {
            case EACCES:
                eacces = true;
                break;
            case ENOENT: case ESTALE: case ENOTDIR: case ENODEV: case ETIMEDOUT:
                break;
            default:
                return;
            }
        }
        p += dlen;
        if (!*p++) break;
    }
    if (eacces) errno = EACCES;
}

int sb_webapp_gate_main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "snapworker __devserver: internal subcommand of a restore (the dev "
                        "server's start gate)\n");
        return 2;
    }
    int fd = atoi(argv[1]);
    char go = 0;
    ssize_t n;
    while ((n = read(fd, &go, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1 || go != GATE_GO) return SB_WEBAPP_GATE_CLOSED; /* the job died unrecorded */
    int e = 0;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) e = errno; /* the server never holds it */
    if (e == 0) {
        exec_path(argv + 2);
        e = errno;
    }
    (void)send(fd, &e, sizeof e, MSG_NOSIGNAL);
    return SB_WEBAPP_GATE_EXEC_FAILED;
}

/* Let the gated server go, and learn whether its exec worked: EOF once it did (the gate's
 * end is close-on-exec) or once the gate died (the probe or the next stop sees that), an
 * errno when it did not (the gate then exits SB_WEBAPP_GATE_EXEC_FAILED). */
static int gate_open(const sb_session *s, int fd, const char *cmd, sw_err *err)
{
    char go = GATE_GO;
    int e = 0;
    size_t got = 0;
    ssize_t n;
    while ((n = send(fd, &go, 1, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    if (n != 1)
        return sw_errf(err, SW_E_BACKEND, true, "dev server of %s exited at once (see nextjs.log)", s->dir);
    while (got < sizeof e) {
        n = recv(fd, (char *)&e + got, sizeof e - got, 0);
        if (n == 0) break;
        if (n > 0) {
            got += (size_t)n;
        } else if (errno != EINTR) {
            return sb_errno(err, errno, "start gate of the dev server of", s->dir);
        } else if (sb_cancelled(s)) {
            return sw_errc(err, SW_E_TIMEOUT, "dev server start cancelled");
        }
    }
    if (got == 0) return 0;
    if (got != sizeof e) return sw_errf(err, SW_E_BACKEND, true, "start gate of %s: short report", cmd);
    return spawn_failed(e, cmd, err);
}

/* `npm install` in webfd, waited for; killed (whole group) when the job is cancelled. */
static int npm_install(const sb_session *s, int webfd, int logfd, sw_err *err)
{
    char *argv[] = {(char *)"npm", (char *)"install", NULL};
    pid_t pid;
    if (spawn(argv, webfd, logfd, -1, &pid, err) != 0) return -1;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR)
            return sb_errno(err, errno, "waitpid npm install in", s->dir);
        if (sb_cancelled(s)) {
            kill(-pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return sw_errc(err, SW_E_TIMEOUT, "npm install in %s/outputs/web cancelled", s->dir);
        }
        sleep_ms(50);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return sw_errf(err, SW_E_BACKEND, true,
                       "npm install in %s/outputs/web failed (status %d, see nextjs.log)", s->dir, status);
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

static bool is_kind_at(int dfd, const char *name, mode_t kind)
{
    struct stat st;
    return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IFMT) == kind;
}

/* outputs/web of the session, opened without following a link the agent planted: -1 when it
 * is not a real folder holding a regular package.json (then there is no server to start). */
static int open_web(int sfd)
{
    int ofd = openat(sfd, "outputs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (ofd < 0) return -1;
    int wfd = openat(ofd, "web", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(ofd);
    if (wfd >= 0 && !is_kind_at(wfd, "package.json", S_IFREG)) {
        close(wfd);
        wfd = -1;
    }
    return wfd;
}

/* The record first (what a later stop trusts), then nextjs.pid for Onyx; a stale
 * nextjs.pid.start of an older version goes away. */
static int record(const sb_session *s, int sfd, const sb_webapp *w, sw_err *err)
{
    int stfd = sb_state_dir_open(s->cfg, err);
    if (stfd < 0) return -1;
    char a[32];
    snprintf(a, sizeof a, "%d\n", (int)w->pid);
    int rc = rec_write(stfd, s, w, err);
    if (rc == 0) rc = sb_write_atomic(sfd, s->dir, "nextjs.pid", a, strlen(a), 0644, err);
    if (rc == 0) unlinkat(sfd, "nextjs.pid.start", 0);
    close(stfd);
    return rc;
}

/* Test hook (docs/jobs.md "Dev server"): SNAPWORKER_TEST_STOP_BEFORE_WEBAPP_RECORD=TEXT stops
 * the job process (SIGSTOP) right after it spawned the gated server of a session whose id
 * contains TEXT and before it records it, so a test can kill the worker in that window. */
static void test_stop_before_record(const sb_session *s)
{
    const char *t = getenv("SNAPWORKER_TEST_STOP_BEFORE_WEBAPP_RECORD");
    if (t && *t && strstr(s->session_id, t)) raise(SIGSTOP);
}

/* Our end of the gate and the gate's end (at 10 or above: dup2 onto itself would keep
 * FD_CLOEXEC, and 0-2 are replaced before it is moved), both close-on-exec. */
static int gate_pair(int *ours, int *theirs, sw_err *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return sb_errno(err, errno, "socketpair for", "the dev server's start gate");
    *theirs = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
    int e = errno;
    close(sv[1]);
    if (*theirs < 0) {
        close(sv[0]);
        return sb_errno(err, e, "dup for", "the dev server's start gate");
    }
    *ours = sv[0];
    return 0;
}

int sb_webapp_start(const sb_session *s, int sfd, int port, sb_webapp *out, sw_err *err)
{
    memset(out, 0, sizeof *out);
    int webfd = open_web(sfd), logfd = -1, gate = -1, theirs = -1, rc = -1;
    char **argv = NULL;
    sb_webapp w = {0};
    if (webfd < 0) return 0;
    if (sb_webapp_stop_recorded(s, err) != 0 || (logfd = open_log(s, sfd, err)) < 0) goto out;
    if (s->cfg->webapp_npm_install && !is_kind_at(webfd, "node_modules", S_IFDIR) &&
        npm_install(s, webfd, logfd, err) != 0)
        goto out;
    if (sb_cancelled(s)) {
        sw_errc(err, SW_E_TIMEOUT, "dev server start cancelled");
        goto out;
    }
    if (!(argv = sb_webapp_argv(s->cfg->webapp_cmd, port))) {
        sw_errf(err, SW_E_BACKEND, false, "SNAPWORKER_WEBAPP_CMD is empty");
        goto out;
    }
    if (gate_pair(&gate, &theirs, err) != 0 || spawn(argv, webfd, logfd, theirs, &w.pid, err) != 0)
        goto out;
    close(theirs); /* ours alone now: the gate sees EOF once we close our end or die */
    theirs = -1;
    if (sb_proc_start_ticks(w.pid, &w.start_ticks) != 0) {
        close(gate);
        gate = -1;
        while (waitpid(w.pid, NULL, 0) < 0 && errno == EINTR) {
        }
        sw_errf(err, SW_E_BACKEND, true, "dev server of %s exited at once (see nextjs.log)", s->dir);
        goto out;
    }
    reap_later(w.pid);
    test_stop_before_record(s);
    /* recorded before it may run; an unrecorded gate sees EOF and exits */
    if (record(s, sfd, &w, err) != 0) {
        close(gate);
        gate = -1;
        sb_webapp_stop(s, sfd, &w);
        goto out;
    }
    if (gate_open(s, gate, argv[0], err) != 0 ||
        (s->cfg->webapp_wait_s > 0 && wait_ready(s, &w, port, err) != 0)) {
        sb_webapp_stop(s, sfd, &w);
        goto out;
    }
    *out = w;
    rc = 0;
out:
    onyx_strv_free(argv);
    if (gate >= 0) close(gate);
    if (theirs >= 0) close(theirs);
    if (logfd >= 0) close(logfd);
    close(webfd);
    return rc;
}
