/* worker/celery_msg.h — the pure half of the Celery ingress (docs/celery.md): parse one kombu
 * Redis-transport message into a canonical job payload, build result-backend metas the way
 * Celery 5.2 writes them, read a control broadcast (revoke), name kombu's priority lists,
 * decode C escapes in config values.
 * Owns: the Celery wire formats. Does not own Redis I/O, the Lua move, delays or the
 * decision to write a result (worker/worker.c does). Nothing here blocks or logs.
 * The formats, with references into the installed celery/kombu, are in docs/celery.md. */
#ifndef SW_WORKER_CELERY_MSG_H
#define SW_WORKER_CELERY_MSG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/payload.h"

/* Messages larger than this are refused unread (a 1 MiB payload is ~1.4 MiB as base64, so
 * nothing larger could hold a valid payload). Kept small because a parse costs several times
 * the text in jansson nodes; the task id of a larger one is found by celery_scan_task_id. */
#define CELERY_MAX_RAW_BYTES (4 * 1024 * 1024)

typedef struct celery_msg {
    char task_id[129];     /* headers.id (else properties.correlation_id; protocol v1: body.id),
                              valid as a job id; "" when unknown or invalid */
    char task[160];        /* headers.task as given ("" when unknown or longer than 159) */
    char *payload;         /* owned canonical payload JSON (docs/contract.md §2) when parse succeeded:
                              {"v":1,"id","type","tenant_id","sandbox_id","session_id","args",
                              ["max_attempts"],["timeout_s"],"origin":"celery","retries",
                              ["expires_ms"],["ignore_result":true]}; NULL on failure */
    job_req req;           /* that payload parsed (owned; freed by celery_msg_free), so the
                              worker need not parse it again */
    int64_t eta_ms;        /* epoch ms from headers.eta (naive = UTC), 0 = none */
    int64_t expires_ms;    /* epoch ms from headers.expires, 0 = none */
    int retries;           /* headers.retries (>= 0): the job starts at attempt retries+1 */
    bool ignore_result;    /* headers.ignore_result: Celery writes no result for such a task */
    char exc_type[64], exc_module[64]; /* on failure: "NotRegistered"/"celery.exceptions" for an
                                          unknown task name, else e.g. "InvalidPayload"/"snapworker" */
    char exc_message[256]; /* on failure: the exc_message Celery would write: the task name for
                              NotRegistered (as Celery's consumer does), else err->msg */
} celery_msg;

/* Parse one kombu Redis-transport message (the JSON envelope send_task LPUSHes: body,
 * content-encoding, content-type, headers, properties{body_encoding base64, ...}). Protocol v2
 * only; body = [args, kwargs, embed] (base64 unless properties.body_encoding is absent); a body
 * of [[obj], {}] uses obj as the kwargs; other positional args -> invalid. JSON content only.
 * Kwargs outside {tenant_id, sandbox_id, session_id, args, max_attempts, timeout_s} are merged
 * into args (a clash with a different value in the "args" kwarg is invalid). headers.timelimit
 * gives timeout_s when the kwargs give none. Task names are "snapworker.<type>" for a type
 * registered in jobs/ (job_lookup). 'm' is zeroed first. Returns 0, or -1 with 'err' (may be
 * NULL) set to SW_E_INVALID_PAYLOAD or SW_E_UNKNOWN_JOB_TYPE and m->exc_* filled; m->task_id is
 * filled whenever it could be read. The payload passed payload_parse(). Free with
 * celery_msg_free() in both cases. */
int celery_parse(const char *raw, size_t len, celery_msg *m, sw_err *err);
/* celery_parse with extra task names: 'task_map' is SNAPWORKER_CELERY_TASK_MAP,
 * "name=type,name=type" (NULL or "" = none), e.g. Onyx's cleanup_idle_sandboxes=sweep;
 * "snapworker.<type>" is always recognized. */
int celery_parse_map(const char *raw, size_t len, const char *task_map, celery_msg *m,
                     sw_err *err);
void celery_msg_free(celery_msg *m);   /* NULL-safe; frees payload */

/* ---- Control broadcasts (Celery's pidbox; docs/celery.md "Revoke") -----------------------
 * app.control.revoke(...) and every other control command reach the workers as one kombu
 * envelope PUBLISHed on channel "/<db>.celery.pidbox" (kombu's keyprefix_fanout + the
 * exchange), its body {"method", "arguments", "destination", "pattern", "matcher"[, "ticket",
 * "reply_to"]}. */

#define CELERY_PIDBOX_MAX_BYTES (1024 * 1024) /* ~25,000 task ids; larger is refused unread */

typedef struct celery_pidbox {
    char method[32];  /* "revoke", "ping", ... as sent ("" when not a string; cut to 31) */
    bool for_us;      /* destination / pattern select 'node', by kombu's Node.handle_message */
    bool terminate;   /* revoke: arguments.terminate */
    char **ids;       /* revoke for us: the task ids valid as job ids, NULL-terminated (owned);
                         NULL otherwise */
    int nids;
    int invalid;      /* revoke for us: task ids ignored (not strings, not valid job ids) */
} celery_pidbox;

/* Parse one pidbox message as PUBLISHed, for the worker named 'node' ("snapworker@host").
 * Selection follows kombu's Node.handle_message: a non-empty destination list selects the
 * names it holds; else a pattern with a matcher selects by "glob" (fnmatch) or "pcre" (read
 * as a POSIX extended regex anchored at the start, as Python's re.match is); else every
 * worker. arguments are read only for a revoke for us: task_id a string or a list of them.
 * 'p' is zeroed first. Returns 0, or -1 with 'err' (SW_E_INVALID_PAYLOAD, may be NULL) for a
 * message that is not a JSON kombu envelope of a JSON object body, has a destination that is
 * neither null nor a list of strings, an unknown matcher, or a revoke without task_id. Free
 * with celery_pidbox_free() in both cases. Never logs, never crashes on input. */
int celery_pidbox_parse(const char *raw, size_t len, const char *node, celery_pidbox *p,
                        sw_err *err);
void celery_pidbox_free(celery_pidbox *p); /* NULL-safe */

/* The Celery meta JSON for 'status' (SUCCESS, STARTED, RETRY, FAILURE or REVOKED), byte for byte
 * as Celery 5.2's Redis backend writes it from a worker (Python json.dumps, ", "/": "
 * separators, ASCII-only with \uXXXX escapes, float repr):
 *   {"status": S, "result": R, "traceback": null, "children": [], "date_done": D, "task_id": ID}
 * R: SUCCESS/STARTED: 'result_json' reformatted (NULL -> null for SUCCESS, {} for STARTED);
 * RETRY/FAILURE: {"exc_type": sw_code_exc_type(code), "exc_message": [message],
 * "exc_module": "snapworker"}; REVOKED: the same with TaskRevokedError/celery.exceptions (pass
 * message "expired" as Celery does for an expired task); the overrides replace exc_type /
 * exc_module when non-NULL; message NULL -> []. D: datetime.utcnow().isoformat() for the ready
 * states (SUCCESS, FAILURE, REVOKED), null for STARTED and RETRY.
 * Returns an owned string (caller frees), or NULL for an unknown status, an invalid task id,
 * or a result_json that is not JSON. */
char *celery_meta_json(const char *task_id, const char *status, const char *result_json,
                       sw_code code, const char *message, const char *exc_type_override,
                       const char *exc_module_override);
/* true for the states Celery treats as final (READY_STATES: SUCCESS, FAILURE, REVOKED). */
bool celery_state_ready(const char *status);

/* The list names kombu uses for one queue, in pop order: for each step of 'steps_csv'
 * (ascending integers 0-255, "0,3,6,9"), the queue itself for step 0 and queue+sep+step
 * otherwise (kombu _q_for_pri). With the step lists starting at 0, as kombu's default and
 * Onyx's do, that is "the queue first, then queue+sep+step for each step but the first".
 * Returns a NULL-terminated owned array (free with celery_strv_free), or NULL when an argument
 * is NULL or the steps are malformed. 'sep' may hold any bytes but NUL. */
char **celery_priority_lists(const char *queue, const char *sep, const char *steps_csv);
void celery_strv_free(char **v);       /* NULL-safe */

/* A copy of a stream or dead-entry text fit to show a person (docs/operations.md "Secrets in payloads"): a kombu
 * envelope gets its body decoded (base64) and redacted, anything else goes through
 * redact_json_text(); a cut or broken envelope has its "body" hidden whole. Caller frees. */
char *celery_redact_raw(const char *raw, size_t len);

/* The task id of a message too large to parse (over CELERY_MAX_RAW_BYTES), found without
 * parsing or copying it: the first "id" string member after the first "headers" key
 * (kombu writes "headers": {"lang", "task", "id", ...}; the base64 body before it holds no
 * quote), else the first "correlation_id" string member (Celery sets it to the task id).
 * The Lua ingress applies the same rule (worker/lua/celery_ingress.lua). Writes the id into out (size n)
 * and returns true when one is found and valid as a job id (common/ids.h). */
bool celery_scan_task_id(const char *raw, size_t len, char *out, size_t n);

/* Decode C escapes (\xHH, \ooo, \n \t \r \a \b \f \v \\ \' \" \?) in a config value such as
 * SNAPWORKER_CELERY_PRIORITY_SEP ("\x06\x16") into raw bytes. Returns an owned string, or NULL
 * when an escape is malformed or would produce a NUL byte. */
char *celery_unescape(const char *s);

#endif
