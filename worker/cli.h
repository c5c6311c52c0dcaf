/* worker/cli.h — the `snapworker` subcommands other than `run`.
 * Each takes the loaded config and the subcommand's own arguments (argv[0] is
 * the subcommand name) and returns the process exit code. */
#ifndef SW_WORKER_CLI_H
#define SW_WORKER_CLI_H
#include "common/cfg.h"

int cli_enqueue_main(const cfg *c, int argc, char **argv); /* 0 ok, 1 failed/timeout, 2 usage */
int cli_cancel_main(const cfg *c, int argc, char **argv);  /* 0 cancelled/cancelling, 1 ended or error */
int cli_job_main(const cfg *c, int argc, char **argv);     /* prints the job hash as JSON */
int cli_dead_main(const cfg *c, int argc, char **argv);    /* dead list | requeue ID | purge */
int cli_store_main(const cfg *c, int argc, char **argv);   /* worker/cli_store.c */
int cli_migrate_main(const cfg *c, int argc, char **argv); /* worker/cli_db.c */
int cli_dbtool_main(const cfg *c, int argc, char **argv);  /* worker/cli_db.c, hidden: tests */
int cli_stats_main(const cfg *c, int argc, char **argv);   /* worker/cli_stats.c: queue figures */
int cli_ls_main(const cfg *c, int argc, char **argv);      /* worker/cli_stats.c: jobs by state */
int cli_config_main(const cfg *c, int argc, char **argv);  /* worker/cli_stats.c: --markdown */

#endif
