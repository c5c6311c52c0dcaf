/* worker/opsdata.c — queue figures, job listings and dead-letter actions for people.
 *
 * Everything is read with bounded commands: XLEN, ZCARD, XPENDING summaries, a first
 * entry per stream, XINFO CONSUMERS, and pages of the events stream capped at
 * EVENTS_SCAN entries; never KEYS or SCAN over the keyspace. Listings by state come
 * from where each state lives (docs/contract.md "Keys"): queued and running from the
 * streams (pending = delivered), delayed from the zset, dead from the dead stream,
 * ended states from the recent events. Payload arguments are never copied out: a
 * listed job shows its ids and type only, so a queued job's api key cannot leak. */
#include "worker/opsdata.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/ids.h"
#include "common/redact.h"
#include "common/xmalloc.h"
#include "worker/scripts.h"

#define GROUP "snapworker"
#define EVENTS_SCAN 5000   /* newest events read for one listing, at most */
#define EVENTS_PAGE 500
#define THROUGHPUT_SCAN 20000
#define PENDING_SCAN 1000  /* pending entries listed per stream */

const char *const ops_stream_suffix[OPS_NSTREAMS] = {"stream:high", "stream", "stream:low"};
const char *const ops_priority_name[OPS_NSTREAMS] = {"high", "default", "low"};

static void qkey(const cfg *c, const char *queue, const char *suffix, char *out, size_t n)
{
    snprintf(out, n, "%s:{%s}:%s", c->ns, queue, suffix);
}

static redisReply *cmd(rds *rc, sw_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = rds_vcommand(rc, fmt, ap);
    va_end(ap);
    if (!r) sw_errf(err, SW_E_INTERNAL, true, "redis: %s", rc->errstr[0] ? rc->errstr : "no reply");
    return r;
}

static long long int_reply(redisReply *r)
{
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

static int64_t id_ms(const char *id)
{
    return id ? strtoll(id, NULL, 10) : 0;
}

bool ops_stream_id_valid(const char *s)
{
    if (!s || !*s || strlen(s) > 40) return false;
    const char *p = s;
    while (*p >= '0' && *p <= '9') p++;
    if (p == s || *p != '-') return false;
    const char *q = ++p;
    while (*p >= '0' && *p <= '9') p++;
    return p != q && *p == '\0';
}

static int64_t redis_now_ms(rds *rc)
{
    redisReply *r = rds_command(rc, "TIME");
    int64_t ms = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->str)
        ms = strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;
    if (r) freeReplyObject(r);
    if (!ms) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    return ms;
}

/* The value of field 'name' in a flat [k, v, k, v] reply, or NULL. */
static const redisReply *field(const redisReply *flat, const char *name)
{
    if (!flat || flat->type != REDIS_REPLY_ARRAY) return NULL;
    for (size_t i = 0; i + 1 < flat->elements; i += 2)
        if (flat->element[i]->str && !strcmp(flat->element[i]->str, name)) return flat->element[i + 1];
    return NULL;
}

static const char *field_str(const redisReply *flat, const char *name)
{
    const redisReply *v = field(flat, name);
    return v && v->str ? v->str : NULL;
}

/* JSON text that may carry a secret, as a JSON value for people. */
static json_t *shown_json(const char *text, size_t len)
{
    char *s = redact_json_text(text, len, NULL);
    json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
    if (!j) j = json_string(s);
    free(s);
    return j ? j : json_string(REDACTED);
}

/* ---- figures ----------------------------------------------------------- */

static void add_consumers(rds *rc, const char *key, json_t *byname)
{
    redisReply *r = rds_command(rc, "XINFO CONSUMERS %s %s", key, GROUP);
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            const char *name = field_str(e, "name");
            const redisReply *pend = field(e, "pending"), *idle = field(e, "idle");
            if (!name) continue;
            json_t *o = json_object_get(byname, name);
            if (!o) {
                o = json_pack("{s:s,s:I,s:I}", "name", name, "pending", (json_int_t)0, "idle_ms",
                              (json_int_t)(idle ? idle->integer : 0));
                json_object_set_new(byname, name, o);
            }
            json_int_t p = json_integer_value(json_object_get(o, "pending"));
            json_object_set_new(o, "pending", json_integer(p + (pend ? pend->integer : 0)));
            json_int_t was = json_integer_value(json_object_get(o, "idle_ms"));
            if (idle && idle->integer < was) json_object_set_new(o, "idle_ms", json_integer(idle->integer));
        }
    }
    if (r) freeReplyObject(r);
}

static json_int_t throughput_1m(rds *rc, const char *k_events, int64_t now_ms)
{
    char start[40];
    snprintf(start, sizeof start, "%lld", (long long)(now_ms - 60000));
    json_int_t n = 0;
    int scanned = 0;
    while (scanned < THROUGHPUT_SCAN) {
        redisReply *r = rds_command(rc, "XRANGE %s %s + COUNT %d", k_events, start, EVENTS_PAGE);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            if (r) freeReplyObject(r);
            break;
        }
        for (size_t i = 0; i < r->elements; i++) {
            const char *st = field_str(r->element[i]->element[1], "status");
            if (st && (!strcmp(st, "succeeded") || !strcmp(st, "dead") || !strcmp(st, "cancelled"))) n++;
        }
        size_t got = r->elements;
        snprintf(start, sizeof start, "(%s", r->element[got - 1]->element[0]->str);
        scanned += (int)got;
        freeReplyObject(r);
        if (got < EVENTS_PAGE) break;
    }
    return n;
}

json_t *ops_queue_figures(rds *rc, const cfg *c, const char *queue, sw_err *err)
{
    char k[300];
    int64_t now = redis_now_ms(rc);
    long long depth = 0, pending = 0;
    int64_t oldest = 0;
    json_t *streams = json_object(), *byname = json_object();
    for (int i = 0; i < OPS_NSTREAMS; i++) {
        qkey(c, queue, ops_stream_suffix[i], k, sizeof k);
        redisReply *r = cmd(rc, err, "XLEN %s", k);
        if (!r) goto fail;
        long long len = int_reply(r);
        freeReplyObject(r);
        json_object_set_new(streams, ops_priority_name[i], json_integer(len));
        depth += len;
        if (len == 0) continue;
        r = rds_command(rc, "XPENDING %s %s", k, GROUP);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1) pending += int_reply(r->element[0]);
        if (r) freeReplyObject(r);
        r = rds_command(rc, "XRANGE %s - + COUNT 1", k);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
            int64_t ms = id_ms(r->element[0]->element[0]->str);
            if (ms > 0 && (oldest == 0 || ms < oldest)) oldest = ms;
        }
        if (r) freeReplyObject(r);
        add_consumers(rc, k, byname);
    }
    /* consumers of the default stream even when it is empty: they are the workers */
    qkey(c, queue, "stream", k, sizeof k);
    add_consumers(rc, k, byname);
    qkey(c, queue, "delayed", k, sizeof k);
    redisReply *r = cmd(rc, err, "ZCARD %s", k);
    if (!r) goto fail;
    long long delayed = int_reply(r);
    freeReplyObject(r);
    qkey(c, queue, "dead", k, sizeof k);
    r = cmd(rc, err, "XLEN %s", k);
    if (!r) goto fail;
    long long dead = int_reply(r);
    freeReplyObject(r);
    qkey(c, queue, "events", k, sizeof k);
    json_int_t tput = throughput_1m(rc, k, now);
    json_t *cons = json_array();
    int live = 0;
    const char *name;
    json_t *o;
    json_object_foreach(byname, name, o) {
        json_array_append(cons, o);
        if (json_integer_value(json_object_get(o, "idle_ms")) < (json_int_t)c->lease_s * 1000) live++;
    }
    json_decref(byname);
    return json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:o,s:o,s:i,s:I,s:I}", "name", queue, "depth",
                     (json_int_t)depth, "pending", (json_int_t)pending, "lag",
                     (json_int_t)(depth > pending ? depth - pending : 0), "delayed",
                     (json_int_t)delayed, "dead", (json_int_t)dead, "oldest_age_s",
                     oldest ? (double)(now - oldest) / 1000.0 : 0.0, "streams", streams,
                     "consumers", cons, "live_workers", live, "throughput_1m", tput, "at_ms",
                     (json_int_t)now);
fail:
    json_decref(streams);
    json_decref(byname);
    return NULL;
}

json_t *ops_queue_figures_shared(rds *rc, const cfg *c, const char *queue,
                                 int max_age_ms, sw_err *err)
{
    char k_cache[300], k_lock[300];
    qkey(c, queue, "stats", k_cache, sizeof k_cache);
    qkey(c, queue, "stats:lock", k_lock, sizeof k_lock);
    json_t *cached = NULL;
    for (int tries = 0; tries < 20; tries++) {
        redisReply *r = cmd(rc, err, "GET %s", k_cache);
        if (!r) return NULL;
        json_decref(cached);
        cached = r->type == REDIS_REPLY_STRING ? json_loads(r->str, 0, NULL) : NULL;
        freeReplyObject(r);
        int64_t now = redis_now_ms(rc);
        int64_t at = json_integer_value(json_object_get(cached, "at_ms"));
        if (cached && now - at < max_age_ms) {
            json_object_set_new(cached, "age_ms", json_integer(now - at));
            return cached;
        }
        r = cmd(rc, err, "SET %s 1 NX PX %d", k_lock, 5000);
        if (!r) {
            json_decref(cached);
            return NULL;
        }
        int mine = r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (mine) {
            json_t *f = ops_queue_figures(rc, c, queue, err);
            if (f) {
                char *s = json_dumps(f, JSON_COMPACT);
                /* kept for several intervals: a stale copy beats none while one is read */
                r = rds_command(rc, "SET %s %s PX %d", k_cache, s, max_age_ms * 10 + 5000);
                if (r) freeReplyObject(r);
                free(s);
                json_object_set_new(f, "age_ms", json_integer(0));
            }
            r = rds_command(rc, "DEL %s", k_lock);
            if (r) freeReplyObject(r);
            json_decref(cached);
            return f;
        }
        if (cached) { /* another replica is reading them: the previous copy will do */
            json_object_set_new(cached, "age_ms", json_integer(now - at));
            return cached;
        }
        struct timespec d = {0, 50 * 1000000L};
        nanosleep(&d, NULL);
    }
    json_decref(cached);
    return ops_queue_figures(rc, c, queue, err); /* the lock holder died: read them here */
}

/* ---- listings ------------------------------------------------------------ */

bool ops_state_valid(const char *s)
{
    static const char *const states[] = {"queued", "running", "delayed", "dead", "failed",
                                         "succeeded", "cancelled", NULL};
    for (const char *const *p = states; s && *p; p++)
        if (!strcmp(s, *p)) return true;
    return false;
}

/* Ids and type of a payload (never its arguments); NULL when it is not a job. */
static json_t *payload_brief(const redisReply *fields)
{
    const redisReply *j = field(fields, "job");
    if (!j || !j->str) {
        if (field(fields, "celery") || field(fields, "celery_oversize"))
            return json_pack("{s:s,s:s}", "id", "", "type", "celery");
        return NULL;
    }
    json_t *p = json_loadb(j->str, j->len, 0, NULL), *o = json_object();
    static const char *const keep[] = {"id", "type", "tenant_id", "sandbox_id", "session_id",
                                       "priority", NULL};
    for (const char *const *k = keep; *k; k++) {
        const char *v = json_string_value(json_object_get(p, *k));
        if (v && strlen(v) <= 128) json_object_set_new(o, *k, json_string(v));
    }
    json_decref(p);
    if (!json_object_get(o, "id")) json_object_set_new(o, "id", json_string(""));
    if (!json_object_get(o, "type")) json_object_set_new(o, "type", json_string("?"));
    return o;
}

static bool type_ok(const json_t *o, const char *type)
{
    const char *t = json_string_value(json_object_get(o, "type"));
    return !type || !*type || (t && !strcmp(t, type));
}

static json_t *events_page(rds *rc, const char *k_events, char *end, size_t n)
{
    redisReply *r = rds_command(rc, "XREVRANGE %s %s - COUNT %d", k_events, end, EVENTS_PAGE);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r) freeReplyObject(r);
        return NULL;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i], *f = e->element[1];
        json_t *o = json_object();
        json_object_set_new(o, "event_id", json_string(e->element[0]->str));
        for (size_t j = 0; j + 1 < f->elements; j += 2) {
            const char *k = f->element[j]->str, *v = f->element[j + 1]->str;
            if (!k || !v) continue;
            if (!strcmp(k, "data")) json_object_set_new(o, k, shown_json(v, f->element[j + 1]->len));
            else if (!strcmp(k, "attempt") || !strcmp(k, "ts"))
                json_object_set_new(o, k, json_integer(strtoll(v, NULL, 10)));
            else if (redact_name_is_secret(k)) json_object_set_new(o, k, json_string(REDACTED));
            else json_object_set_new(o, k, json_string(v));
        }
        json_array_append_new(out, o);
        if (i + 1 == r->elements) snprintf(end, n, "(%s", e->element[0]->str);
    }
    freeReplyObject(r);
    return out;
}

/* Call fn on the newest events, newest first, until it returns false or EVENTS_SCAN. */
static void scan_events(rds *rc, const cfg *c, const char *queue,
                        bool (*fn)(json_t *ev, void *arg), void *arg)
{
    char k[300], end[64] = "+";
    qkey(c, queue, "events", k, sizeof k);
    for (int seen = 0; seen < EVENTS_SCAN;) {
        json_t *page = events_page(rc, k, end, sizeof end);
        size_t n = json_array_size(page);
        bool go = true;
        for (size_t i = 0; i < n && go; i++) go = fn(json_array_get(page, i), arg);
        json_decref(page);
        seen += (int)n;
        if (!go || n < EVENTS_PAGE) break;
    }
}

typedef struct ended_arg {
    const char *state, *type;
    int limit;
    json_t *out, *seen;
} ended_arg;

static bool ended_cb(json_t *ev, void *arg)
{
    ended_arg *a = arg;
    const char *st = json_string_value(json_object_get(ev, "status"));
    const char *id = json_string_value(json_object_get(ev, "job_id"));
    if (!st || !id) return true;
    bool want = !strcmp(a->state, "failed") ? (!strcmp(st, "failed") || !strcmp(st, "dead"))
                                            : !strcmp(st, a->state);
    if (!want || !type_ok(ev, a->type)) return true;
    if (!strcmp(a->state, "failed")) {
        /* every failure is listed (a job may fail several times), newest first */
    } else if (json_object_get(a->seen, id)) {
        return true;
    }
    json_object_set_new(a->seen, id, json_true());
    json_t *o = json_pack("{s:s,s:s}", "id", id, "status", st);
    static const char *const copy[] = {"type", "attempt", "worker", "ts", NULL};
    for (const char *const *k = copy; *k; k++)
        if (json_object_get(ev, *k)) json_object_set(o, *k, json_object_get(ev, *k));
    json_t *data = json_object_get(ev, "data");
    if (strcmp(st, "succeeded") != 0 && json_is_object(data)) json_object_set(o, "error", data);
    json_array_append_new(a->out, o);
    return (int)json_array_size(a->out) < a->limit;
}

typedef struct progress_arg {
    json_t *want; /* job id -> list object to fill */
    int left;
} progress_arg;

static bool progress_cb(json_t *ev, void *arg)
{
    progress_arg *a = arg;
    const char *id = json_string_value(json_object_get(ev, "job_id"));
    const char *st = json_string_value(json_object_get(ev, "status"));
    json_t *o = id ? json_object_get(a->want, id) : NULL;
    if (!o || !st || strcmp(st, "progress") != 0 || json_object_get(o, "progress")) return a->left > 0;
    json_t *data = json_object_get(ev, "data");
    json_t *pr = json_is_object(data) ? json_deep_copy(data) : json_object();
    json_object_set(pr, "ts", json_object_get(ev, "ts"));
    json_object_set_new(o, "progress", pr);
    return --a->left > 0;
}

static json_t *list_running(rds *rc, const cfg *c, const char *queue, const char *type,
                            int limit, sw_err *err)
{
    json_t *out = json_array(), *byid = json_object();
    char k[300], jk[400];
    for (int s = 0; s < OPS_NSTREAMS && (int)json_array_size(out) < limit; s++) {
        qkey(c, queue, ops_stream_suffix[s], k, sizeof k);
        redisReply *p = rds_command(rc, "XPENDING %s %s - + %d", k, GROUP, PENDING_SCAN);
        if (!p || p->type != REDIS_REPLY_ARRAY) {
            if (p) freeReplyObject(p);
            if (!p) {
                sw_errf(err, SW_E_INTERNAL, true, "redis: %s", rc->errstr);
                json_decref(out);
                json_decref(byid);
                return NULL;
            }
            continue; /* NOGROUP: nobody read this stream yet */
        }
        for (size_t i = 0; i < p->elements && (int)json_array_size(out) < limit; i++) {
            const redisReply *e = p->element[i];
            const char *eid = e->element[0]->str;
            redisReply *x = rds_command(rc, "XRANGE %s %s %s", k, eid, eid);
            json_t *o = NULL;
            if (x && x->type == REDIS_REPLY_ARRAY && x->elements == 1)
                o = payload_brief(x->element[0]->element[1]);
            if (x) freeReplyObject(x);
            if (!o || !type_ok(o, type)) {
                json_decref(o);
                continue;
            }
            json_object_set_new(o, "status", json_string("running"));
            json_object_set_new(o, "entry", json_string(eid));
            json_object_set_new(o, "priority", json_string(ops_priority_name[s]));
            json_object_set_new(o, "worker", json_string(e->element[1]->str ? e->element[1]->str : ""));
            json_object_set_new(o, "idle_ms", json_integer(e->element[2]->integer));
            json_object_set_new(o, "deliveries", json_integer(e->element[3]->integer));
            json_object_set_new(o, "ts", json_integer(id_ms(eid)));
            const char *id = json_string_value(json_object_get(o, "id"));
            if (id && id_valid_job(id)) {
                qkey(c, queue, "job:", jk, sizeof jk);
                strncat(jk, id, sizeof jk - strlen(jk) - 1);
                redisReply *h = rds_command(rc, "HMGET %s status attempt started_ms", jk);
                if (h && h->type == REDIS_REPLY_ARRAY && h->elements == 3) {
                    if (h->element[0]->str) json_object_set_new(o, "status", json_string(h->element[0]->str));
                    if (h->element[1]->str)
                        json_object_set_new(o, "attempt", json_integer(strtoll(h->element[1]->str, NULL, 10)));
                }
                if (h) freeReplyObject(h);
                json_object_set(byid, id, o);
            }
            json_array_append_new(out, o);
        }
        freeReplyObject(p);
    }
    if (json_object_size(byid)) {
        progress_arg a = {byid, (int)json_object_size(byid)};
        scan_events(rc, c, queue, progress_cb, &a);
    }
    json_decref(byid);
    return out;
}

static json_t *list_queued(rds *rc, const cfg *c, const char *queue, const char *type,
                           int limit, sw_err *err)
{
    json_t *out = json_array();
    char k[300];
    for (int s = 0; s < OPS_NSTREAMS && (int)json_array_size(out) < limit; s++) {
        qkey(c, queue, ops_stream_suffix[s], k, sizeof k);
        json_t *pend = json_object();
        redisReply *p = rds_command(rc, "XPENDING %s %s - + %d", k, GROUP, PENDING_SCAN);
        if (p && p->type == REDIS_REPLY_ARRAY)
            for (size_t i = 0; i < p->elements; i++)
                json_object_set_new(pend, p->element[i]->element[0]->str, json_true());
        if (p) freeReplyObject(p);
        char start[64] = "-";
        for (int scanned = 0; scanned < EVENTS_SCAN && (int)json_array_size(out) < limit;) {
            redisReply *r = rds_command(rc, "XRANGE %s %s + COUNT 100", k, start);
            if (!r || r->type != REDIS_REPLY_ARRAY) {
                if (!r) sw_errf(err, SW_E_INTERNAL, true, "redis: %s", rc->errstr);
                if (r) freeReplyObject(r);
                json_decref(pend);
                if (!r) {
                    json_decref(out);
                    return NULL;
                }
                break;
            }
            for (size_t i = 0; i < r->elements && (int)json_array_size(out) < limit; i++) {
                const char *eid = r->element[i]->element[0]->str;
                snprintf(start, sizeof start, "(%s", eid);
                if (json_object_get(pend, eid)) continue;
                json_t *o = payload_brief(r->element[i]->element[1]);
                if (!o || !type_ok(o, type)) {
                    json_decref(o);
                    continue;
                }
                json_object_set_new(o, "status", json_string("queued"));
                json_object_set_new(o, "entry", json_string(eid));
                json_object_set_new(o, "priority", json_string(ops_priority_name[s]));
                json_object_set_new(o, "ts", json_integer(id_ms(eid)));
                json_array_append_new(out, o);
            }
            size_t got = r->elements;
            freeReplyObject(r);
            scanned += (int)got;
            if (got < 100) break;
        }
        json_decref(pend);
    }
    return out;
}

static json_t *list_delayed(rds *rc, const cfg *c, const char *queue, const char *type,
                            int limit, sw_err *err)
{
    char k[300];
    qkey(c, queue, "delayed", k, sizeof k);
    json_t *out = json_array();
    for (int off = 0; off < EVENTS_SCAN && (int)json_array_size(out) < limit; off += 100) {
        redisReply *r = cmd(rc, err, "ZRANGE %s %d %d WITHSCORES", k, off, off + 99);
        if (!r) {
            json_decref(out);
            return NULL;
        }
        size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        for (size_t i = 0; i + 1 < n && (int)json_array_size(out) < limit; i += 2) {
            redisReply fake = {.type = REDIS_REPLY_ARRAY, .elements = 2};
            redisReply name = {.type = REDIS_REPLY_STRING, .str = (char *)"job", .len = 3};
            redisReply *pair[2] = {&name, r->element[i]};
            fake.element = pair;
            json_t *o = payload_brief(&fake);
            if (!o || !type_ok(o, type)) {
                json_decref(o);
                continue;
            }
            json_object_set_new(o, "status", json_string("delayed"));
            json_object_set_new(o, "due_ms", json_integer(strtoll(r->element[i + 1]->str, NULL, 10)));
            json_array_append_new(out, o);
        }
        freeReplyObject(r);
        if (n < 200) break;
    }
    return out;
}

static json_t *list_dead(rds *rc, const cfg *c, const char *queue, const char *type,
                         int limit, sw_err *err)
{
    char k[300], end[64] = "+";
    qkey(c, queue, "dead", k, sizeof k);
    json_t *out = json_array();
    for (int scanned = 0; scanned < EVENTS_SCAN && (int)json_array_size(out) < limit;) {
        /* small pages: a dead entry may hold a payload of up to 1 MiB */
        redisReply *r = cmd(rc, err, "XREVRANGE %s %s - COUNT 10", k, end);
        if (!r) {
            json_decref(out);
            return NULL;
        }
        size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        for (size_t i = 0; i < n && (int)json_array_size(out) < limit; i++) {
            const redisReply *e = r->element[i], *f = e->element[1];
            snprintf(end, sizeof end, "(%s", e->element[0]->str);
            json_t *o = payload_brief(f);
            if (!o) o = json_pack("{s:s,s:s}", "id", "", "type", "?");
            const char *jid = field_str(f, "job_id");
            if (jid && *jid) json_object_set_new(o, "id", json_string(jid));
            if (!type_ok(o, type)) {
                json_decref(o);
                continue;
            }
            json_object_set_new(o, "status", json_string("dead"));
            json_object_set_new(o, "dead_id", json_string(e->element[0]->str));
            const redisReply *er = field(f, "error");
            if (er && er->str) json_object_set_new(o, "error", shown_json(er->str, er->len));
            const char *att = field_str(f, "attempts"), *wk = field_str(f, "worker"),
                       *ts = field_str(f, "ts");
            if (att) json_object_set_new(o, "attempt", json_integer(strtoll(att, NULL, 10)));
            if (wk) json_object_set_new(o, "worker", json_string(wk));
            json_object_set_new(o, "ts", json_integer(ts ? strtoll(ts, NULL, 10) : id_ms(e->element[0]->str)));
            json_array_append_new(out, o);
        }
        freeReplyObject(r);
        scanned += (int)n;
        if (n < 10) break;
    }
    return out;
}

json_t *ops_list(rds *rc, const cfg *c, const char *queue, const char *state,
                 const char *type, int limit, sw_err *err)
{
    if (limit <= 0) limit = 100;
    if (limit > 1000) limit = 1000;
    if (!ops_state_valid(state)) {
        sw_errf(err, SW_E_INVALID_PAYLOAD, false, "unknown state");
        return NULL;
    }
    if (!strcmp(state, "running")) return list_running(rc, c, queue, type, limit, err);
    if (!strcmp(state, "queued")) return list_queued(rc, c, queue, type, limit, err);
    if (!strcmp(state, "delayed")) return list_delayed(rc, c, queue, type, limit, err);
    if (!strcmp(state, "dead")) return list_dead(rc, c, queue, type, limit, err);
    ended_arg a = {state, type, limit, json_array(), json_object()};
    scan_events(rc, c, queue, ended_cb, &a);
    json_decref(a.seen);
    return a.out;
}

/* ---- one job ------------------------------------------------------------- */

static json_t *hash_shown(const redisReply *r)
{
    json_t *o = json_object();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!k || !v) continue;
        if (redact_name_is_secret(k)) json_object_set_new(o, k, json_string(REDACTED));
        else if (!strcmp(k, "result") || !strcmp(k, "error"))
            json_object_set_new(o, k, shown_json(v, r->element[i + 1]->len));
        else if (!strcmp(k, "attempt") || !strcmp(k, "deliveries") || !strcmp(k, "updated_ms") ||
                 !strcmp(k, "started_ms") || !strcmp(k, "lease_until"))
            json_object_set_new(o, k, json_integer(strtoll(v, NULL, 10)));
        else json_object_set_new(o, k, json_string(v));
    }
    return o;
}

typedef struct job_ev_arg {
    const char *id;
    json_t *out;
} job_ev_arg;

static bool job_ev_cb(json_t *ev, void *arg)
{
    job_ev_arg *a = arg;
    const char *id = json_string_value(json_object_get(ev, "job_id"));
    if (id && !strcmp(id, a->id)) json_array_insert(a->out, 0, ev); /* oldest first */
    return json_array_size(a->out) < 200;
}

json_t *ops_job(rds *rc, const cfg *c, const char *queue, const char *id, sw_err *err)
{
    if (!id || !id_valid_job(id)) {
        sw_errf(err, SW_E_INVALID_PAYLOAD, false, "not a valid job id");
        return NULL;
    }
    char k[400];
    qkey(c, queue, "job:", k, sizeof k);
    strncat(k, id, sizeof k - strlen(k) - 1);
    redisReply *r = cmd(rc, err, "HGETALL %s", k);
    if (!r) return NULL;
    json_t *job = r->type == REDIS_REPLY_ARRAY && r->elements ? hash_shown(r) : json_null();
    freeReplyObject(r);
    if (json_is_object(job)) json_object_set_new(job, "id", json_string(id));
    job_ev_arg a = {id, json_array()};
    scan_events(rc, c, queue, job_ev_cb, &a);
    return json_pack("{s:o,s:o}", "job", job, "events", a.out);
}

/* ---- dead-letter actions -------------------------------------------------- */

json_t *ops_dead_requeue(rds *rc, const cfg *c, const char *queue, const char *id,
                         sw_err *err)
{
    if (!ops_stream_id_valid(id)) {
        sw_errf(err, SW_E_INVALID_PAYLOAD, false, "not a dead entry id");
        return NULL;
    }
    char k_dead[300], k_hi[300], k_stream[300], k_lo[300], prefix[300];
    qkey(c, queue, "dead", k_dead, sizeof k_dead);
    qkey(c, queue, "stream:high", k_hi, sizeof k_hi);
    qkey(c, queue, "stream", k_stream, sizeof k_stream);
    qkey(c, queue, "stream:low", k_lo, sizeof k_lo);
    qkey(c, queue, "job:", prefix, sizeof prefix);
    /* the same call as `snapworker dead requeue` (worker/cli.c): back to its priority's stream */
    redisReply *r = cmd(rc, err, "EVAL %s 4 %s %s %s %s %s %s", scr_source(SCR_REQUEUE_DEAD),
                        k_dead, k_hi, k_stream, k_lo, id, prefix);
    if (!r) return NULL;
    json_t *out = NULL;
    if (r->type == REDIS_REPLY_STRING)
        out = json_pack("{s:s,s:s}", "requeued", id, "entry", r->str);
    else if (r->type == REDIS_REPLY_ERROR)
        sw_errf(err, SW_E_INTERNAL, true, "redis: %.200s", r->str);
    else
        sw_errf(err, SW_E_INVALID_PAYLOAD, false, "no such dead entry");
    freeReplyObject(r);
    return out;
}

json_t *ops_dead_purge(rds *rc, const cfg *c, const char *queue, const char *id,
                       sw_err *err)
{
    char k[300];
    qkey(c, queue, "dead", k, sizeof k);
    if (id && !ops_stream_id_valid(id)) {
        sw_errf(err, SW_E_INVALID_PAYLOAD, false, "not a dead entry id");
        return NULL;
    }
    redisReply *r = id ? cmd(rc, err, "XDEL %s %s", k, id) : cmd(rc, err, "XLEN %s", k);
    if (!r) return NULL;
    long long n = int_reply(r);
    freeReplyObject(r);
    if (!id) {
        r = cmd(rc, err, "DEL %s", k);
        if (!r) return NULL;
        freeReplyObject(r);
    }
    return json_pack("{s:I}", "purged", (json_int_t)n);
}
