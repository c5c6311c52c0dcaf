/* common/payload.c — payload v1 parsing and validation (docs/contract.md §2).
 * Every id is checked against its grammar here, before anything builds a path or
 * a key from it. Unknown fields are ignored, as the contract says. */
#include "common/payload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/redact.h"
#include "common/xmalloc.h"

static int get_str(json_t *o, const char *name, bool required, const char **out, sw_err *err)
{
    json_t *v = json_object_get(o, name);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) return sw_errc(err, SW_E_INVALID_PAYLOAD, "missing field '%s'", name);
        return 0;
    }
    if (!json_is_string(v))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "field '%s' must be a string", name);
    *out = json_string_value(v);
    return 0;
}

static int get_int(json_t *o, const char *name, long long min, long long max, int *out,
                   sw_err *err)
{
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v))
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "field '%s' must be an integer", name);
    long long x = json_integer_value(v);
    if (x < min || x > max)
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "field '%s' must be from %lld to %lld", name,
                       min, max);
    *out = (int)x;
    return 0;
}

/* Which ids a type may leave out (docs/lifecycle.md): `sleep` acts on a whole sandbox, `sweep` and
 * `prune` on a tenant. Every other type, known or not, needs both (the payload grammar does
 * not depend on the jobs/ table, only on these three names). An id that is given must still
 * be a UUID. */
enum { OPT_SANDBOX = 1, OPT_SESSION = 2 };

static unsigned ids_optional(const char *type)
{
    if (strcmp(type, "sleep") == 0) return OPT_SESSION;
    if (strcmp(type, "sweep") == 0 || strcmp(type, "prune") == 0) return OPT_SANDBOX | OPT_SESSION;
    return 0;
}

/* A time in ms: an integer from 0 to 2^53 (exact in a Lua number, JavaScript, JSON). */
static int get_ms(json_t *o, const char *name, int64_t *out, sw_err *err)
{
    json_t *v = json_object_get(o, name);
    *out = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > (json_int_t)1 << 53)
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "field '%s' must be an integer of ms >= 0", name);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

const char *payload_prio_name(int prio)
{
    static const char *const names[PRIO_COUNT] = {"high", "default", "low"};
    return prio >= 0 && prio < PRIO_COUNT ? names[prio] : "default";
}

int payload_parse(const char *json, size_t len, job_req *r, sw_err *err)
{
    memset(r, 0, sizeof *r);
    int rc = -1;
    json_t *root = NULL;
    const char *s;
    /* Up to 16 MiB is still parsed, so an oversized job can be named in the dead
     * stream; beyond that it is refused unread. */
    if (len > 16 * PAYLOAD_MAX_BYTES)
        return sw_errc(err, SW_E_INVALID_PAYLOAD, "payload is %zu bytes, over the 1 MiB limit",
                       len);
    json_error_t je;
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root && len > PAYLOAD_MAX_BYTES) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "payload is %zu bytes, over the 1 MiB limit", len);
        goto out;
    }
    if (!root) {
        /* jansson quotes the input near the error, which may be a secret (docs/operations.md "Secrets in payloads") */
        char why[JSON_ERROR_TEXT_LENGTH];
        redact_json_error(je.text, why, sizeof why);
        sw_errc(err, SW_E_INVALID_PAYLOAD, "payload is not JSON: %s (line %d, column %d)", why,
                je.line, je.column);
        goto out;
    }
    if (!json_is_object(root)) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "payload is not a JSON object");
        goto out;
    }
    /* the id first, so that later errors can still name the job */
    if (get_str(root, "id", true, &s, err) < 0) goto out;
    if (!id_valid_job(s)) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "field 'id' must match [A-Za-z0-9_.:-]{1,128}");
        goto out;
    }
    snprintf(r->id, sizeof r->id, "%s", s);
    if (len > PAYLOAD_MAX_BYTES) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "payload is %zu bytes, over the 1 MiB limit", len);
        goto out;
    }

    json_t *v = json_object_get(root, "v");
    if (v && !(json_is_integer(v) && json_integer_value(v) == 1)) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "unsupported payload version (field 'v' must be 1)");
        goto out;
    }
    if (get_str(root, "type", true, &s, err) < 0) goto out;
    if (!id_valid_job(s) || strlen(s) >= sizeof r->type) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "field 'type' must match [A-Za-z0-9_.:-]{1,32}");
        goto out;
    }
    snprintf(r->type, sizeof r->type, "%s", s);

    if (get_str(root, "tenant_id", true, &s, err) < 0) goto out;
    if (!id_valid_tenant(s)) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "field 'tenant_id' must match [A-Za-z0-9_-]{1,63}");
        goto out;
    }
    snprintf(r->tenant_id, sizeof r->tenant_id, "%s", s);

    unsigned opt = ids_optional(r->type);
    if (get_str(root, "sandbox_id", !(opt & OPT_SANDBOX), &s, err) < 0) goto out;
    if (s && !id_uuid_lower(s, r->sandbox_id)) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "field 'sandbox_id' must be a UUID");
        goto out;
    }
    if (get_str(root, "session_id", !(opt & OPT_SESSION), &s, err) < 0) goto out;
    if (s && !id_uuid_lower(s, r->session_id)) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "field 'session_id' must be a UUID");
        goto out;
    }
    json_t *args = json_object_get(root, "args");
    if (args && !json_is_null(args) && !json_is_object(args)) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "field 'args' must be an object");
        goto out;
    }
    r->args = (args && json_is_object(args)) ? json_incref(args) : json_object();
    if (get_int(root, "max_attempts", 1, 1000, &r->max_attempts, err) < 0) goto out;
    if (get_int(root, "timeout_s", 1, 7 * 86400, &r->timeout_s, err) < 0) goto out;
    /* job control (docs/producers.md) */
    if (get_str(root, "priority", false, &s, err) < 0) goto out;
    r->prio = PRIO_DEFAULT;
    if (s && strcmp(s, "high") == 0) r->prio = PRIO_HIGH;
    else if (s && strcmp(s, "low") == 0) r->prio = PRIO_LOW;
    else if (s && strcmp(s, "default") != 0) {
        sw_errc(err, SW_E_INVALID_PAYLOAD, "field 'priority' must be high, default or low");
        goto out;
    }
    if (get_ms(root, "run_at_ms", &r->run_at_ms, err) < 0) goto out;
    if (get_ms(root, "delay_ms", &r->delay_ms, err) < 0) goto out;
    r->celery = json_is_string(json_object_get(root, "origin")) &&
                strcmp(json_string_value(json_object_get(root, "origin")), "celery") == 0;
    if (r->celery) {
        json_t *x = json_object_get(root, "retries");
        r->celery_retries = json_is_integer(x) && json_integer_value(x) >= 0 &&
                                    json_integer_value(x) < 1000
                                ? (int)json_integer_value(x)
                                : 0;
        x = json_object_get(root, "expires_ms");
        r->celery_expires_ms = json_is_integer(x) ? (int64_t)json_integer_value(x) : 0;
        r->celery_ignore_result = json_is_true(json_object_get(root, "ignore_result"));
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void payload_free(job_req *r)
{
    if (!r) return;
    json_decref(r->args);
    r->args = NULL;
}

char *payload_dump(const job_req *r)
{
    json_t *o = json_pack("{s:i,s:s,s:s,s:s}", "v", 1, "id", r->id, "type", r->type,
                          "tenant_id", r->tenant_id);
    if (r->sandbox_id[0]) json_object_set_new(o, "sandbox_id", json_string(r->sandbox_id));
    if (r->session_id[0]) json_object_set_new(o, "session_id", json_string(r->session_id));
    json_object_set_new(o, "args", r->args ? json_incref(r->args) : json_object());
    if (r->max_attempts) json_object_set_new(o, "max_attempts", json_integer(r->max_attempts));
    if (r->timeout_s) json_object_set_new(o, "timeout_s", json_integer(r->timeout_s));
    if (r->celery) json_object_set_new(o, "origin", json_string("celery"));
    if (r->prio != PRIO_DEFAULT) json_object_set_new(o, "priority", json_string(payload_prio_name(r->prio)));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) abort();
    return s;
}
