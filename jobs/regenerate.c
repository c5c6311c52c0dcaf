/* jobs/regenerate.c — the regenerate job (docs/jobs.md "regenerate"): rewrite a session's derived config.
 * Owns: the job's flow: find the session, parse the args, have the backend write the `files`
 * link, AGENTS.md and opencode.json (each atomically), report what was written.
 * Does not own: the bytes of the files (jobs/onyx.h), where and how they are written
 * (the backend's write_config), or any database row (this job reads none).
 * All or nothing: the three are rendered before any is written, and the old ones are kept
 * aside and put back when a write fails.
 * Secrets: llm_config.api_key reaches opencode.json only; errors name fields, never values. */
#include "common/log.h"
#include "jobs/jobs.h"
#include "jobs/sandbox.h"

int job_regenerate_run(job_ctx *ctx, json_t **result, sw_err *err)
{
    const job_req *r = ctx->req;
    sb_session s;
    sb_config c = {0};
    sb_state st;
    json_t *written = NULL;
    sb_cfgkeep *keep = NULL;
    int rc = -1;
    if (sb_session_init(&s, ctx->cfg, ctx, r->id, r->sandbox_id, r->session_id, err) != 0 ||
        sb_config_parse(r->args, ctx->cfg, &c, err) != 0 || s.ops->state(&s, &st, err) != 0)
        goto out;
    if (st == SB_NO_SESSION) {
        sw_errc(err, SW_E_WORKSPACE_MISSING, "no session directory %s", s.dir);
        goto out;
    }
    if (job_cancelled(ctx)) {
        sw_errc(err, SW_E_TIMEOUT, "regenerate cancelled");
        goto out;
    }
    written = json_array();
    if (s.ops->config_keep && !(keep = s.ops->config_keep(&s, err))) goto out;
    if (s.ops->write_config(&s, &c, written, err) != 0) {
        sw_err e2;
        if (keep && s.ops->config_restore(keep, &e2) != 0)
            log_msg(SW_LOG_ERROR, "regenerate_undo_failed", "job", r->id, "error", e2.msg, NULL);
        goto out;
    }
    *result = json_pack("{s:O}", "written", written);
    rc = 0;
out:
    json_decref(written);
    if (keep) s.ops->config_drop(keep);
    sb_config_free(&c);
    sb_session_close(&s);
    return rc;
}
