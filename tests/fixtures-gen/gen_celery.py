#!/usr/bin/python3
"""tests/fixtures-gen/gen_celery.py - real Celery 5.2 / kombu 5.2 bytes for tests/unit/test_celery.c.

Starts a throwaway redis-server (scripts/services), then:
  * messages: calls app.send_task(...) for each case and stores the entry kombu LPUSHed, byte
    for byte as LRANGE returns it, as msg_<case>.json (plus list_<case>.txt naming the list);
  * metas: runs Celery's own Redis result backend (store_result, mark_as_started,
    mark_as_failure, mark_as_retry, mark_as_revoked) and stores GET celery-task-meta-<id> as
    meta_<case>.json; it also checks that the PUBLISHed text equals the stored one and that the
    TTL is result_expires;
  * expect.json: what a correct parser must find in each message, computed here with Celery's
    own helpers (celery.utils.iso8601, celery.utils.time.maybe_make_aware), so the C test does
    not re-derive the oracle.
A few fixtures are real messages altered on purpose (wrong body encoding, body not base64,
protocol v1 sent with task_protocol=1 is real); those are marked "derived" in expect.json.
The outputs are committed under tests/unit/fixtures/celery/, so unit tests need no Python or
Redis. Rerun with:

    /usr/bin/python3 tests/fixtures-gen/gen_celery.py
"""
import base64
import calendar
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import redis
from celery import Celery
from celery.app.task import Context
from celery.exceptions import NotRegistered
from celery.utils.iso8601 import parse_iso8601
from celery.utils.time import maybe_make_aware

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/unit/fixtures/celery"
SB = "2B2E6240-6F35-43EE-BC4E-41ADE6AE1AD4"
SS = "52fbb8b7-179a-4c2e-a468-7125f9e86391"
BASE = {"sandbox_id": SB, "session_id": SS}


def epoch_ms(iso):
    """Epoch ms of a header value, exactly as a Celery worker interprets it (naive = UTC)."""
    if iso is None:
        return 0
    d = maybe_make_aware(parse_iso8601(iso))  # naive -> UTC (Celery's maybe_make_aware)
    u = d.astimezone(dt.timezone.utc)
    return calendar.timegm(u.timetuple()) * 1000 + u.microsecond // 1000


def exc_class(name, module="snapworker"):
    """An exception class whose meta carries exc_type=name, exc_module=module."""
    return type(name, (Exception,), {"__module__": module, "__qualname__": name})


class Capture:
    def __init__(self, url):
        self.r = redis.Redis.from_url(url)
        self.url = url

    def lists(self):
        return {k for k in self.r.keys() if self.r.type(k) == b"list"}

    def take(self, send):
        """Run send(); return (list name, raw entry) of the one message it LPUSHed."""
        before = {k: self.r.llen(k) for k in self.lists()}
        send()
        got = []
        for k in self.lists():
            n = self.r.llen(k) - before.get(k, 0)
            if n:
                got.append((k, self.r.lindex(k, 0)))
        assert len(got) == 1, got
        self.r.delete(got[0][0])
        return got[0]


def main():
    tmp = tempfile.mkdtemp(prefix="gen-celery-")
    env = subprocess.run([str(ROOT / "scripts/services"), "start", tmp, "redis"], check=True,
                         capture_output=True, text=True).stdout
    url = dict(line.split("=", 1) for line in env.split() if "=" in line)["REDIS_URL"]
    broker, backend = url, url[:-1] + "1"
    try:
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        expect = {"messages": {}, "metas": {}}
        gen_messages(broker, backend, expect)
        gen_metas(broker, backend, expect)
        (OUT / "expect.json").write_text(json.dumps(expect, indent=1, sort_keys=True) + "\n")
    finally:
        subprocess.run([str(ROOT / "scripts/services"), "stop", tmp], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT.relative_to(ROOT)}")


def gen_messages(broker, backend, expect):
    app = Celery("gen", broker=broker, backend=backend)
    app.conf.broker_transport_options = {}  # kombu defaults: sep \x06\x16, steps 0,3,6,9
    v1 = Celery("gen1", broker=broker, backend=backend)
    v1.conf.task_protocol = 1
    onyx = Celery("genonyx", broker=broker, backend=backend)
    onyx.conf.broker_transport_options = {"sep": ":", "priority_steps": list(range(5)),
                                          "queue_order_strategy": "priority"}
    cap = Capture(broker)
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    pst = dt.timezone(dt.timedelta(hours=-8))
    cases = {
        # name: (app, task name, send_task keyword arguments)
        "kwargs": (app, "snapworker.noop", dict(
            kwargs={**BASE, "tenant_id": "acme", "args": {"sleep_ms": 5},
                    "max_attempts": 3, "timeout_s": 30}, task_id="c-kwargs-1")),
        "extra_kwargs": (app, "snapworker.restore", dict(
            kwargs={**BASE, "nextjs_port": 3010, "llm_config": {"provider": "openai",
                    "model_name": "gpt-5", "api_key": "sk-x"}, "use_demo_data": False,
                    "args": {"start_webapp": False}}, task_id="c-extra-1")),
        "conflict_kwargs": (app, "snapworker.restore", dict(
            kwargs={**BASE, "nextjs_port": 3010, "args": {"nextjs_port": 3011}},
            task_id="c-conflict-1")),
        "obj_arg": (app, "snapworker.snapshot", dict(
            args=[{**BASE, "args": {"snapshot_id": "0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11"},
                   "label": "é"}], task_id="0B6F6A0E-6A43-4C43-9C3E-3C1F7F0F2F12")),
        "positional": (app, "snapworker.noop", dict(args=[SB, SS], task_id="c-pos-1")),
        "countdown": (app, "snapworker.noop", dict(kwargs=BASE, countdown=30,
                                                  task_id="c-countdown-1")),
        "eta_offset": (app, "snapworker.noop", dict(
            kwargs=BASE, eta=dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=ist),
            task_id="c-eta-offset")),
        "eta_naive": (app, "snapworker.noop", dict(
            kwargs=BASE, eta=dt.datetime(2030, 1, 2, 3, 4, 5), task_id="c-eta-naive")),
        "eta_negative": (app, "snapworker.regenerate", dict(
            kwargs=BASE, eta=dt.datetime(1999, 12, 31, 20, 0, 0, 5000, tzinfo=pst),
            task_id="c-eta-neg")),
        "expires_past": (app, "snapworker.noop", dict(
            kwargs=BASE, expires=dt.datetime(2001, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
            task_id="c-expired")),
        "expires_rel": (app, "snapworker.noop", dict(kwargs=BASE, expires=60,
                                                    task_id="c-expires-60")),
        "retries": (app, "snapworker.noop", dict(kwargs=BASE, retries=3, task_id="c-retries-3")),
        "time_limit": (app, "snapworker.noop", dict(kwargs=BASE, time_limit=12.5,
                                                   task_id="c-timelimit")),
        "ignore_result": (app, "snapworker.noop", dict(kwargs=BASE, ignore_result=True,
                                                      task_id="c-ignore")),
        "unknown_task": (app, "snapworker.bake", dict(kwargs=BASE, task_id="c-unknown-1")),
        "foreign_task": (app, "proj.tasks.add", dict(args=[2, 2], task_id="c-foreign-1")),
        "bad_id": (app, "snapworker.noop", dict(kwargs=BASE, task_id="bad/id")),
        "bad_sandbox": (app, "snapworker.noop", dict(
            kwargs={"sandbox_id": "../../etc", "session_id": SS}, task_id="c-badsb")),
        "missing_session": (app, "snapworker.noop", dict(kwargs={"sandbox_id": SB},
                                                        task_id="c-nosession")),
        "pickle": (app, "snapworker.noop", dict(kwargs=BASE, serializer="pickle",
                                               task_id="c-pickle")),
        "protocol_v1": (v1, "snapworker.noop", dict(kwargs=BASE, task_id="c-v1")),
        "priority_default": (app, "snapworker.noop", dict(kwargs=BASE, priority=7,
                                                         task_id="c-pri-7")),
        "priority_onyx": (onyx, "snapworker.noop", dict(kwargs=BASE, priority=2,
                                                       task_id="c-pri-onyx-2")),
    }
    for name, (a, task, kw) in cases.items():
        lst, raw = cap.take(lambda: a.send_task(task, queue="snapworker", **kw))
        (OUT / f"msg_{name}.json").write_bytes(raw)
        env = json.loads(raw)
        h = env.get("headers") or {}
        body = base64.b64decode(env["body"])
        e = {"list": lst.decode("latin-1"), "task_id": kw.get("task_id"), "task": task,
             "eta_ms": epoch_ms(h.get("eta")), "expires_ms": epoch_ms(h.get("expires")),
             "retries": h.get("retries", 0), "content_type": env["content-type"]}
        if env["content-type"] == "application/json":
            e["body"] = json.loads(body)
        expect["messages"][name] = e

    # Derived from a real message on purpose: kombu would never write these, a broken or
    # hostile producer could.
    raw = (OUT / "msg_kwargs.json").read_bytes()
    env = json.loads(raw)
    wrong = json.loads(raw)
    wrong["properties"]["body_encoding"] = "hex"
    wrong["headers"]["id"] = "c-wrong-enc"
    (OUT / "msg_wrong_encoding.json").write_text(json.dumps(wrong))
    notb64 = json.loads(raw)
    notb64["body"] = "%%% not base64 %%%"
    notb64["headers"]["id"] = "c-not-b64"
    (OUT / "msg_body_not_base64.json").write_text(json.dumps(notb64))
    plain = json.loads(raw)  # no body_encoding: the body is the JSON text itself
    del plain["properties"]["body_encoding"]
    plain["body"] = base64.b64decode(env["body"]).decode()
    plain["headers"]["id"] = "c-plain-body"
    (OUT / "msg_plain_body.json").write_text(json.dumps(plain))
    (OUT / "msg_not_json.json").write_bytes(b'{"body": "W10=", "headers": {"id": "c-x"')
    for name, tid in (("wrong_encoding", "c-wrong-enc"), ("body_not_base64", "c-not-b64"),
                      ("plain_body", "c-plain-body"), ("not_json", None)):
        expect["messages"][name] = {"derived": True, "task_id": tid, "task": "snapworker.noop",
                                    "eta_ms": 0, "expires_ms": 0, "retries": 0}


def gen_metas(broker, backend, expect):
    app = Celery("genmeta", broker=broker, backend=backend)
    app.conf.result_expires = 86400
    be = app.backend
    r = redis.Redis.from_url(backend)
    Internal = exc_class("Internal")
    StorageError = exc_class("StorageError")
    # A request like the one a Celery worker passes (Celery's tracer): with it the meta
    # carries "children": [] as a worker writes it; without one Celery writes null.
    def req(t):
        return Context(id=t, task="snapworker.noop", children=[], delivery_info={})

    cases = [
        ("success", "m-success",
         lambda t: be.store_result(t, {"ok": True}, "SUCCESS", request=req(t))),
        ("success_rich", "m-rich", lambda t: be.store_result(t, {
            "snapshot_id": "0b6f6a0e-6a43-4c43-9c3e-3c1f7f0f2f11", "size_bytes": 12345678901,
            "names": ["é", "x\ny\t\"q\"\\", "\x7f\x01", "😀", "a/b"], "none": None,
            "flags": [True, False], "empty": {}, "list": [],
            "reals": [0.1, 1e-05, 0.0001, 1e16, 1e15, 100.0, -0.0, 1.5e300, 123456789.123,
                      2.5, -3.75e-7]}, "SUCCESS", request=req(t))),
        # Celery's tracer stores STARTED as {"pid": ..., "hostname": ...}
        ("started", "m-started", lambda t: be.store_result(
            t, {"pid": 4242, "hostname": "celery@host"}, "STARTED", request=req(t))),
        ("retry", "m-retry", lambda t: be.mark_as_retry(t, StorageError("PUT k: HTTP 503"),
                                                        request=req(t))),
        ("failure", "m-failure", lambda t: be.mark_as_failure(t, Internal("noop failed: é"),
                                                              request=req(t))),
        # what the consumer writes for an unknown task name (Celery's Consumer.on_unknown_task)
        ("not_registered", "m-notreg", lambda t: be.mark_as_failure(
            t, NotRegistered("snapworker.bake"), request=req(t))),
        # what a worker writes for an expired task (Celery's Request.revoked, reason "expired")
        ("revoked", "m-revoked", lambda t: be.mark_as_revoked(t, "expired", request=req(t))),
        # the same states stored without a request: Celery writes "children": null then
        ("success_norequest", "m-success-noreq",
         lambda t: be.store_result(t, {"ok": True}, "SUCCESS")),
    ]
    ps = r.pubsub(ignore_subscribe_messages=True)
    for name, tid, _ in cases:
        ps.subscribe(f"celery-task-meta-{tid}")
    while ps.get_message(timeout=0.2):
        pass
    for name, tid, store in cases:
        store(tid)
        key = f"celery-task-meta-{tid}"
        raw = r.get(key)
        msg = None
        for _ in range(50):
            msg = ps.get_message(timeout=0.1)
            if msg:
                break
        assert msg and msg["channel"].decode() == key and msg["data"] == raw, (name, msg)
        ttl = r.ttl(key)
        assert 86300 < ttl <= 86400, ttl
        (OUT / f"meta_{name}.json").write_bytes(raw)
        expect["metas"][name] = {"task_id": tid, "published_equals_stored": True,
                                 "ttl_s": 86400}
    ps.close()


if __name__ == "__main__":
    sys.exit(main())
