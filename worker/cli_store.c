/* worker/cli_store.c — `snapworker store put|get|head|rm|ls`: the store from a shell.
 * Owns: argument handling, file/pipe plumbing and output formats of the store
 * subcommand. Does not own any store behaviour (common/store.c and backends).
 * Why: operators inspect and repair snapshots with it, and the integration tests
 * and bench/store drive both stores through it.
 *
 *   snapworker store put KEY [FILE|-]   upload (stdin by default); prints the head JSON.
 *                                       A regular file (or stdin redirected from one) is
 *                                       one sized PUT; a pipe goes up multipart
 *   snapworker store get KEY [FILE|-]   download (stdout by default), sha256 verified
 *   snapworker store head KEY           {"key": …, "size_bytes": N, "sha256": "…"|""}
 *   snapworker store rm KEY             missing is fine
 *   snapworker store ls [PREFIX]        one "KEY<TAB>SIZE" line per object
 *   snapworker store gc [PREFIX]        sweep orphans older than SNAPWORKER_STORE_ORPHAN_GRACE_S
 *                                       (temp files, abandoned multipart uploads, and snapshot
 *                                       objects under {tenant}/snapshots/ that no snapshot row
 *                                       names, with their sidecars: PostgreSQL decides); JSON
 * Exit 0 ok, 1 error ("snapworker store: <code>: <message>" on stderr), 2 usage. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/db.h"
#include "common/err.h"
#include "common/fdio.h"
#include "common/ids.h"
#include "common/store.h"
#include "common/xmalloc.h"

#define IO_CHUNK (256 * 1024)
#define GC_BUDGET_MS (15 * 60 * 1000)   /* one CLI sweep stops after this (then "truncated") */

int cli_store_main(const cfg *c, int argc, char **argv);

static int usage(void)
{
    fputs("usage: snapworker store put KEY [FILE|-] | get KEY [FILE|-] | head KEY | rm KEY | "
          "ls [PREFIX] | gc [PREFIX]\n",
          stderr);
    return 2;
}

static int fail(const sw_err *e)
{
    fprintf(stderr, "snapworker store: %s: %s\n", sw_code_name(e->code), e->msg);
    return 1;
}

static void print_info(const char *key, const store_info *info)
{
    json_t *o = json_pack("{s:s, s:I, s:s}", "key", key, "size_bytes", (json_int_t)info->size_bytes,
                          "sha256", info->sha256);
    if (o && info->adopted) json_object_set_new(o, "adopted", json_true());
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (txt) printf("%s\n", txt);
    free(txt);
    json_decref(o);
}

/* A regular file goes up as one known-length PUT (store_put_fd picks it from
 * fstat); stdin and pipes stream through the multipart writer. */
static int cmd_put(store *s, const char *key, const char *path, sw_err *err)
{
    int fd = 0;
    store_info info = {0};
    if (strcmp(path, "-") != 0 && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return sw_errf(err, SW_E_INTERNAL, false, "open %s: %s", path, strerror(errno));
    int rc = store_put_fd(s, key, fd, &info, err);
    if (fd > 0) close(fd);
    if (rc < 0) return -1;
    print_info(key, &info);
    return 0;
}

static int cmd_get(store *s, const char *key, const char *path, sw_err *err)
{
    bool to_stdout = strcmp(path, "-") == 0;
    int fd = 1, rc = -1;
    char *buf = NULL;
    store_reader *r = store_get_open(s, key, NULL, err);
    if (!r) return -1;
    if (!to_stdout && (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0) {
        sw_errf(err, SW_E_INTERNAL, false, "open %s: %s", path, strerror(errno));
        goto out;
    }
    buf = xmalloc(IO_CHUNK);
    ssize_t got;
    while ((got = store_get_read(r, buf, IO_CHUNK, err)) > 0) {
        if (fd_write_all(fd, buf, (size_t)got) < 0) {
            sw_errf(err, SW_E_INTERNAL, false, "write %s: %s", path, strerror(errno));
            goto out;
        }
    }
    if (got < 0) goto out;
    rc = 0;
out:
    if (!to_stdout && fd >= 0) {
        if (close(fd) < 0 && rc == 0) rc = sw_errf(err, SW_E_INTERNAL, false, "close %s: %s", path,
                                                   strerror(errno));
        if (rc < 0) unlink(path);   /* never leave a partial download behind */
    }
    free(buf);
    store_get_close(r);
    return rc;
}

static int print_entry(void *arg, const char *key, int64_t size)
{
    (void)arg;
    printf("%s\t%lld\n", key, (long long)size);
    return 0;
}

/* ---- orphan snapshot objects (docs/store.md "Orphan snapshot objects") -----------------
 * An object under {tenant}/snapshots/ older than the grace that no snapshot row names: a
 * snapshot whose row never got written (the job died between the upload and the insert),
 * or whose row was deleted without the object. Only here, from the CLI: the worker never
 * deletes published objects. The grace (>= 60 s, default 3600) must exceed the longest
 * time between a snapshot's upload and its row, which the job timeout bounds. */

typedef struct orphan_scan {
    int64_t cutoff;               /* objects modified at or after this are young */
    char **keys;                  /* old candidates, in listing order */
    size_t n, cap;
    int64_t seen, young;
} orphan_scan;

/* "TENANT/snapshots/REST" with a valid tenant id: the tenant into t (size tn). */
static bool snapshot_key(const char *key, char *t, size_t tn)
{
    const char *slash = strchr(key, '/');
    if (!slash || (size_t)(slash - key) >= tn) return false;
    if (strncmp(slash + 1, "snapshots/", 10) != 0 || !slash[11]) return false;
    snprintf(t, tn, "%.*s", (int)(slash - key), key);
    return id_valid_tenant(t);
}

static int orphan_cb(void *arg, const char *key, int64_t size, int64_t mtime)
{
    (void)size;
    orphan_scan *o = arg;
    char tenant[80];
    if (!snapshot_key(key, tenant, sizeof tenant)) return 0;
    o->seen++;
    if (mtime < 0 || mtime >= o->cutoff) {      /* young, or of unknown age: keep */
        o->young++;
        return 0;
    }
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 256;
        o->keys = xrealloc(o->keys, o->cap * sizeof *o->keys);
    }
    o->keys[o->n++] = xstrdup(key);
    return 0;
}

typedef struct orphan_stats {
    int64_t seen, removed, young, referenced;
    bool truncated;
} orphan_stats;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* List, then ask PostgreSQL batch by batch (one tenant per batch: its schema when
 * SNAPWORKER_TENANT_SCHEMAS) which old candidates a row names; delete the others. Nothing
 * is deleted unless the database answered for it. */
static int sweep_objects(store *s, const cfg *c, const char *prefix, int64_t deadline_ms,
                         orphan_stats *st, sw_err *err)
{
    orphan_scan o = {.cutoff = (int64_t)time(NULL) - c->store_orphan_grace_s};
    int rc = -1;
    db *d = NULL;
    bool *used = NULL;
    if (store_list_mtime(s, prefix, orphan_cb, &o, err) < 0) goto out;
    st->seen = o.seen;
    st->young = o.young;
    used = xcalloc(DB_PATHS_BATCH, sizeof *used);
    for (size_t i = 0; i < o.n;) {
        if (mono_ms() > deadline_ms) {
            st->truncated = true;
            break;
        }
        char tenant[80], t2[80];
        snapshot_key(o.keys[i], tenant, sizeof tenant);
        size_t j = i;
        while (j < o.n && j - i < DB_PATHS_BATCH && snapshot_key(o.keys[j], t2, sizeof t2) &&
               !strcmp(t2, tenant))
            j++;
        if (!d) d = db_new(c);
        if (db_set_tenant(d, c->tenant_schemas ? tenant : NULL, err) < 0 ||
            db_snapshot_paths_used(d, (const char *const *)o.keys + i, j - i, used, err) < 0)
            goto out;
        for (size_t k = i; k < j; k++) {
            if (used[k - i]) {
                st->referenced++;
                continue;
            }
            if (store_delete(s, o.keys[k], err) < 0) goto out;   /* sidecar, then object */
            st->removed++;
        }
        i = j;
    }
    rc = 0;
out:
    for (size_t i = 0; i < o.n; i++) free(o.keys[i]);
    free(o.keys);
    free(used);
    db_free(d);
    return rc;
}

static int cmd_gc(store *s, const cfg *c, const char *prefix, sw_err *err)
{
    store_gc_stats st;
    orphan_stats os = {0};
    int64_t deadline = mono_ms() + GC_BUDGET_MS;
    if (store_gc(s, prefix, c->store_orphan_grace_s, GC_BUDGET_MS, &st, err) < 0) return -1;
    if (!st.truncated && sweep_objects(s, c, prefix, deadline, &os, err) < 0) return -1;
    json_t *o = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:b, s:I, s:I, s:I, s:I}", "prefix", prefix,
                          "grace_s", c->store_orphan_grace_s, "seen", (json_int_t)st.seen, "removed",
                          (json_int_t)st.removed, "kept", (json_int_t)st.kept, "removed_bytes",
                          (json_int_t)st.removed_bytes, "truncated", st.truncated || os.truncated,
                          "objects_seen", (json_int_t)os.seen, "objects_removed",
                          (json_int_t)os.removed, "objects_kept", (json_int_t)os.young,
                          "objects_referenced", (json_int_t)os.referenced);
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (txt) printf("%s\n", txt);
    free(txt);
    json_decref(o);
    return 0;
}

int cli_store_main(const cfg *c, int argc, char **argv)
{
    if (argc < 2) return usage();
    const char *cmd = argv[1];
    const char *a1 = argc > 2 ? argv[2] : NULL, *a2 = argc > 3 ? argv[3] : "-";
    bool needs_key = strcmp(cmd, "ls") != 0 && strcmp(cmd, "gc") != 0;
    int max_args = !strcmp(cmd, "put") || !strcmp(cmd, "get") ? 4 : 3;
    if ((needs_key && !a1) || argc > max_args) return usage();
    if (strcmp(cmd, "put") && strcmp(cmd, "get") && strcmp(cmd, "head") && strcmp(cmd, "rm") &&
        strcmp(cmd, "ls") && strcmp(cmd, "gc"))
        return usage();
    sw_err err = {0};
    int rc = -1;
    store *s = store_open(c, &err);
    if (!s) return fail(&err);
    if (!strcmp(cmd, "put")) {
        rc = cmd_put(s, a1, a2, &err);
    } else if (!strcmp(cmd, "get")) {
        rc = cmd_get(s, a1, a2, &err);
    } else if (!strcmp(cmd, "head")) {
        store_info info = {0};
        rc = store_head(s, a1, &info, &err);
        if (rc == 0) print_info(a1, &info);
    } else if (!strcmp(cmd, "rm")) {
        rc = store_delete(s, a1, &err);
    } else if (!strcmp(cmd, "gc")) {
        rc = cmd_gc(s, c, a1 ? a1 : "", &err);
    } else {
        rc = store_list(s, a1 ? a1 : "", print_entry, NULL, &err);
    }
    store_close(s);
    if (fflush(stdout) != 0 && rc == 0) rc = sw_errf(&err, SW_E_INTERNAL, false, "write stdout");
    return rc < 0 ? fail(&err) : 0;
}
