"""What Onyx's ``restore_session`` endpoint does, through snapworker.

    restore_session(client, tenant_id, sandbox_id, session_id, llm_config=..., timeout=...)
        -> (http_status, body dict)

1. 409 when a restore of this session is already running: the session lock
   (``{ns}:{Q}:lock:session:<session_id>``) is held by a job whose hash says it is a
   ``restore`` and ``running`` (another job type holding it only makes ours wait).
2. Otherwise enqueue a ``restore`` (priority high: a user is waiting) and wait for it.
3. Map the outcome to HTTP (docs/producers.md "HTTP statuses"):

   | outcome                                   | HTTP |
   |-------------------------------------------|------|
   | succeeded                                 | 200 (body = the job result) |
   | invalid_payload, unknown_job_type         | 400  |
   | workspace_missing, snapshot_not_found     | 404  |
   | restore already running                   | 409  |
   | cancelled                                 | 409  |
   | archive_too_large                         | 413  |
   | unsafe_archive                            | 422  |
   | port_exhausted                            | 503  |
   | storage_error, database_error, backend_error | 502 |
   | timeout (job) or no outcome in time       | 504  |
   | internal, anything else                   | 500  |

Run it as a demo: ``python3 restore_session.py REDIS_URL QUEUE SANDBOX SESSION``.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from snapworker import Client, JobCancelled, JobFailed, JobTimeout  # noqa: E402

HTTP_FOR_CODE = {
    "invalid_payload": 400, "unknown_job_type": 400,
    "workspace_missing": 404, "snapshot_not_found": 404,
    "archive_too_large": 413, "unsafe_archive": 422,
    "port_exhausted": 503,
    "storage_error": 502, "database_error": 502, "backend_error": 502,
    "timeout": 504, "internal": 500,
}


def restore_running(client: Client, session_id: str) -> Optional[str]:
    """The id of a restore of this session that runs now, else None."""
    holder = client.session_lock_holder(session_id)
    if not holder:
        return None
    h = client.status(holder)
    if h and h.get("type") == "restore" and h.get("status") == "running":
        return holder
    return None


def restore_session(client: Client, tenant_id: str, sandbox_id: str, session_id: str,
                    llm_config: Optional[Dict[str, Any]] = None, nextjs_port: Optional[int] = None,
                    timeout: float = 600.0) -> Tuple[int, Dict[str, Any]]:
    running = restore_running(client, session_id)
    if running:
        return 409, {"detail": "a restore of this session is already running", "job_id": running}
    args: Dict[str, Any] = {"start_webapp": True}
    if llm_config is not None:
        args["llm_config"] = llm_config
    if nextjs_port is not None:
        args["nextjs_port"] = nextjs_port
    try:
        job_id = client.enqueue("restore", tenant_id, sandbox_id, session_id, args,
                                priority="high")
        result = client.wait(job_id, timeout)
        return 200, {"job_id": job_id, **result}
    except JobFailed as e:
        return HTTP_FOR_CODE.get(e.code, 500), {"detail": e.message, "code": e.code,
                                                "retryable": e.retryable, "job_id": e.job_id}
    except JobCancelled as e:
        return 409, {"detail": "the restore was cancelled", "job_id": e.job_id}
    except JobTimeout as e:
        return 504, {"detail": f"no outcome within {e.timeout:g} s", "job_id": e.job_id}


if __name__ == "__main__":
    url, queue, sandbox, session = sys.argv[1:5]
    status, body = restore_session(Client(url, queue=queue), "public", sandbox, session)
    print(status, json.dumps(body))
