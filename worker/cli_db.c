/* worker/cli_db.c — `snapworker migrate` (placeholder until the db module lands). */
#include <stdio.h>

#include "common/cfg.h"

int cli_migrate_main(const cfg *c, int argc, char **argv);
int cli_migrate_main(const cfg *c, int argc, char **argv)
{
    (void)c; (void)argc; (void)argv;
    fprintf(stderr, "snapworker migrate: not built yet\n");
    return 2;
}
