/* worker/jobchild.c — `snapworker __job PPID`: the job process (docs/processes.md).
 *
 * Started by worker/jobproc.c with its end of the channel as fd 3. Before anything else it
 * dies with its parent thread (PR_SET_PDEATHSIG), takes no new privileges
 * (PR_SET_NO_NEW_PRIVS) and sets its limits: RLIMIT_CORE 0, RLIMIT_NOFILE
 * (SNAPWORKER_JOB_NOFILE), RLIMIT_FSIZE (SNAPWORKER_JOB_FSIZE_MAX) and RLIMIT_AS
 * (SNAPWORKER_JOB_MEMORY_MAX) — posix_spawn cannot set limits, so the process sets its own.
 * SIGTERM sets the job's cancel flag (no SA_RESTART, so a blocking call sees EINTR). Then it
 * reads one request, says "started" (the timestamp of docs/benchmarks.md's spawn latency),
 * runs the job with a job_ctx whose memo_set, enqueue and progress hooks ask the daemon over
 * the channel, sends "done" with the result or the sw_err, and exits: everything the job
 * allocated, mapped or connected goes with the process.
 *
 * Test hook (SNAPWORKER_TEST_HOOKS=1 only, and only here, in a job process): a noop job's
 * args.crash = "segv" | "abort" | "hang" | "alloc" crashes, blocks in a read that retries
 * EINTR (so only SIGKILL ends it), or allocates until RLIMIT_AS stops it. */
#include "worker/jobproc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/store.h"
#include "common/xmalloc.h"
#include "jobs/jobs.h"
#include "worker/jobwire.h"

#define CHAN 3

static atomic_int g_cancel;

static void on_term(int sig)
{
    (void)sig;
    atomic_store(&g_cancel, 1);
}

typedef struct child {
    json_t *memo;        /* name -> value, kept up to date by memo_set */
    int64_t progress_ms; /* last progress frame sent */
} child;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_limit(int res, rlim_t v)
{
    struct rlimit rl;
    if (getrlimit(res, &rl) != 0) return;
    if (rl.rlim_max != RLIM_INFINITY && v > rl.rlim_max) v = rl.rlim_max;
    rl.rlim_cur = rl.rlim_max = v;
    (void)setrlimit(res, &rl);
}

static void limits(const cfg *c)
{
    set_limit(RLIMIT_CORE, 0);
    set_limit(RLIMIT_NOFILE, (rlim_t)c->job_nofile);
    if (c->job_fsize_max > 0) set_limit(RLIMIT_FSIZE, (rlim_t)c->job_fsize_max);
    if (c->job_memory_max > 0) set_limit(RLIMIT_AS, (rlim_t)c->job_memory_max);
}

/* ---- job_ctx hooks over the channel ----------------------------------- */

static int ask(json_t *m, sw_err *err)
{
    int rc = jw_send(CHAN, m);
    json_decref(m);
    if (rc < 0) return sw_errc(err, SW_E_INTERNAL, "job process: the worker is gone");
    json_t *r = NULL;
    if (jw_recv(CHAN, &r) != 1) return sw_errc(err, SW_E_INTERNAL, "job process: no answer");
    int v = (int)json_integer_value(json_object_get(r, "rc"));
    if (v < 0) {
        json_t *e = json_object_get(r, "err");
        sw_code code = SW_E_INTERNAL;
        const char *name = json_string_value(json_object_get(e, "code"));
        if (!name || !sw_code_from_name(name, &code) || code == SW_OK) code = SW_E_INTERNAL;
        const char *msg = json_string_value(json_object_get(e, "message"));
        sw_errf(err, code, json_is_true(json_object_get(e, "retryable")), "%s", msg ? msg : "?");
    }
    json_decref(r);
    return v;
}

static const char *memo_get(job_ctx *ctx, const char *name)
{
    child *ch = ctx->worker_priv;
    return json_string_value(json_object_get(ch->memo, name));
}

static int memo_set(job_ctx *ctx, const char *name, const char *value, sw_err *err)
{
    child *ch = ctx->worker_priv;
    int rc = ask(json_pack("{s:s,s:s,s:s}", "t", "memo_set", "name", name, "value", value), err);
    if (rc < 0) return -1;   /* a lost lease: the daemon also sends SIGTERM */
    json_object_set_new(ch->memo, name, json_string(value));
    return 0;
}

static int enqueue(job_ctx *ctx, const char *payload, sw_err *err)
{
    (void)ctx;
    return ask(json_pack("{s:s,s:s}", "t", "enqueue", "payload", payload), err);
}

/* The daemon keeps at most one `progress` event a second; a frame every 250 ms is enough. */
static void progress(job_ctx *ctx, int64_t bytes, int64_t entries)
{
    child *ch = ctx->worker_priv;
    int64_t now = job_now_ms();
    if (ch->progress_ms && now - ch->progress_ms < 250) return;
    ch->progress_ms = now;
    json_t *m = json_pack("{s:s,s:I}", "t", "progress", "bytes", (json_int_t)bytes);
    json_object_set_new(m, "entries", entries >= 0 ? json_integer(entries) : json_null());
    (void)jw_send(CHAN, m);
    json_decref(m);
}

/* ---- the test hook ---------------------------------------------------- */

static int crash_hook(const cfg *c, const job_req *req, sw_err *err)
{
    const char *h = getenv("SNAPWORKER_TEST_HOOKS");
    json_t *v = json_object_get(req->args, "crash");
    if (!h || strcmp(h, "1") != 0 || !v || strcmp(req->type, "noop") != 0) return 0;
    const char *what = json_string_value(v);
    if (!what) return sw_errc(err, SW_E_INVALID_PAYLOAD, "args.crash: expected a string");
    if (!strcmp(what, "segv")) {
        /* a real invalid write; the default action, not a sanitizer's report */
        signal(SIGSEGV, SIG_DFL);
        volatile char *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) p[0] = 1;
        raise(SIGSEGV);
    } else if (!strcmp(what, "abort")) {
        abort();
    } else if (!strcmp(what, "hang")) {
        int fds[2];
        if (pipe(fds) != 0) return sw_errc(err, SW_E_INTERNAL, "pipe: %s", strerror(errno));
        char b;
        for (;;) /* like a library call that restarts after EINTR: only SIGKILL ends it */
            if (read(fds[0], &b, 1) >= 0) break;
    } else if (!strcmp(what, "alloc")) {
        if (c->job_memory_max <= 0)
            return sw_errc(err, SW_E_INVALID_PAYLOAD,
                           "args.crash: \"alloc\" needs SNAPWORKER_JOB_MEMORY_MAX");
        for (size_t total = 0; total < ((size_t)64 << 30); total += (size_t)16 << 20)
            memset(xmalloc((size_t)16 << 20), 1, (size_t)16 << 20); /* aborts when refused */
    } else {
        return sw_errc(err, SW_E_INVALID_PAYLOAD,
                       "args.crash: expected \"segv\", \"abort\", \"hang\" or \"alloc\"");
    }
    return 0;
}

/* ---- main ------------------------------------------------------------- */

static void send_done(int rc, json_t *result, const sw_err *err)
{
    json_t *m = json_pack("{s:s,s:i}", "t", "done", "rc", rc);
    if (rc == 0)
        json_object_set_new(m, "result", result ? json_incref(result) : json_object());
    else
        json_object_set_new(m, "err", json_pack("{s:s,s:s,s:b}", "code", sw_code_name(err->code),
                                                "message", err->msg, "retryable",
                                                err->retryable));
    metrics_loop lp;
    metrics_loop_read(&lp);
    json_object_set_new(m, "pg_used", json_boolean(lp.pg_used));
    json_object_set_new(m, "store_used", json_boolean(lp.store_used));
    /* this process's counter dies with it: the daemon adds it to its own */
    json_object_set_new(m, "pg_reconnects",
                        json_integer((json_int_t)metrics_counter_value(MC_PG_RECONNECTS)));
    (void)jw_send(CHAN, m);
    json_decref(m);
}

static void run_gc(const cfg *c, const json_t *req)
{
    const char *prefix = json_string_value(json_object_get(req, "prefix"));
    int64_t budget = json_integer_value(json_object_get(req, "budget_ms"));
    sw_err e;
    sw_err_clear(&e);
    store_gc_stats st;
    memset(&st, 0, sizeof st);
    store *s = store_open(c, &e);
    int rc = s ? store_gc(s, prefix ? prefix : "", c->store_orphan_grace_s, budget, &st, &e) : -1;
    store_close(s);
    log_line l;
    log_begin(&l, rc < 0 ? SW_LOG_WARN : SW_LOG_INFO, "store_gc");
    log_str(&l, "prefix", prefix);
    if (rc < 0) {
        log_str(&l, "code", sw_code_name(e.code));
        log_str(&l, "error", e.msg);
    } else {
        log_int(&l, "seen", st.seen);
        log_int(&l, "removed", st.removed);
        log_int(&l, "kept", st.kept);
        log_int(&l, "truncated", st.truncated);
    }
    log_end(&l);
    send_done(rc < 0 ? -1 : 0, NULL, &e);
}

int jobchild_main(const cfg *c, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "snapworker __job: internal subcommand of `snapworker run`\n");
        return 2;
    }
    /* dies with the thread that spawned it; that thread may already be gone */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)atoi(argv[1])) return 70;
    if (fcntl(CHAN, F_SETFD, FD_CLOEXEC) != 0) return 70;   /* nothing it starts inherits it */
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    limits(c);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    prctl(PR_SET_NAME, "sw-spare");   /* ps: waiting for a job (a spare) */
    json_t *req = NULL;
    if (jw_recv(CHAN, &req) != 1) return 70;
    json_t *st = json_pack("{s:s,s:I}", "t", "started", "ns", (json_int_t)mono_ns());
    (void)jw_send(CHAN, st);
    json_decref(st);
    const char *t = json_string_value(json_object_get(req, "t"));
    if (t && !strcmp(t, "gc")) {
        prctl(PR_SET_NAME, "sw-gc");
        run_gc(c, req);
        json_decref(req);
        return 0;
    }

    sw_err err;
    sw_err_clear(&err);
    json_t *result = NULL;
    int rc = -1;
    job_req jr;
    memset(&jr, 0, sizeof jr);
    const char *payload = json_string_value(json_object_get(req, "payload"));
    const char *op = json_string_value(json_object_get(req, "op"));
    const job_type *type = NULL;
    child ch = {.memo = json_object()};
    json_t *mv = json_object_get(req, "memo");
    if (json_is_object(mv)) json_object_update(ch.memo, mv);
    job_thread jt = {0};
    /* the daemon's flag as it was at the start (an undo runs after a cancel) */
    if (json_is_true(json_object_get(req, "cancel"))) atomic_store(&g_cancel, 1);
    if (!payload || !op || payload_parse(payload, strlen(payload), &jr, &err) != 0) {
        if (err.code == SW_OK) sw_errc(&err, SW_E_INTERNAL, "job process: bad request");
    } else if (!(type = job_lookup(jr.type))) {
        sw_errc(&err, SW_E_UNKNOWN_JOB_TYPE, "unknown job type '%s'", jr.type);
    } else {
        char comm[16];
        snprintf(comm, sizeof comm, "sw-%.12s", jr.type);
        prctl(PR_SET_NAME, comm);        /* ps: sw-restore, sw-snapshot, ... */
        job_ctx ctx = {
            .cfg = c,
            .req = &jr,
            .attempt = (int)json_integer_value(json_object_get(req, "attempt")),
            .deadline_ms = json_integer_value(json_object_get(req, "deadline_ms")),
            .cancel = &g_cancel,
            .thread = &jt,
            .memo_get = memo_get,
            .memo_set = memo_set,
            .enqueue = enqueue,
            .progress = progress,
            .worker_priv = &ch,
        };
        if (crash_hook(c, &jr, &err) != 0) {
            rc = -1;
        } else if (!strcmp(op, "on_dead")) {
            rc = type->on_dead ? type->on_dead(&ctx, &err) : 0;
        } else {
            rc = type->run(&ctx, &result, &err);
            if (rc == 0 && !result) result = json_object();
        }
        if (rc != 0 && err.code == SW_OK) sw_errc(&err, SW_E_INTERNAL, "job failed without a reason");
    }
    send_done(rc, result, &err);
    json_decref(result);
    job_thread_free(&jt);
    payload_free(&jr);
    json_decref(ch.memo);
    json_decref(req);
    return 0;
}
