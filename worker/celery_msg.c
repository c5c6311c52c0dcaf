/* worker/celery_msg.c — Celery 5.2 / kombu 5.2 wire formats on Redis (docs/celery.md).
 * Owns: decoding the kombu envelope into a canonical payload, the result-backend meta text,
 * reading pidbox control broadcasts (revoke), kombu's priority list names and C-escape
 * decoding of config values. It does no I/O: the
 * worker pops and XADDs the raw message, calls celery_parse() when it reads it, and writes
 * celery_meta_json() to the result backend. Why pure: every format decision here is
 * byte-compared with what the real Celery library produced (tests/unit/test_celery.c).
 *
 *   kombu list entry (LPUSHed by send_task through the _put of kombu's Redis channel):
 *   {"body": base64([args, kwargs, {callbacks, errbacks, chain, chord}]),
 *    "content-encoding": "utf-8", "content-type": "application/json",
 *    "headers": {"lang", "task", "id", "eta", "expires", "retries", "timelimit", ...},
 *    "properties": {"correlation_id", "reply_to", "delivery_info", "priority",
 *                   "body_encoding": "base64", "delivery_tag"}}
 */
#include "worker/celery_msg.h"

#include <ctype.h>
#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/ids.h"
#include "common/payload.h"
#include "common/redact.h"
#include "common/xmalloc.h"
#include "jobs/job.h"

#define TASK_PREFIX "snapworker."

/* ------------------------------------------------------------------------------------------
 * base64 (the standard alphabet with padding, as Python's base64.b64encode writes it)
 * ------------------------------------------------------------------------------------------ */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict decoding: length a multiple of 4, '=' only as the last one or two characters.
 * Returns an owned buffer (NUL-terminated for convenience) or NULL. */
static char *b64_decode(const char *s, size_t n, size_t *out_len)
{
    if (n % 4 != 0) return NULL;
    char *out = xmalloc(n / 4 * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64_value(c)) < 0) {
                free(out);
                return NULL;
            }
        }
        unsigned long w = (unsigned long)v[0] << 18 | (unsigned long)v[1] << 12 |
                          (unsigned long)v[2] << 6 | (unsigned long)v[3];
        out[o++] = (char)(w >> 16);
        if (pad < 2) out[o++] = (char)(w >> 8 & 0xff);
        if (pad < 1) out[o++] = (char)(w & 0xff);
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* ------------------------------------------------------------------------------------------
 * ISO-8601 timestamps as Celery writes them (datetime.isoformat(): "2030-01-02T03:04:05",
 * optional ".ffffff", optional "+HH:MM"/"Z"). Naive means UTC: Celery's maybe_make_aware()
 * calls to_utc() on a naive datetime.
 * ------------------------------------------------------------------------------------------ */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. Shifts the year to start
 * in March so the leap day is last, then counts 400-year eras of 146097 days. */
static int64_t days_from_civil(int64_t y, int mon, int d)
{
    y -= mon <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (mon > 2 ? mon - 3 : mon + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

static bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int num(const char **p, int digits, int *out)
{
    int v = 0;
    for (int i = 0; i < digits; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += digits;
    *out = v;
    return 0;
}

/* "YYYY-MM-DD[<sep>HH:MM[:SS[.frac]]][Z|±HH:MM|±HHMM]" -> epoch ms (floored). The fraction is
 * read as a decimal fraction of a second (Celery reads its digits as microseconds, which is
 * the same for the 6 digits isoformat() writes). Trailing text is refused. */
static int parse_iso8601_ms(const char *s, int64_t *ms)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h = 0, mi = 0, sec = 0;
    int64_t frac_ms = 0, off_min = 0;
    const char *p = s;
    if (num(&p, 4, &y) < 0 || *p++ != '-' || num(&p, 2, &mo) < 0 || *p++ != '-' ||
        num(&p, 2, &d) < 0)
        return -1;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap(y)))
        return -1;
    if (*p && *p != 'Z' && *p != '+' && *p != '-') {
        p++; /* any separator, as Celery's regex allows ('T' or ' ') */
        if (num(&p, 2, &h) < 0 || *p++ != ':' || num(&p, 2, &mi) < 0) return -1;
        if (*p == ':') {
            p++;
            if (num(&p, 2, &sec) < 0) return -1;
            if (*p == '.') {
                p++;
                if (!isdigit((unsigned char)*p)) return -1;
                int64_t scale = 100;
                for (; isdigit((unsigned char)*p); p++, scale /= 10) frac_ms += (*p - '0') * scale;
            }
        }
        if (h > 23 || mi > 59 || sec > 59) return -1;
    }
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (num(&p, 2, &oh) < 0) return -1;
        if (*p == ':') p++;
        if (num(&p, 2, &om) < 0 || oh > 23 || om > 59) return -1;
        off_min = sign * (oh * 60 + om);
    }
    if (*p) return -1;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off_min * 60;
    *ms = secs * 1000 + frac_ms;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Parsing the envelope
 * ------------------------------------------------------------------------------------------ */

static void copy_id(celery_msg *m, json_t *v)
{
    if (!m->task_id[0] && json_is_string(v) && id_valid_job(json_string_value(v)))
        snprintf(m->task_id, sizeof m->task_id, "%s", json_string_value(v));
}

/* The body as JSON (any type): base64-decoded unless properties.body_encoding is absent. */
static json_t *decode_body(json_t *env, sw_err *e)
{
    json_t *props = json_object_get(env, "properties");
    json_t *enc = json_is_object(props) ? json_object_get(props, "body_encoding") : NULL;
    json_t *body = json_object_get(env, "body");
    if (!json_is_string(body)) {
        sw_errc(e, SW_E_INVALID_PAYLOAD, "celery message: 'body' must be a string");
        return NULL;
    }
    const char *text = json_string_value(body);
    size_t n = json_string_length(body);
    char *owned = NULL;
    if (enc && !json_is_null(enc)) {
        if (!json_is_string(enc) || strcmp(json_string_value(enc), "base64") != 0) {
            sw_errc(e, SW_E_INVALID_PAYLOAD,
                    "celery message: unsupported properties.body_encoding %s (expected base64)",
                    json_is_string(enc) ? json_string_value(enc) : "(not a string)");
            return NULL;
        }
        if (!(owned = b64_decode(text, n, &n))) {
            sw_errc(e, SW_E_INVALID_PAYLOAD, "celery message: body is not valid base64");
            return NULL;
        }
        text = owned;
    }
    json_error_t je;
    json_t *v = json_loadb(text, n, JSON_DECODE_ANY, &je);
    free(owned);
    if (!v) {
        char why[JSON_ERROR_TEXT_LENGTH];
        redact_json_error(je.text, why, sizeof why); /* no quoted input: it may be a secret */
        sw_errc(e, SW_E_INVALID_PAYLOAD, "celery message: body is not JSON: %s", why);
    }
    return v;
}

static int check_content(json_t *env, sw_err *e)
{
    json_t *ct = json_object_get(env, "content-type");
    json_t *ce = json_object_get(env, "content-encoding");
    if (!json_is_string(ct) || strcmp(json_string_value(ct), "application/json") != 0)
        return sw_errc(e, SW_E_INVALID_PAYLOAD,
                       "celery message: content-type %.60s is not supported (use the json "
                       "serializer)",
                       json_is_string(ct) ? json_string_value(ct) : "(missing)");
    if (ce && !json_is_null(ce) &&
        !(json_is_string(ce) && strcasecmp(json_string_value(ce), "utf-8") == 0))
        return sw_errc(e, SW_E_INVALID_PAYLOAD,
                       "celery message: content-encoding %.60s is not supported (expected utf-8)",
                       json_is_string(ce) ? json_string_value(ce) : "(not a string)");
    return 0;
}

/* An ISO-8601 header ("" and null mean none). */
static int header_time(json_t *h, const char *name, int64_t *out, sw_err *e)
{
    json_t *v = json_object_get(h, name);
    *out = 0;
    if (!v || json_is_null(v) || (json_is_string(v) && !*json_string_value(v))) return 0;
    if (!json_is_string(v) || parse_iso8601_ms(json_string_value(v), out) < 0)
        return sw_errc(e, SW_E_INVALID_PAYLOAD,
                       "celery message: headers.%s must be an ISO-8601 timestamp", name);
    return 0;
}

/* headers.timelimit = [hard, soft] seconds (numbers or null) -> whole seconds, 0 = none. */
static int header_timelimit(json_t *h, int *timeout_s, sw_err *e)
{
    json_t *tl = json_object_get(h, "timelimit");
    *timeout_s = 0;
    if (!tl || json_is_null(tl)) return 0;
    if (!json_is_array(tl) || json_array_size(tl) > 2) goto bad;
    for (size_t i = 0; i < json_array_size(tl); i++) {
        json_t *x = json_array_get(tl, i);
        if (json_is_null(x)) continue;
        if (!json_is_number(x)) goto bad;
        double s = json_number_value(x);
        if (!(s > 0 && s <= 7 * 86400)) goto bad;
        if (!*timeout_s) *timeout_s = (int)ceil(s); /* the hard limit first, else the soft */
    }
    return 0;
bad:
    return sw_errc(e, SW_E_INVALID_PAYLOAD,
                   "celery message: headers.timelimit must be [hard, soft] seconds (up to 7 days)");
}

static bool known_kwarg(const char *k)
{
    static const char *const known[] = {"tenant_id", "sandbox_id", "session_id",
                                        "args",      "max_attempts", "timeout_s"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(k, known[i]) == 0) return true;
    return false;
}

/* [args, kwargs(, embed)] -> the kwargs object (borrowed from 'body'). */
static json_t *body_kwargs(json_t *body, sw_err *e)
{
    if (!json_is_array(body) || json_array_size(body) < 2 || json_array_size(body) > 3) {
        sw_errc(e, SW_E_INVALID_PAYLOAD,
                "celery message: body must be [args, kwargs, embed] (protocol v2)");
        return NULL;
    }
    json_t *args = json_array_get(body, 0), *kw = json_array_get(body, 1);
    if (!json_is_array(args) || !json_is_object(kw)) {
        sw_errc(e, SW_E_INVALID_PAYLOAD,
                "celery message: body must be [args (a list), kwargs (an object), embed]");
        return NULL;
    }
    size_t nargs = json_array_size(args);
    if (nargs == 0) return kw;
    if (nargs == 1 && json_is_object(json_array_get(args, 0))) {
        if (json_object_size(kw) == 0) return json_array_get(args, 0);
        sw_errc(e, SW_E_INVALID_PAYLOAD,
                "celery message: give the job either as one object argument or as kwargs, "
                "not both");
        return NULL;
    }
    sw_errc(e, SW_E_INVALID_PAYLOAD,
            "celery message: %zu positional argument(s) given; snapworker tasks take keyword "
            "arguments (or a single object argument)",
            nargs);
    return NULL;
}

/* The canonical payload object from the kwargs (docs/contract.md §2 field names). Unknown kwargs are
 * merged into args: a Celery task is called with its parameters as kwargs
 * (restore(sandbox_id=..., nextjs_port=...)), so that is what a Celery user writes. */
static json_t *map_kwargs(const celery_msg *m, const char *type, json_t *kw, int timelimit_s,
                          sw_err *e)
{
    json_t *args = json_object_get(kw, "args");
    if (args && !json_is_null(args) && !json_is_object(args)) {
        sw_errc(e, SW_E_INVALID_PAYLOAD, "celery message: kwarg 'args' must be an object");
        return NULL;
    }
    json_t *p = json_pack("{s:i,s:s,s:s}", "v", 1, "id", m->task_id, "type", type);
    json_t *tenant = json_object_get(kw, "tenant_id");
    json_object_set_new(p, "tenant_id",
                        tenant && !json_is_null(tenant) ? json_incref(tenant) : json_string("public"));
    json_t *v;
    if ((v = json_object_get(kw, "sandbox_id"))) json_object_set(p, "sandbox_id", v);
    if ((v = json_object_get(kw, "session_id"))) json_object_set(p, "session_id", v);
    json_t *margs = json_is_object(args) ? json_deep_copy(args) : json_object();
    const char *k;
    json_object_foreach(kw, k, v) {
        if (known_kwarg(k)) continue;
        json_t *had = json_object_get(margs, k);
        if (had && !json_equal(had, v)) {
            json_decref(margs);
            json_decref(p);
            sw_errc(e, SW_E_INVALID_PAYLOAD,
                    "celery message: kwarg '%.64s' is given both directly and in 'args' with "
                    "different values",
                    k);
            return NULL;
        }
        json_object_set(margs, k, v);
    }
    json_object_set_new(p, "args", margs);
    if ((v = json_object_get(kw, "max_attempts")) && !json_is_null(v))
        json_object_set(p, "max_attempts", v);
    if ((v = json_object_get(kw, "timeout_s")) && !json_is_null(v))
        json_object_set(p, "timeout_s", v);
    else if (timelimit_s > 0)
        json_object_set_new(p, "timeout_s", json_integer(timelimit_s));
    json_object_set_new(p, "origin", json_string("celery"));
    json_object_set_new(p, "retries", json_integer(m->retries));
    if (m->expires_ms) json_object_set_new(p, "expires_ms", json_integer(m->expires_ms));
    if (m->ignore_result) json_object_set_new(p, "ignore_result", json_true());
    return p;
}

/* Protocol v1 keeps everything in the body ({"task", "id", "args", "kwargs", ...}) and has no
 * headers.task; read what names the task so a FAILURE result can be written, then refuse. */
static int refuse_v1(json_t *env, celery_msg *m, sw_err *e)
{
    sw_err ignored;
    json_t *body = decode_body(env, &ignored);
    if (json_is_object(body)) {
        copy_id(m, json_object_get(body, "id"));
        json_t *t = json_object_get(body, "task");
        if (json_is_string(t) && strlen(json_string_value(t)) < sizeof m->task)
            snprintf(m->task, sizeof m->task, "%s", json_string_value(t));
    }
    json_decref(body);
    json_t *props = json_object_get(env, "properties");
    if (json_is_object(props)) copy_id(m, json_object_get(props, "correlation_id"));
    return sw_errc(e, SW_E_INVALID_PAYLOAD,
                   "celery message: not Celery protocol v2 (no headers.task); protocol v1 is "
                   "not supported (set task_protocol = 2)");
}

static int parse_headers(json_t *h, celery_msg *m, int *timelimit_s, sw_err *e)
{
    if (header_time(h, "eta", &m->eta_ms, e) < 0) return -1;
    if (header_time(h, "expires", &m->expires_ms, e) < 0) return -1;
    json_t *r = json_object_get(h, "retries");
    if (r && !json_is_null(r)) {
        if (!json_is_integer(r) || json_integer_value(r) < 0 || json_integer_value(r) > 1000000)
            return sw_errc(e, SW_E_INVALID_PAYLOAD,
                           "celery message: headers.retries must be an integer >= 0");
        m->retries = (int)json_integer_value(r);
    }
    m->ignore_result = json_is_true(json_object_get(h, "ignore_result"));
    return header_timelimit(h, timelimit_s, e);
}

/* The order of the checks follows Celery's worker: the task name is looked up before the body
 * is decoded (the consumer's on_task_received), so an unknown name is
 * NotRegistered even when the body is unreadable. */
/* The job type a task name maps to, into out (size n): "snapworker.<type>", else the entry
 * "name=type" of 'map' (SNAPWORKER_CELERY_TASK_MAP, may be NULL). false when neither. */
static bool task_type(const char *name, const char *map, char *out, size_t n)
{
    if (strncmp(name, TASK_PREFIX, strlen(TASK_PREFIX)) == 0) {
        snprintf(out, n, "%s", name + strlen(TASK_PREFIX));
        return strlen(name + strlen(TASK_PREFIX)) < n;
    }
    size_t len = strlen(name);
    for (const char *p = map; p && *p;) {
        const char *end = strchr(p, ',');
        size_t item = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', item);
        if (eq && (size_t)(eq - p) == len && memcmp(p, name, len) == 0) {
            size_t tl = item - len - 1;
            if (tl >= n) return false;
            memcpy(out, eq + 1, tl);
            out[tl] = '\0';
            return true;
        }
        p = end ? end + 1 : p + item;
    }
    return false;
}

static int parse_envelope(json_t *env, const char *task_map, celery_msg *m, char **payload,
                          sw_err *e)
{
    json_t *h = json_object_get(env, "headers");
    json_t *props = json_object_get(env, "properties");
    if (!json_is_object(h) || !json_object_get(h, "task")) return refuse_v1(env, m, e);
    json_t *id = json_object_get(h, "id");
    copy_id(m, id);
    bool id_ok = m->task_id[0] != '\0';
    /* Celery sets correlation_id = task id: without headers.id it still names the task for
     * its FAILURE result, but it is not accepted as the job id. */
    if (!id_ok && json_is_object(props) && (!id || json_is_null(id)))
        copy_id(m, json_object_get(props, "correlation_id"));
    json_t *task = json_object_get(h, "task");
    if (!json_is_string(task))
        return sw_errc(e, SW_E_INVALID_PAYLOAD, "celery message: headers.task must be a string");
    const char *name = json_string_value(task);
    if (strlen(name) < sizeof m->task) snprintf(m->task, sizeof m->task, "%s", name);
    if (!id_ok)
        return sw_errc(e, SW_E_INVALID_PAYLOAD,
                       "celery message: headers.id must match [A-Za-z0-9_.:-]{1,128}");
    char type[sizeof ((job_req *)0)->type];
    if (!m->task[0] || !task_type(name, task_map, type, sizeof type) || !job_lookup(type))
        return sw_errc(e, SW_E_UNKNOWN_JOB_TYPE, "celery task '%.150s' is not registered", name);
    if (check_content(env, e) < 0) return -1;
    int timelimit_s = 0;
    if (parse_headers(h, m, &timelimit_s, e) < 0) return -1;

    int rc = -1;
    json_t *p = NULL, *body = decode_body(env, e);
    json_t *kw = body ? body_kwargs(body, e) : NULL;
    if (!kw || !(p = map_kwargs(m, type, kw, timelimit_s, e))) goto out;
    char *text = json_dumps(p, JSON_COMPACT);
    if (!text) abort();
    if (payload_parse(text, strlen(text), &m->req, e) < 0) {
        free(text);
        payload_free(&m->req);
        goto out;
    }
    *payload = text;
    rc = 0;
out:
    json_decref(p);
    json_decref(body);
    return rc;
}

int celery_parse(const char *raw, size_t len, celery_msg *m, sw_err *err)
{
    return celery_parse_map(raw, len, NULL, m, err);
}

int celery_parse_map(const char *raw, size_t len, const char *task_map, celery_msg *m,
                     sw_err *err)
{
    memset(m, 0, sizeof *m);
    sw_err e;
    sw_err_clear(&e);
    int rc = -1;
    json_t *env = NULL;
    if (len > CELERY_MAX_RAW_BYTES) {
        sw_errc(&e, SW_E_INVALID_PAYLOAD, "celery message is %zu bytes, over the %d MiB limit",
                len, CELERY_MAX_RAW_BYTES >> 20);
        goto out;
    }
    json_error_t je;
    if (!(env = json_loadb(raw, len, 0, &je))) {
        char why[JSON_ERROR_TEXT_LENGTH];
        redact_json_error(je.text, why, sizeof why);
        sw_errc(&e, SW_E_INVALID_PAYLOAD, "celery message is not JSON: %s", why);
        goto out;
    }
    if (!json_is_object(env)) {
        sw_errc(&e, SW_E_INVALID_PAYLOAD, "celery message is not a JSON object");
        goto out;
    }
    rc = parse_envelope(env, task_map, m, &m->payload, &e);
out:
    json_decref(env);
    if (rc < 0) {
        bool unknown = e.code == SW_E_UNKNOWN_JOB_TYPE;
        snprintf(m->exc_type, sizeof m->exc_type, "%s",
                 unknown ? "NotRegistered" : sw_code_exc_type(e.code));
        snprintf(m->exc_module, sizeof m->exc_module, "%s",
                 unknown ? "celery.exceptions" : "snapworker");
        snprintf(m->exc_message, sizeof m->exc_message, "%s", unknown ? m->task : e.msg);
        if (unknown && !m->task[0]) snprintf(m->exc_message, sizeof m->exc_message, "%s", e.msg);
    }
    if (err) *err = e;
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Control broadcasts (pidbox). kombu's Mailbox._publish builds the body, its
 * Node.handle_message selects the workers, and Celery's revoke control command reads the
 * arguments.
 * ------------------------------------------------------------------------------------------ */

/* kombu's matchers (kombu.matcher.match): "glob" is fnmatch (Python's has no escape character),
 * "pcre" is re.match (anchored at the start only); -1 for another name. */
static int pidbox_match(const char *node, const char *pattern, const char *matcher)
{
    if (strcmp(matcher, "glob") == 0) return fnmatch(pattern, node, FNM_NOESCAPE) == 0;
    if (strcmp(matcher, "pcre") != 0) return -1;
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED) != 0) return 0; /* matches nothing, as re.error
                                                                selects no worker */
    regmatch_t m;
    int hit = regexec(&re, node, 1, &m, 0) == 0 && m.rm_so == 0;
    regfree(&re);
    return hit;
}

/* Whether 'body' selects 'node' (Node.handle_message); -1 with 'e' when malformed. */
static int pidbox_for_us(json_t *body, const char *node, sw_err *e)
{
    json_t *dest = json_object_get(body, "destination");
    if (dest && !json_is_null(dest) && !json_is_array(dest))
        return sw_errc(e, SW_E_INVALID_PAYLOAD, "pidbox message: destination must be a list");
    if (json_array_size(dest) > 0) {
        size_t i;
        json_t *d;
        int hit = 0;
        json_array_foreach(dest, i, d) {
            if (!json_is_string(d))
                return sw_errc(e, SW_E_INVALID_PAYLOAD, "pidbox message: destination must "
                                                        "hold worker names");
            if (strcmp(json_string_value(d), node) == 0) hit = 1;
        }
        return hit;
    }
    json_t *pat = json_object_get(body, "pattern"), *mat = json_object_get(body, "matcher");
    if ((pat && !json_is_null(pat) && !json_is_string(pat)) ||
        (mat && !json_is_null(mat) && !json_is_string(mat)))
        return sw_errc(e, SW_E_INVALID_PAYLOAD, "pidbox message: pattern and matcher must "
                                                "be strings");
    const char *ps = json_string_value(pat), *ms = json_string_value(mat);
    if (!ps || !*ps || !ms || !*ms) return 1; /* "if pattern and matcher", else everyone */
    int hit = pidbox_match(node, ps, ms);
    if (hit < 0)
        return sw_errc(e, SW_E_INVALID_PAYLOAD, "pidbox message: no matcher named %.40s", ms);
    return hit;
}

/* arguments.task_id of a revoke: one id or a list (celery's maybe_list); ids that are not
 * valid job ids are counted in p->invalid and left out. */
static int pidbox_revoke_ids(json_t *body, celery_pidbox *p, sw_err *e)
{
    json_t *args = json_object_get(body, "arguments");
    json_t *tid = json_is_object(args) ? json_object_get(args, "task_id") : NULL;
    if (!json_is_string(tid) && !json_is_array(tid))
        return sw_errc(e, SW_E_INVALID_PAYLOAD, "pidbox revoke: arguments.task_id must be "
                                                "an id or a list of ids");
    p->terminate = json_is_true(json_object_get(args, "terminate"));
    size_t n = json_is_array(tid) ? json_array_size(tid) : 1;
    p->ids = xcalloc(n + 1, sizeof *p->ids);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_is_array(tid) ? json_array_get(tid, i) : tid;
        if (json_is_string(v) && id_valid_job(json_string_value(v)))
            p->ids[p->nids++] = xstrdup(json_string_value(v));
        else
            p->invalid++;
    }
    return 0;
}

int celery_pidbox_parse(const char *raw, size_t len, const char *node, celery_pidbox *p,
                        sw_err *err)
{
    memset(p, 0, sizeof *p);
    sw_err e;
    sw_err_clear(&e);
    int rc = -1;
    json_t *env = NULL, *body = NULL;
    json_error_t je;
    if (len > CELERY_PIDBOX_MAX_BYTES) {
        sw_errc(&e, SW_E_INVALID_PAYLOAD, "pidbox message is %zu bytes, over the %d MiB limit",
                len, CELERY_PIDBOX_MAX_BYTES >> 20);
        goto out;
    }
    if (!(env = json_loadb(raw, len, 0, &je)) || !json_is_object(env)) {
        sw_errc(&e, SW_E_INVALID_PAYLOAD, "pidbox message is not a JSON object");
        goto out;
    }
    if (check_content(env, &e) < 0 || !(body = decode_body(env, &e))) goto out;
    if (!json_is_object(body)) {
        sw_errc(&e, SW_E_INVALID_PAYLOAD, "pidbox message: the body is not a JSON object");
        goto out;
    }
    json_t *method = json_object_get(body, "method");
    if (json_is_string(method)) snprintf(p->method, sizeof p->method, "%s", json_string_value(method));
    int sel = pidbox_for_us(body, node, &e);
    if (sel < 0) goto out;
    p->for_us = sel;
    rc = p->for_us && strcmp(p->method, "revoke") == 0 ? pidbox_revoke_ids(body, p, &e) : 0;
out:
    json_decref(body);
    json_decref(env);
    if (err) *err = e;
    return rc;
}

void celery_pidbox_free(celery_pidbox *p)
{
    if (!p) return;
    for (int i = 0; p->ids && i < p->nids; i++) free(p->ids[i]);
    free(p->ids);
    p->ids = NULL;
    p->nids = 0;
}

/* ------------------------------------------------------------------------------------------
 * Oversize messages and display copies
 * ------------------------------------------------------------------------------------------ */

/* The string value of the first `"name"<spaces>:<spaces>"VALUE"` at or after 'from'. */
static bool scan_member(const char *raw, size_t len, const char *from, const char *name,
                        char *out, size_t n)
{
    size_t nl = strlen(name);
    const char *end = raw + len;
    for (const char *p = from; p && p < end;) {
        p = memmem(p, (size_t)(end - p), name, nl);
        if (!p) return false;
        const char *q = p + nl;
        p++;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
        if (q >= end || *q != ':') continue;
        q++;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
        if (q >= end || *q != '"') continue;
        const char *v = ++q;
        while (q < end && *q != '"' && *q != '\\' && (size_t)(q - v) < n) q++;
        if (q >= end || *q != '"' || (size_t)(q - v) >= n) continue;
        memcpy(out, v, (size_t)(q - v));
        out[q - v] = '\0';
        if (id_valid_job(out)) return true;
    }
    return false;
}

bool celery_scan_task_id(const char *raw, size_t len, char *out, size_t n)
{
    if (n == 0) return false;
    out[0] = '\0';
    const char *h = memmem(raw, len, "\"headers\"", 9);
    if (h && scan_member(raw, len, h, "\"id\"", out, n)) return true;
    if (scan_member(raw, len, raw, "\"correlation_id\"", out, n)) return true;
    out[0] = '\0';
    return false;
}

char *celery_redact_raw(const char *raw, size_t len)
{
    static const char *const also_body[] = {"body", NULL};
    json_t *env = json_loadb(raw, len, 0, NULL);
    json_t *body = json_object_get(env, "body");
    if (!json_is_object(env) || !json_is_string(body)) {
        /* kombu writes "body" first: a cut envelope may show nothing else */
        bool envelope = memmem(raw, len, "\"body\"", 6) != NULL;
        json_decref(env);
        return redact_json_text(raw, len, envelope ? also_body : NULL);
    }
    const char *text = json_string_value(body);
    size_t tn = json_string_length(body);
    char *owned = NULL;
    json_t *props = json_object_get(env, "properties");
    json_t *enc = json_is_object(props) ? json_object_get(props, "body_encoding") : NULL;
    if (json_is_string(enc) && strcmp(json_string_value(enc), "base64") == 0) {
        owned = b64_decode(text, tn, &tn);
        text = owned;
    }
    json_t *shown = redact_json(env);
    char *b = text ? redact_json_text(text, tn, NULL) : NULL;
    /* shown decoded: a person reads it, nothing parses it back */
    json_t *bs = b ? json_string(b) : NULL; /* NULL too when the body is not UTF-8 */
    json_object_set_new(shown, "body", bs ? bs : json_string(REDACTED));
    free(b);
    free(owned);
    char *s = json_dumps(shown, JSON_COMPACT);
    json_decref(shown);
    json_decref(env);
    return s ? s : xstrdup(REDACTED);
}

void celery_msg_free(celery_msg *m)
{
    if (!m) return;
    free(m->payload);
    m->payload = NULL;
    payload_free(&m->req);
}

/* ------------------------------------------------------------------------------------------
 * Python's json.dumps, as kombu's json serializer calls it (kombu's dumps hands the value to
 * stdlib json: default separators ", " and ": ", ensure_ascii=True, float repr), over a
 * jansson value.
 * ------------------------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u16(sbuf *b, unsigned v)
{
    char t[8];
    snprintf(t, sizeof t, "\\u%04x", v & 0xffff);
    sb_put(b, t, 6);
}

/* One UTF-8 sequence at s (valid: jansson checks every string) -> code point, advances *i. */
static unsigned utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    unsigned c = s[*i];
    int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    if (more) c &= 0x3fu >> more;
    (*i)++;
    for (; more > 0 && *i < n; more--, (*i)++) c = c << 6 | (s[*i] & 0x3fu);
    return c;
}

/* ensure_ascii: '"' '\\' and \b \f \n \r \t by name; anything else outside ' '..'~' as
 * lowercase \uXXXX, astral code points as a surrogate pair (CPython's json encoder with
 * ensure_ascii). */
static void py_str(sbuf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        const char *named = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b"
                          : c == '\f' ? "\\f" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                          : c == '\t' ? "\\t" : NULL;
        if (named) {
            sb_put(b, named, 2);
            i++;
        } else if (c >= 0x20 && c < 0x7f) {
            size_t j = i;
            while (j < n && s[j] >= 0x20 && s[j] < 0x7f && s[j] != '"' && s[j] != '\\') j++;
            sb_put(b, str + i, j - i);
            i = j;
        } else {
            c = utf8_next(s, n, &i);
            if (c >= 0x10000) {
                c -= 0x10000;
                sb_u16(b, 0xd800 | (c >> 10));
                sb_u16(b, 0xdc00 | (c & 0x3ff));
            } else {
                sb_u16(b, c);
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* float.__repr__: the shortest digits that read back as the same double, in fixed notation
 * when the decimal exponent is in [-4, 16), else d.ddde±XX (CPython's repr rules, the 'r'
 * mode of PyOS_double_to_string). */
static void py_real(sbuf *b, double x)
{
    char t[40], digits[24];
    if (x == 0) {
        sb_puts(b, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    if (x < 0) sb_put(b, "-", 1);
    x = fabs(x);
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(t, sizeof t, "%.*e", prec - 1, x);
        if (strtod(t, NULL) == x) break;
    }
    snprintf(t, sizeof t, "%.*e", prec - 1, x);
    /* t = "d[.ddd]e±XX" */
    size_t nd = 0;
    char *p = t;
    for (; *p != 'e'; p++)
        if (isdigit((unsigned char)*p)) digits[nd++] = *p;
    digits[nd] = '\0';
    int decpt = atoi(p + 1) + 1; /* digits before the decimal point */
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            sb_put(b, "0.", 2);
            for (int i = decpt; i < 0; i++) sb_put(b, "0", 1);
            sb_put(b, digits, nd);
        } else if ((size_t)decpt < nd) {
            sb_put(b, digits, (size_t)decpt);
            sb_put(b, ".", 1);
            sb_put(b, digits + decpt, nd - (size_t)decpt);
        } else {
            sb_put(b, digits, nd);
            for (size_t i = nd; i < (size_t)decpt; i++) sb_put(b, "0", 1);
            sb_put(b, ".0", 2);
        }
    } else {
        sb_put(b, digits, 1);
        if (nd > 1) {
            sb_put(b, ".", 1);
            sb_put(b, digits + 1, nd - 1);
        }
        snprintf(t, sizeof t, "e%+03d", decpt - 1);
        sb_puts(b, t);
    }
}

static void py_dump(sbuf *b, const json_t *v)
{
    char t[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        bool first = true;
        sb_put(b, "{", 1);
        json_object_foreach((json_t *)v, k, x) {
            if (!first) sb_put(b, ", ", 2);
            first = false;
            py_str(b, k, strlen(k));
            sb_put(b, ": ", 2);
            py_dump(b, x);
        }
        sb_put(b, "}", 1);
        break;
    }
    case JSON_ARRAY:
        sb_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) sb_put(b, ", ", 2);
            py_dump(b, json_array_get(v, i));
        }
        sb_put(b, "]", 1);
        break;
    case JSON_STRING:
        py_str(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        snprintf(t, sizeof t, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_puts(b, t);
        break;
    case JSON_REAL:
        py_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        sb_puts(b, "true");
        break;
    case JSON_FALSE:
        sb_puts(b, "false");
        break;
    case JSON_NULL:
        sb_puts(b, "null");
        break;
    }
}

/* ------------------------------------------------------------------------------------------
 * Result metas (Celery's Backend._get_result_meta and prepare_exception; RedisBackend._set)
 * ------------------------------------------------------------------------------------------ */

/* A JSON string of 'msg'; bytes that are not UTF-8 (a file name in an error message, say)
 * become '?', as a message must never stop a result from being written. */
static json_t *text_value(const char *msg)
{
    json_t *v = json_string(msg);
    if (v) return v;
    char *copy = xstrdup(msg);
    for (char *q = copy; *q; q++)
        if ((unsigned char)*q >= 0x80) *q = '?';
    v = json_string(copy);
    free(copy);
    return v;
}

bool celery_state_ready(const char *status)
{
    return status && (strcmp(status, "SUCCESS") == 0 || strcmp(status, "FAILURE") == 0 ||
                      strcmp(status, "REVOKED") == 0);
}

/* datetime.utcnow().isoformat(): microseconds, and no fraction at all when they are 0. */
static void utc_isoformat(char out[40])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    long us = ts.tv_nsec / 1000;
    if (us) snprintf(out + n, 40 - n, ".%06ld", us);
}

char *celery_meta_json(const char *task_id, const char *status, const char *result_json,
                       sw_code code, const char *message, const char *exc_type_override,
                       const char *exc_module_override)
{
    static const char *const states[] = {"SUCCESS", "STARTED", "RETRY", "FAILURE", "REVOKED"};
    bool known = false;
    for (size_t i = 0; status && i < sizeof states / sizeof states[0]; i++)
        known = known || strcmp(status, states[i]) == 0;
    if (!known || !id_valid_job(task_id)) return NULL;

    json_t *result;
    bool exc = strcmp(status, "SUCCESS") != 0 && strcmp(status, "STARTED") != 0;
    if (exc) {
        bool revoked = strcmp(status, "REVOKED") == 0;
        const char *type = exc_type_override ? exc_type_override
                           : revoked         ? "TaskRevokedError"
                                             : sw_code_exc_type(code);
        const char *module = exc_module_override ? exc_module_override
                             : revoked           ? "celery.exceptions"
                                                 : "snapworker";
        /* key order of prepare_exception(): exc_type, exc_message, exc_module */
        result = json_pack("{s:s,s:[],s:s}", "exc_type", type, "exc_message", "exc_module",
                           module);
        if (message) json_array_append_new(json_object_get(result, "exc_message"),
                                           text_value(message));
    } else if (result_json) {
        json_error_t je;
        if (!(result = json_loads(result_json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je)))
            return NULL;
    } else {
        result = strcmp(status, "STARTED") == 0 ? json_object() : json_null();
    }
    if (!result) return NULL; /* a message that is not UTF-8 */

    sbuf b = {0};
    sb_puts(&b, "{\"status\": ");
    py_str(&b, status, strlen(status));
    sb_puts(&b, ", \"result\": ");
    py_dump(&b, result);
    sb_puts(&b, ", \"traceback\": null, \"children\": [], \"date_done\": ");
    if (celery_state_ready(status)) {
        char date[40];
        utc_isoformat(date);
        py_str(&b, date, strlen(date));
    } else {
        sb_puts(&b, "null");
    }
    sb_puts(&b, ", \"task_id\": ");
    py_str(&b, task_id, strlen(task_id));
    sb_puts(&b, "}");
    json_decref(result);
    return b.p;
}

/* ------------------------------------------------------------------------------------------
 * Priority lists and config escapes
 * ------------------------------------------------------------------------------------------ */

/* kombu's Redis channel: _q_for_pri(queue, pri) is f"{queue}{sep}{pri}" when the step is
 * non-zero and the bare queue for step 0; _brpop_start/_get walk priority_steps in order. */
char **celery_priority_lists(const char *queue, const char *sep, const char *steps_csv)
{
    if (!queue || !sep || !steps_csv || !*steps_csv) return NULL;
    size_t cap = 2;
    for (const char *p = steps_csv; *p; p++) cap += *p == ',';
    char **v = xcalloc(cap, sizeof *v);
    size_t n = 0;
    const char *p = steps_csv;
    long prev = -1;
    while (*p) {
        char *end;
        if (!isdigit((unsigned char)*p)) goto bad;
        long step = strtol(p, &end, 10);
        if (step > 255 || step <= prev || (*end && *end != ',') || (*end == ',' && !end[1]))
            goto bad;
        prev = step;
        v[n++] = step ? xasprintf("%s%s%ld", queue, sep, step) : xstrdup(queue);
        p = *end ? end + 1 : end;
    }
    return v;
bad:
    celery_strv_free(v);
    return NULL;
}

void celery_strv_free(char **v)
{
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

char *celery_unescape(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s);
    char *out = xmalloc(n + 1), *o = out;
    for (const char *p = s; *p;) {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        p++;
        unsigned v;
        const char *simple = strchr("ntrabfv\\'\"?", *p);
        if (*p && simple) {
            static const char map[] = "\n\t\r\a\b\f\v\\'\"?";
            v = (unsigned char)map[simple - "ntrabfv\\'\"?"];
            p++;
        } else if (*p == 'x' && hexval((unsigned char)p[1]) >= 0) {
            v = (unsigned)hexval((unsigned char)p[1]);
            p += 2;
            if (hexval((unsigned char)*p) >= 0) v = v * 16 + (unsigned)hexval((unsigned char)*p++);
        } else if (*p >= '0' && *p <= '7') {
            v = 0;
            for (int k = 0; k < 3 && *p >= '0' && *p <= '7'; k++) v = v * 8 + (unsigned)(*p++ - '0');
            if (v > 255) goto bad;
        } else {
            goto bad;
        }
        if (v == 0) goto bad;
        *o++ = (char)v;
    }
    *o = '\0';
    return out;
bad:
    free(out);
    return NULL;
}
