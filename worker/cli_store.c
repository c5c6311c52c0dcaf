/* worker/cli_store.c — `snapworker store ...` (placeholder until the store module lands). */
#include <stdio.h>

#include "common/cfg.h"

int cli_store_main(const cfg *c, int argc, char **argv);
int cli_store_main(const cfg *c, int argc, char **argv)
{
    (void)c; (void)argc; (void)argv;
    fprintf(stderr, "snapworker store: not built yet\n");
    return 2;
}
