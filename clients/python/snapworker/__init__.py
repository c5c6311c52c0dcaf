"""snapworker — a producer client for the snapworker job queue (docs/producers.md).

    from snapworker import Client, JobFailed
    c = Client("redis://127.0.0.1:6379/0", namespace="snapworker", queue="default")
    result = c.enqueue_and_wait("restore", "public", sandbox_id, session_id,
                                {"start_webapp": True}, timeout=300)

Depends only on redis-py (>= 4.2 for the asyncio client)."""
from ._common import (Event, JobCancelled, JobFailed, JobTimeout, SnapworkerError,
                      PRIORITIES, TERMINAL, lua_source)
from .client import Client, EnqueueResult

__all__ = ["Client", "AsyncClient", "EnqueueResult", "Event", "JobFailed", "JobCancelled",
           "JobTimeout", "SnapworkerError", "PRIORITIES", "TERMINAL", "lua_source"]


def __getattr__(name: str):  # the asyncio client is imported on first use
    if name == "AsyncClient":
        from .aio import AsyncClient
        return AsyncClient
    raise AttributeError(name)
