/* common/cfg.c — option table, defaults, environment and flag parsing.
 *
 * Every option is one row: variable name, type, where it lives in struct cfg,
 * default, bounds and a help line. Flags are derived from the variable name
 * (SNAPWORKER_LEASE_S -> --lease-s, REDIS_URL -> --redis-url). Secrets (AWS keys)
 * have no flag: a flag shows up in `ps`. */
#include "common/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/excl.h"
#include "common/ids.h"
#include "common/xmalloc.h"

enum opt_type { T_STR, T_INT, T_I64, T_BOOL };
enum { O_SECRET = 1, O_NOFLAG = 2, O_NONEMPTY = 4 }; /* O_NONEMPTY: a set but empty variable
                                                   is checked, not read as unset */

typedef struct opt {
    const char *env;
    enum opt_type type;
    size_t off;
    const char *def;     /* default as text; NULL = empty */
    int64_t min, max;    /* bounds for numbers */
    int flags;
    const char *help;
    int (*check)(cfg *c, const char *var, const char *val, char *err, size_t n); /* extra validation;
                                      'var' names the variable in the message */
} opt;

static int check_redis(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_store(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_oneof(const char *v, const char *const *alts, const char *form, char *err,
                       size_t n);
static int check_managed(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_backend(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_level(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_name(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_steps(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_celery_url(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_http(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_webapp(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_bucket(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_abs_path(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_abs_path_required(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_dburl(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_dns_label(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_tenants(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_excludes(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_task_map(cfg *c, const char *var, const char *v, char *err, size_t n);
static int check_ready(cfg *c, const char *var, const char *v, char *err, size_t n);

#define F(field) offsetof(cfg, field)
#define BIG INT64_MAX
static const opt opts[] = {
    {"REDIS_URL", T_STR, F(redis_url), "redis://127.0.0.1:6379/0", 0, 0, 0,
     "Redis broker: redis://[user:pass@]host[:port][/db], rediss://... (TLS, ssl_* options in the "
     "query), unix:///path[?db=N], redis+sentinel://h:p[,h:p]/master[/db] or "
     "redis+cluster://h:p[,h:p] (docs/redis.md)", check_redis},
    {"DATABASE_URL", T_STR, F(database_url), "postgresql://postgres@127.0.0.1:5432/snapworker", 0,
     0, O_SECRET, "PostgreSQL, a libpq URI or key=value string", check_dburl},
    {"SNAPWORKER_STORE", T_STR, F(store_url), NULL, 0, 0, 0,
     "snapshot store: file:///path or s3://bucket (default: file:// under the data dir)",
     check_store},
    {"SNAPWORKER_NAMESPACE", T_STR, F(ns), "snapworker", 0, 0, 0, "Redis key prefix", check_name},
    {"SNAPWORKER_QUEUE", T_STR, F(queue), "default", 0, 0, 0, "queue name {Q}", check_name},
    {"SNAPWORKER_CONCURRENCY", T_INT, F(concurrency), NULL, 1, 1024, 0,
     "executor threads (default: number of cores)", NULL},
    {"SNAPWORKER_PREFETCH", T_INT, F(prefetch), "512", 0, 100000, 0,
     "most jobs read ahead (about 50 ms of work, only while jobs take < 20 ms)", NULL},
    {"SNAPWORKER_LEASE_S", T_INT, F(lease_s), "60", 1, 86400, 0,
     "lease; a job unrenewed this long is reclaimed by another worker", NULL},
    {"SNAPWORKER_MAX_ATTEMPTS", T_INT, F(max_attempts), "5", 1, 1000, 0,
     "attempts when a payload gives none", NULL},
    {"SNAPWORKER_MAX_DELIVERIES", T_INT, F(max_deliveries), "0", 0, 100000, 0,
     "poison threshold (0 = max_attempts + 2)", NULL},
    {"SNAPWORKER_DRAIN_TIMEOUT_S", T_INT, F(drain_timeout_s), "30", 0, 86400, 0,
     "graceful stop: how long running jobs may finish", NULL},
    {"SNAPWORKER_JOB_TTL_S", T_INT, F(job_ttl_s), "86400", 1, 100 * 86400, 0,
     "how long a finished job's hash is kept", NULL},
    {"SNAPWORKER_DEAD_MAXLEN", T_I64, F(dead_maxlen), "100000", 1, BIG, 0,
     "dead stream trimmed to about this many entries", NULL},
    {"SNAPWORKER_EVENTS_MAXLEN", T_I64, F(events_maxlen), "100000", 1, BIG, 0,
     "events stream trimmed to about this many entries", NULL},
    {"SNAPWORKER_RETRY_BASE_MS", T_INT, F(retry_base_ms), "1000", 1, 86400000, 0,
     "retry backoff base (full jitter, doubling per attempt)", NULL},
    {"SNAPWORKER_RETRY_MAX_MS", T_INT, F(retry_max_ms), "300000", 1, 86400000, 0,
     "retry backoff cap", NULL},
    {"SNAPWORKER_JOB_TIMEOUT_S", T_INT, F(default_timeout_s), "900", 1, 7 * 86400, 0,
     "job timeout when a payload gives none", NULL},
    {"SNAPWORKER_JOB_KILL_GRACE_S", T_INT, F(job_kill_grace_s), "5", 0, 3600, 0,
     "job processes: after a cancel, lost lease or deadline (SIGTERM), SIGKILL this much later",
     NULL},
    {"SNAPWORKER_JOB_SPARE", T_BOOL, F(job_spare), "1", 0, 0, 0,
     "job processes: each executor thread that ran one keeps a started one waiting for its "
     "next job (saves the spawn and library loading, docs/processes.md)", NULL},
    {"SNAPWORKER_JOB_NOFILE", T_INT, F(job_nofile), "4096", 16, 1048576, 0,
     "job processes: RLIMIT_NOFILE (open descriptors)", NULL},
    {"SNAPWORKER_JOB_FSIZE_MAX", T_I64, F(job_fsize_max), "0", 0, BIG, 0,
     "job processes: RLIMIT_FSIZE, largest file a job may write, bytes (SIGXFSZ past it); 0 = "
     "no limit", NULL},
    {"SNAPWORKER_JOB_MEMORY_MAX", T_I64, F(job_memory_max), "0", 0, BIG, 0,
     "job processes: RLIMIT_AS, address space in bytes (allocation fails past it); 0 = no "
     "limit", NULL},
    {"SNAPWORKER_HTTP_ADDR", T_STR, F(http_addr), NULL, 0, 0, 0,
     "health and metrics listener, e.g. 127.0.0.1:9464 (empty = off)", check_http},
    {"SNAPWORKER_HTTP_MAX_CONNECTIONS", T_INT, F(http_max_connections), "64", 1, 10000, 0,
     "HTTP listener: most open connections; more are closed at once", NULL},
    {"SNAPWORKER_HTTP_TIMEOUT_S", T_INT, F(http_timeout_s), "10", 1, 3600, 0,
     "HTTP listener: a connection must send its request and take the reply within this",
     NULL},
    {"SNAPWORKER_LOG_LEVEL", T_STR, F(log_level), "info", 0, 0, 0, "debug|info|warn|error",
     check_level},
    {"SNAPWORKER_HTTP_TOKEN", T_STR, F(http_token), NULL, 0, 0, O_SECRET | O_NOFLAG,
     "bearer token that allows dashboard actions (requeue, purge); empty = read-only", NULL},
    {"SNAPWORKER_READY_CHECKS", T_STR, F(ready_checks), "auto", 0, 0, 0,
     "what /readyz checks: auto (Redis, plus PostgreSQL and the store once a job used them) "
     "or a comma list of redis,postgres,store", check_ready},
    {"SNAPWORKER_METRICS_INTERVAL_S", T_INT, F(metrics_interval_s), "10", 1, 3600, 0,
     "queue figures (depth, pending, dead...) are read from Redis at most this often, shared by "
     "all replicas", NULL},
    {"SNAPWORKER_MAX_RESTORE_BYTES", T_I64, F(max_restore_bytes), "21474836480", 1, BIG, 0,
     "extraction limit on total bytes -> archive_too_large", NULL},
    {"SNAPWORKER_MAX_RESTORE_ENTRIES", T_I64, F(max_restore_entries), "1000000", 1, BIG, 0,
     "extraction limit on entries -> archive_too_large", NULL},
    {"SNAPWORKER_GZIP_LEVEL", T_INT, F(gzip_level), "6", 1, 9, 0, "snapshot compression level",
     NULL},
    {"SNAPWORKER_AGENTS_TEMPLATE", T_STR, F(agents_template), NULL, 0, 0, 0,
     "AGENTS.md template file (default: built in)", NULL},
    {"SNAPWORKER_SKILLS_DIR", T_STR, F(skills_dir), NULL, 0, 0, 0,
     "folders listed in {{AVAILABLE_SKILLS_SECTION}}", NULL},
    {"SNAPWORKER_OUTPUTS_TEMPLATE", T_STR, F(outputs_template), NULL, 0, 0, 0,
     "folder copied into outputs/ for a fresh workspace", NULL},
    {"SNAPWORKER_WEBAPP_CMD", T_STR, F(webapp_cmd), "npm run dev -- -p {port}", 0, 0, O_NONEMPTY,
     "dev server argv, split on spaces, {port} substituted", check_webapp},
    {"SNAPWORKER_WEBAPP_NPM_INSTALL", T_BOOL, F(webapp_npm_install), "true", 0, 0, 0,
     "run `npm install` first when node_modules is missing", NULL},
    {"SNAPWORKER_WEBAPP_WAIT_S", T_INT, F(webapp_wait_s), "0", 0, 3600, 0,
     "wait until the port answers below 500 (0 = do not wait)", NULL},
    {"SNAPWORKER_STATE_DIR", T_STR, F(state_dir), NULL, 0, 0, 0, "worker-owned records (dev servers it started), outside SANDBOX_BASE_PATH (default: under the data dir)", NULL},
    {"SNAPWORKER_DEMO_DATA_PATH", T_STR, F(demo_data_path), NULL, 0, 0, 0,
     "`files` target with demo data (default SANDBOX_BASE_PATH/demo_data)", check_abs_path},
    {"SNAPWORKER_USER_FILES_PATH", T_STR, F(user_files_path), NULL, 0, 0, 0,
     "`files` target without demo data (default SANDBOX_BASE_PATH/{sandbox_id}/files)",
     check_abs_path},
    {"OPENCODE_DISABLED_TOOLS", T_STR, F(opencode_disabled_tools), "question", 0, 0, 0,
     "comma-separated tools denied in opencode.json", NULL},
    {"SNAPWORKER_DB_MANAGED", T_STR, F(db_managed), "self", 0, 0, 0,
     "self (snapworker migrates) or external (an Onyx database)", check_managed},
    {"CELERY_BROKER_URL", T_STR, F(celery_broker_url), NULL, 0, 0, 0,
     "Celery broker (the same Redis database as REDIS_URL); empty = ingress off. "
     "Set, it also enables Celery's `revoke` (docs/celery.md \"Revoke\")",
     check_celery_url},
    {"CELERY_RESULT_BACKEND", T_STR, F(celery_result_backend), NULL, 0, 0, 0,
     "Celery result backend redis:// URL (default: the broker)", check_celery_url},
    {"SNAPWORKER_CELERY_QUEUES", T_STR, F(celery_queues), "snapworker", 0, 0, 0,
     "comma-separated kombu queues", NULL},
    {"SNAPWORKER_CELERY_PRIORITY_SEP", T_STR, F(celery_priority_sep), "\\x06\\x16", 0, 0, 0,
     "priority list separator (C escapes allowed)", NULL},
    {"SNAPWORKER_CELERY_PRIORITY_STEPS", T_STR, F(celery_priority_steps), "0,3,6,9", 0, 0, 0,
     "priority steps, comma-separated ascending", check_steps},
    {"SNAPWORKER_CELERY_RESULT_EXPIRES_S", T_INT, F(celery_result_expires_s), "86400", 1,
     100 * 86400, 0, "Celery result expiry", NULL},
    {"SANDBOX_BACKEND", T_STR, F(sandbox_backend), "local", 0, 0, 0, "local or kubernetes",
     check_backend},
    {"SANDBOX_BASE_PATH", T_STR, F(sandbox_base_path), "/tmp/onyx-sandboxes", 0, 0, O_NONEMPTY,
     "local backend root (absolute)", check_abs_path_required},
    {"SANDBOX_NAMESPACE", T_STR, F(k8s_namespace), "onyx-sandboxes", 0, 0, 0,
     "kubernetes namespace of the sandbox pods (a DNS-1123 label)", check_dns_label},
    {"KUBECONFIG", T_STR, F(kubeconfig), NULL, 0, 0, 0,
     "kubeconfig path (current context); empty = in-cluster service account", NULL},
    {"SNAPWORKER_K8S_SANDBOX_CONTAINER", T_STR, F(k8s_sandbox_container), "sandbox", 0, 0, 0,
     "container holding the session files and the dev server", check_dns_label},
    {"SNAPWORKER_K8S_SYNC_CONTAINER", T_STR, F(k8s_sync_container), "file-sync", 0, 0, 0,
     "container that streams archives in and out", check_dns_label},
    {"SNAPWORKER_K8S_POD_PREFIX", T_STR, F(k8s_pod_prefix), "sandbox-", 0, 0, 0,
     "pod name = prefix + first 8 characters of the sandbox id", check_name},
    {"SNAPWORKER_K8S_EXEC_TIMEOUT_S", T_INT, F(k8s_exec_timeout_s), "120", 1, 86400, 0,
     "wall-clock limit of one short command in a pod (archive streams use the job deadline)",
     NULL},
    {"SNAPWORKER_K8S_API_TIMEOUT_S", T_INT, F(k8s_api_timeout_s), "30", 1, 3600, 0,
     "kubernetes API: connect and REST timeout, and exec silence limit", NULL},
    {"SANDBOX_S3_BUCKET", T_STR, F(s3_bucket), "onyx-sandbox-files", 0, 0, 0,
     "bucket when the store URL names none", check_bucket},
    {"SANDBOX_NEXTJS_PORT_START", T_INT, F(port_start), "3010", 1, 65535, 0,
     "dev-server port range start", NULL},
    {"SANDBOX_NEXTJS_PORT_END", T_INT, F(port_end), "3100", 2, 65536, 0,
     "dev-server port range end (excluded)", NULL},
    {"AWS_ACCESS_KEY_ID", T_STR, F(aws_access_key_id), NULL, 0, 0, O_SECRET | O_NOFLAG,
     "S3 access key", NULL},
    {"AWS_SECRET_ACCESS_KEY", T_STR, F(aws_secret_access_key), NULL, 0, 0, O_SECRET | O_NOFLAG,
     "S3 secret key", NULL},
    {"AWS_SESSION_TOKEN", T_STR, F(aws_session_token), NULL, 0, 0, O_SECRET | O_NOFLAG,
     "S3 session token (sent as x-amz-security-token)", NULL},
    {"AWS_REGION", T_STR, F(aws_region), NULL, 0, 0, 0, "S3 region (else AWS_DEFAULT_REGION, us-east-1)",
     NULL},
    {"AWS_ENDPOINT_URL_S3", T_STR, F(aws_endpoint_url), NULL, 0, 0, 0,
     "S3 endpoint, path-style (else AWS_ENDPOINT_URL)", NULL},
    {"SNAPWORKER_S3_PART_SIZE", T_I64, F(s3_part_size), "8388608", 5 * 1024 * 1024,
     5LL * 1024 * 1024 * 1024, 0, "multipart part size in bytes (>= 5 MiB)", NULL},
    {"SNAPWORKER_STORE_RETRY_BUDGET_S", T_INT, F(store_retry_budget_s), "60", 0, 86400, 0,
     "time budget for retrying one store operation", NULL},
    {"SNAPWORKER_STORE_TIMEOUT_S", T_INT, F(store_timeout_s), "30", 1, 86400, 0,
     "store connect timeout and stall limit (no bytes moving)", NULL},
    {"SNAPWORKER_STORE_ORPHAN_GRACE_S", T_INT, F(store_orphan_grace_s), "3600", 60, 100 * 86400, 0,
     "age after which abandoned temp files / multipart uploads are swept", NULL},
    {"SANDBOX_IDLE_TIMEOUT_SECONDS", T_INT, F(idle_timeout_s), "3600", 1, 365 * 86400, 0,
     "a running sandbox without a heartbeat for this long is put to sleep by `sweep`", NULL},
    {"SNAPWORKER_SCHEDULE", T_BOOL, F(schedule), "0", 0, 0, 0,
     "run the scheduler (sweep every period, prune every day) inside `run`", NULL},
    {"SNAPWORKER_TENANTS", T_STR, F(tenants), "public", 0, 0, 0,
     "comma-separated tenants the scheduler enqueues sweep and prune for (more than one needs "
     "SNAPWORKER_TENANT_SCHEMAS=1)", check_tenants},
    {"SNAPWORKER_SCHEDULE_PERIOD_S", T_INT, F(schedule_period_s), "60", 1, 86400, 0,
     "scheduler: sweep period (ids sweep:{tenant}:{epoch_s / period})", NULL},
    {"SNAPWORKER_PRUNE_PERIOD_S", T_INT, F(prune_period_s), "86400", 1, 30 * 86400, 0,
     "scheduler: prune period (ids prune:{tenant}:{epoch_s / period})", NULL},
    {"SNAPWORKER_SCHEDULE_LOCK_TTL_S", T_INT, F(schedule_lock_ttl_s), "30", 2, 3600, 0,
     "scheduler: leader lock TTL (renewed every TTL/3; a dead leader is replaced within it)",
     NULL},
    {"SNAPWORKER_TENANT_SCHEMAS", T_BOOL, F(tenant_schemas), "0", 0, 0, 0,
     "one PostgreSQL schema per tenant: every transaction runs with search_path = tenant_id",
     NULL},
    {"SNAPWORKER_SNAPSHOT_RETENTION_DAYS", T_INT, F(snapshot_retention_days), "30", 0, 36500, 0,
     "prune: snapshots older than this are deleted (the newest KEEP per session stay)", NULL},
    {"SNAPWORKER_SNAPSHOT_RETENTION_S", T_I64, F(snapshot_retention_s), "0", 0, BIG, 0,
     "prune: retention in seconds when > 0, overriding the days (tests, fine tuning)", NULL},
    {"SNAPWORKER_SNAPSHOT_KEEP", T_INT, F(snapshot_keep), "1", 0, 1000000, 0,
     "prune: newest snapshots of each session always kept", NULL},
    {"SNAPWORKER_SNAPSHOT_EXCLUDE", T_STR, F(snapshot_exclude), NULL, 0, 0, 0,
     "snapshot: comma-separated patterns relative to the session folder (* in a name, ** "
     "across folders) left out of archives", check_excludes},
    {"SNAPWORKER_MAX_SNAPSHOT_BYTES", T_I64, F(max_snapshot_bytes), "0", 0, BIG, 0,
     "snapshot: an archive larger than this (compressed bytes) is archive_too_large; 0 = none",
     NULL},
    {"SNAPWORKER_CELERY_TASK_MAP", T_STR, F(celery_task_map),
     "cleanup_idle_sandboxes=sweep,cleanup_old_snapshots=prune", 0, 0, 0,
     "extra Celery task names -> job types (snapworker.<type> always works)", check_task_map},
};
#define NOPTS (sizeof opts / sizeof opts[0])

/* ---- helpers ---------------------------------------------------------- */

static void flag_name(const char *env, char *out, size_t n)
{
    const char *s = env;
    if (strncmp(s, "SNAPWORKER_", 11) == 0) s += 11;
    size_t i = 0;
    for (; *s && i + 1 < n; s++) out[i++] = *s == '_' ? '-' : (char)tolower((unsigned char)*s);
    out[i] = '\0';
}

static int bad(const opt *o, const char *form, const char *val, char *err, size_t n)
{
    if (o->flags & O_SECRET)
        snprintf(err, n, "%s: expected %s", o->env, form);
    else
        snprintf(err, n, "%s: expected %s, got '%s'", o->env, form, val);
    return -1;
}

static int set_value(cfg *c, const opt *o, const char *val, char *err, size_t n)
{
    char *base = (char *)c;
    char form[96];
    switch (o->type) {
    case T_STR: {
        char **slot = (char **)(base + o->off);
        if (o->check && o->check(c, o->env, val, err, n) < 0) return -1;
        free(*slot);
        *slot = xstrdup(val);
        return 0;
    }
    case T_INT:
    case T_I64: {
        errno = 0;
        char *end = NULL;
        long long v = strtoll(val, &end, 10);
        snprintf(form, sizeof form, "an integer from %lld to %lld", (long long)o->min,
                 (long long)o->max);
        if (!*val || errno || *end || v < o->min || v > o->max) return bad(o, form, val, err, n);
        if (o->type == T_INT)
            *(int *)(base + o->off) = (int)v;
        else
            *(int64_t *)(base + o->off) = v;
        return 0;
    }
    case T_BOOL: {
        bool *b = (bool *)(base + o->off);
        if (!strcmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes") ||
            !strcasecmp(val, "on"))
            *b = true;
        else if (!strcmp(val, "0") || !strcasecmp(val, "false") || !strcasecmp(val, "no") ||
                 !strcasecmp(val, "off"))
            *b = false;
        else
            return bad(o, "true or false", val, err, n);
        return 0;
    }
    }
    return -1;
}

/* ---- checks -----------------------------------------------------------
 * Each check names its variable ('var') in the message, in the form
 * "VARIABLE: expected FORM, got 'VALUE'"; a value that may carry a password is
 * shown redacted (cfg_redact_conninfo). */

static int check_redis(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    rds_url u = {0};
    char why[160];
    if (rds_url_parse(v, &u, why, sizeof why) < 0) {
        char red[256];
        cfg_redact_conninfo(v, red, sizeof red);
        snprintf(err, n, "%s: %s, got '%s'", var, why, red);
        return -1;
    }
    rds_url_free(&c->redis);
    c->redis = u;
    return 0;
}

static int check_celery_url(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    if (!*v) return 0;
    rds_url u = {0};
    char why[160];
    if (rds_url_parse(v, &u, why, sizeof why) < 0) {
        char red[256];
        cfg_redact_conninfo(v, red, sizeof red);
        snprintf(err, n, "%s: %s, got '%s'", var, why, red);
        return -1;
    }
    rds_url_free(&u);
    return 0;
}

/* S3 bucket naming rules (general purpose buckets): 3-63 characters of lowercase
 * letters, digits, dots and hyphens, beginning and ending with a letter or digit, no
 * "..", not formatted as an IPv4 address. */
bool cfg_s3_bucket_valid(const char *b)
{
    size_t len = strlen(b);
    if (len < 3 || len > 63) return false;
    if (!isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[len - 1])) return false;
    int dots = 0;
    bool all_digits_dots = true;
    for (size_t i = 0; i < len; i++) {
        char ch = b[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'))
            return false;
        if (ch == '.' && b[i + 1] == '.') return false;
        if (ch == '.') dots++;
        else if (!isdigit((unsigned char)ch)) all_digits_dots = false;
    }
    if (all_digits_dots && dots == 3) return false; /* 192.168.5.4 */
    return true;
}

static int check_store(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    if (strncmp(v, "file:///", 8) == 0) return 0;
    if (strncmp(v, "s3://", 5) == 0) {
        const char *b = v + 5, *slash = strchr(b, '/');
        size_t blen = slash ? (size_t)(slash - b) : strlen(b);
        char bucket[80];
        if (blen == 0) return 0; /* SANDBOX_S3_BUCKET names it: checked once all is loaded */
        if (blen < sizeof bucket) {
            memcpy(bucket, b, blen);
            bucket[blen] = '\0';
            if (cfg_s3_bucket_valid(bucket)) return 0;
        }
        snprintf(err, n,
                 "%s: expected s3://BUCKET[/PREFIX] with a valid bucket name (3-63 characters of "
                 "a-z, 0-9, '.', '-', starting and ending with a letter or digit, no '..', not an "
                 "IP address), got '%s'",
                 var, v);
        return -1;
    }
    snprintf(err, n, "%s: expected file:///absolute/path or s3://bucket, got '%s'", var, v);
    return -1;
}

static int check_bucket(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    if (!*v || cfg_s3_bucket_valid(v)) return 0;
    snprintf(err, n,
             "%s: expected a valid S3 bucket name (3-63 characters of a-z, 0-9, '.', '-', "
             "starting and ending with a letter or digit, no '..', not an IP address), got '%s'",
             var, v);
    return -1;
}

/* Absolute paths: a relative one would resolve against whatever the cwd is (and a
 * relative `files` link target against the session folder). Empty = the default. */
static int check_abs_path(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    if (!*v || v[0] == '/') return 0;
    snprintf(err, n, "%s: expected an absolute path (starting with '/'), got '%s'", var, v);
    return -1;
}

static int check_abs_path_required(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    if (!*v) {
        snprintf(err, n, "%s: expected an absolute path (starting with '/'), got ''", var);
        return -1;
    }
    return check_abs_path(c, var, v, err, n);
}

/* libpq's connection keywords (PostgreSQL 15, libpq-connect "Parameter Key Words"). */
static const char *const pq_keywords[] = {
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "channel_binding",
    "connect_timeout", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
    "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword", "sslrootcert", "sslcrl",
    "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "krbsrvname", "gsslib", "service", "target_session_attrs",
    NULL};

static bool pq_keyword(const char *k, size_t len)
{
    for (const char *const *p = pq_keywords; *p; p++)
        if (strlen(*p) == len && strncmp(*p, k, len) == 0) return true;
    return false;
}

/* The key=value form as libpq reads it (conninfo_parse): keyword, optional spaces, '=',
 * optional spaces, then a bare value up to whitespace or a single-quoted value with
 * backslash escapes. Returns true when every pair is well formed and every keyword known. */
static bool conninfo_valid(const char *s)
{
    const char *p = s;
    int pairs = 0;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (!*p) break;
        const char *k = p;
        while (*p && !isspace((unsigned char)*p) && *p != '=') p++;
        size_t klen = (size_t)(p - k);
        while (isspace((unsigned char)*p)) p++;
        if (klen == 0 || *p != '=' || !pq_keyword(k, klen)) return false;
        p++;
        while (isspace((unsigned char)*p)) p++;
        if (*p == '\'') {
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1]) p++;
            if (*p != '\'') return false;
            p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1]) p++;
                p++;
            }
        }
        pairs++;
    }
    return pairs > 0;
}

/* A syntactic check only: the daemon never talks to PostgreSQL itself (job processes do,
 * docs/processes.md), so PQconninfoParse is not called at start. */
static int check_dburl(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    if (strncmp(v, "postgresql://", 13) == 0 || strncmp(v, "postgres://", 11) == 0) return 0;
    if (!strstr(v, "://") && conninfo_valid(v)) return 0;
    char red[256];
    cfg_redact_conninfo(v, red, sizeof red);
    snprintf(err, n,
             "%s: expected postgresql://[user[:password]@]host[:port]/dbname or key=value pairs "
             "of libpq keywords (host=... dbname=...), got '%s'",
             var, red);
    return -1;
}

static int check_oneof(const char *v, const char *const *alts, const char *form, char *err,
                       size_t n)
{
    for (; *alts; alts++)
        if (strcmp(v, *alts) == 0) return 0;
    snprintf(err, n, "%s, got '%s'", form, v);
    return -1;
}

static int check_managed(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    (void)var;
    static const char *const alts[] = {"self", "external", NULL};
    return check_oneof(v, alts, "SNAPWORKER_DB_MANAGED: expected self or external", err, n);
}

static int check_backend(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    (void)var;
    static const char *const alts[] = {"local", "kubernetes", NULL};
    return check_oneof(v, alts, "SANDBOX_BACKEND: expected local or kubernetes", err, n);
}

static int check_level(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    (void)var;
    static const char *const alts[] = {"debug", "info", "warn", "error", NULL};
    return check_oneof(v, alts, "SNAPWORKER_LOG_LEVEL: expected debug, info, warn or error",
                       err, n);
}

static int check_ready(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    if (!strcmp(v, "auto")) return 0;
    const char *p = v;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (!((len == 5 && !strncmp(p, "redis", 5)) || (len == 8 && !strncmp(p, "postgres", 8)) ||
              (len == 5 && !strncmp(p, "store", 5)))) {
            snprintf(err, n, "%s: expected auto or a comma list of redis, postgres, store, got '%s'",
                     var, v);
            return -1;
        }
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

static int check_name(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    size_t len = strlen(v);
    bool ok = len >= 1 && len <= 64;
    for (size_t i = 0; ok && i < len; i++)
        ok = isalnum((unsigned char)v[i]) || v[i] == '_' || v[i] == '-' || v[i] == '.';
    if (ok) return 0;
    snprintf(err, n, "%s: expected 1-64 characters of [A-Za-z0-9_.-], got '%s'", var, v);
    return -1;
}

/* A Kubernetes namespace: an RFC 1123 (DNS-1123) label. */
bool cfg_dns_label_valid(const char *v)
{
    size_t len = strlen(v);
    if (len < 1 || len > 63) return false;
    for (size_t i = 0; i < len; i++)
        if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '-'))
            return false;
    return v[0] != '-' && v[len - 1] != '-';
}

static int check_dns_label(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    if (cfg_dns_label_valid(v)) return 0;
    snprintf(err, n,
             "%s: expected a DNS-1123 label (1-63 characters of a-z, 0-9 and '-', starting and "
             "ending with a letter or digit), got '%s'",
             var, v);
    return -1;
}

/* SNAPWORKER_TENANTS: at least one tenant id, each [A-Za-z0-9_-]{1,63}. */
static int check_tenants(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    char *copy = xstrdup(v), *save = NULL;
    int count = 0, rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        if (!id_valid_tenant(t)) {
            snprintf(err, n, "%s: expected comma-separated tenant ids ([A-Za-z0-9_-]{1,63}), "
                     "got '%.80s'", var, v);
            rc = -1;
        }
        count++;
    }
    free(copy);
    if (rc == 0 && count == 0) {
        snprintf(err, n, "%s: expected at least one tenant id", var);
        rc = -1;
    }
    return rc;
}

static int check_excludes(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    char why[160];
    excl *x = excl_new();
    int rc = excl_add_csv(x, v, why, sizeof why);
    excl_free(x);
    if (rc != 0) snprintf(err, n, "%s: %s", var, why);
    return rc;
}

/* SNAPWORKER_CELERY_TASK_MAP: "name=type,..."; names [A-Za-z0-9_.:-]{1,128}, types too (the
 * jobs/ table is not known here: an unknown type shows up as NotRegistered at run time). */
static int check_task_map(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    char *copy = xstrdup(v), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (eq) *eq = '\0';
        if (!eq || !id_valid_job(t) || !id_valid_job(eq + 1) || strlen(eq + 1) > 32) {
            snprintf(err, n, "%s: expected comma-separated celery_task_name=job_type pairs, "
                     "got '%.80s'", var, v);
            rc = -1;
        }
    }
    free(copy);
    return rc;
}

static int check_steps(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    long prev = -1;
    const char *p = v;
    int count = 0;
    while (*p) {
        char *end;
        errno = 0;
        long s = strtol(p, &end, 10);
        if (end == p || errno || s < 0 || s > 255 || s <= prev) goto fail;
        prev = s;
        count++;
        p = end;
        if (*p == ',') p++;
        else if (*p) goto fail;
    }
    if (count > 0) return 0;
fail:
    snprintf(err, n, "%s: expected ascending integers 0-255 separated by commas, got '%s'", var,
             v);
    return -1;
}

static int check_http(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    if (!*v) return 0;
    const char *colon = strrchr(v, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (colon && colon != v && *end == '\0' && port >= 0 && port <= 65535 && colon[1]) return 0;
    snprintf(err, n, "%s: expected HOST:PORT, got '%s'", var, v);
    return -1;
}

static int check_webapp(cfg *c, const char *var, const char *v, char *err, size_t n)
{
    (void)c;
    for (const char *p = v; *p; p++)
        if (*p != ' ' && *p != '\t') return 0;
    snprintf(err, n, "%s: expected a command line, got '%s'", var, v);
    return -1;
}

/* ---- URLs ------------------------------------------------------------- */

static int pct_decode(const char *s, size_t len, char **out)
{
    char *o = xmalloc(len + 1), *w = o;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len + 0 && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            *w++ = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            *w++ = s[i];
        }
    }
    *w = '\0';
    *out = o;
    return 0;
}

/* HOST[:PORT] in p[0..len) (no IPv6 literals). */
static int parse_hostport(const char *p, size_t len, int defport, rds_host *h)
{
    const char *colon = memchr(p, ':', len);
    size_t hl = colon ? (size_t)(colon - p) : len;
    if (hl == 0 || p[0] == '[') return -1;
    for (size_t i = 0; i < hl; i++)
        if (!isalnum((unsigned char)p[i]) && p[i] != '.' && p[i] != '-' && p[i] != '_') return -1;
    h->port = defport;
    if (colon) {
        char buf[8];
        size_t pl = len - hl - 1;
        if (pl == 0 || pl >= sizeof buf) return -1;
        memcpy(buf, colon + 1, pl);
        buf[pl] = '\0';
        char *end;
        long port = strtol(buf, &end, 10);
        if (*end || port < 1 || port > 65535) return -1;
        h->port = (int)port;
    }
    h->host = xstrndup(p, hl);
    return 0;
}

static void add_host(rds_url *u, rds_host h)
{
    u->hosts = xrealloc(u->hosts, (size_t)(u->nhosts + 1) * sizeof *u->hosts);
    u->hosts[u->nhosts++] = h;
}

static int parse_bool_word(const char *v, bool *out)
{
    static const char *yes[] = {"true", "1", "yes", "on"}, *no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(v, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Options redis-py and kombu accept in a URL query that tune their own sockets or pools:
 * accepted (so one URL serves both) and ignored (docs/redis.md). */
static const char *ignored_opts[] = {"socket_timeout", "socket_connect_timeout", "socket_keepalive",
                                     "retry_on_timeout", "health_check_interval", "client_name",
                                     "max_connections", "decode_responses", "encoding", NULL};

static int qerr(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int qerr(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

/* The query string q (after '?'): TLS options, db, master_name, sentinel_password. */
static int parse_query(const char *q, rds_url *u, bool *tls_opt, char *err, size_t n)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        if (!eq) {
            snprintf(err, n, "expected KEY=VALUE in the URL query, got '%.*s'", (int)(len < 40 ? len : 40), q);
            return -1;
        }
        char key[40];
        size_t kl = (size_t)(eq - q);
        if (kl == 0 || kl >= sizeof key) {
            snprintf(key, sizeof key, "?");
        } else {
            memcpy(key, q, kl);
            key[kl] = '\0';
        }
        char *val;
        pct_decode(eq + 1, len - kl - 1, &val);
        int rc = 0;
        char **path = !strcmp(key, "ssl_ca_certs") ? &u->tls_ca
                    : !strcmp(key, "ssl_certfile") ? &u->tls_cert
                    : !strcmp(key, "ssl_keyfile") ? &u->tls_key : NULL;
        if (path) {
            *tls_opt = true;
            if (!*val) rc = qerr(err, n, "%s: expected a file path", key);
            else {
                free(*path);
                *path = val;
                val = NULL;
            }
        } else if (!strcmp(key, "ssl_cert_reqs")) {
            *tls_opt = true;
            if (!strcasecmp(val, "required") || !strcmp(val, "CERT_REQUIRED") ||
                !strcasecmp(val, "optional") || !strcmp(val, "CERT_OPTIONAL"))
                u->tls_verify = RDS_VERIFY_REQUIRED;
            else if (!strcasecmp(val, "none") || !strcmp(val, "CERT_NONE"))
                u->tls_verify = RDS_VERIFY_NONE;
            else
                rc = qerr(err, n, "ssl_cert_reqs: expected required, optional or none, got '%s'", val);
        } else if (!strcmp(key, "ssl_check_hostname")) {
            *tls_opt = true;
            if (parse_bool_word(val, &u->tls_check_hostname) < 0)
                rc = qerr(err, n, "ssl_check_hostname: expected true or false, got '%s'", val);
        } else if (!strcmp(key, "db")) {
            char *end;
            long db = strtol(val, &end, 10);
            if (!*val || *end || db < 0 || db > 100000)
                rc = qerr(err, n, "db: expected a database number, got '%s'", val);
            else u->db = (int)db;
        } else if (!strcmp(key, "master_name")) {
            if (!*val) rc = qerr(err, n, "master_name: expected a name");
            else {
                free(u->master_name);
                u->master_name = val;
                val = NULL;
            }
        } else if (!strcmp(key, "sentinel_password")) {
            free(u->sentinel_password);
            u->sentinel_password = val;
            val = NULL;
        } else {
            bool known = false;
            for (size_t i = 0; ignored_opts[i]; i++) known |= !strcmp(key, ignored_opts[i]);
            if (!known) rc = qerr(err, n, "unknown option '%s' in the URL query", key);
        }
        free(val);
        if (rc < 0) return -1;
        q += len + (amp ? 1 : 0);
    }
    return 0;
}

/* [user:password@]HOSTS[/path] of one URL after its scheme; HOSTS is one host or, when
 * 'many', a comma-separated list. *path gets what follows the hosts (may be ""). */
static int parse_authority(const char *p, size_t len, rds_url *u, bool many, int defport,
                           const char **path)
{
    const char *at = NULL;
    for (const char *s = p; s < p + len; s++)
        if (*s == '@') at = s;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!u->password && !u->username) {
            if (colon) {
                if (colon > p) pct_decode(p, (size_t)(colon - p), &u->username);
                pct_decode(colon + 1, (size_t)(at - colon - 1), &u->password);
            } else {
                pct_decode(p, (size_t)(at - p), &u->password); /* redis://secret@host */
            }
        }
        len -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    const char *slash = memchr(p, '/', len);
    size_t hl = slash ? (size_t)(slash - p) : len;
    *path = slash ? slash : p + len;
    for (const char *h = p; h <= p + hl;) {
        const char *comma = many ? memchr(h, ',', (size_t)(p + hl - h)) : NULL;
        size_t one = comma ? (size_t)(comma - h) : (size_t)(p + hl - h);
        rds_host host;
        if (parse_hostport(h, one, defport, &host) < 0) return -1;
        add_host(u, host);
        if (!comma) break;
        h = comma + 1;
    }
    return 0;
}

/* "/N" -> db N; "" or "/" -> unchanged. */
static int parse_db_path(const char *s, size_t len, rds_url *u)
{
    if (len == 0 || (len == 1 && s[0] == '/')) return 0;
    if (s[0] != '/' || len > 7) return -1;
    char buf[8];
    memcpy(buf, s + 1, len - 1);
    buf[len - 1] = '\0';
    char *end;
    long db = strtol(buf, &end, 10);
    if (!buf[0] || *end || db < 0 || db > 100000) return -1;
    u->db = (int)db;
    return 0;
}

static const char *url_forms =
    "expected redis://[user:password@]host[:port][/db], rediss://... (TLS), unix:///path[?db=N], "
    "redis+sentinel://host:port[,host:port...]/master[/db] or redis+cluster://host:port[,...]";

int rds_url_parse(const char *url, rds_url *u, char *err, size_t n)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    u->tls_check_hostname = true;
    bool tls_opt = false;
    const char *q = strchr(url, '?');
    size_t blen = q ? (size_t)(q - url) : strlen(url);
    err[0] = '\0';
    if (q && parse_query(q + 1, u, &tls_opt, err, n) < 0) goto bad;

    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7;
        size_t plen = blen - 7;
        if (plen == 0 || path[0] != '/' || tls_opt) goto form;
        u->unix_path = xstrndup(path, plen);
        return 0;
    }
    static const struct { const char *scheme; rds_mode mode; bool tls; } schemes[] = {
        {"redis://", RDS_DIRECT, false},           {"rediss://", RDS_DIRECT, true},
        {"redis+sentinel://", RDS_SENTINEL, false}, {"rediss+sentinel://", RDS_SENTINEL, true},
        {"redis+cluster://", RDS_CLUSTER, false},   {"rediss+cluster://", RDS_CLUSTER, true},
        {"sentinel://", RDS_SENTINEL, false},
    };
    size_t si = 0, ns = sizeof schemes / sizeof schemes[0];
    while (si < ns && strncmp(url, schemes[si].scheme, strlen(schemes[si].scheme)) != 0) si++;
    if (si == ns) goto form;
    u->mode = schemes[si].mode;
    u->tls = schemes[si].tls;
    if (tls_opt && !u->tls) {
        snprintf(err, n, "the ssl_* options need TLS: use rediss:// (or rediss+sentinel://, "
                         "rediss+cluster://)");
        goto bad;
    }
    const char *path;
    if (si == ns - 1) {
        /* kombu: sentinel://[:pw@]h1:p1[/db];sentinel://h2:p2[/db]..., master_name in the query */
        const char *p = url;
        for (;;) {
            if (strncmp(p, "sentinel://", 11) != 0 || p >= url + blen) goto form;
            p += 11;
            const char *semi = memchr(p, ';', (size_t)(url + blen - p));
            size_t len = semi ? (size_t)(semi - p) : (size_t)(url + blen - p);
            if (parse_authority(p, len, u, false, 26379, &path) < 0) goto form;
            if (parse_db_path(path, (size_t)(p + len - path), u) < 0) goto form;
            if (!semi) break;
            p = semi + 1;
        }
        if (!u->master_name) {
            snprintf(err, n, "a sentinel:// URL needs ?master_name=NAME (kombu's master_name "
                             "transport option)");
            goto bad;
        }
    } else {
        const char *p = url + strlen(schemes[si].scheme);
        size_t len = (size_t)(url + blen - p);
        if (parse_authority(p, len, u, u->mode != RDS_DIRECT,
                            u->mode == RDS_SENTINEL ? 26379 : 6379, &path) < 0)
            goto form;
        size_t plen = (size_t)(url + blen - path);
        if (u->mode == RDS_SENTINEL) {
            /* /master[/db] */
            if (plen > 1) {
                const char *name = path + 1, *s2 = memchr(name, '/', plen - 1);
                size_t nl = s2 ? (size_t)(s2 - name) : plen - 1;
                if (nl) {
                    free(u->master_name);
                    pct_decode(name, nl, &u->master_name);
                }
                if (s2 && parse_db_path(s2, (size_t)(url + blen - s2), u) < 0) goto form;
            }
            if (!u->master_name) {
                snprintf(err, n, "expected the master's name: redis+sentinel://host:port[,...]/master[/db]");
                goto bad;
            }
        } else if (parse_db_path(path, plen, u) < 0) {
            goto form;
        }
    }
    if (u->mode == RDS_CLUSTER && u->db != 0) {
        snprintf(err, n, "Redis Cluster has database 0 only, got /%d", u->db);
        goto bad;
    }
    if (u->mode != RDS_SENTINEL && (u->master_name || u->sentinel_password)) {
        snprintf(err, n, "master_name and sentinel_password are for Sentinel URLs");
        goto bad;
    }
    u->host = xstrdup(u->hosts[0].host);
    u->port = u->hosts[0].port;
    return 0;
form:
    snprintf(err, n, "%s", url_forms);
bad:
    rds_url_free(u);
    return -1;
}

void rds_url_free(rds_url *u)
{
    free(u->host);
    free(u->unix_path);
    free(u->username);
    free(u->password);
    for (int i = 0; i < u->nhosts; i++) free(u->hosts[i].host);
    free(u->hosts);
    free(u->master_name);
    free(u->sentinel_password);
    free(u->tls_ca);
    free(u->tls_cert);
    free(u->tls_key);
    memset(u, 0, sizeof *u);
}

bool rds_url_same_db(const rds_url *a, const rds_url *b)
{
    if (a->mode != b->mode || a->db != b->db) return false;
    if (a->mode == RDS_SENTINEL) return !strcmp(a->master_name, b->master_name);
    if (a->unix_path || b->unix_path)
        return a->unix_path && b->unix_path && !strcmp(a->unix_path, b->unix_path);
    return !strcmp(a->host, b->host) && a->port == b->port;
}

/* One URL (up to 'end'): the userinfo's password becomes "***". */
static size_t redact_one(const char *url, const char *end, char *out, size_t n)
{
    const char *scheme = strstr(url, "://");
    if (scheme && scheme >= end) scheme = NULL;
    const char *at = NULL;
    if (scheme)
        for (const char *s = scheme + 3; s < end && *s != '/' && *s != '?'; s++)
            if (*s == '@') at = s;
    int w;
    if (!at) {
        w = snprintf(out, n, "%.*s", (int)(end - url), url);
    } else {
        const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
        const char *cut = colon ? colon + 1 : scheme + 3;
        w = snprintf(out, n, "%.*s***%.*s", (int)(cut - url), url, (int)(end - at), at);
    }
    return w < 0 ? 0 : (size_t)w < n ? (size_t)w : n ? n - 1 : 0;
}

void cfg_redact_url(const char *url, char *out, size_t n)
{
    /* kombu's Sentinel form joins several URLs with ';' */
    size_t o = 0;
    if (n) out[0] = '\0';
    for (const char *p = url; o + 1 < n;) {
        const char *semi = strchr(p, ';');
        const char *end = semi ? semi : p + strlen(p);
        o += redact_one(p, end, out + o, n - o);
        if (!semi || o + 1 >= n) break;
        out[o++] = ';';
        out[o] = '\0';
        p = semi + 1;
    }
}

/* Like cfg_redact_url, and also every password=VALUE (URI query or key=value form,
 * quoted or not) becomes password=***. */
void cfg_redact_conninfo(const char *s, char *out, size_t n)
{
    char tmp[512];
    if (strstr(s, "://")) cfg_redact_url(s, tmp, sizeof tmp);
    else snprintf(tmp, sizeof tmp, "%s", s);
    size_t o = 0;
    for (const char *p = tmp; *p && o + 1 < n;) {
        bool at_word = p == tmp || !isalnum((unsigned char)p[-1]);
        if (at_word && strncasecmp(p, "password", 8) == 0) {
            const char *q = p + 8;
            while (*q == ' ') q++;
            if (*q == '=') {
                q++;
                while (*q == ' ') q++;
                if (*q == '\'') {
                    for (q++; *q && *q != '\''; q++)
                        if (*q == '\\' && q[1]) q++;
                    if (*q) q++;
                } else {
                    while (*q && !isspace((unsigned char)*q) && *q != '&') q++;
                }
                int w = snprintf(out + o, n - o, "password=***");
                o += (size_t)w < n - o ? (size_t)w : n - o - 1;
                p = q;
                continue;
            }
        }
        out[o++] = *p++;
    }
    out[o < n ? o : n - 1] = '\0';
}

/* ---- loading ---------------------------------------------------------- */

static char *default_store(void)
{
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    if (xdg && xdg[0] == '/') return xasprintf("file://%s/snapworker/store", xdg);
    if (home && home[0] == '/') return xasprintf("file://%s/.local/share/snapworker/store", home);
    return xstrdup("file:///var/tmp/snapworker/store");
}

int cfg_load(cfg *c, int argc, char **argv, int *argi, bool *help, char *err, size_t n)
{
    memset(c, 0, sizeof *c);
    *help = false;
    /* 1. defaults */
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        if (o->type == T_STR) {
            *(char **)((char *)c + o->off) = xstrdup(o->def ? o->def : "");
        } else if (o->def && set_value(c, o, o->def, err, n) < 0) {
            return -1;
        }
    }
    if (rds_url_parse(c->redis_url, &c->redis, err, n) < 0) return -1;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c->concurrency = cores > 0 ? (int)(cores > 1024 ? 1024 : cores) : 1;
    free(c->store_url);
    c->store_url = default_store();
    /* environment fallbacks of the AWS family */
    const char *dr = getenv("AWS_DEFAULT_REGION");
    if (dr && *dr) { free(c->aws_region); c->aws_region = xstrdup(dr); }
    const char *ep = getenv("AWS_ENDPOINT_URL");
    if (ep && *ep) { free(c->aws_endpoint_url); c->aws_endpoint_url = xstrdup(ep); }
    /* 2. environment */
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v && (*v || (opts[i].flags & O_NONEMPTY)) && set_value(c, &opts[i], v, err, n) < 0)
            return -1;
    }
    /* 3. flags */
    int i = *argi;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) { i++; break; }
        if (strncmp(a, "--", 2) != 0) break;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { *help = true; continue; }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt *found = NULL;
        for (size_t k = 0; k < NOPTS && !found; k++) {
            char fl[64];
            if (opts[k].flags & O_NOFLAG) continue;
            flag_name(opts[k].env, fl, sizeof fl);
            if (strlen(fl) == nlen && strncmp(fl, name, nlen) == 0) found = &opts[k];
        }
        if (!found) break; /* not a config flag: the subcommand's own */
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            snprintf(err, n, "--%.*s: missing value", (int)nlen, name);
            return -1;
        }
        if (set_value(c, found, val, err, n) < 0) return -1;
    }
    *argi = i;
    /* 4. cross-field checks */
    if (c->port_end <= c->port_start) {
        snprintf(err, n, "SANDBOX_NEXTJS_PORT_END: expected a value above SANDBOX_NEXTJS_PORT_START "
                         "(%d), got '%d'", c->port_start, c->port_end);
        return -1;
    }
    if (c->retry_max_ms < c->retry_base_ms) {
        snprintf(err, n, "SNAPWORKER_RETRY_MAX_MS: expected at least SNAPWORKER_RETRY_BASE_MS (%d), "
                         "got '%d'", c->retry_base_ms, c->retry_max_ms);
        return -1;
    }
    if (!c->tenant_schemas && strchr(c->tenants, ',')) {
        /* without schemas the tables hold one tenant's data: the sandbox table has no tenant
         * column, so every tenant's sweep would select every idle sandbox (docs/lifecycle.md
         * "Tenants without schemas") */
        char *copy = xstrdup(c->tenants), *save = NULL;
        int count = 0;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) count++;
        free(copy);
        if (count > 1) {
            snprintf(err, n, "SNAPWORKER_TENANTS: expected one tenant unless "
                             "SNAPWORKER_TENANT_SCHEMAS=1 (without schemas the database holds one "
                             "tenant's data and each tenant's sweep would select all of it), "
                             "got '%.80s'", c->tenants);
            return -1;
        }
    }
    if (*c->celery_broker_url) {
        /* the ingress moves a message and XADDs it in one script: one database */
        rds_url b;
        char why[160];
        if (rds_url_parse(c->celery_broker_url, &b, why, sizeof why) < 0) {
            snprintf(err, n, "CELERY_BROKER_URL: %s", why);
            return -1;
        }
        bool same = rds_url_same_db(&b, &c->redis);
        rds_mode bm = b.mode;
        rds_url_free(&b);
        if (bm == RDS_CLUSTER || c->redis.mode == RDS_CLUSTER) {
            snprintf(err, n, "CELERY_BROKER_URL: Celery ingress over Redis Cluster is not supported "
                             "(kombu does not support Cluster either; docs/redis.md)");
            return -1;
        }
        if (!same) {
            snprintf(err, n, "CELERY_BROKER_URL: expected the same Redis server and database as "
                             "REDIS_URL (the ingress moves messages atomically with one script)");
            return -1;
        }
    }
    if (strncmp(c->store_url, "s3://", 5) == 0 && (c->store_url[5] == '\0' || c->store_url[5] == '/') &&
        !*c->s3_bucket) {
        snprintf(err, n, "SNAPWORKER_STORE: expected s3://BUCKET (the URL names no bucket and "
                         "SANDBOX_S3_BUCKET is empty), got '%s'", c->store_url);
        return -1;
    }
    if (!c->aws_region || !*c->aws_region) {
        free(c->aws_region);
        c->aws_region = xstrdup("us-east-1");
    }
    if (!*c->demo_data_path) {
        free(c->demo_data_path);
        c->demo_data_path = xasprintf("%s/demo_data", c->sandbox_base_path);
    }
    if (!*c->user_files_path) {
        free(c->user_files_path);
        c->user_files_path = xasprintf("%s/{sandbox_id}/files", c->sandbox_base_path);
    }
    return 0;
}

void cfg_free(cfg *c)
{
    for (size_t i = 0; i < NOPTS; i++) {
        if (opts[i].type == T_STR) {
            char **slot = (char **)((char *)c + opts[i].off);
            free(*slot);
            *slot = NULL;
        }
    }
    rds_url_free(&c->redis);
}

int cfg_max_deliveries(const cfg *c, int max_attempts)
{
    return c->max_deliveries > 0 ? c->max_deliveries : max_attempts + 2;
}

/* Markdown cells: '|' would end the cell. */
static void md_cell(int fd, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|') dprintf(fd, "\\|");
        else dprintf(fd, "%c", *s);
    }
}

void cfg_print_markdown(int fd)
{
    dprintf(fd, "| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        char fl[64];
        flag_name(o->env, fl, sizeof fl);
        dprintf(fd, "| `%s` | ", o->env);
        if (o->flags & O_NOFLAG) dprintf(fd, "(environment only)");
        else dprintf(fd, "`--%s`", fl);
        dprintf(fd, " | ");
        if (o->def && *o->def) {
            dprintf(fd, "`");
            md_cell(fd, o->def);
            dprintf(fd, "`");
        }
        dprintf(fd, " | ");
        md_cell(fd, o->help);
        dprintf(fd, "%s |\n", (o->flags & O_SECRET) ? " (secret: never echoed)" : "");
    }
    dprintf(fd, "| `AWS_DEFAULT_REGION` | (environment only) | | S3 region when `AWS_REGION` is unset |\n");
    dprintf(fd, "| `AWS_ENDPOINT_URL` | (environment only) | | S3 endpoint when `AWS_ENDPOINT_URL_S3` is unset |\n");
    /* the rest of the credentials chain (common/aws_creds.c, docs/store.md "Credentials") */
    static const char *const chain[][2] = {
        {"AWS_WEB_IDENTITY_TOKEN_FILE", "web identity token file (IRSA): with `AWS_ROLE_ARN`, STS AssumeRoleWithWebIdentity"},
        {"AWS_ROLE_ARN", "role to assume with the web identity token"},
        {"AWS_ROLE_SESSION_NAME", "session name for STS (default `snapworker-<time>`)"},
        {"AWS_ENDPOINT_URL_STS", "STS endpoint (default `https://sts.REGION.amazonaws.com`)"},
        {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "container credentials endpoint (EKS Pod Identity, ECS)"},
        {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "ECS: path on `http://169.254.170.2`"},
        {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "Authorization header for the container endpoint, re-read at each fetch (secret)"},
        {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "Authorization header for the container endpoint (secret)"},
        {"AWS_EC2_METADATA_SERVICE_ENDPOINT", "IMDS endpoint (default `http://169.254.169.254`)"},
        {"AWS_EC2_METADATA_DISABLED", "`true`: never ask IMDS"},
    };
    for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++)
        dprintf(fd, "| `%s` | (environment only) | | %s |\n", chain[i][0], chain[i][1]);
}

void cfg_print_help(int fd)
{
    dprintf(fd, "Configuration (environment variable, or the flag; flags win):\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        char fl[64];
        flag_name(o->env, fl, sizeof fl);
        if (o->flags & O_NOFLAG)
            dprintf(fd, "  %-36s %s (environment only)\n", o->env, o->help);
        else
            dprintf(fd, "  %-36s --%s\n  %-36s   %s%s%s%s\n", o->env, fl, "", o->help,
                    o->def ? " [default: " : "", o->def ? o->def : "", o->def ? "]" : "");
    }
}
