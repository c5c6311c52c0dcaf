"""What the sync and async clients share: keys, payloads, replies, exceptions.

Keys follow docs/contract.md §1: ``{namespace}:{{{queue}}}:<suffix>``; every key of a queue
carries the hash tag ``{queue}`` so each script touches one slot."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional, Tuple

ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
PRIORITIES = ("high", "default", "low")
TERMINAL = ("succeeded", "dead", "cancelled")


def lua_source(name: str) -> str:
    """The text of clients/python/snapworker/lua/<name>.lua (byte-identical to worker/lua/)."""
    return resources.files("snapworker").joinpath("lua", name + ".lua").read_text("utf-8")


class SnapworkerError(Exception):
    """Base class of the client's errors."""


class JobFailed(SnapworkerError):
    """The job ended ``dead``: ``code`` is one of the error codes of docs/contract.md §4."""

    def __init__(self, job_id: str, code: str, message: str, retryable: bool,
                 attempt: int = 0) -> None:
        super().__init__(f"job {job_id} failed: {code}: {message}")
        self.job_id, self.code, self.message = job_id, code, message
        self.retryable, self.attempt = retryable, attempt


class JobCancelled(SnapworkerError):
    """The job ended ``cancelled`` (``snapworker cancel``, Client.cancel, Celery revoke)."""

    def __init__(self, job_id: str, message: str = "cancelled") -> None:
        super().__init__(f"job {job_id} cancelled: {message}")
        self.job_id, self.message = job_id, message


class JobTimeout(SnapworkerError):
    """No outcome within the wait: the job may still run (cancel it if you gave up)."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id}: no outcome within {timeout:g} s")
        self.job_id, self.timeout = job_id, timeout


@dataclass
class Event:
    """One entry of the events stream (docs/contract.md §1); ``id`` resumes iteration."""
    id: str
    job_id: str
    type: str
    status: str   # started | progress | succeeded | failed | dead | cancelled
    attempt: int
    data: Any
    worker: str
    ts: int       # ms, Redis clock


@dataclass
class Keys:
    namespace: str
    queue: str
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        self.prefix = f"{self.namespace}:{{{self.queue}}}:"

    def k(self, suffix: str) -> str:
        return self.prefix + suffix

    def job(self, job_id: str) -> str:
        return self.prefix + "job:" + job_id

    def enqueue_keys(self, job_id: str) -> List[str]:
        return [self.job(job_id), self.k("stream:high"), self.k("stream"), self.k("stream:low"),
                self.k("delayed")]

    def cancel_keys(self, job_id: str) -> List[str]:
        return [self.job(job_id), self.k("delayed"), self.k("events"), self.k("stream:high"),
                self.k("stream"), self.k("stream:low")]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def build_payload(type: str, tenant_id: str, sandbox_id: str, session_id: str,
                  args: Optional[Mapping[str, Any]], id: Optional[str], priority: str,
                  delay: Optional[float], run_at: Optional[float], max_attempts: Optional[int],
                  timeout_s: Optional[int]) -> Tuple[str, str]:
    """(job id, payload JSON) per docs/contract.md §2 and docs/producers.md. delay in seconds; run_at in epoch
    seconds (float) on Redis's clock."""
    job_id = id or str(uuid.uuid4())
    if not ID_RE.match(job_id):
        raise ValueError("id must match [A-Za-z0-9_.:-]{1,128}")
    if priority not in PRIORITIES:
        raise ValueError("priority must be high, default or low")
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    p: Dict[str, Any] = {"v": 1, "id": job_id, "type": type, "tenant_id": tenant_id,
                         "sandbox_id": sandbox_id, "session_id": session_id,
                         "args": dict(args or {})}
    if max_attempts is not None:
        p["max_attempts"] = int(max_attempts)
    if timeout_s is not None:
        p["timeout_s"] = int(timeout_s)
    if priority != "default":
        p["priority"] = priority
    if delay is not None and delay > 0:
        p["delay_ms"] = int(round(delay * 1000))
    if run_at is not None:
        p["run_at_ms"] = int(round(run_at * 1000))
    return job_id, json.dumps(p, separators=(",", ":"))


def decode_hash(h: Mapping[Any, Any]) -> Optional[Dict[str, Any]]:
    """A job hash as a dict (result/error parsed, counters as ints), None when absent."""
    if not h:
        return None
    out: Dict[str, Any] = {}
    for k, v in h.items():
        k, v = _s(k), _s(v)
        if k in ("result", "error"):
            try:
                out[k] = json.loads(v)
            except ValueError:
                out[k] = v
        elif k in ("attempt", "deliveries", "updated_ms", "lease_until", "due_ms", "enqueued_ms"):
            out[k] = int(v) if v.lstrip("-").isdigit() else v
        elif not k.startswith("m:"):  # job memo: the worker's business
            out[k] = v
    return out


def decode_event(eid: Any, f: Mapping[Any, Any]) -> Event:
    d = {_s(k): _s(v) for k, v in f.items()}
    try:
        data = json.loads(d.get("data", "{}"))
    except ValueError:
        data = d.get("data")
    return Event(id=_s(eid), job_id=d.get("job_id", ""), type=d.get("type", ""),
                 status=d.get("status", ""), attempt=int(d.get("attempt") or 0), data=data,
                 worker=d.get("worker", ""), ts=int(d.get("ts") or 0))


def outcome(job_id: str, status: str, data: Any, attempt: int = 0) -> Any:
    """The result for succeeded, else the matching exception raised."""
    if status == "succeeded":
        return data
    data = data if isinstance(data, dict) else {}
    if status == "cancelled":
        raise JobCancelled(job_id, str(data.get("message", "cancelled")))
    raise JobFailed(job_id, str(data.get("code", "internal")), str(data.get("message", "")),
                    bool(data.get("retryable", False)), attempt)
