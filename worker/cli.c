/* worker/cli.c — producer and operator commands: enqueue (with --wait), job, dead.
 * (and cancel) Owns: argument parsing of those subcommands and their JSON output. Talks to
 * Redis with the blocking hiredis API; never touches PostgreSQL. */
#include "worker/cli.h"

#include <errno.h>
#include <hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/ids.h"
#include "common/payload.h"
#include "common/redact.h"
#include "common/rds.h"
#include "common/xmalloc.h"
#include "worker/celery_msg.h"
#include "worker/scripts.h"

static int usage_enqueue(void)
{
    fprintf(stderr,
            "usage: snapworker enqueue TYPE --tenant T --sandbox S --session X [--args JSON]\n"
            "                          [--id ID] [--max-attempts N] [--job-timeout SEC]\n"
            "                          [--priority high|default|low]\n"
            "                          [--delay DURATION (500ms, 30s, 5m, 2h) | --at EPOCH_MS|ISO-8601]\n"
            "                          [--wait [--timeout SEC]]\n"
            "Adds the job with the enqueue script (worker/lua/enqueue.lua): an id already\n"
            "known (queued, running, or ended within the job TTL) adds nothing.\n"
            "--wait prints progress to stderr and the outcome as JSON.\n");
    return 2;
}

/* "500ms", "30s", "5m", "2h", "1d" or plain milliseconds; -1 when malformed. */
static int64_t parse_duration_ms(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    double mul = 1;
    if (!*end || !strcmp(end, "ms")) mul = 1;
    else if (!strcmp(end, "s")) mul = 1000;
    else if (!strcmp(end, "m")) mul = 60000;
    else if (!strcmp(end, "h")) mul = 3600000;
    else if (!strcmp(end, "d")) mul = 86400000;
    else return -1;
    return v * mul > 9e15 ? -1 : (int64_t)(v * mul);
}

/* Epoch ms, or ISO-8601 UTC "2025-01-02T03:04:05[.123][Z|+00:00]"; -1 when malformed. */
static int64_t parse_when_ms(const char *s)
{
    char *end;
    long long ms = strtoll(s, &end, 10);
    if (end != s && !*end && ms >= 0) return ms;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest) return -1;
    long frac = 0;
    if (*rest == '.') {
        int digits = 0;
        for (rest++; *rest >= '0' && *rest <= '9'; rest++, digits++)
            if (digits < 3) frac = frac * 10 + (*rest - '0');
        while (digits++ < 3) frac *= 10;
    }
    if (*rest && strcmp(rest, "Z") && strcmp(rest, "+00:00")) return -1; /* UTC only */
    return (int64_t)timegm(&tm) * 1000 + frac;
}

static rds *connect_or_say(const cfg *c, const char *who)
{
    sw_err err;
    rds *rc = rds_connect(&c->redis, 5000, &err);
    if (!rc) fprintf(stderr, "snapworker %s: %s\n", who, err.msg);
    return rc;
}

/* A job hash or a dead entry as JSON for a person: nothing secret is printed
 * (docs/operations.md "Secrets in payloads"). The dead entry's `job` keeps the payload whole in Redis, for
 * `dead requeue`; here it is shown redacted (celery_redact_raw). */
static json_t *hash_to_json(redisReply *r)
{
    json_t *o = json_object();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!k || !v) continue;
        if (redact_name_is_secret(k)) {
            json_object_set_new(o, k, json_string(REDACTED));
        } else if (!strcmp(k, "job")) {
            char *shown = celery_redact_raw(v, r->element[i + 1]->len);
            json_t *j = json_string(shown);
            json_object_set_new(o, k, j ? j : json_string(REDACTED));
            free(shown);
        } else if (!strcmp(k, "result") || !strcmp(k, "error")) {
            char *shown = redact_json_text(v, r->element[i + 1]->len, NULL);
            json_t *j = json_loads(shown, JSON_DECODE_ANY, NULL);
            json_object_set_new(o, k, j ? j : json_string(shown));
            free(shown);
        } else if (!strcmp(k, "attempt") || !strcmp(k, "deliveries") || !strcmp(k, "updated_ms") ||
                   !strcmp(k, "started_ms") || !strcmp(k, "lease_until")) {
            json_object_set_new(o, k, json_integer(strtoll(v, NULL, 10)));
        } else {
            json_object_set_new(o, k, json_string(v));
        }
    }
    return o;
}

static void print_json(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    if (s) puts(s);
    free(s);
}

/* One `progress` event on stderr: a bar redrawn in place on a terminal (no total is
 * known, so it fills with the size read so far on a log scale), a plain line otherwise. */
static void show_progress(json_t *ev, int tty)
{
    json_t *d = json_object_get(ev, "data");
    double bytes = (double)json_integer_value(json_object_get(d, "bytes"));
    json_t *ent = json_object_get(d, "entries");
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!tty) {
        if (json_is_integer(ent))
            fprintf(stderr, "progress %s: %.0f bytes, %lld entries\n", type ? type : "job", bytes,
                    (long long)json_integer_value(ent));
        else
            fprintf(stderr, "progress %s: %.0f bytes\n", type ? type : "job", bytes);
        return;
    }
    int fill = 0;
    for (double b = bytes; b >= 1024 && fill < 30; b /= 2) fill++; /* 1 KiB..1 TiB */
    char bar[31];
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r%s [%s] %.1f MiB", type ? type : "job", bar, bytes / 1048576.0);
    if (json_is_integer(ent)) fprintf(stderr, ", %lld entries", (long long)json_integer_value(ent));
    fflush(stderr);
}

static int terminal_status(const char *st)
{
    return st && (!strcmp(st, "succeeded") || !strcmp(st, "dead") || !strcmp(st, "cancelled"));
}

/* Wait on an already SUBSCRIBEd context for the job's terminal event; `progress`
 * events go to stderr. */
static int wait_outcome(rds *sub, const char *job_id, int timeout_s, json_t **out)
{
    time_t until = time(NULL) + timeout_s;
    int tty = isatty(2), drew = 0, rc = 1;
    while (time(NULL) < until) {
        redisReply *r = NULL;
        if (rds_read(sub, 1000, &r) != REDIS_OK) {
            if (sub->err == RDS_ERR_TIMEOUT) {
                sub->err = 0; /* nothing this second: keep waiting */
                continue;
            }
            rc = -1;
            break;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[2]->str) {
            json_t *ev = json_loads(r->element[2]->str, 0, NULL);
            const char *jid = json_string_value(json_object_get(ev, "job_id"));
            const char *st = json_string_value(json_object_get(ev, "status"));
            if (jid && st && !strcmp(jid, job_id) && terminal_status(st)) {
                *out = ev;
                freeReplyObject(r);
                rc = 0;
                break;
            }
            if (jid && st && !strcmp(jid, job_id) && !strcmp(st, "progress")) {
                show_progress(ev, tty);
                drew = tty;
            }
            json_decref(ev);
        }
        freeReplyObject(r);
    }
    if (drew) fputc('\n', stderr);
    return rc;
}

/* The outcome of an ended job from its hash (an id enqueued again after it ended). */
static json_t *outcome_from_hash(rds *rc, const char *k_job, const char *id)
{
    redisReply *r = rds_command(rc, "HMGET %s status attempt result error type", k_job);
    json_t *ev = NULL;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 5 && r->element[0]->str &&
        terminal_status(r->element[0]->str)) {
        const char *st = r->element[0]->str;
        const char *data = !strcmp(st, "succeeded") ? r->element[2]->str : r->element[3]->str;
        json_t *d = data ? json_loads(data, JSON_DECODE_ANY, NULL) : NULL;
        ev = json_pack("{s:s,s:s,s:I,s:o}", "job_id", id, "status", st, "attempt",
                       (json_int_t)(r->element[1]->str ? atoll(r->element[1]->str) : 0), "data",
                       d ? d : json_object());
    }
    if (r) freeReplyObject(r);
    return ev;
}

static void print_outcome(json_t *ev, const char *id)
{
    const char *st = json_string_value(json_object_get(ev, "status"));
    json_t *res = json_pack("{s:s,s:s,s:O,s:o}", "id", id, "status", st, "attempt",
                            json_object_get(ev, "attempt"),
                            !strcmp(st, "succeeded") ? "result" : "error",
                            redact_json(json_object_get(ev, "data")));
    print_json(res);
    json_decref(res);
}

int cli_enqueue_main(const cfg *c, int argc, char **argv)
{
    if (argc < 2) return usage_enqueue();
    job_req req;
    memset(&req, 0, sizeof req);
    const char *type = argv[1], *tenant = "public", *sandbox = NULL, *session = NULL,
               *args = NULL, *id = NULL, *priority = NULL;
    int wait = 0, timeout_s = 60, rc = 1;
    int64_t delay_ms = -1, run_at_ms = -1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--wait")) { wait = 1; continue; }
        if (!v) return usage_enqueue();
        if (!strcmp(a, "--tenant")) tenant = v;
        else if (!strcmp(a, "--sandbox")) sandbox = v;
        else if (!strcmp(a, "--session")) session = v;
        else if (!strcmp(a, "--args")) args = v;
        else if (!strcmp(a, "--id")) id = v;
        else if (!strcmp(a, "--timeout")) timeout_s = atoi(v);
        else if (!strcmp(a, "--max-attempts")) req.max_attempts = atoi(v);
        else if (!strcmp(a, "--job-timeout")) req.timeout_s = atoi(v);
        else if (!strcmp(a, "--priority")) priority = v;
        else if (!strcmp(a, "--delay")) {
            if ((delay_ms = parse_duration_ms(v)) < 0) {
                fprintf(stderr, "snapworker enqueue: --delay: expected e.g. 500ms, 30s, 5m, 2h\n");
                return 2;
            }
        } else if (!strcmp(a, "--at")) {
            if ((run_at_ms = parse_when_ms(v)) < 0) {
                fprintf(stderr, "snapworker enqueue: --at: expected epoch ms or ISO-8601 UTC\n");
                return 2;
            }
        } else return usage_enqueue();
        i++;
    }
    char gen[SW_UUID_LEN + 1];
    if (!id) {
        id_uuid4(gen);
        id = gen;
    }
    if (!sandbox || !session) return usage_enqueue();
    if (delay_ms >= 0 && run_at_ms >= 0) {
        fprintf(stderr, "snapworker enqueue: give --delay or --at, not both\n");
        return 2;
    }
    /* build, then validate through the same parser the worker uses */
    json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:s,s:s}", "v", 1, "id", id, "type", type, "tenant_id",
                          tenant, "sandbox_id", sandbox, "session_id", session);
    if (args) {
        json_error_t je;
        json_t *a = json_loads(args, 0, &je);
        if (!a || !json_is_object(a)) {
            char why[JSON_ERROR_TEXT_LENGTH];
            redact_json_error(je.text, why, sizeof why); /* no quoted input: maybe a secret */
            fprintf(stderr, "snapworker enqueue: --args must be a JSON object (%s, column %d)\n",
                    a ? "not an object" : why, je.column);
            json_decref(a);
            json_decref(o);
            return 2;
        }
        json_object_set_new(o, "args", a);
    }
    if (req.max_attempts) json_object_set_new(o, "max_attempts", json_integer(req.max_attempts));
    if (req.timeout_s) json_object_set_new(o, "timeout_s", json_integer(req.timeout_s));
    if (priority) json_object_set_new(o, "priority", json_string(priority));
    if (delay_ms > 0) json_object_set_new(o, "delay_ms", json_integer(delay_ms));
    if (run_at_ms >= 0) json_object_set_new(o, "run_at_ms", json_integer(run_at_ms));
    char *payload = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    sw_err err;
    if (payload_parse(payload, strlen(payload), &req, &err) < 0) {
        fprintf(stderr, "snapworker enqueue: %s: %s\n", sw_code_name(err.code), err.msg);
        payload_free(&req);
        free(payload);
        return 2;
    }
    rds *rc1 = connect_or_say(c, "enqueue"), *sub = NULL;
    json_t *ev = NULL;
    char k_hi[256], k_def[256], k_lo[256], k_delayed[256], k_events[256], k_job[400];
    rds_key(c, "stream:high", k_hi, sizeof k_hi);
    rds_key(c, "stream", k_def, sizeof k_def);
    rds_key(c, "stream:low", k_lo, sizeof k_lo);
    rds_key(c, "delayed", k_delayed, sizeof k_delayed);
    rds_key(c, "events", k_events, sizeof k_events);
    rds_job_key(c, req.id, k_job, sizeof k_job);
    if (!rc1) goto out;
    if (wait) { /* subscribed before the job exists: no event can be missed */
        sub = connect_or_say(c, "enqueue");
        if (!sub) goto out;
        /* On a Cluster the worker publishes only when the slot's node has listeners
         * (worker/lua/prelude.lua): subscribe there, reached by following MOVED. */
        redisReply *s = c->redis.mode == RDS_CLUSTER ? rds_command(sub, "EXISTS %s", k_events) : NULL;
        if (s) freeReplyObject(s);
        s = rds_command(sub, "SUBSCRIBE %s", k_events);
        if (!s) goto out;
        freeReplyObject(s);
    }
    const char *argv_e[] = {"EVAL", scr_source(SCR_ENQUEUE), "5", k_job, k_hi, k_def, k_lo,
                            k_delayed, payload};
    redisReply *r = rds_command_argv(rc1, 9, argv_e, NULL);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !r->element[1]->str ||
        !r->element[2]->str) {
        fprintf(stderr, "snapworker enqueue: enqueue script failed: %s\n",
                r && r->type == REDIS_REPLY_ERROR ? r->str : rc1->errstr);
        if (r) freeReplyObject(r);
        goto out;
    }
    int added = r->element[0]->integer == 1;
    char status[32], where[64];
    snprintf(status, sizeof status, "%s", r->element[1]->str);
    snprintf(where, sizeof where, "%s", r->element[2]->str);
    freeReplyObject(r);
    if (!wait) {
        json_t *res = json_pack("{s:s,s:s,s:b}", "id", req.id, "status", status, "added", added);
        if (added && strcmp(where, "delayed") == 0) json_object_set_new(res, "delayed", json_true());
        else if (added) json_object_set_new(res, "entry", json_string(where));
        if (req.prio != PRIO_DEFAULT)
            json_object_set_new(res, "priority", json_string(payload_prio_name(req.prio)));
        print_json(res);
        json_decref(res);
        rc = 0;
        goto out;
    }
    if (!added) ev = outcome_from_hash(rc1, k_job, req.id); /* ended before: its outcome */
    int w = ev ? 0 : wait_outcome(sub, req.id, timeout_s, &ev);
    if (w == 0) {
        print_outcome(ev, req.id);
        rc = strcmp(json_string_value(json_object_get(ev, "status")), "succeeded") == 0 ? 0 : 1;
    } else {
        printf("{\"id\":\"%s\",\"status\":\"timeout\",\"error\":{\"code\":\"timeout\","
               "\"message\":\"no outcome within %d s\",\"retryable\":true}}\n", req.id, timeout_s);
    }
out:
    json_decref(ev);
    if (rc1) rds_free(rc1);
    if (sub) rds_free(sub);
    payload_free(&req);
    free(payload);
    return rc;
}

int cli_cancel_main(const cfg *c, int argc, char **argv)
{
    if (argc != 2 || !id_valid_job(argv[1])) {
        fprintf(stderr, "usage: snapworker cancel ID\n"
                        "A queued or delayed job ends cancelled at once; a running one stops at its\n"
                        "next checkpoint, is undone as on a failure and ends cancelled.\n");
        return 2;
    }
    rds *rc = connect_or_say(c, "cancel");
    if (!rc) return 1;
    char k_job[400], k_delayed[256], k_events[256], k_hi[256], k_def[256], k_lo[256], ttl[32];
    rds_job_key(c, argv[1], k_job, sizeof k_job);
    rds_key(c, "delayed", k_delayed, sizeof k_delayed);
    rds_key(c, "events", k_events, sizeof k_events);
    rds_key(c, "stream:high", k_hi, sizeof k_hi);
    rds_key(c, "stream", k_def, sizeof k_def);
    rds_key(c, "stream:low", k_lo, sizeof k_lo);
    snprintf(ttl, sizeof ttl, "%d", c->job_ttl_s);
    const char *av[] = {"EVAL", scr_source(SCR_CANCEL), "6", k_job, k_delayed, k_events,
                        k_hi, k_def, k_lo, argv[1], ttl};
    redisReply *r = rds_command_argv(rc, 11, av, NULL);
    int code = 1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->str &&
        r->element[1]->str) {
        printf("{\"id\":\"%s\",\"result\":\"%s\",\"previous\":\"%s\"}\n", argv[1],
               r->element[0]->str, r->element[1]->str);
        code = strcmp(r->element[0]->str, "ended") == 0 ? 1 : 0;
    } else {
        fprintf(stderr, "snapworker cancel: %s: %s\n", argv[1],
                r && r->type == REDIS_REPLY_ERROR ? r->str : rc->errstr);
    }
    if (r) freeReplyObject(r);
    rds_free(rc);
    return code;
}

int cli_job_main(const cfg *c, int argc, char **argv)
{
    if (argc != 2 || !id_valid_job(argv[1])) {
        fprintf(stderr, "usage: snapworker job ID\n");
        return 2;
    }
    rds *rc = connect_or_say(c, "job");
    if (!rc) return 1;
    char k[400];
    rds_job_key(c, argv[1], k, sizeof k);
    redisReply *r = rds_command(rc, "HGETALL %s", k);
    int code = 1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        json_t *o = hash_to_json(r);
        json_object_set_new(o, "id", json_string(argv[1]));
        print_json(o);
        json_decref(o);
        code = 0;
    } else {
        fprintf(stderr, "snapworker job: %s: not found\n", argv[1]);
    }
    if (r) freeReplyObject(r);
    rds_free(rc);
    return code;
}

/* Newest first, DEAD_PAGE entries per reply: a dead entry may hold up to 1 MiB, so a
 * whole `--count 100000` in one reply could need gigabytes. */
#define DEAD_PAGE 10
static int dead_list(rds *rc, const char *k_dead, int count)
{
    char end[64] = "+";
    int shown = 0;
    while (shown < count) {
        int want = count - shown < DEAD_PAGE ? count - shown : DEAD_PAGE;
        redisReply *r = rds_command(rc, "XREVRANGE %s %s - COUNT %d", k_dead, end, want);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            if (r) freeReplyObject(r);
            return 1;
        }
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || !e->element[0]->str ||
                e->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            json_t *o = hash_to_json(e->element[1]);
            json_object_set_new(o, "dead_id", json_string(e->element[0]->str));
            print_json(o);
            json_decref(o);
            snprintf(end, sizeof end, "(%s", e->element[0]->str); /* exclusive: Redis >= 6.2 */
        }
        size_t got = r->elements;
        freeReplyObject(r);
        shown += (int)got;
        if ((int)got < want) break;
    }
    return 0;
}

int cli_dead_main(const cfg *c, int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (!(strcmp(sub, "list") == 0 || (strcmp(sub, "requeue") == 0 && argc == 3) ||
          strcmp(sub, "purge") == 0)) {
        fprintf(stderr, "usage: snapworker dead list [--count N] | requeue ID | purge\n");
        return 2;
    }
    rds *rc = connect_or_say(c, "dead");
    if (!rc) return 1;
    char k_dead[256], k_hi[256], k_stream[256], k_lo[256], prefix[256];
    rds_key(c, "dead", k_dead, sizeof k_dead);
    rds_key(c, "stream:high", k_hi, sizeof k_hi);
    rds_key(c, "stream", k_stream, sizeof k_stream);
    rds_key(c, "stream:low", k_lo, sizeof k_lo);
    rds_key(c, "job:", prefix, sizeof prefix);
    int code = 1;
    if (!strcmp(sub, "list")) {
        int count = (argc > 3 && !strcmp(argv[2], "--count")) ? atoi(argv[3]) : 100;
        code = dead_list(rc, k_dead, count > 0 ? count : 100);
    } else if (!strcmp(sub, "purge")) {
        redisReply *r = rds_command(rc, "XLEN %s", k_dead);
        long long n = r ? r->integer : 0;
        if (r) freeReplyObject(r);
        r = rds_command(rc, "DEL %s", k_dead);
        if (r) {
            printf("{\"purged\":%lld}\n", n);
            freeReplyObject(r);
            code = 0;
        }
    } else {
        const char *id = argv[2];
        redisReply *r = rds_command(rc, "EVAL %s 4 %s %s %s %s %s %s", scr_source(SCR_REQUEUE_DEAD),
                                     k_dead, k_hi, k_stream, k_lo, id, prefix);
        if (r && r->type == REDIS_REPLY_STRING) {
            printf("{\"requeued\":\"%s\",\"entry\":\"%s\"}\n", id, r->str);
            code = 0;
        } else {
            fprintf(stderr, "snapworker dead requeue: %s: %s\n", id,
                    r && r->type == REDIS_REPLY_ERROR ? r->str : "no such dead entry");
        }
        if (r) freeReplyObject(r);
    }
    rds_free(rc);
    return code;
}
