/* worker/main.c — `snapworker`: load the configuration, pick the subcommand.
 * Owns: the top-level usage text, the config lifetime and exit codes
 * (0 ok, 1 failure, 2 bad usage or configuration). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/kubeconfig.h"
#include "common/log.h"
#include "jobs/sandbox.h"
#include "worker/cli.h"
#include "worker/jobproc.h"
#include "worker/schedule.h"
#include "worker/version.h"
#include "worker/worker.h"

static void usage(FILE *f)
{
    fprintf(f,
            "snapworker %s — snapshot/restore job worker on Redis Streams\n\n"
            "usage: snapworker [CONFIG FLAGS] COMMAND [ARGS]\n\n"
            "commands:\n"
            "  run                     run the worker in the foreground\n"
            "  enqueue TYPE ...        add a job (see `snapworker enqueue`)\n"
            "  cancel ID               cancel a queued, delayed or running job\n"
            "  job ID                  show a job's state as JSON\n"
            "  dead list|requeue ID|purge   inspect or requeue dead jobs\n"
            "  store put|get|head|rm|ls ...  use the snapshot store\n"
            "  migrate                 apply database migrations\n"
            "  schedule                run the lifecycle scheduler (sweep, prune) in the foreground\n"
            "  stats [--json] [--watch [S]]  queue figures: depth, pending, delayed, dead, workers\n"
            "  ls [--state S] [--type T]     jobs by state (queued, running, delayed, dead, ...)\n"
            "  config --markdown       print the configuration reference\n"
            "  version                 print the version\n\n",
            SNAPWORKER_VERSION);
}

/* Returns the exit code; *busy is set when a job thread outlived the drain (then
 * the config must stay allocated: that thread may still read it). */
static int cmd_run(const cfg *c, bool *busy)
{
    if (strcmp(c->sandbox_backend, "kubernetes") == 0) {
        /* Credentials are read now (not the API server: it may come up later), so a worker
         * that could never run a job says so at once instead of failing every job. */
        k8s_creds cr;
        sw_err e;
        sw_err_clear(&e);
        int rc = k8s_creds_load(c, NULL, &cr, &e);
        k8s_creds_free(&cr);
        if (rc != 0) {
            fprintf(stderr, "snapworker: configuration error: SANDBOX_BACKEND=kubernetes needs "
                            "kubernetes credentials (KUBECONFIG or the in-cluster service "
                            "account): %s\n", e.msg);
            return 2;
        }
    }
    worker *w = worker_new(c);
    if (!w) return 1;
    int rc = worker_run(w);
    *busy = worker_free(w) < 0;
    return rc;
}

int main(int argc, char **argv)
{
    /* hidden: a dev server's start gate (jobs/webapp.c); before any configuration is read: it
     * has none (its environment is the server's, without SNAPWORKER_*) and only execs */
    if (argc > 1 && !strcmp(argv[1], "__devserver")) return sb_webapp_gate_main(argc - 1, argv + 1);
    cfg c;
    char err[512];
    bool help = false;
    int argi = 1;
    if (cfg_load(&c, argc, argv, &argi, &help, err, sizeof err) < 0) {
        fprintf(stderr, "snapworker: configuration error: %s\n", err);
        cfg_free(&c);
        return 2;
    }
    log_level lvl = SW_LOG_INFO;
    log_parse_level(c.log_level, &lvl);
    log_init(lvl, 2);
    const char *cmd = argi < argc ? argv[argi] : NULL;
    jobproc_init(argi, argv); /* a job process is started with the same config flags */
    int rc = 2;
    bool busy = false;
    if (help || !cmd) {
        usage(help ? stdout : stderr);
        fflush(help ? stdout : stderr);
        cfg_print_help(help ? 1 : 2);
        rc = help ? 0 : 2;
    } else if (!strcmp(cmd, "version")) {
        printf("snapworker %s\n", SNAPWORKER_VERSION);
        rc = 0;
    } else if (!strcmp(cmd, "run")) {
        rc = argi + 1 == argc ? cmd_run(&c, &busy) : 2;
        if (rc == 2 && argi + 1 != argc) fprintf(stderr, "snapworker run: unexpected argument '%s'\n", argv[argi + 1]);
    } else if (!strcmp(cmd, "enqueue")) {
        rc = cli_enqueue_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "cancel")) {
        rc = cli_cancel_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "job")) {
        rc = cli_job_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "dead")) {
        rc = cli_dead_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "store")) {
        rc = cli_store_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "schedule")) {
        rc = argi + 1 == argc ? schedule_main(&c) : 2;
        if (rc == 2) fprintf(stderr, "snapworker schedule: unexpected argument '%s'\n", argv[argi + 1]);
    } else if (!strcmp(cmd, "migrate")) {
        rc = cli_migrate_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "stats")) {
        rc = cli_stats_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "ls")) {
        rc = cli_ls_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "config")) {
        rc = cli_config_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "__job")) { /* hidden: a job process (docs/processes.md) */
        rc = jobchild_main(&c, argc - argi, argv + argi);
    } else if (!strcmp(cmd, "db-tool")) { /* hidden: used by the integration tests */
        rc = cli_dbtool_main(&c, argc - argi, argv + argi);
    } else {
        fprintf(stderr, "snapworker: unknown command '%s' (try --help)\n", cmd);
    }
    if (busy) _exit(rc); /* a job thread may still read the config: do not free it */
    cfg_free(&c);
    return rc;
}
