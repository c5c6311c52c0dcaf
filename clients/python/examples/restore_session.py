"""What Onyx's ``restore_session`` endpoint does, through snapworker.

    restore_session(client, tenant_id, sandbox_id, session_id, llm_config=..., timeout=...)
        -> (http_status, body dict)

1. 409 when a restore of this session is already queued or running. Two checks:
   - the session lock (``{ns}:{Q}:lock:session:<session_id>``) is held by a job whose
     hash says it is a ``restore`` and ``running`` (one enqueued by any producer; another
     job type holding it only makes ours wait);
   - the handler's own claim ``{ns}:{Q}:claim:restore:<session_id>`` names a restore
     that has not ended. Taking the claim is atomic (WATCH/MULTI on the claim and the job
     hash it names), so of two requests racing for one session exactly one enqueues; the
     other answers 409. The worker never reads the claim: it is this handler's key, under
     the queue's hash tag so it shares a slot with the job hashes (Redis Cluster).
2. Otherwise enqueue a ``restore`` under the claimed id (priority high: a user is
   waiting) and wait for it.
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
import time
import uuid
from typing import Any, Dict, Optional, Tuple

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from snapworker import Client, JobCancelled, JobFailed, JobTimeout  # noqa: E402
from snapworker._common import TERMINAL  # noqa: E402

# A claim whose job hash does not exist yet is an enqueue in flight for this long; after
# that it is the trace of a handler that died between claiming and enqueueing.
CLAIM_IN_FLIGHT_MS = 10_000

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


def claim_key(client: Client, session_id: str) -> str:
    return client.keys.k("claim:restore:" + session_id.lower())


def claim_restore(client: Client, session_id: str, job_id: str,
                  ttl_ms: int) -> Optional[str]:
    """Claim the session for restore ``job_id``; None on success, else the id of the
    restore that holds it (queued, delayed or running; or just being enqueued)."""
    key = claim_key(client, session_id)
    now_ms = int(time.time() * 1000)
    with client.r.pipeline() as p:
        while True:
            try:
                p.watch(key)
                cur = p.get(key)
                if cur is not None:
                    held_id, _, since = cur.decode().partition("|")
                    p.watch(client.keys.job(held_id))
                    status = p.hget(client.keys.job(held_id), "status")
                    if status is not None and status.decode() not in TERMINAL:
                        return held_id
                    if status is None and now_ms - int(since or 0) < CLAIM_IN_FLIGHT_MS:
                        return held_id
                p.multi()
                p.set(key, f"{job_id}|{now_ms}", px=ttl_ms)
                p.execute()
                return None
            except redis.WatchError:
                continue  # another request changed the claim or its job: look again


def release_claim(client: Client, session_id: str, job_id: str) -> None:
    """Drop the claim if it is still ``job_id``'s (compare-and-delete)."""
    key = claim_key(client, session_id)
    with client.r.pipeline() as p:
        try:
            p.watch(key)
            cur = p.get(key)
            if cur is not None and cur.decode().partition("|")[0] == job_id:
                p.multi()
                p.delete(key)
                p.execute()
        except redis.WatchError:
            pass  # someone else's claim now: not ours to drop


def restore_session(client: Client, tenant_id: str, sandbox_id: str, session_id: str,
                    llm_config: Optional[Dict[str, Any]] = None, nextjs_port: Optional[int] = None,
                    timeout: float = 600.0) -> Tuple[int, Dict[str, Any]]:
    running = restore_running(client, session_id)
    if running:
        return 409, {"detail": "a restore of this session is already running", "job_id": running}
    job_id = "restore-" + uuid.uuid4().hex
    # the claim outlives the wait by a day at most: it only matters while its job lives
    held = claim_restore(client, session_id, job_id, ttl_ms=int(timeout * 1000) + 86_400_000)
    if held:
        return 409, {"detail": "a restore of this session is already queued or running",
                     "job_id": held}
    args: Dict[str, Any] = {"start_webapp": True}
    if llm_config is not None:
        args["llm_config"] = llm_config
    if nextjs_port is not None:
        args["nextjs_port"] = nextjs_port
    try:
        try:
            client.enqueue("restore", tenant_id, sandbox_id, session_id, args, id=job_id,
                           priority="high")
        except (redis.ResponseError, ValueError) as e:  # refused before it was queued
            release_claim(client, session_id, job_id)
            return 400, {"detail": str(e), "code": "invalid_payload", "job_id": job_id}
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
