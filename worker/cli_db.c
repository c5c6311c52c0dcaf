/* worker/cli_db.c — `snapworker migrate` and the hidden `snapworker db-tool`.
 * Owns: argument handling, output lines and exit codes of these two commands; all the
 * SQL lives in common/db.c. `migrate` is for operators (docs/database.md); `db-tool`
 * drives single db_ calls from tests and from an operator's shell, either one per process
 * or many over one handle (`db-tool repl`, used to test reconnection).
 * Exit codes: 0 done, 1 database (or other runtime) error, 2 usage. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "common/db.h"
#include "common/embedded.h"
#include "common/err.h"
#include "worker/cli.h"

/* Until worker/cli.h declares it (the lead wires `db-tool` in main.c). */
int cli_dbtool_main(const cfg *c, int argc, char **argv);

/* ==== migrate ========================================================== */

static void print_applied(int version, const char *name, void *arg)
{
    (void)arg;
    printf("applied %d %s\n", version, name);
    fflush(stdout);
}

static int embedded_latest(void)
{
    db_migration ms[64];
    char why[160];
    int n = db_migrations_collect(embedded_files, ms, sizeof ms / sizeof ms[0], why, sizeof why);
    return n > 0 ? ms[n - 1].version : 0;
}

int cli_migrate_main(const cfg *c, int argc, char **argv)
{
    bool status_only = argc == 2 && strcmp(argv[1], "--status") == 0;
    if (argc > 2 || (argc == 2 && !status_only)) {
        fprintf(stderr, "usage: snapworker migrate [--status]\n");
        return 2;
    }
    if (c->db_managed && strcmp(c->db_managed, "external") == 0 && !status_only) {
        printf("snapworker migrate: SNAPWORKER_DB_MANAGED=external: the schema is managed "
               "elsewhere; nothing migrated\n");
        return 0;
    }
    db *d = db_new(c);
    sw_err err = {0};
    int applied = 0, version = 0, rc = 1;
    if (!status_only && db_migrate_run(d, print_applied, NULL, &applied, &err) < 0) goto out;
    if (db_schema_version(d, &version, &err) < 0) goto out;
    if (status_only)
        printf("schema version %d (this binary has %d)\n", version, embedded_latest());
    else if (applied == 0)
        printf("snapworker migrate: up to date (schema version %d)\n", version);
    else
        printf("snapworker migrate: applied %d migration%s (schema version %d)\n", applied,
               applied == 1 ? "" : "s", version);
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "snapworker migrate: %s: %s\n", sw_code_name(err.code), err.msg);
    db_free(d);
    return rc;
}

/* ==== db-tool ========================================================== */

static const char TOOL_USAGE[] =
    "usage: snapworker db-tool COMMAND ARGS   (one db_ call; prints its result)\n"
    "  ensure SESSION [USER]              create build_session when missing\n"
    "  port SESSION                       nextjs_port, or null\n"
    "  port-alloc SESSION                 allocate (or return) the session's port\n"
    "  port-restore SESSION EXPECTED PREV compare-and-set (null allowed): changed|unchanged\n"
    "  activate SESSION                   status=active, last_activity_at=now()\n"
    "  snap-insert SNAPSHOT SESSION PATH SIZE\n"
    "  snap-latest SESSION                storage path of the newest snapshot, or none\n"
    "  version                            recorded schema version\n"
    "  repl                               commands from stdin, one per line, one connection;\n"
    "                                     answers 'ok VALUE' or\n"
    "                                     'err CODE retryable|permanent MSG'\n";

/* "null" or "-1" -> -1; else a non-negative int. false when malformed. */
static bool parse_port(const char *s, int *out)
{
    if (strcmp(s, "null") == 0 || strcmp(s, "-1") == 0) {
        *out = -1;
        return true;
    }
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 65535) return false;
    *out = (int)v;
    return true;
}

static void port_text(int port, char *out, size_t n)
{
    if (port < 0) snprintf(out, n, "null");
    else snprintf(out, n, "%d", port);
}

/* Run one command (argv[0] = its name) on 'd'. Result text into out.
 * Returns 0, -1 with err filled, or -2 on a usage error. */
static int tool_cmd(db *d, int argc, char **argv, char *out, size_t n, sw_err *err)
{
    const char *cmd = argv[0];
    int port = -1, expected = -1, prev = -1;
    out[0] = '\0';
    if (strcmp(cmd, "ensure") == 0 && (argc == 2 || argc == 3))
        return db_session_ensure(d, argv[1], argc == 3 ? argv[2] : NULL, err);
    if (strcmp(cmd, "port") == 0 && argc == 2) {
        if (db_session_port(d, argv[1], &port, err) < 0) return -1;
        port_text(port, out, n);
        return 0;
    }
    if (strcmp(cmd, "port-alloc") == 0 && argc == 2) {
        if (db_port_allocate(d, argv[1], &port, err) < 0) return -1;
        port_text(port, out, n);
        return 0;
    }
    if (strcmp(cmd, "port-restore") == 0 && argc == 4) {
        if (!parse_port(argv[2], &expected) || !parse_port(argv[3], &prev)) return -2;
        int rc = db_port_restore(d, argv[1], expected, prev, err);
        if (rc < 0) return -1;
        snprintf(out, n, "%s", rc ? "changed" : "unchanged");
        return 0;
    }
    if (strcmp(cmd, "activate") == 0 && argc == 2) return db_session_activate(d, argv[1], err);
    if (strcmp(cmd, "snap-insert") == 0 && argc == 5) {
        char *end = NULL;
        long long size = strtoll(argv[4], &end, 10);
        if (!*argv[4] || *end || size < 0) return -2;
        return db_snapshot_insert(d, argv[1], argv[2], argv[3], (int64_t)size, err);
    }
    if (strcmp(cmd, "snap-latest") == 0 && argc == 2) {
        bool found = false;
        if (n < 1024) return -2;
        if (db_snapshot_latest(d, argv[1], out, n, NULL, &found, err) < 0) return -1;
        if (!found) snprintf(out, n, "none");
        return 0;
    }
    if (strcmp(cmd, "version") == 0 && argc == 1) {
        int v = 0;
        if (db_schema_version(d, &v, err) < 0) return -1;
        snprintf(out, n, "%d", v);
        return 0;
    }
    return -2;
}

/* One command per stdin line over one handle, so a test can stop and restart the server
 * between calls. Blank lines are skipped; "quit" or EOF ends. */
static int tool_repl(db *d)
{
    char line[2048], out[1100];
    while (fgets(line, sizeof line, stdin)) {
        char *args[8], *save = NULL;
        int argc = 0;
        for (char *t = strtok_r(line, " \t\r\n", &save); t && argc < 8;
             t = strtok_r(NULL, " \t\r\n", &save))
            args[argc++] = t;
        if (argc == 0) continue;
        if (strcmp(args[0], "quit") == 0) break;
        sw_err err = {0};
        int rc = tool_cmd(d, argc, args, out, sizeof out, &err);
        if (rc == 0) printf("ok %s\n", out);
        else if (rc == -2) printf("err usage permanent %s\n", args[0]);
        else printf("err %s %s %s\n", sw_code_name(err.code),
                    err.retryable ? "retryable" : "permanent", err.msg);
        fflush(stdout);
    }
    return 0;
}

int cli_dbtool_main(const cfg *c, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(TOOL_USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    db *d = db_new(c);
    sw_err err = {0};
    char out[1100];
    int rc = 0;
    if (strcmp(argv[1], "repl") == 0 && argc == 2) {
        rc = tool_repl(d);
    } else {
        int r = tool_cmd(d, argc - 1, argv + 1, out, sizeof out, &err);
        if (r == 0) {
            if (out[0]) printf("%s\n", out);
        } else if (r == -2) {
            fputs(TOOL_USAGE, stderr);
            rc = 2;
        } else {
            fprintf(stderr, "snapworker db-tool: %s: %s\n", sw_code_name(err.code), err.msg);
            rc = 1;
        }
    }
    db_free(d);
    return rc;
}
