/* common/db.c — the PostgreSQL layer of common/db.h on libpq.
 * Owns: the connection of one handle (lazy connect, reconnect after loss), the query
 * helpers that turn PGresult failures into sw_err, the migration runner and the
 * session/port/snapshot statements. Every statement is parameterized (PQexecParams);
 * the only text run with PQexec is fixed SQL: the migrations compiled into the binary
 * and transaction control. Quiet: no logging, notices are dropped; callers log.
 * Why here: jobs/ needs ports and rows without knowing libpq (layering: common/ includes nothing of jobs/ or worker/). */
#include "common/db.h"

#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ids.h"
#include "common/metrics.h"
#include "common/xmalloc.h"

/* Advisory lock keys, pg_advisory_*lock(int4 classid, int4 objid). The class ids spell
 * "SNPW" and "SNPX"; objid is 0 for the global port scope and the migration lock, and
 * hashtext(user_id) for a kubernetes user's scope (a hash collision only means two users
 * share a lock: more waiting, never a shared port). */
#define LOCK_CLASS_PORTS 1397641303
#define LOCK_CLASS_MIGRATE 1397641304
#define MAX_MIGRATIONS 256

struct db {
    PGconn *conn;        /* NULL until first use; reset after a loss */
    char *url;           /* DATABASE_URL: secret, may hold a password */
    char *password;      /* the password parsed from url (for scrubbing), or NULL */
    char target[160];    /* "host:port/dbname" for messages */
    bool url_ok;         /* url parses as a libpq URI or key=value string */
    bool external;       /* SNAPWORKER_DB_MANAGED=external */
    bool per_user;       /* port scope per build_session.user_id (kubernetes) */
    int port_start;      /* SANDBOX_NEXTJS_PORT_START */
    int port_end;        /* SANDBOX_NEXTJS_PORT_END, excluded */
    char schema[64];     /* tenant schema for every transaction ("" = the connection's own) */
};

/* ==== pure helpers ===================================================== */

void db_scrub(char *msg, size_t n, const char *secret)
{
    if (!msg || n == 0) return;
    size_t slen = secret ? strlen(secret) : 0;
    char *out = xmalloc(n);
    size_t o = 0;
    for (const char *p = msg; *p && o + 1 < n;) {
        if (slen && strncmp(p, secret, slen) == 0) {
            for (const char *r = "***"; *r && o + 1 < n; r++) out[o++] = *r;
            p += slen;
        } else if (*p == '\n' || *p == '\t' || *p == '\r') {
            if (o > 0 && out[o - 1] != ' ') out[o++] = ' ';
            p++;
        } else {
            out[o++] = *p++;
        }
    }
    while (o > 0 && out[o - 1] == ' ') o--;
    out[o] = '\0';
    memcpy(msg, out, o + 1);
    free(out);
}

void db_describe_url(const char *url, char *out, size_t n, char **password)
{
    const char *host = NULL, *port = NULL, *dbname = NULL, *user = NULL, *hostaddr = NULL;
    if (password) *password = NULL;
    PQconninfoOption *opts = PQconninfoParse(url ? url : "", NULL);
    if (!opts) {
        snprintf(out, n, "?");
        return;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val) continue;
        if (strcmp(o->keyword, "host") == 0) host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0) hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0) port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0) dbname = o->val;
        else if (strcmp(o->keyword, "user") == 0) user = o->val;
        else if (strcmp(o->keyword, "password") == 0 && password) *password = xstrdup(o->val);
    }
    if (!host) host = hostaddr ? hostaddr : "localhost";
    snprintf(out, n, "%s:%s/%s", host, port ? port : "5432", dbname ? dbname : user ? user : "?");
    PQconninfoFree(opts);
}

bool db_migration_parse(const char *path, int *version, char *name, size_t n)
{
    static const char dir[] = "migrations/";
    if (!path || strncmp(path, dir, sizeof dir - 1) != 0) return false;
    const char *base = path + sizeof dir - 1;
    size_t len = strlen(base);
    if (strchr(base, '/') || len <= 4 || strcmp(base + len - 4, ".sql") != 0) return false;
    long v = 0;
    size_t i = 0;
    for (; isdigit((unsigned char)base[i]); i++) {
        v = v * 10 + (base[i] - '0');
        if (v > 1000000) return false;
    }
    if (i == 0 || v == 0 || base[i] != '_') return false;
    if (len - 4 >= n) return false;
    *version = (int)v;
    memcpy(name, base, len - 4);
    name[len - 4] = '\0';
    return true;
}

static int by_version(const void *a, const void *b)
{
    const db_migration *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

int db_migrations_collect(const embedded_file *files, db_migration *out, size_t max,
                          char *why, size_t wn)
{
    size_t count = 0;
    for (const embedded_file *f = files; f->name; f++) {
        db_migration m = {0};
        if (!db_migration_parse(f->name, &m.version, m.name, sizeof m.name)) continue;
        if (count == max) {
            snprintf(why, wn, "more than %zu migrations", max);
            return -1;
        }
        m.sql = f->data;
        out[count++] = m;
    }
    qsort(out, count, sizeof *out, by_version);
    for (size_t i = 1; i < count; i++) {
        if (out[i].version == out[i - 1].version) {
            snprintf(why, wn, "migrations %s and %s share version %d", out[i - 1].name,
                     out[i].name, out[i].version);
            return -1;
        }
    }
    return (int)count;
}

/* ==== handle and connection ============================================ */

db *db_new(const cfg *c)
{
    db *d = xcalloc(1, sizeof *d);
    d->url = xstrdup(c->database_url ? c->database_url : "");
    db_describe_url(d->url, d->target, sizeof d->target, &d->password);
    d->url_ok = strcmp(d->target, "?") != 0;
    d->external = c->db_managed && strcmp(c->db_managed, "external") == 0;
    d->per_user = c->sandbox_backend && strcmp(c->sandbox_backend, "kubernetes") == 0;
    d->port_start = c->port_start;
    d->port_end = c->port_end;
    return d;
}

void db_free(db *d)
{
    if (!d) return;
    if (d->conn) PQfinish(d->conn);
    if (d->password) {
        memset(d->password, 0, strlen(d->password));
        free(d->password);
    }
    if (d->url) {
        memset(d->url, 0, strlen(d->url));
        free(d->url);
    }
    free(d);
}

bool db_external(const db *d) { return d->external; }

/* Fill err (SW_E_DATABASE, retryable) from a failed result, else from the connection:
 * "WHAT (host:port/db): SQLSTATE XXXXX server text", scrubbed and folded to one line. */
static int fail(db *d, const PGresult *res, const char *what, sw_err *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *text = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if ((!text || !*text) && res) text = PQresultErrorMessage(res);
    if ((!text || !*text) && d->conn) text = PQerrorMessage(d->conn);
    if (!text || !*text) text = "unknown error";
    sw_errf(err, SW_E_DATABASE, true, "%s (%.80s): %s%s%s%s", what, d->target,
            state ? "SQLSTATE " : "", state ? state : "", state ? " " : "", text);
    if (err) db_scrub(err->msg, sizeof err->msg, d->password);
    return -1;
}

static void drop_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Connect when there is no usable connection. The defaults come before the URL's own
 * parameters (expand_dbname: later keywords win), so DATABASE_URL can override each.
 * *fresh = true when this call opened the connection. */
static int conn_ensure(db *d, bool *fresh, sw_err *err)
{
    *fresh = false;
    if (d->conn && PQstatus(d->conn) == CONNECTION_OK) return 0;
    metrics_pg_connecting(d->conn != NULL);
    if (!d->url_ok) /* libpq's parse errors may quote the URL, password included */
        return sw_errf(err, SW_E_DATABASE, false,
                       "DATABASE_URL is not a valid libpq URI or key=value string");
    if (d->conn) PQfinish(d->conn);
    static const char *const keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
                                       "keepalives_interval", "keepalives_count",
                                       "tcp_user_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"5", "1", "30", "10", "3", "60000", "snapworker", d->url, NULL};
    d->conn = PQconnectdbParams(keys, vals, 1);
    if (!d->conn || PQstatus(d->conn) != CONNECTION_OK) {
        fail(d, NULL, "connect", err);
        if (d->conn) PQfinish(d->conn);
        d->conn = NULL;
        return -1;
    }
    PQsetNoticeProcessor(d->conn, drop_notice, NULL);
    *fresh = true;
    return 0;
}

static bool conn_lost(const db *d) { return !d->conn || PQstatus(d->conn) != CONNECTION_OK; }

/* Run one statement with text parameters (NULL = SQL NULL). Returns the result when it
 * is COMMAND_OK or TUPLES_OK (caller PQclears), else NULL with err filled. */
static PGresult *query(db *d, const char *what, const char *sql, int nparams,
                       const char *const *params, sw_err *err)
{
    PGresult *res = PQexecParams(d->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return res;
    fail(d, res, what, err);
    PQclear(res);
    return NULL;
}

/* query() for statements whose rows are not needed. */
static int stmt(db *d, const char *what, const char *sql, int nparams,
                const char *const *params, sw_err *err)
{
    PGresult *res = query(d, what, sql, nparams, params, err);
    if (!res) return -1;
    PQclear(res);
    return 0;
}

/* Leave an open or failed transaction; a dead connection needs nothing. */
static void rollback(db *d)
{
    if (conn_lost(d) || PQtransactionStatus(d->conn) == PQTRANS_IDLE) return;
    PQclear(PQexec(d->conn, "ROLLBACK"));
}

typedef int (*db_op)(db *d, void *arg, sw_err *err);

/* With a tenant schema (SNAPWORKER_TENANT_SCHEMAS=1, docs/lifecycle.md "Tenant schemas"),
 * every op runs inside one transaction opened here: BEGIN, then search_path set LOCAL to the
 * quoted schema together with a check that it exists (a missing schema would otherwise only
 * show up as "relation does not exist", or worse, resolve through "$user"/public). An op's
 * own BEGIN (tx_begin) joins it; its COMMIT ends it; what is still open after a successful op
 * is committed here. SET LOCAL rather than a session SET: nothing outlives the transaction,
 * so a pooled connection (pgbouncer, transaction mode) never carries one job's tenant into
 * another's statements. */
static int tenant_begin(db *d, sw_err *err)
{
    char path[80];
    snprintf(path, sizeof path, "\"%s\"", d->schema); /* validated: no quote inside */
    const char *params[] = {path, d->schema};
    if (stmt(d, "begin", "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, err) < 0) return -1;
    PGresult *res = query(d, "set tenant schema",
                          "SELECT set_config('search_path', $1, true), "
                          "EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $2)",
                          2, params, err);
    if (!res) return -1;
    bool exists = PQgetvalue(res, 0, 1)[0] == 't';
    PQclear(res);
    if (!exists)
        return sw_errf(err, SW_E_DATABASE, false, "tenant schema \"%s\" does not exist (%s)",
                       d->schema, d->target);
    return 0;
}

/* BEGIN for ops that need a transaction: joins the one tenant_begin opened. */
static int tx_begin(db *d, sw_err *err)
{
    if (PQtransactionStatus(d->conn) == PQTRANS_INTRANS) return 0;
    return stmt(d, "begin", "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, err);
}

static int op_in_tenant(db *d, db_op op, void *arg, sw_err *err)
{
    if (!d->schema[0]) return op(d, arg, err);
    if (tenant_begin(d, err) < 0) return -1;
    if (op(d, arg, err) < 0) return -1;
    if (PQtransactionStatus(d->conn) == PQTRANS_INTRANS)
        return stmt(d, "commit", "COMMIT", 0, NULL, err);
    return 0;
}

/* Connect if needed and run 'op'. When a connection from an earlier call turns out to be
 * dead (the server restarted, a proxy dropped it), reconnect once and run 'op' again:
 * every op is idempotent, so a commit whose answer was lost is redone harmlessly. */
static int run(db *d, db_op op, void *arg, sw_err *err)
{
    bool fresh = false;
    if (conn_ensure(d, &fresh, err) < 0) return -1;
    int rc = op_in_tenant(d, op, arg, err);
    if (rc < 0 && !fresh && conn_lost(d)) {
        if (conn_ensure(d, &fresh, err) < 0) return -1;
        rc = op_in_tenant(d, op, arg, err);
    }
    if (rc < 0) rollback(d);
    return rc;
}

int db_set_tenant(db *d, const char *tenant_id, sw_err *err)
{
    d->schema[0] = '\0';
    if (!tenant_id || !*tenant_id) return 0;
    if (!id_valid_tenant(tenant_id))
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "tenant_id must match [A-Za-z0-9_-]{1,63}");
    snprintf(d->schema, sizeof d->schema, "%s", tenant_id);
    return 0;
}

/* Lowercase a UUID into out or fail permanently: ids are checked before any query. */
static int uuid_arg(const char *s, const char *what, char out[SW_UUID_LEN + 1], sw_err *err)
{
    if (id_uuid_lower(s, out)) return 0;
    return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "%s is not a UUID", what);
}

static int not_found(db *d, const char *session_id, sw_err *err)
{
    return sw_errf(err, SW_E_DATABASE, false,
                   "build_session %s not found (%s, SNAPWORKER_DB_MANAGED=external)",
                   session_id, d->target);
}

/* ==== migrations ======================================================= */

static const char SQL_MIGRATIONS_TABLE[] =
    "CREATE TABLE IF NOT EXISTS snapworker_migrations ("
    " version integer PRIMARY KEY,"
    " name varchar NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

typedef struct migrate_arg {
    db_migrate_cb cb;
    void *cb_arg;
    int applied;
} migrate_arg;

static bool applied_has(PGresult *res, int version)
{
    for (int i = 0; i < PQntuples(res); i++)
        if (atoi(PQgetvalue(res, i, 0)) == version) return true;
    return false;
}

/* One migration: its SQL and its bookkeeping row in one transaction. */
static int migrate_one(db *d, const db_migration *m, sw_err *err)
{
    char ver[16], what[96];
    snprintf(ver, sizeof ver, "%d", m->version);
    snprintf(what, sizeof what, "migration %s", m->name);
    const char *params[] = {ver, m->name};
    if (stmt(d, what, "BEGIN", 0, NULL, err) < 0) return -1;
    /* fixed SQL from the binary; it may hold several statements */
    PGresult *res = PQexec(d->conn, m->sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fail(d, res, what, err);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    if (stmt(d, what, "INSERT INTO snapworker_migrations (version, name) VALUES ($1::int, $2)",
             2, params, err) < 0)
        return -1;
    return stmt(d, what, "COMMIT", 0, NULL, err);
}

static int migrate_op(db *d, void *arg, sw_err *err)
{
    migrate_arg *a = arg;
    db_migration *ms = xcalloc(MAX_MIGRATIONS, sizeof *ms);
    PGresult *done = NULL;
    bool locked = false;
    int rc = -1;
    char why[160], lock_class[16];
    snprintf(lock_class, sizeof lock_class, "%d", LOCK_CLASS_MIGRATE);
    const char *lock_params[] = {lock_class};
    int count = db_migrations_collect(embedded_files, ms, MAX_MIGRATIONS, why, sizeof why);
    if (count < 0) {
        sw_errf(err, SW_E_INTERNAL, false, "embedded migrations: %s", why);
        goto out;
    }
    if (stmt(d, "migration lock", "SELECT pg_advisory_lock($1::int, 0)", 1, lock_params, err) < 0)
        goto out;
    locked = true;
    if (stmt(d, "create snapworker_migrations", SQL_MIGRATIONS_TABLE, 0, NULL, err) < 0) goto out;
    done = query(d, "read snapworker_migrations", "SELECT version FROM snapworker_migrations", 0,
                 NULL, err);
    if (!done) goto out;
    for (int i = 0; i < count; i++) {
        if (applied_has(done, ms[i].version)) continue;
        if (migrate_one(d, &ms[i], err) < 0) goto out;
        a->applied++;
        if (a->cb) a->cb(ms[i].version, ms[i].name, a->cb_arg);
    }
    rc = 0;
out:
    PQclear(done);
    if (locked && !conn_lost(d)) {
        rollback(d);
        PQclear(PQexecParams(d->conn, "SELECT pg_advisory_unlock($1::int, 0)", 1, NULL,
                             lock_params, NULL, NULL, 0));
    }
    free(ms);
    return rc;
}

int db_migrate_run(db *d, db_migrate_cb cb, void *arg, int *applied, sw_err *err)
{
    migrate_arg a = {cb, arg, 0};
    if (applied) *applied = 0;
    if (d->external)
        return sw_errf(err, SW_E_DATABASE, false,
                       "SNAPWORKER_DB_MANAGED=external: the schema is managed elsewhere");
    int rc = run(d, migrate_op, &a, err);
    if (applied) *applied = a.applied;
    return rc;
}

int db_migrate(db *d, sw_err *err) { return db_migrate_run(d, NULL, NULL, NULL, err); }

static int version_op(db *d, void *arg, sw_err *err)
{
    int *version = arg;
    PGresult *res = query(d, "schema version",
                          "SELECT to_regclass('snapworker_migrations') IS NOT NULL", 0, NULL, err);
    if (!res) return -1;
    bool exists = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!exists) return 0;
    res = query(d, "schema version", "SELECT coalesce(max(version), 0) FROM snapworker_migrations",
                0, NULL, err);
    if (!res) return -1;
    *version = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int db_schema_version(db *d, int *version, sw_err *err)
{
    *version = 0;
    return run(d, version_op, version, err);
}

/* ==== sessions ========================================================= */

typedef struct session_arg {
    char id[SW_UUID_LEN + 1];    /* lowercased session id */
    char user[SW_UUID_LEN + 1];  /* lowercased user id, "" = NULL */
    int port;                    /* in/out, -1 = NULL */
    int expected;                /* db_port_restore: compare */
    int prev;                    /* db_port_restore: set */
    int changed;                 /* db_port_restore: 1 when the row changed */
} session_arg;

static const char SQL_SESSION_CREATE[] =
    "INSERT INTO build_session (id, user_id) VALUES ($1::uuid, $2::uuid) "
    "ON CONFLICT (id) DO NOTHING";

static int ensure_op(db *d, void *arg, sw_err *err)
{
    session_arg *a = arg;
    const char *params[] = {a->id, a->user[0] ? a->user : NULL};
    return stmt(d, "create build_session", SQL_SESSION_CREATE, 2, params, err);
}

int db_session_ensure(db *d, const char *session_id, const char *user_id, sw_err *err)
{
    session_arg a = {.port = -1};
    if (uuid_arg(session_id, "session_id", a.id, err) < 0) return -1;
    if (user_id && uuid_arg(user_id, "user_id", a.user, err) < 0) return -1;
    return run(d, ensure_op, &a, err);
}

static int port_op(db *d, void *arg, sw_err *err)
{
    session_arg *a = arg;
    const char *params[] = {a->id};
    PGresult *res = query(d, "read build_session",
                          "SELECT nextjs_port FROM build_session WHERE id = $1::uuid", 1, params,
                          err);
    if (!res) return -1;
    int rc = 0;
    if (PQntuples(res) == 0)
        rc = d->external ? not_found(d, a->id, err) : 0;
    else if (!PQgetisnull(res, 0, 0))
        a->port = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

int db_session_port(db *d, const char *session_id, int *port_out, sw_err *err)
{
    session_arg a = {.port = -1};
    *port_out = -1;
    if (uuid_arg(session_id, "session_id", a.id, err) < 0) return -1;
    if (run(d, port_op, &a, err) < 0) return -1;
    *port_out = a.port;
    return 0;
}

/* Self-managed: create the row active. External: the row must exist. */
static int activate_op(db *d, void *arg, sw_err *err)
{
    session_arg *a = arg;
    const char *params[] = {a->id};
    if (!d->external)
        return stmt(d, "activate build_session",
                    "INSERT INTO build_session (id, status) VALUES ($1::uuid, 'active') "
                    "ON CONFLICT (id) DO UPDATE SET status = 'active', last_activity_at = now()",
                    1, params, err);
    PGresult *res = query(d, "activate build_session",
                          "UPDATE build_session SET status = 'active', last_activity_at = now() "
                          "WHERE id = $1::uuid",
                          1, params, err);
    if (!res) return -1;
    bool missing = strcmp(PQcmdTuples(res), "0") == 0;
    PQclear(res);
    return missing ? not_found(d, a->id, err) : 0;
}

int db_session_activate(db *d, const char *session_id, sw_err *err)
{
    session_arg a = {.port = -1};
    if (uuid_arg(session_id, "session_id", a.id, err) < 0) return -1;
    return run(d, activate_op, &a, err);
}

/* ==== ports ============================================================ */
/*
 * Allocation, in one READ COMMITTED transaction:
 *
 *   SELECT user_id, nextjs_port ... FOR UPDATE     row lock: one allocation per session
 *     (missing row: create it when self-managed)
 *   has a port?  -> COMMIT, return it               idempotent across retries
 *   pg_advisory_xact_lock(SNPW, scope)              one allocator per scope at a time
 *   first port of [start,end) no session of the scope holds
 *   UPDATE ... SET nextjs_port; COMMIT              the lock goes with the commit
 *
 * The free-port SELECT is a new statement after the lock was granted, so under READ
 * COMMITTED its snapshot includes every allocation committed by the previous holder
 * (PostgreSQL makes a commit visible before it releases the transaction's locks).
 * Considered and rejected: a bind() probe (docs/database.md: the port belongs to a sandbox that
 * may live on another host), SERIALIZABLE with retries (needless aborts under load), a
 * global unique index on nextjs_port (wrong for the per-user kubernetes scope).
 */
static const char SQL_SESSION_LOCK[] =
    "SELECT user_id::text, nextjs_port FROM build_session WHERE id = $1::uuid FOR UPDATE";
static const char SQL_SCOPE_LOCK[] =
    "SELECT pg_advisory_xact_lock($1::int, CASE WHEN $2::bool THEN hashtext(coalesce($3, '')) "
    "ELSE 0 END)";
static const char SQL_FREE_PORT[] =
    "SELECT p FROM generate_series($1::int, $2::int - 1) AS p "
    "WHERE NOT EXISTS (SELECT 1 FROM build_session s WHERE s.nextjs_port = p "
    "AND (NOT $3::bool OR s.user_id IS NOT DISTINCT FROM $4::uuid)) "
    "ORDER BY p LIMIT 1";
static const char SQL_PORT_TAKEN[] =
    "SELECT 1 FROM build_session s WHERE s.nextjs_port = $1::int AND s.id <> $2::uuid "
    "AND (NOT $3::bool OR s.user_id IS NOT DISTINCT FROM $4::uuid) LIMIT 1";
static const char SQL_PORT_SET[] =
    "UPDATE build_session SET nextjs_port = $2::int WHERE id = $1::uuid";

/* Lock the session row and read user and port into 'a'. *found=false when missing
 * (after trying to create it when 'create'). */
static int session_lock(db *d, session_arg *a, bool create, bool *found, sw_err *err)
{
    const char *params[] = {a->id};
    const char *cparams[] = {a->id, NULL};
    for (int pass = 0; pass < 2; pass++) {
        PGresult *res = query(d, "lock build_session", SQL_SESSION_LOCK, 1, params, err);
        if (!res) return -1;
        *found = PQntuples(res) > 0;
        if (*found) {
            const char *user = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);
            snprintf(a->user, sizeof a->user, "%s", user);
            a->port = PQgetisnull(res, 0, 1) ? -1 : atoi(PQgetvalue(res, 0, 1));
        }
        PQclear(res);
        if (*found || !create || pass == 1) return 0;
        if (stmt(d, "create build_session", SQL_SESSION_CREATE, 2, cparams, err) < 0) return -1;
    }
    return 0;
}

/* Take the scope's advisory lock for the rest of the transaction. */
static int scope_lock(db *d, const session_arg *a, sw_err *err)
{
    char cls[16];
    snprintf(cls, sizeof cls, "%d", LOCK_CLASS_PORTS);
    const char *params[] = {cls, d->per_user ? "true" : "false", a->user};
    return stmt(d, "port scope lock", SQL_SCOPE_LOCK, 3, params, err);
}

static int allocate_op(db *d, void *arg, sw_err *err)
{
    session_arg *a = arg;
    char start[16], end[16], port[16];
    bool found = false;
    PGresult *res = NULL;
    snprintf(start, sizeof start, "%d", d->port_start);
    snprintf(end, sizeof end, "%d", d->port_end);
    if (tx_begin(d, err) < 0) return -1;
    if (session_lock(d, a, !d->external, &found, err) < 0) return -1;
    if (!found) return not_found(d, a->id, err);
    if (a->port >= 0) return stmt(d, "commit", "COMMIT", 0, NULL, err);
    if (scope_lock(d, a, err) < 0) return -1;
    const char *fparams[] = {start, end, d->per_user ? "true" : "false",
                             a->user[0] ? a->user : NULL};
    res = query(d, "find free port", SQL_FREE_PORT, 4, fparams, err);
    if (!res) return -1;
    if (PQntuples(res) == 0) { /* commit what there is: a row created here stays, port NULL */
        PQclear(res);
        if (stmt(d, "commit", "COMMIT", 0, NULL, err) < 0) return -1;
        return sw_errf(err, SW_E_PORT_EXHAUSTED, true, "no free port in [%d, %d) for %s%s",
                       d->port_start, d->port_end, d->per_user ? "user " : "all sessions",
                       d->per_user ? (a->user[0] ? a->user : "NULL") : "");
    }
    snprintf(port, sizeof port, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    const char *uparams[] = {a->id, port};
    if (stmt(d, "set nextjs_port", SQL_PORT_SET, 2, uparams, err) < 0) return -1;
    if (stmt(d, "commit", "COMMIT", 0, NULL, err) < 0) return -1;
    a->port = atoi(port);
    return 0;
}

int db_port_allocate(db *d, const char *session_id, int *port_out, sw_err *err)
{
    session_arg a = {.port = -1};
    *port_out = -1;
    if (uuid_arg(session_id, "session_id", a.id, err) < 0) return -1;
    if (d->port_end <= d->port_start)
        return sw_errf(err, SW_E_PORT_EXHAUSTED, true, "empty port range [%d, %d)",
                       d->port_start, d->port_end);
    if (run(d, allocate_op, &a, err) < 0) return -1;
    *port_out = a.port;
    return 0;
}

/* Is 'port' held by another session of a's scope? -1 on error, else 0/1. */
static int port_taken(db *d, const session_arg *a, const char *port, sw_err *err)
{
    const char *params[] = {port, a->id, d->per_user ? "true" : "false",
                            a->user[0] ? a->user : NULL};
    PGresult *res = query(d, "check port", SQL_PORT_TAKEN, 4, params, err);
    if (!res) return -1;
    int taken = PQntuples(res) > 0;
    PQclear(res);
    return taken;
}

static int restore_op(db *d, void *arg, sw_err *err)
{
    session_arg *a = arg;
    char prev[16];
    bool found = false;
    a->changed = 0;
    if (tx_begin(d, err) < 0) return -1;
    if (session_lock(d, a, false, &found, err) < 0) return -1;
    if (!found || a->port != a->expected) return stmt(d, "commit", "COMMIT", 0, NULL, err);
    if (scope_lock(d, a, err) < 0) return -1;
    snprintf(prev, sizeof prev, "%d", a->prev);
    if (a->prev >= 0) {
        int taken = port_taken(d, a, prev, err);
        if (taken < 0) return -1;
        if (taken) a->prev = -1; /* never hand one port to two sessions of a scope */
    }
    const char *params[] = {a->id, a->prev >= 0 ? prev : NULL};
    if (stmt(d, "restore nextjs_port", SQL_PORT_SET, 2, params, err) < 0) return -1;
    if (stmt(d, "commit", "COMMIT", 0, NULL, err) < 0) return -1;
    a->changed = 1;
    return 0;
}

int db_port_restore(db *d, const char *session_id, int expected, int prev, sw_err *err)
{
    session_arg a = {.port = -1, .expected = expected < 0 ? -1 : expected,
                     .prev = prev < 0 ? -1 : prev};
    if (uuid_arg(session_id, "session_id", a.id, err) < 0) return -1;
    if (run(d, restore_op, &a, err) < 0) return -1;
    return a.changed;
}

/* ==== snapshots ======================================================== */

typedef struct snapshot_arg {
    char id[SW_UUID_LEN + 1];
    session_arg session;
    const char *storage_path;
    int64_t size_bytes;
    char *out;                   /* db_snapshot_latest: path buffer (NULL: db_snapshot_size) */
    size_t out_n;
    bool found;
} snapshot_arg;

static int snapshot_insert_op(db *d, void *arg, sw_err *err)
{
    snapshot_arg *a = arg;
    char size[24];
    snprintf(size, sizeof size, "%lld", (long long)a->size_bytes);
    if (!d->external) {
        if (ensure_op(d, &a->session, err) < 0) return -1;
    } else if (port_op(d, &a->session, err) < 0) {
        return -1; /* external: a missing session is a permanent not-found */
    }
    const char *params[] = {a->id, a->session.id, a->storage_path, size};
    return stmt(d, "insert snapshot",
                "INSERT INTO snapshot (id, session_id, storage_path, size_bytes) "
                "VALUES ($1::uuid, $2::uuid, $3, $4::bigint) ON CONFLICT (id) DO NOTHING",
                4, params, err);
}

int db_snapshot_insert(db *d, const char *snapshot_id, const char *session_id,
                       const char *storage_path, int64_t size_bytes, sw_err *err)
{
    snapshot_arg a = {.session = {.port = -1}, .storage_path = storage_path,
                      .size_bytes = size_bytes};
    if (uuid_arg(snapshot_id, "snapshot_id", a.id, err) < 0) return -1;
    if (uuid_arg(session_id, "session_id", a.session.id, err) < 0) return -1;
    if (!storage_path || !*storage_path)
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "empty snapshot storage_path");
    return run(d, snapshot_insert_op, &a, err);
}

static int snapshot_latest_op(db *d, void *arg, sw_err *err)
{
    snapshot_arg *a = arg;
    const char *params[] = {a->session.id, a->storage_path};
    PGresult *res = a->storage_path
        ? query(d, "snapshot size",
                "SELECT storage_path, size_bytes FROM snapshot WHERE session_id = $1::uuid "
                "AND storage_path = $2 ORDER BY created_at DESC, id DESC LIMIT 1", 2, params, err)
        : query(d, "latest snapshot",
                "SELECT storage_path, size_bytes FROM snapshot WHERE session_id = $1::uuid "
                "ORDER BY created_at DESC, id DESC LIMIT 1", 1, params, err);
    if (!res) return -1;
    int rc = 0;
    a->found = PQntuples(res) > 0;
    if (a->found) {
        const char *v = PQgetvalue(res, 0, 0);
        a->size_bytes = PQgetisnull(res, 0, 1) ? 0 : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        if (a->out && strlen(v) >= a->out_n)
            rc = sw_errf(err, SW_E_DATABASE, false, "snapshot storage_path of session %s is "
                         "longer than %zu bytes", a->session.id, a->out_n - 1);
        else if (a->out)
            memcpy(a->out, v, strlen(v) + 1);
    }
    PQclear(res);
    return rc;
}

int db_snapshot_latest(db *d, const char *session_id, char *path, size_t n, int64_t *size_out,
                       bool *found, sw_err *err)
{
    snapshot_arg a = {.session = {.port = -1}, .out = path, .out_n = n};
    *found = false;
    if (size_out) *size_out = 0;
    if (n) path[0] = '\0';
    if (uuid_arg(session_id, "session_id", a.session.id, err) < 0) return -1;
    if (n == 0) return sw_errf(err, SW_E_INTERNAL, false, "db_snapshot_latest: no buffer");
    if (run(d, snapshot_latest_op, &a, err) < 0) return -1;
    *found = a.found;
    if (!a.found) path[0] = '\0';
    if (a.found && size_out) *size_out = a.size_bytes;
    return 0;
}

int db_snapshot_size(db *d, const char *session_id, const char *storage_path, int64_t *size_out,
                     bool *found, sw_err *err)
{
    snapshot_arg a = {.session = {.port = -1}, .storage_path = storage_path};
    *found = false;
    *size_out = 0;
    if (uuid_arg(session_id, "session_id", a.session.id, err) < 0) return -1;
    if (run(d, snapshot_latest_op, &a, err) < 0) return -1;
    *found = a.found;
    if (a.found) *size_out = a.size_bytes;
    return 0;
}

/* ==== sandboxes (the lifecycle jobs, docs/lifecycle.md) ===================== */

typedef struct sandbox_arg {
    char id[SW_UUID_LEN + 1];
    db_sandbox *out;
    const db_snap_row *rows;
    size_t nrows;
    int slept;
} sandbox_arg;

static int sandbox_read(db *d, sandbox_arg *a, bool lock, sw_err *err)
{
    const char *params[] = {a->id};
    PGresult *res = query(d, "read sandbox",
                          lock ? "SELECT status, user_id::text FROM sandbox WHERE id = $1::uuid "
                                 "FOR UPDATE"
                               : "SELECT status, user_id::text FROM sandbox WHERE id = $1::uuid",
                          1, params, err);
    if (!res) return -1;
    memset(a->out, 0, sizeof *a->out);
    a->out->found = PQntuples(res) > 0;
    if (a->out->found) {
        snprintf(a->out->status, sizeof a->out->status, "%s", PQgetvalue(res, 0, 0));
        snprintf(a->out->user_id, sizeof a->out->user_id, "%s", PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return 0;
}

static int sandbox_get_op(db *d, void *arg, sw_err *err)
{
    return sandbox_read(d, arg, false, err);
}

int db_sandbox_get(db *d, const char *sandbox_id, db_sandbox *out, sw_err *err)
{
    sandbox_arg a = {.out = out};
    memset(out, 0, sizeof *out);
    if (uuid_arg(sandbox_id, "sandbox_id", a.id, err) < 0) return -1;
    return run(d, sandbox_get_op, &a, err);
}

/* Snapshot rows of sessions that have a build_session row; self-managed installs create the
 * missing row first (owned by the sandbox's user), as db_snapshot_insert does. */
static const char SQL_SLEEP_SNAPSHOT[] =
    "INSERT INTO snapshot (id, session_id, storage_path, size_bytes) "
    "SELECT $1::uuid, $2::uuid, $3, $4::bigint "
    "WHERE EXISTS (SELECT 1 FROM build_session WHERE id = $2::uuid) "
    "ON CONFLICT (id) DO NOTHING";

/* The sleep transaction: the sandbox row is locked first, so two sleeps (or a sleep and
 * whatever else wakes the sandbox through the same row) serialize; everything below happens
 * only while it is still 'running', and all of it commits or none. */
static int sleep_op(db *d, void *arg, sw_err *err)
{
    sandbox_arg *a = arg;
    db_sandbox sb;
    a->out = &sb;
    a->slept = 0;
    if (tx_begin(d, err) < 0) return -1;
    if (sandbox_read(d, a, true, err) < 0) return -1;
    if (!sb.found || strcmp(sb.status, "running") != 0)
        return stmt(d, "commit", "COMMIT", 0, NULL, err);
    for (size_t i = 0; i < a->nrows; i++) {
        const db_snap_row *r = &a->rows[i];
        char size[24];
        snprintf(size, sizeof size, "%lld", (long long)r->size_bytes);
        if (!d->external) {
            const char *p[] = {r->session_id, sb.user_id};
            if (stmt(d, "create build_session", SQL_SESSION_CREATE, 2, p, err) < 0) return -1;
        }
        const char *p[] = {r->snapshot_id, r->session_id, r->storage_path, size};
        if (stmt(d, "insert snapshot", SQL_SLEEP_SNAPSHOT, 4, p, err) < 0) return -1;
    }
    const char *up[] = {sb.user_id};
    if (stmt(d, "clear ports",
             "UPDATE build_session SET nextjs_port = NULL, "
             "status = CASE WHEN status = 'active' THEN 'idle' ELSE status END "
             "WHERE user_id = $1::uuid",
             1, up, err) < 0)
        return -1;
    const char *sp[] = {a->id};
    if (stmt(d, "sandbox sleeping", "UPDATE sandbox SET status = 'sleeping' WHERE id = $1::uuid",
             1, sp, err) < 0)
        return -1;
    if (stmt(d, "commit", "COMMIT", 0, NULL, err) < 0) return -1;
    a->slept = 1;
    return 0;
}

int db_sandbox_sleep(db *d, const char *sandbox_id, const db_snap_row *rows, size_t n,
                     bool *slept, sw_err *err)
{
    sandbox_arg a = {.rows = rows, .nrows = n};
    *slept = false;
    if (uuid_arg(sandbox_id, "sandbox_id", a.id, err) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        char x[SW_UUID_LEN + 1];
        if (uuid_arg(rows[i].snapshot_id, "snapshot_id", x, err) < 0 ||
            uuid_arg(rows[i].session_id, "session_id", x, err) < 0)
            return -1;
    }
    if (run(d, sleep_op, &a, err) < 0) return -1;
    *slept = a.slept == 1;
    return 0;
}

typedef struct list_arg {
    const char *sql;
    const char *what;
    const char *const *params;
    int nparams;
    char **items;               /* out: owned, NULL-terminated */
    size_t n;
} list_arg;

static void strv_clear(char **v)
{
    for (size_t i = 0; v && v[i]; i++) free(v[i]);
    free(v);
}

static int list_op(db *d, void *arg, sw_err *err)
{
    list_arg *a = arg;
    PGresult *res = query(d, a->what, a->sql, a->nparams, a->params, err);
    if (!res) return -1;
    strv_clear(a->items);
    a->n = (size_t)PQntuples(res);
    a->items = xcalloc(a->n + 1, sizeof *a->items);
    for (size_t i = 0; i < a->n; i++) a->items[i] = xstrdup(PQgetvalue(res, (int)i, 0));
    PQclear(res);
    return 0;
}

int db_sandboxes_idle(db *d, int idle_s, char ***ids, size_t *n, sw_err *err)
{
    char secs[24];
    snprintf(secs, sizeof secs, "%d", idle_s);
    const char *params[] = {secs};
    list_arg a = {
        .sql = "SELECT id::text FROM sandbox WHERE status = 'running' AND "
               "(last_heartbeat < now() - make_interval(secs => $1::int) OR "
               "(last_heartbeat IS NULL AND created_at < now() - make_interval(secs => $1::int))) "
               "ORDER BY id",
        .what = "idle sandboxes", .params = params, .nparams = 1};
    *ids = NULL;
    *n = 0;
    if (run(d, list_op, &a, err) < 0) {
        strv_clear(a.items);
        return -1;
    }
    *ids = a.items;
    *n = a.n;
    return 0;
}

/* Rows older than the retention and not among the newest 'keep' of their session, at most
 * 'limit' of them, deleted in one statement (one transaction) that returns their paths. */
static const char SQL_PRUNE[] =
    "DELETE FROM snapshot WHERE id IN ("
    " SELECT id FROM ("
    "  SELECT id, created_at, row_number() OVER "
    "   (PARTITION BY session_id ORDER BY created_at DESC, id DESC) AS rn FROM snapshot) t"
    " WHERE rn > $1::int AND created_at < now() - make_interval(secs => $2::double precision)"
    " AND left(storage_path, length($4)) = $4"
    " ORDER BY created_at LIMIT $3::int) "
    "RETURNING storage_path";

int db_snapshots_prune(db *d, const char *tenant_id, int64_t older_than_s, int keep, int limit,
                       char ***paths, size_t *n, sw_err *err)
{
    char k[16], secs[24], lim[16], prefix[96];
    if (!id_valid_tenant(tenant_id))
        return sw_errf(err, SW_E_INVALID_PAYLOAD, false, "tenant_id must match [A-Za-z0-9_-]{1,63}");
    snprintf(prefix, sizeof prefix, "%s/snapshots/", tenant_id);
    snprintf(k, sizeof k, "%d", keep < 0 ? 0 : keep);
    snprintf(secs, sizeof secs, "%lld", (long long)older_than_s);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[] = {k, secs, lim, prefix};
    list_arg a = {.sql = SQL_PRUNE, .what = "prune snapshots", .params = params, .nparams = 4};
    *paths = NULL;
    *n = 0;
    if (run(d, list_op, &a, err) < 0) {
        strv_clear(a.items);
        return -1;
    }
    *paths = a.items;
    *n = a.n;
    return 0;
}

int db_snapshot_path_used(db *d, const char *storage_path, bool *used, sw_err *err)
{
    const char *params[] = {storage_path};
    list_arg a = {.sql = "SELECT 1 FROM snapshot WHERE storage_path = $1 LIMIT 1",
                  .what = "snapshot path in use", .params = params, .nparams = 1};
    *used = false;
    int rc = run(d, list_op, &a, err);
    if (rc == 0) *used = a.n > 0;
    strv_clear(a.items);
    return rc;
}

char *db_text_array(const char *const *strs, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++) cap += 2 * strlen(strs[i]) + 3;
    char *out = xmalloc(cap), *o = out;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) *o++ = ',';
        *o++ = '"';
        for (const char *p = strs[i]; *p; p++) {
            if (*p == '"' || *p == '\\') *o++ = '\\';
            *o++ = *p;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return out;
}

int db_snapshot_paths_used(db *d, const char *const *paths, size_t n, bool *used, sw_err *err)
{
    for (size_t i = 0; i < n; i++) used[i] = false;
    if (n == 0) return 0;
    if (n > DB_PATHS_BATCH)
        return sw_errf(err, SW_E_INTERNAL, false, "db_snapshot_paths_used: batch of %zu", n);
    char *arr = db_text_array(paths, n);
    const char *params[] = {arr};
    list_arg a = {.sql = "SELECT t.i::text FROM unnest($1::text[]) WITH ORDINALITY AS t(p, i) "
                         "WHERE EXISTS (SELECT 1 FROM snapshot s WHERE s.storage_path = t.p)",
                  .what = "snapshot paths in use", .params = params, .nparams = 1};
    int rc = run(d, list_op, &a, err);
    free(arr);
    if (rc == 0)
        for (size_t k = 0; k < a.n; k++) {
            long i = strtol(a.items[k], NULL, 10);
            if (i >= 1 && (size_t)i <= n) used[i - 1] = true;
        }
    strv_clear(a.items);
    return rc;
}

void db_strv_free(char **v) { strv_clear(v); }
