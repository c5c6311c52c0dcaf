/* common/cfg.h — the configuration of docs/operations.md "Configuration reference": defaults, environment, flags.
 * Owns: the option table, parsing and validation of every value, and the --help
 * text. Loaded once in main and read through a const pointer everywhere else; it
 * is the only global state (and it is not even global: main owns it).
 * A bad value is reported as "VARIABLE: expected FORM, got 'VALUE'" and main
 * exits 2. Secret values are never echoed. */
#ifndef SW_COMMON_CFG_H
#define SW_COMMON_CFG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where and how to reach Redis (docs/redis.md): one server (redis://, rediss://,
 * unix://), a master found through Sentinel (redis+sentinel://, kombu's sentinel://),
 * or a Cluster (redis+cluster://). For Sentinel and Cluster, host/port are the first
 * of 'hosts' (the sentinels, or the seed nodes). */
typedef enum rds_mode { RDS_DIRECT = 0, RDS_SENTINEL, RDS_CLUSTER } rds_mode;
typedef enum rds_verify { RDS_VERIFY_REQUIRED = 0, RDS_VERIFY_NONE } rds_verify;

typedef struct rds_host {
    char *host;
    int port;
} rds_host;

typedef struct rds_url {
    rds_mode mode;
    char *host;        /* NULL when unix socket */
    int port;          /* default 6379 (26379 for a sentinel) */
    char *unix_path;   /* NULL when TCP */
    char *username;    /* optional ACL user */
    char *password;    /* secret: never logged */
    int db;            /* SELECT index, default 0 */
    rds_host *hosts;   /* Sentinel: the sentinels; Cluster: seed nodes (nhosts >= 1) */
    int nhosts;
    char *master_name; /* Sentinel: the monitored master's name */
    char *sentinel_password; /* Sentinel: AUTH for the sentinels (secret) */
    /* TLS (rediss://, rediss+sentinel://, rediss+cluster://) */
    bool tls;
    char *tls_ca;      /* ssl_ca_certs: CA bundle; NULL = the system's */
    char *tls_cert;    /* ssl_certfile: client certificate (mutual TLS) */
    char *tls_key;     /* ssl_keyfile */
    rds_verify tls_verify;   /* ssl_cert_reqs: required (default) or none */
    bool tls_check_hostname; /* ssl_check_hostname: default true when verifying */
} rds_url;

typedef struct cfg {
    /* servers */
    char *redis_url;          /* REDIS_URL */
    rds_url redis;            /* parsed redis_url */
    char *database_url;       /* DATABASE_URL (libpq URI or key=value) */
    char *store_url;          /* SNAPWORKER_STORE: file:///path or s3://bucket */
    /* queue */
    char *ns;                 /* SNAPWORKER_NAMESPACE, key prefix, default "snapworker" */
    char *queue;              /* SNAPWORKER_QUEUE, {Q} */
    int concurrency;          /* SNAPWORKER_CONCURRENCY, executor threads */
    int prefetch;             /* SNAPWORKER_PREFETCH, read-ahead while jobs are short */
    int lease_s;              /* SNAPWORKER_LEASE_S */
    int max_attempts;         /* SNAPWORKER_MAX_ATTEMPTS, when a payload gives none */
    int max_deliveries;       /* SNAPWORKER_MAX_DELIVERIES, 0 = max_attempts + 2 */
    int drain_timeout_s;      /* SNAPWORKER_DRAIN_TIMEOUT_S */
    int job_ttl_s;            /* SNAPWORKER_JOB_TTL_S, job hash TTL once ended */
    int64_t dead_maxlen;      /* SNAPWORKER_DEAD_MAXLEN */
    int64_t events_maxlen;    /* SNAPWORKER_EVENTS_MAXLEN */
    int retry_base_ms;        /* SNAPWORKER_RETRY_BASE_MS, backoff base */
    int retry_max_ms;         /* SNAPWORKER_RETRY_MAX_MS, backoff cap */
    int default_timeout_s;    /* SNAPWORKER_JOB_TIMEOUT_S, when a payload gives none */
    /* job processes (docs/processes.md) */
    int job_kill_grace_s;     /* SNAPWORKER_JOB_KILL_GRACE_S: SIGTERM .. SIGKILL */
    bool job_spare;           /* SNAPWORKER_JOB_SPARE: a started job process waits per thread */
    int job_nofile;           /* SNAPWORKER_JOB_NOFILE: RLIMIT_NOFILE */
    int64_t job_fsize_max;    /* SNAPWORKER_JOB_FSIZE_MAX: RLIMIT_FSIZE, 0 = none */
    int64_t job_memory_max;   /* SNAPWORKER_JOB_MEMORY_MAX: RLIMIT_AS, 0 = none */
    char *http_addr;          /* SNAPWORKER_HTTP_ADDR, empty = off */
    int http_max_connections; /* SNAPWORKER_HTTP_MAX_CONNECTIONS, open connections at most */
    int http_timeout_s;       /* SNAPWORKER_HTTP_TIMEOUT_S, whole request + reply, per connection */
    char *log_level;          /* SNAPWORKER_LOG_LEVEL: debug|info|warn|error */
    char *http_token;         /* SNAPWORKER_HTTP_TOKEN: bearer token for dashboard actions (secret) */
    char *ready_checks;       /* SNAPWORKER_READY_CHECKS: auto or a list of redis,postgres,store */
    int metrics_interval_s;   /* SNAPWORKER_METRICS_INTERVAL_S: queue figures read at most this often */
    /* restore and archives */
    int64_t max_restore_bytes;   /* SNAPWORKER_MAX_RESTORE_BYTES */
    int64_t max_restore_entries; /* SNAPWORKER_MAX_RESTORE_ENTRIES */
    int gzip_level;              /* SNAPWORKER_GZIP_LEVEL, 1..9 */
    /* regenerate */
    char *agents_template;    /* SNAPWORKER_AGENTS_TEMPLATE, empty = built in */
    char *skills_dir;         /* SNAPWORKER_SKILLS_DIR */
    char *outputs_template;   /* SNAPWORKER_OUTPUTS_TEMPLATE */
    char *webapp_cmd;         /* SNAPWORKER_WEBAPP_CMD, "{port}" substituted */
    bool webapp_npm_install;  /* SNAPWORKER_WEBAPP_NPM_INSTALL */
    int webapp_wait_s;        /* SNAPWORKER_WEBAPP_WAIT_S, 0 = do not wait */
    char *state_dir;          /* SNAPWORKER_STATE_DIR, worker-owned records; empty = under the data dir */
    char *demo_data_path;     /* SNAPWORKER_DEMO_DATA_PATH */
    char *user_files_path;    /* SNAPWORKER_USER_FILES_PATH ("{sandbox_id}" substituted) */
    char *opencode_disabled_tools; /* OPENCODE_DISABLED_TOOLS */
    /* database */
    char *db_managed;         /* SNAPWORKER_DB_MANAGED: self|external */
    /* Celery */
    char *celery_broker_url;     /* CELERY_BROKER_URL, empty = ingress off */
    char *celery_result_backend; /* CELERY_RESULT_BACKEND, empty = broker */
    char *celery_queues;         /* SNAPWORKER_CELERY_QUEUES */
    char *celery_priority_sep;   /* SNAPWORKER_CELERY_PRIORITY_SEP (C escapes allowed) */
    char *celery_priority_steps; /* SNAPWORKER_CELERY_PRIORITY_STEPS */
    int celery_result_expires_s; /* SNAPWORKER_CELERY_RESULT_EXPIRES_S */
    /* sandbox */
    char *sandbox_backend;    /* SANDBOX_BACKEND: local|kubernetes */
    char *sandbox_base_path;  /* SANDBOX_BASE_PATH */
    /* kubernetes backend (docs/kubernetes.md) */
    char *k8s_namespace;      /* SANDBOX_NAMESPACE */
    char *kubeconfig;         /* KUBECONFIG: empty = in-cluster */
    char *k8s_sandbox_container;  /* SNAPWORKER_K8S_SANDBOX_CONTAINER, "sandbox" */
    char *k8s_sync_container;     /* SNAPWORKER_K8S_SYNC_CONTAINER, "file-sync" */
    char *k8s_pod_prefix;         /* SNAPWORKER_K8S_POD_PREFIX, "sandbox-" */
    int k8s_exec_timeout_s;       /* SNAPWORKER_K8S_EXEC_TIMEOUT_S: wall clock of a short command */
    int k8s_api_timeout_s;        /* SNAPWORKER_K8S_API_TIMEOUT_S: REST calls, connect, silence */
    char *s3_bucket;          /* SANDBOX_S3_BUCKET */
    int port_start;           /* SANDBOX_NEXTJS_PORT_START */
    int port_end;             /* SANDBOX_NEXTJS_PORT_END, excluded */
    /* S3 (secrets: never logged) */
    char *aws_access_key_id;
    char *aws_secret_access_key;
    char *aws_session_token;
    char *aws_region;
    char *aws_endpoint_url;   /* AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL */
    int64_t s3_part_size;     /* SNAPWORKER_S3_PART_SIZE, >= 5 MiB */
    int store_retry_budget_s; /* SNAPWORKER_STORE_RETRY_BUDGET_S */
    int store_timeout_s;      /* SNAPWORKER_STORE_TIMEOUT_S: connect timeout and stall limit */
    int store_orphan_grace_s; /* SNAPWORKER_STORE_ORPHAN_GRACE_S: orphans older are swept */
    /* sandbox lifecycle (docs/lifecycle.md) */
    int idle_timeout_s;       /* SANDBOX_IDLE_TIMEOUT_SECONDS: a sandbox idle this long sleeps */
    bool schedule;            /* SNAPWORKER_SCHEDULE: run the scheduler inside `run` */
    char *tenants;            /* SNAPWORKER_TENANTS: comma-separated tenants the scheduler covers */
    int schedule_period_s;    /* SNAPWORKER_SCHEDULE_PERIOD_S: sweep period (60; tests shorten) */
    int prune_period_s;       /* SNAPWORKER_PRUNE_PERIOD_S: prune period (86400) */
    int schedule_lock_ttl_s;  /* SNAPWORKER_SCHEDULE_LOCK_TTL_S: leader lock TTL */
    bool tenant_schemas;      /* SNAPWORKER_TENANT_SCHEMAS: search_path = the job's tenant */
    int snapshot_retention_days; /* SNAPWORKER_SNAPSHOT_RETENTION_DAYS */
    int snapshot_keep;        /* SNAPWORKER_SNAPSHOT_KEEP: newest per session always kept */
    int64_t snapshot_retention_s; /* SNAPWORKER_SNAPSHOT_RETENTION_S: test knob, > 0 overrides days */
    char *snapshot_exclude;   /* SNAPWORKER_SNAPSHOT_EXCLUDE: comma-separated patterns */
    int64_t max_snapshot_bytes; /* SNAPWORKER_MAX_SNAPSHOT_BYTES: 0 = no cap */
    char *celery_task_map;    /* SNAPWORKER_CELERY_TASK_MAP: "celery_name=type,..." */
} cfg;

/* Fill 'c' with defaults, then the environment, then argv flags (--name=value or
 * --name value) starting at argv[*argi]; stops at the first non-flag and leaves
 * *argi there. Returns 0, or -1 with a message in 'err' (size n). 'c' must be
 * released with cfg_free() in both cases. "--help" sets *help. */
int cfg_load(cfg *c, int argc, char **argv, int *argi, bool *help, char *err, size_t n);
void cfg_free(cfg *c);
void cfg_print_help(int fd);                  /* the flag/variable table */
/* The same table as Markdown (docs/operations.md "Configuration reference"), plus the
 * variables read outside the table (AWS_DEFAULT_REGION, AWS_ENDPOINT_URL). */
void cfg_print_markdown(int fd);
int cfg_max_deliveries(const cfg *c, int max_attempts); /* resolves the 0 default */

/* Parse a Redis URL (the forms of docs/redis.md) into 'u' (freed with rds_url_free).
 * Returns 0 or -1 with a message in err that names the problem (never a secret). */
int rds_url_parse(const char *url, rds_url *u, char *err, size_t n);
void rds_url_free(rds_url *u);
/* Do two URLs name the same Redis database (same server, or same Sentinel master name,
 * and same db)? */
bool rds_url_same_db(const rds_url *a, const rds_url *b);
/* Copy 'url' with any password replaced by "***" into out (size n). */
void cfg_redact_url(const char *url, char *out, size_t n);
/* The same for a libpq URI or key=value string: the userinfo password and every
 * password=VALUE parameter become "***". */
void cfg_redact_conninfo(const char *s, char *out, size_t n);
/* S3 general-purpose bucket naming rules (3-63 of [a-z0-9.-], alnum ends, no "..",
 * not an IPv4 address). */
bool cfg_s3_bucket_valid(const char *bucket);
/* A DNS-1123 label (Kubernetes namespace, container name): 1-63 of [a-z0-9-], alnum ends. */
bool cfg_dns_label_valid(const char *s);

#endif
