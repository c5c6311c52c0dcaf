/* common/db.h — the PostgreSQL layer (libpq): migrations, session ports, snapshot rows.
 * Owns: one lazily (re)connected connection per handle, the embedded migrations and
 * their bookkeeping table, port allocation under an advisory lock, and the mapping of
 * libpq failures to sw_err (database_error, never a password in a message).
 * Does not own: when to allocate or roll back (the restore job decides), the job hash.
 * A handle belongs to one thread (one executor); it is not locked.
 * Every id is validated (canonical UUID, used lowercased) before it reaches a query:
 * an invalid one is SW_E_INVALID_PAYLOAD (permanent). docs/database.md explains it all. */
#ifndef SW_COMMON_DB_H
#define SW_COMMON_DB_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/embedded.h"
#include "common/err.h"
#include "common/ids.h"

typedef struct db db;

/* ---- handle ---------------------------------------------------------- */
/* A handle for cfg's DATABASE_URL, port range, backend scope and SNAPWORKER_DB_MANAGED;
 * copies what it needs ('c' may go away). Does not connect. Caller frees with db_free(). */
db *db_new(const cfg *c);
void db_free(db *d);                                /* NULL-safe; closes the connection */
bool db_external(const db *d);                      /* SNAPWORKER_DB_MANAGED=external */

/* Every call below connects on first use and after a loss; a call that finds its old
 * connection dead reconnects once and runs again (every operation is idempotent).
 * Connection failures and server errors: SW_E_DATABASE, retryable, message with the
 * server's text (SQLSTATE when there is one) and the target host:port/db, never a password.
 * Return 0 on success, -1 with 'err' filled. */

/* ---- migrations ------------------------------------------------------ */
typedef void (*db_migrate_cb)(int version, const char *name, void *arg);
/* Apply the pending embedded migrations, each in its own transaction, recorded in
 * snapworker_migrations; serialized across processes by pg_advisory_lock. Calls 'cb'
 * (may be NULL) after each one commits; *applied (may be NULL) = how many ran.
 * Refuses with SW_E_DATABASE permanent when SNAPWORKER_DB_MANAGED=external. */
int db_migrate_run(db *d, db_migrate_cb cb, void *arg, int *applied, sw_err *err);
int db_migrate(db *d, sw_err *err);                 /* db_migrate_run(d, NULL, NULL, NULL, err) */
/* Highest recorded migration version into *version (0 when none or no table yet). */
int db_schema_version(db *d, int *version, sw_err *err);

/* ---- sessions and ports ---------------------------------------------- */
/* Insert build_session(id, user_id) when missing (user_id may be NULL); an existing row is
 * left as it is. Meant for standalone installs and tests. */
int db_session_ensure(db *d, const char *session_id, const char *user_id, sw_err *err);
/* The session's nextjs_port into *port_out (-1 = NULL). A missing row reads as -1 when
 * self-managed; when external it is SW_E_DATABASE permanent "session ... not found". */
int db_session_port(db *d, const char *session_id, int *port_out, sw_err *err);
/* The session's port when it has one; else the first port of [start, end) held by no
 * build_session of the scope (all sessions on SANDBOX_BACKEND=local, the session's user_id
 * on kubernetes), set under pg_advisory_xact_lock(scope) and committed before returning.
 * A missing row is created (self) or SW_E_DATABASE permanent (external).
 * Exhausted: SW_E_PORT_EXHAUSTED (retryable) and the port stays NULL. */
int db_port_allocate(db *d, const char *session_id, int *port_out, sw_err *err);
/* Compare-and-set: nextjs_port := prev only when it currently is 'expected' (-1 = NULL in
 * both). Under the scope lock; a 'prev' now held by another session of the scope becomes
 * NULL instead (never a shared port). Returns 1 when the row changed, 0 when it did not
 * hold 'expected' (or is missing), -1 on error. */
int db_port_restore(db *d, const char *session_id, int expected, int prev, sw_err *err);
/* status='active', last_activity_at=now(). A missing row is created active (self) or
 * SW_E_DATABASE permanent (external). */
int db_session_activate(db *d, const char *session_id, sw_err *err);

/* ---- snapshots ------------------------------------------------------- */
/* Insert snapshot(id, session_id, storage_path, size_bytes); an existing id is success.
 * Self-managed: a missing build_session row is created first. External: a missing
 * session is SW_E_DATABASE permanent. */
int db_snapshot_insert(db *d, const char *snapshot_id, const char *session_id,
                       const char *storage_path, int64_t size_bytes, sw_err *err);
/* storage_path of the session's newest snapshot (created_at DESC, id DESC) into path (size n,
 * at least 1024) and its size_bytes into *size_out (may be NULL; 0 = not recorded, as Onyx
 * writes it); *found=false (path "") when it has none. A longer path is SW_E_DATABASE
 * permanent. */
int db_snapshot_latest(db *d, const char *session_id, char *path, size_t n, int64_t *size_out,
                       bool *found, sw_err *err);
/* size_bytes of the session's snapshot row with this storage_path into *size_out;
 * *found=false when there is none. */
int db_snapshot_size(db *d, const char *session_id, const char *storage_path, int64_t *size_out,
                     bool *found, sw_err *err);

/* ---- tenants (SNAPWORKER_TENANT_SCHEMAS) ------------------------------- */
/* Run every later call of 'd' in the schema named 'tenant_id' (NULL or "" = the connection's
 * own search_path): each call becomes one transaction that starts with
 * set_config('search_path', '"tenant"', true). A schema that does not exist is SW_E_DATABASE
 * permanent at the first call. -1 with SW_E_INVALID_PAYLOAD when the id is not
 * [A-Za-z0-9_-]{1,63} (nothing else ever reaches SQL). */
int db_set_tenant(db *d, const char *tenant_id, sw_err *err);

/* ---- sandboxes (docs/lifecycle.md) ---------------------------------------- */
typedef struct db_sandbox {
    bool found;
    char status[32];                /* provisioning|running|sleeping|terminated|failed */
    char user_id[SW_UUID_LEN + 1];
} db_sandbox;
int db_sandbox_get(db *d, const char *sandbox_id, db_sandbox *out, sw_err *err);

typedef struct db_snap_row {        /* borrowed strings */
    const char *snapshot_id, *session_id, *storage_path;
    int64_t size_bytes;
} db_snap_row;
/* The sleep transaction, all or nothing: lock the sandbox row; only if it is 'running':
 * insert 'rows' (a conflict on the id is success; self-managed creates a missing
 * build_session owned by the sandbox's user, external skips the row of a session that has
 * none), nextjs_port = NULL and 'active' -> 'idle' on every build_session of the sandbox's
 * user, sandbox 'sleeping'. *slept = true when it did, false when the sandbox was missing or
 * not running (nothing changed). */
int db_sandbox_sleep(db *d, const char *sandbox_id, const db_snap_row *rows, size_t n,
                     bool *slept, sw_err *err);
/* Ids of the running sandboxes idle for idle_s seconds (last_heartbeat older, or NULL and
 * created_at older), sorted. *ids owned (db_strv_free), NULL-terminated. */
int db_sandboxes_idle(db *d, int idle_s, char ***ids, size_t *n, sw_err *err);
/* Delete (one statement, one transaction) up to 'limit' snapshot rows of 'tenant_id' (their
 * storage_path starts "{tenant}/snapshots/") created more than older_than_s seconds ago that
 * are not among the 'keep' newest of their session; their storage paths into *paths (owned,
 * db_strv_free). */
int db_snapshots_prune(db *d, const char *tenant_id, int64_t older_than_s, int keep, int limit,
                       char ***paths, size_t *n, sw_err *err);
/* *used = some snapshot row still names 'storage_path'. */
int db_snapshot_path_used(db *d, const char *storage_path, bool *used, sw_err *err);
/* Which of paths[0..n) some snapshot row names (in the tenant schema set by db_set_tenant,
 * if any): used[i] = true for those, false for the others. One statement for the batch
 * (n at most DB_PATHS_BATCH). For `snapworker store gc`'s orphan objects. */
#define DB_PATHS_BATCH 500
int db_snapshot_paths_used(db *d, const char *const *paths, size_t n, bool *used, sw_err *err);
/* The text[] literal {"a","b\"c"} of strs[0..n) (quotes and backslashes escaped), owned. */
char *db_text_array(const char *const *strs, size_t n);
void db_strv_free(char **v);        /* NULL-safe */

/* ---- pure helpers (no server; exposed for tests/unit/test_db.c) ------- */
typedef struct db_migration {
    int version;             /* the leading digits of the file name, > 0 */
    char name[64];           /* file name without folder and ".sql", e.g. "001_init" */
    const char *sql;         /* borrowed from the embedded table */
} db_migration;

/* Parse "migrations/NNN_name.sql" into version and name (size n). false when the path is
 * not a migration (other folder, no ".sql", no leading digits, version 0, name too long). */
bool db_migration_parse(const char *path, int *version, char *name, size_t n);
/* The migrations among 'files' (ends with a NULL name) into out (max entries), ordered by
 * version. Returns the count, or -1 with a reason in 'why' (size wn) on a duplicate
 * version or more than 'max'. */
int db_migrations_collect(const embedded_file *files, db_migration *out, size_t max,
                          char *why, size_t wn);
/* Replace every occurrence of 'secret' in msg (NUL-terminated) with "***" and fold
 * newlines and tabs into single spaces; trailing space is cut. secret NULL/"" = fold only. */
void db_scrub(char *msg, size_t n, const char *secret);
/* "host:port/dbname" of a libpq URI or key=value string into out (size n), defaults
 * filled ("?" when unparseable); never the password. *password (may be NULL) gets a
 * malloc'd copy of the password or NULL; caller frees with free(). */
void db_describe_url(const char *url, char *out, size_t n, char **password);

#endif
