"""The Python client against a real worker (issue 13)."""
import asyncio
import json
import os
import sys
import threading
import time
import uuid

import pytest

from snapworker import AsyncClient, Client, JobCancelled, JobFailed, JobTimeout, lua_source
from conftest import HERE, ROOT

sys.path.insert(0, os.path.join(HERE, "..", "examples"))
import restore_session as ex  # noqa: E402


def ids():
    return str(uuid.uuid4()), str(uuid.uuid4())


def test_the_packaged_lua_is_byte_identical_to_the_workers():
    for name in ("enqueue", "cancel"):
        with open(os.path.join(ROOT, "worker", "lua", name + ".lua"), "rb") as f:
            assert lua_source(name).encode() == f.read(), name


def test_enqueue_and_wait_returns_the_result(client, worker):
    sb, ss = ids()
    assert client.enqueue_and_wait("noop", "public", sb, ss, {}, timeout=20) == {"ok": True}


def test_a_permanent_failure_raises_job_failed_with_its_code(client, worker):
    sb, ss = ids()
    with pytest.raises(JobFailed) as ei:
        client.enqueue_and_wait("noop", "public", sb, ss, {"fail": "permanent"}, timeout=20)
    assert ei.value.code == "internal"  # what noop's permanent failure reports (jobs/noop.c)
    assert ei.value.retryable is False
    h = client.status(ei.value.job_id)
    assert h["status"] == "dead" and h["error"]["code"] == ei.value.code
    with pytest.raises(JobFailed) as e2:
        client.enqueue_and_wait("nosuchtype", "public", sb, ss, timeout=20)
    assert e2.value.code == "unknown_job_type"


def test_no_outcome_in_time_raises_job_timeout_and_the_job_can_be_cancelled(client, worker):
    sb, ss = ids()
    with pytest.raises(JobTimeout) as ei:
        client.enqueue_and_wait("noop", "public", sb, ss, {"sleep_ms": 60000}, timeout=0.5)
    jid = ei.value.job_id
    assert client.cancel(jid) in ("cancelling", "cancelled")
    with pytest.raises(JobCancelled):
        client.wait(jid, timeout=20)
    assert client.status(jid)["status"] == "cancelled"
    assert client.cancel(jid) == "ended"


def test_cancel_of_a_delayed_job(client, worker):
    sb, ss = ids()
    jid = client.enqueue("noop", "public", sb, ss, delay=60)
    assert client.status(jid)["status"] == "queued"
    assert client.cancel(jid) == "cancelled"
    with pytest.raises(JobCancelled):
        client.wait(jid, timeout=5)


def test_the_same_id_twice_adds_once(client, worker):
    sb, ss = ids()
    a = client.enqueue("noop", "public", sb, ss, id="py-dup-1")
    b = client.enqueue("noop", "public", sb, ss, id="py-dup-1")
    assert a.added and not b.added and a == b == "py-dup-1"
    assert client.wait(a, timeout=20) == {"ok": True}


def test_events_resume_from_an_id_after_a_reconnect(services, queue, worker):
    c1 = Client(services.env["REDIS_URL"], queue=queue)
    sb, ss = ids()
    first = c1.enqueue("noop", "public", sb, ss)
    c1.wait(first, timeout=20)
    seen = list(c1.events(since_id="0-0", block_ms=200, stop_after_idle=True))
    assert [e.status for e in seen if e.job_id == first] == ["started", "succeeded"]
    last = seen[-1].id
    c1.r.close()  # the producer "restarts"; jobs go on meanwhile
    c0 = Client(services.env["REDIS_URL"], queue=queue)
    later = [c0.enqueue("noop", "public", *ids()) for _ in range(3)]
    for j in later:
        c0.wait(j, timeout=20)
    c2 = Client(services.env["REDIS_URL"], queue=queue)
    got = list(c2.events(since_id=last, block_ms=200, stop_after_idle=True))
    assert first not in {e.job_id for e in got}
    for j in later:
        assert [e.status for e in got if e.job_id == j] == ["started", "succeeded"]


def test_the_async_client_does_the_same(services, queue, worker):
    async def main():
        c = AsyncClient(services.env["REDIS_URL"], queue=queue)
        try:
            sb, ss = ids()
            assert await c.enqueue_and_wait("noop", "public", sb, ss, timeout=20) == {"ok": True}
            with pytest.raises(JobFailed):
                await c.enqueue_and_wait("noop", "public", sb, ss, {"fail": "permanent"},
                                         timeout=20)
            jid = await c.enqueue("noop", "public", sb, ss, delay=60, priority="low")
            assert await c.cancel(jid) == "cancelled"
            evs = [e async for e in c.events(since_id="0-0", block_ms=200, stop_after_idle=True)]
            assert "cancelled" in [e.status for e in evs if e.job_id == jid]
        finally:
            await c.close()
    asyncio.run(main())


def test_the_restore_session_example_answers_409_while_a_restore_of_the_session_runs(client):
    # a restore of this session running elsewhere, as the worker records it: the session
    # lock names the job and its hash says restore/running (no worker needed for the check)
    sb, ss = ids()
    running = "restore-" + uuid.uuid4().hex
    client.r.set(client.keys.k("lock:session:" + ss), running, px=60000)
    client.r.hset(client.keys.job(running), mapping={"status": "running", "type": "restore"})
    status, body = ex.restore_session(client, "public", sb, ss, timeout=1)
    assert status == 409 and body["job_id"] == running
    # any other holder (a snapshot) is not a running restore: the request goes through
    client.r.hset(client.keys.job(running), "type", "snapshot")
    status, body = ex.restore_session(client, "public", sb, ss, timeout=0.5)
    assert status == 504  # no worker runs in this test: the wait times out


def test_of_requests_racing_for_one_session_the_example_lets_exactly_one_enqueue(client):
    # no worker: the one request that enqueues waits and times out (504); every other
    # request answers 409 naming that job, and the queue holds one restore, not eight
    sb, ss = ids()
    n = 8
    barrier = threading.Barrier(n)
    answers = []

    def request():
        barrier.wait()
        answers.append(ex.restore_session(client, "public", sb, ss, timeout=1.5))

    threads = [threading.Thread(target=request) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(st for st, _ in answers)
    assert statuses == [409] * (n - 1) + [504], answers
    enqueued = [b["job_id"] for st, b in answers if st == 504][0]
    assert all(b["job_id"] == enqueued for st, b in answers if st == 409), answers
    assert client.status(enqueued)["status"] == "queued"
    assert client.r.xlen(client.keys.k("stream:high")) == 1
    # the claimed restore still queued: one more request is refused ...
    assert ex.restore_session(client, "public", sb, ss, timeout=0.5)[0] == 409
    # ... and once it ended (cancelled here) the next request goes through
    assert client.cancel(enqueued) == "cancelled"
    status, body = ex.restore_session(client, "public", sb, ss, timeout=0.5)
    assert status == 504 and body["job_id"] != enqueued
    # a claim naming a job that was never enqueued (its handler died) is taken over
    # once CLAIM_IN_FLIGHT_MS has passed, not before
    sb2, ss2 = ids()
    key = ex.claim_key(client, ss2)
    client.r.set(key, "restore-lost|%d" % int(time.time() * 1000))
    assert ex.restore_session(client, "public", sb2, ss2, timeout=0.5)[0] == 409
    client.r.set(key, "restore-lost|%d" % (int(time.time() * 1000) - ex.CLAIM_IN_FLIGHT_MS))
    assert ex.restore_session(client, "public", sb2, ss2, timeout=0.5)[0] == 504


def test_the_example_maps_error_codes_to_http_statuses(client, worker):
    sb, ss = ids()
    # a restore with a bad snapshot path is invalid_payload -> 400, without a database
    status, body = ex.restore_session(client, "public", sb, ss, timeout=20,
                                      llm_config={"api_key": "sk-py-secret"},
                                      nextjs_port=-5)
    assert status == 400, body
    assert body.get("code") == "invalid_payload", body
    assert "sk-py-secret" not in json.dumps(body)
