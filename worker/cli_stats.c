/* worker/cli_stats.c — `snapworker stats` (a queue's figures on one screen, --json,
 * --watch), `snapworker ls` (jobs by state, with filters) and `snapworker config
 * --markdown` (the configuration reference of docs/operations.md).
 * Owns: argument parsing and the text layout of those commands; the figures and
 * listings themselves come from worker/opsdata.c, the same code /api serves, so the
 * CLI and the dashboard never disagree. Nothing printed holds a secret. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/rds.h"
#include "worker/cli.h"
#include "worker/opsdata.h"

#define QUEUES_MAX 16

static volatile sig_atomic_t stop_watch;
static void on_sigint(int s)
{
    (void)s;
    stop_watch = 1;
}

static int usage_stats(void)
{
    fprintf(stderr, "usage: snapworker stats [--queue Q]... [--json] [--watch [SECONDS]]\n");
    return 2;
}

static void human_age(double s, char *out, size_t n)
{
    if (s < 60) snprintf(out, n, "%.1fs", s);
    else if (s < 3600) snprintf(out, n, "%.0fm%02.0fs", s / 60 - 0.5, s - 60 * (int)(s / 60));
    else snprintf(out, n, "%.1fh", s / 3600);
}

static void print_queue(const json_t *f)
{
    const json_t *st = json_object_get(f, "streams");
    char age[32];
    human_age(json_number_value(json_object_get(f, "oldest_age_s")), age, sizeof age);
    printf("queue %s\n", json_string_value(json_object_get(f, "name")));
    printf("  depth %lld (high %lld, default %lld, low %lld)   pending %lld   lag %lld\n",
           (long long)json_integer_value(json_object_get(f, "depth")),
           (long long)json_integer_value(json_object_get(st, "high")),
           (long long)json_integer_value(json_object_get(st, "default")),
           (long long)json_integer_value(json_object_get(st, "low")),
           (long long)json_integer_value(json_object_get(f, "pending")),
           (long long)json_integer_value(json_object_get(f, "lag")));
    printf("  delayed %lld   dead %lld   oldest %s   done in the last minute %lld\n",
           (long long)json_integer_value(json_object_get(f, "delayed")),
           (long long)json_integer_value(json_object_get(f, "dead")), age,
           (long long)json_integer_value(json_object_get(f, "throughput_1m")));
    const json_t *cons = json_object_get(f, "consumers");
    printf("  workers: %lld live of %zu consumers\n",
           (long long)json_integer_value(json_object_get(f, "live_workers")), json_array_size(cons));
    size_t i;
    const json_t *c;
    json_array_foreach(cons, i, c) {
        char idle[32];
        human_age((double)json_integer_value(json_object_get(c, "idle_ms")) / 1000.0, idle, sizeof idle);
        printf("    %-44s pending %-6lld idle %s\n", json_string_value(json_object_get(c, "name")),
               (long long)json_integer_value(json_object_get(c, "pending")), idle);
    }
}

int cli_stats_main(const cfg *c, int argc, char **argv)
{
    const char *queues[QUEUES_MAX];
    int nq = 0, as_json = 0, watch_s = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) as_json = 1;
        else if (!strcmp(argv[i], "--queue") && i + 1 < argc && nq < QUEUES_MAX) queues[nq++] = argv[++i];
        else if (!strcmp(argv[i], "--watch")) {
            watch_s = 2;
            if (i + 1 < argc && atoi(argv[i + 1]) > 0) watch_s = atoi(argv[++i]);
        } else return usage_stats();
    }
    if (nq == 0) queues[nq++] = c->queue;
    sw_err err;
    rds *rc = rds_connect(&c->redis, 5000, &err);
    if (!rc) {
        fprintf(stderr, "snapworker stats: %s\n", err.msg);
        return 1;
    }
    if (watch_s) signal(SIGINT, on_sigint);
    int code = 0;
    do {
        json_t *all = json_array();
        for (int q = 0; q < nq; q++) {
            json_t *f = ops_queue_figures(rc, c, queues[q], &err);
            if (!f) {
                fprintf(stderr, "snapworker stats: %s\n", err.msg);
                code = 1;
                break;
            }
            json_array_append_new(all, f);
        }
        if (code) {
            json_decref(all);
            break;
        }
        if (as_json) {
            json_t *o = json_pack("{s:o}", "queues", all);
            char *s = json_dumps(o, JSON_COMPACT);
            puts(s ? s : "{}");
            free(s);
            json_decref(o);
        } else {
            if (watch_s) printf("\033[H\033[2J");
            size_t i;
            json_t *f;
            json_array_foreach(all, i, f) print_queue(f);
            json_decref(all);
        }
        fflush(stdout);
        for (int t = 0; watch_s && t < watch_s * 10 && !stop_watch; t++) {
            struct timespec d = {0, 100 * 1000000L};
            nanosleep(&d, NULL);
        }
    } while (watch_s && !stop_watch);
    rds_free(rc);
    return code;
}

static int usage_ls(void)
{
    fprintf(stderr, "usage: snapworker ls [--state queued|running|delayed|dead|failed|succeeded|cancelled]\n"
                    "                     [--type TYPE] [--limit N] [--queue Q] [--json]\n");
    return 2;
}

int cli_ls_main(const cfg *c, int argc, char **argv)
{
    const char *state = "running", *type = NULL, *queue = c->queue;
    int limit = 50, as_json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) { as_json = 1; continue; }
        if (!v) return usage_ls();
        if (!strcmp(a, "--state")) state = v;
        else if (!strcmp(a, "--type")) type = v;
        else if (!strcmp(a, "--queue")) queue = v;
        else if (!strcmp(a, "--limit")) limit = atoi(v);
        else return usage_ls();
        i++;
    }
    if (!ops_state_valid(state) || limit <= 0) return usage_ls();
    sw_err err;
    rds *rc = rds_connect(&c->redis, 5000, &err);
    if (!rc) {
        fprintf(stderr, "snapworker ls: %s\n", err.msg);
        return 1;
    }
    json_t *l = ops_list(rc, c, queue, state, type, limit, &err);
    rds_free(rc);
    if (!l) {
        fprintf(stderr, "snapworker ls: %s\n", err.msg);
        return 1;
    }
    size_t i;
    json_t *o;
    if (!as_json) printf("%-38s %-11s %-9s %-8s %-4s %s\n", "ID", "TYPE", "STATUS", "PRIORITY", "TRY", "DETAIL");
    json_array_foreach(l, i, o) {
        if (as_json) {
            char *s = json_dumps(o, JSON_COMPACT);
            if (s) puts(s);
            free(s);
            continue;
        }
        const json_t *e = json_object_get(o, "error"), *p = json_object_get(o, "progress");
        char detail[200] = "";
        if (e) snprintf(detail, sizeof detail, "%s: %.150s", json_string_value(json_object_get(e, "code")) ? json_string_value(json_object_get(e, "code")) : "?",
                        json_string_value(json_object_get(e, "message")) ? json_string_value(json_object_get(e, "message")) : "");
        else if (p) snprintf(detail, sizeof detail, "progress: %lld bytes, %lld entries",
                             (long long)json_integer_value(json_object_get(p, "bytes")),
                             (long long)json_integer_value(json_object_get(p, "entries")));
        else if (json_object_get(o, "worker"))
            snprintf(detail, sizeof detail, "%s", json_string_value(json_object_get(o, "worker")));
        printf("%-38s %-11s %-9s %-8s %-4lld %s\n", json_string_value(json_object_get(o, "id")),
               json_string_value(json_object_get(o, "type")) ? json_string_value(json_object_get(o, "type")) : "?",
               json_string_value(json_object_get(o, "status")),
               json_string_value(json_object_get(o, "priority")) ? json_string_value(json_object_get(o, "priority")) : "-",
               (long long)json_integer_value(json_object_get(o, "attempt")), detail);
    }
    json_decref(l);
    return 0;
}

int cli_config_main(const cfg *c, int argc, char **argv)
{
    (void)c;
    if (argc != 2 || strcmp(argv[1], "--markdown") != 0) {
        fprintf(stderr, "usage: snapworker config --markdown\n");
        return 2;
    }
    fflush(stdout);
    cfg_print_markdown(1);
    return 0;
}
