"""The synchronous client (redis-py). See clients/python/README.md and docs/producers.md."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

import redis
from redis.exceptions import NoScriptError

from ._common import (TERMINAL, Event, Keys, build_payload, decode_event, decode_hash,
                      lua_source, outcome, JobTimeout, _s)


class _Script:
    """EVALSHA with a fallback to EVAL on NOSCRIPT (a restarted Redis has none loaded)."""

    def __init__(self, name: str) -> None:
        import hashlib
        self.source = lua_source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(self, r: "redis.Redis[Any]", keys: List[str], args: List[Any]) -> Any:
        try:
            return r.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return r.eval(self.source, len(keys), *keys, *args)


ENQUEUE, CANCEL = _Script("enqueue"), _Script("cancel")


class EnqueueResult(str):
    """The job id (a str), with ``added`` (False: the id was already known) and ``status``."""
    added: bool
    status: str


class Client:
    """A producer of one queue: ``Client("redis://...", namespace="snapworker", queue="default")``.

    ``redis_`` is a URL or a ``redis.Redis``; ``job_ttl_s`` must match the worker's
    SNAPWORKER_JOB_TTL_S (it is how long a cancelled job's hash is kept)."""

    def __init__(self, redis_: Union[str, "redis.Redis[Any]"], namespace: str = "snapworker",
                 queue: str = "default", job_ttl_s: int = 86400) -> None:
        self.r = redis.Redis.from_url(redis_) if isinstance(redis_, str) else redis_
        self.keys = Keys(namespace, queue)
        self.job_ttl_s = job_ttl_s

    # ---- producing ------------------------------------------------------
    def enqueue(self, type: str, tenant_id: str, sandbox_id: str, session_id: str,
                args: Optional[Mapping[str, Any]] = None, id: Optional[str] = None,
                priority: str = "default", delay: Optional[float] = None,
                run_at: Optional[float] = None, max_attempts: Optional[int] = None,
                timeout_s: Optional[int] = None) -> EnqueueResult:
        """Add a job with the enqueue script (worker/lua/enqueue.lua); returns its id.
        Idempotent on ``id``: an id queued, running or ended within the job TTL adds
        nothing (``result.added`` is False). ``delay`` in seconds, ``run_at`` in epoch
        seconds (Redis's clock). Raises redis.ResponseError("invalid_payload: ...")."""
        job_id, payload = build_payload(type, tenant_id, sandbox_id, session_id, args, id,
                                        priority, delay, run_at, max_attempts, timeout_s)
        added, status, _where = ENQUEUE(self.r, self.keys.enqueue_keys(job_id), [payload])
        res = EnqueueResult(job_id)
        res.added, res.status = bool(added), _s(status)
        return res

    def enqueue_and_wait(self, type: str, tenant_id: str, sandbox_id: str, session_id: str,
                         args: Optional[Mapping[str, Any]] = None, timeout: float = 300.0,
                         **kw: Any) -> Any:
        """enqueue(), then wait(): the result dict, or JobFailed / JobCancelled / JobTimeout."""
        since = self._last_event_id()
        job_id = self.enqueue(type, tenant_id, sandbox_id, session_id, args, **kw)
        return self.wait(job_id, timeout, since_id=since)

    def cancel(self, job_id: str) -> str:
        """Cancel with worker/lua/cancel.lua: "cancelled" (it had not started),
        "cancelling" (running: it stops at its next checkpoint) or "ended"."""
        res, _prev = CANCEL(self.r, self.keys.cancel_keys(job_id), [job_id, self.job_ttl_s])
        return _s(res)

    # ---- observing ------------------------------------------------------
    def status(self, job_id: str) -> Optional[Dict[str, Any]]:
        """The job hash (status, type, attempt, result | error, ...) or None."""
        return decode_hash(self.r.hgetall(self.keys.job(job_id)))

    def wait(self, job_id: str, timeout: float = 300.0, since_id: str = "0-0") -> Any:
        """Wait for the job's terminal event (reading the events stream after
        'since_id', and the job hash, so nothing is missed); returns the result or
        raises JobFailed / JobCancelled / JobTimeout."""
        deadline = time.monotonic() + timeout
        last = since_id
        while True:
            h = self.status(job_id)
            if h and h.get("status") in TERMINAL:
                data = h.get("result") if h["status"] == "succeeded" else h.get("error")
                return outcome(job_id, h["status"], data, int(h.get("attempt") or 0))
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobTimeout(job_id, timeout)
            got = self.r.xread({self.keys.k("events"): last}, count=500,
                               block=max(1, int(min(left, 1.0) * 1000)))
            for _stream, entries in got or []:
                for eid, f in entries:
                    last = _s(eid)
                    ev = decode_event(eid, f)
                    if ev.job_id == job_id and ev.status in TERMINAL:
                        return outcome(job_id, ev.status, ev.data, ev.attempt)

    def events(self, since_id: str = "$", block_ms: int = 5000,
               job_id: Optional[str] = None, stop_after_idle: bool = False) -> Iterator[Event]:
        """Events after 'since_id' ("$" = from now, "0-0" = all kept), forever (or until
        a block passes with nothing, when stop_after_idle). Keep the last Event.id and
        pass it back after a restart: nothing is missed while the stream still holds it
        (the worker trims it at SNAPWORKER_EVENTS_MAXLEN entries)."""
        last = since_id
        if last == "$":
            last = self._last_event_id()
        while True:
            got = self.r.xread({self.keys.k("events"): last}, count=500, block=block_ms)
            if not got and stop_after_idle:
                return
            for _stream, entries in got or []:
                for eid, f in entries:
                    last = _s(eid)
                    ev = decode_event(eid, f)
                    if job_id is None or ev.job_id == job_id:
                        yield ev

    def session_lock_holder(self, session_id: str) -> Optional[str]:
        """The id of the job holding the session's lock (running on it now), or None."""
        v = self.r.get(self.keys.k("lock:session:" + session_id.lower()))
        return _s(v) if v is not None else None

    def _last_event_id(self) -> str:
        e = self.r.xrevrange(self.keys.k("events"), count=1)
        return _s(e[0][0]) if e else "0-0"
