"""The asyncio client on redis.asyncio (redis-py >= 4.2): the same calls as Client, awaited."""
from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Union

import redis.asyncio as aredis
from redis.exceptions import NoScriptError

from ._common import (TERMINAL, Event, Keys, build_payload, decode_event, decode_hash,
                      lua_source, outcome, JobTimeout, _s)
from .client import EnqueueResult


class _Script:
    def __init__(self, name: str) -> None:
        self.source = lua_source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, r: Any, keys: List[str], args: List[Any]) -> Any:
        try:
            return await r.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await r.eval(self.source, len(keys), *keys, *args)


ENQUEUE, CANCEL = _Script("enqueue"), _Script("cancel")


class AsyncClient:
    """``AsyncClient("redis://...", namespace, queue)``: see Client for each call."""

    def __init__(self, redis_: Union[str, Any], namespace: str = "snapworker",
                 queue: str = "default", job_ttl_s: int = 86400) -> None:
        self.r = aredis.Redis.from_url(redis_) if isinstance(redis_, str) else redis_
        self.keys = Keys(namespace, queue)
        self.job_ttl_s = job_ttl_s

    async def close(self) -> None:
        await self.r.close()

    async def enqueue(self, type: str, tenant_id: str, sandbox_id: str, session_id: str,
                      args: Optional[Mapping[str, Any]] = None, id: Optional[str] = None,
                      priority: str = "default", delay: Optional[float] = None,
                      run_at: Optional[float] = None, max_attempts: Optional[int] = None,
                      timeout_s: Optional[int] = None) -> EnqueueResult:
        job_id, payload = build_payload(type, tenant_id, sandbox_id, session_id, args, id,
                                        priority, delay, run_at, max_attempts, timeout_s)
        added, status, _where = await ENQUEUE(self.r, self.keys.enqueue_keys(job_id), [payload])
        res = EnqueueResult(job_id)
        res.added, res.status = bool(added), _s(status)
        return res

    async def enqueue_and_wait(self, type: str, tenant_id: str, sandbox_id: str,
                               session_id: str, args: Optional[Mapping[str, Any]] = None,
                               timeout: float = 300.0, **kw: Any) -> Any:
        since = await self._last_event_id()
        job_id = await self.enqueue(type, tenant_id, sandbox_id, session_id, args, **kw)
        return await self.wait(job_id, timeout, since_id=since)

    async def cancel(self, job_id: str) -> str:
        res, _prev = await CANCEL(self.r, self.keys.cancel_keys(job_id), [job_id, self.job_ttl_s])
        return _s(res)

    async def status(self, job_id: str) -> Optional[Dict[str, Any]]:
        return decode_hash(await self.r.hgetall(self.keys.job(job_id)))

    async def wait(self, job_id: str, timeout: float = 300.0, since_id: str = "0-0") -> Any:
        deadline = time.monotonic() + timeout
        last = since_id
        while True:
            h = await self.status(job_id)
            if h and h.get("status") in TERMINAL:
                data = h.get("result") if h["status"] == "succeeded" else h.get("error")
                return outcome(job_id, h["status"], data, int(h.get("attempt") or 0))
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobTimeout(job_id, timeout)
            got = await self.r.xread({self.keys.k("events"): last}, count=500,
                                     block=max(1, int(min(left, 1.0) * 1000)))
            for _stream, entries in got or []:
                for eid, f in entries:
                    last = _s(eid)
                    ev = decode_event(eid, f)
                    if ev.job_id == job_id and ev.status in TERMINAL:
                        return outcome(job_id, ev.status, ev.data, ev.attempt)

    async def events(self, since_id: str = "$", block_ms: int = 5000,
                     job_id: Optional[str] = None,
                     stop_after_idle: bool = False) -> AsyncIterator[Event]:
        last = since_id if since_id != "$" else await self._last_event_id()
        while True:
            got = await self.r.xread({self.keys.k("events"): last}, count=500, block=block_ms)
            if not got and stop_after_idle:
                return
            for _stream, entries in got or []:
                for eid, f in entries:
                    last = _s(eid)
                    ev = decode_event(eid, f)
                    if job_id is None or ev.job_id == job_id:
                        yield ev
            await asyncio.sleep(0)

    async def session_lock_holder(self, session_id: str) -> Optional[str]:
        v = await self.r.get(self.keys.k("lock:session:" + session_id.lower()))
        return _s(v) if v is not None else None

    async def _last_event_id(self) -> str:
        e = await self.r.xrevrange(self.keys.k("events"), count=1)
        return _s(e[0][0]) if e else "0-0"
