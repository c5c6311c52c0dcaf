"""Celery producers (issue 6): the real Celery 5.2.6 client (Debian python3-celery under
/usr/bin/python3) sends with app.send_task(...) to kombu's Redis lists; snapworker moves the
messages into its stream, runs them, and answers through Celery's Redis result backend, so
AsyncResult.get() works unchanged.

Each test uses its own Celery queue name (SNAPWORKER_CELERY_QUEUES) besides its own snapworker
queue, and a Celery app whose broker is REDIS_URL's database and whose result backend is
database 1 unless the test says otherwise. Formats are described in docs/celery.md."""
import base64
import datetime as dt
import gc
import json
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid

import redis
from celery import Celery
from celery.exceptions import NotRegistered, TaskRevokedError
from celery.result import AsyncResult

from harness import SLOW, SWTestCase, new_uuid, wait_for, with_db

FAST = False
PGBIN = "/usr/lib/postgresql/15/bin"
KOMBU_SEP = "\x06\x16"


def db_url(url, db):
    """The same server as 'url' with another database number (a rediss:// URL's query, the
    TLS options, kept)."""
    return with_db(url, db)


def drain(ps, quiet_s=0.5):
    """Every message on a pubsub until none came for quiet_s (subscribe replies skipped)."""
    out, last = [], time.time()
    while time.time() - last < quiet_s:
        msg = ps.get_message(timeout=0.05)
        if msg and msg.get("type") == "message":
            out.append(json.loads(msg["data"]))
            last = time.time()
    return out


def c_escape(sep):
    """A separator as SNAPWORKER_CELERY_PRIORITY_SEP takes it: C escapes for control bytes."""
    return "".join(f"\\x{b:02x}" if b < 0x20 or b > 0x7e or b == 0x5c else chr(b)
                   for b in sep.encode())


# run under ASan too (scripts/run-integration --fast)
FAST_TESTS = [
    "test_send_task_get_returns_the_noop_result_written_like_celery_writes_it",
    "test_a_transient_failure_shows_retry_then_success",
    "test_countdown_runs_no_earlier_than_its_eta",
    "test_malformed_list_entries_do_not_stop_the_ingress_and_fail_when_an_id_is_known",
    "test_an_api_key_sent_through_celery_is_in_no_result_event_log_or_cli_output",
    "test_malformed_broadcasts_and_other_methods_do_not_stop_the_control_connection",
]

class CeleryCase(SWTestCase):
    SERVICES = ("redis",)
    BROKER_DB = 0
    BACKEND_DB = 1

    def setUp(self):
        super().setUp()
        self.cq = "cq" + uuid.uuid4().hex[:10]
        self.apps = []
        base = self.services.env["REDIS_URL"]
        self.broker = db_url(base, self.BROKER_DB)
        self.backend = db_url(base, self.BACKEND_DB)
        self.rb = redis.Redis.from_url(self.backend, decode_responses=True)
        if self.BROKER_DB != 0:  # the harness's client speaks to db 0: use the broker's
            self.r.close()
            self.r = redis.Redis.from_url(self.broker, decode_responses=True)

    def tearDown(self):
        gc.collect()  # pending AsyncResults unsubscribe now, while Redis still answers
        for a in self.apps:
            try:
                a.close()
            except Exception:  # pragma: no cover - best effort
                pass
        self.rb.close()
        super().tearDown()

    # ---- Celery side -------------------------------------------------------------------
    def app(self, transport_options=None, **conf):
        a = Celery("sw-" + self.cq, broker=self.broker, backend=self.backend)
        a.conf.broker_transport_options = transport_options or {}
        a.conf.result_expires = 3600
        for k, v in conf.items():
            setattr(a.conf, k, v)
        self.apps.append(a)
        return a

    def kwargs(self, **args):
        kw = {"sandbox_id": new_uuid(), "session_id": new_uuid()}
        if args:
            kw["args"] = args
        return kw

    def send(self, app, task="snapworker.noop", **opts):
        opts.setdefault("queue", self.cq)
        return app.send_task(task, **opts)

    def meta(self, task_id):
        raw = self.rb.get(f"celery-task-meta-{task_id}")
        return json.loads(raw) if raw else None

    def state_of(self, task_id):
        m = self.meta(task_id)
        return m["status"] if m else None

    def raw_message(self, app, task="snapworker.noop", **opts):
        """A real kombu list entry for send_task(...), taken back off a scratch queue."""
        scratch = "scratch-" + uuid.uuid4().hex[:8]
        self.send(app, task, queue=scratch, **opts)
        raw = self.r.rpop(scratch)
        self.assertIsNotNone(raw)
        return raw

    # ---- snapworker side ---------------------------------------------------------------
    def env(self, **extra):
        if hasattr(self, "broker"):
            extra.setdefault("REDIS_URL", self.broker)  # the broker is REDIS_URL's database
        extra.setdefault("CELERY_BROKER_URL", getattr(self, "broker", ""))
        extra.setdefault("CELERY_RESULT_BACKEND", getattr(self, "backend", ""))
        extra.setdefault("SNAPWORKER_CELERY_QUEUES", getattr(self, "cq", "snapworker"))
        extra.setdefault("SNAPWORKER_CELERY_RESULT_EXPIRES_S", 3600)
        extra.setdefault("SNAPWORKER_RETRY_BASE_MS", 100)
        extra.setdefault("SNAPWORKER_RETRY_MAX_MS", 1000)
        return super().env(**extra)

    def started_order(self):
        return [e["job_id"] for e in self.events() if e["status"] == "started"]

    # ---- Celery control (docs/celery.md "Revoke") ----------------------------------------
    def pidbox(self):
        """The channel kombu PUBLISHes app.control broadcasts on: keyprefix_fanout '/{db}.'
        + the exchange 'celery.pidbox' (kombu's Redis transport)."""
        return f"/{self.BROKER_DB}.celery.pidbox"

    def start_subscribed(self, **env):
        """A worker, once it is SUBSCRIBEd to the pidbox: pub/sub keeps nothing, so a revoke
        published earlier would be lost (as for a Celery worker that is not running yet)."""
        w = self.start_worker(**env)
        wait_for(lambda: dict(self.r.pubsub_numsub(self.pidbox())).get(self.pidbox(), 0) >= 1,
                 20, what="worker subscribed to the pidbox channel")
        return w

    def assert_revoked_unrun(self, res):
        with self.assertRaises(TaskRevokedError):
            res.get(timeout=30 * SLOW)
        self.assertEqual(res.state, "REVOKED")
        m = self.meta(res.id)
        self.assertEqual(m["result"]["exc_type"], "TaskRevokedError")
        self.assertEqual(m["result"]["exc_module"], "celery.exceptions")
        self.wait_status(res.id, "cancelled")
        self.assertNotIn("started", [e["status"] for e in self.events(res.id)])


class Results(CeleryCase):
    def test_send_task_get_returns_the_noop_result_written_like_celery_writes_it(self):
        self.start_worker()
        app = self.app()
        res = self.send(app, kwargs=self.kwargs())
        self.assertEqual(res.get(timeout=30 * SLOW), {"ok": True})
        self.assertEqual(res.state, "SUCCESS")
        m = self.meta(res.id)
        self.assertEqual(list(m), ["status", "result", "traceback", "children", "date_done",
                                   "task_id"])
        self.assertEqual(m["task_id"], res.id)
        self.assertIsNone(m["traceback"])
        self.assertEqual(m["children"], [])
        dt.datetime.fromisoformat(m["date_done"])  # Celery's utcnow().isoformat()
        ttl = self.rb.ttl(f"celery-task-meta-{res.id}")
        self.assertTrue(0 < ttl <= 3600, ttl)
        # the Celery task id is the job id; the result is written before the finish
        # script ends the job (docs/celery.md "When results are written"), so the job
        # hash follows a moment later
        wait_for(lambda: self.job_hash(res.id).get("status") == "succeeded",
                 what="job hash succeeded after the Celery result")
        # nothing left in the Celery list or the snapworker stream
        wait_for(lambda: self.r.llen(self.cq) == 0 and self.r.xlen(self.key("stream")) == 0,
                 what="list and stream emptied")

    def test_a_single_object_argument_works_like_kwargs(self):
        self.start_worker()
        res = self.send(self.app(), args=[self.kwargs(sleep_ms=1)])
        self.assertEqual(res.get(timeout=30 * SLOW), {"ok": True})

    def test_a_failing_task_raises_in_the_client_with_the_errors_type_and_message(self):
        self.start_worker()
        res = self.send(self.app(), kwargs=self.kwargs(fail="permanent"))
        with self.assertRaises(Exception) as cm:
            res.get(timeout=30 * SLOW)
        self.assertEqual(type(cm.exception).__name__, "Internal")
        self.assertIn("noop asked to fail permanently", str(cm.exception))
        self.assertEqual(res.state, "FAILURE")
        m = self.meta(res.id)
        self.assertEqual(m["result"]["exc_type"], "Internal")
        self.assertEqual(m["result"]["exc_module"], "snapworker")
        self.assertEqual(m["result"]["exc_message"], ["noop asked to fail permanently"])
        self.assertIsNotNone(m["date_done"])

    def test_a_transient_failure_shows_retry_then_success(self):
        self.start_worker(SNAPWORKER_RETRY_BASE_MS=1500, SNAPWORKER_RETRY_MAX_MS=1500)
        app = self.app()
        tid = new_uuid()
        ps = self.rb.pubsub(ignore_subscribe_messages=True)
        ps.subscribe(f"celery-task-meta-{tid}")
        res = self.send(app, task_id=tid, kwargs=self.kwargs(fail_attempts=1))
        seen = set()
        deadline = time.time() + 30 * SLOW
        while time.time() < deadline and res.state != "SUCCESS":
            seen.add(AsyncResult(tid, app=app).state)
            time.sleep(0.02)
        self.assertIn("RETRY", seen)
        self.assertEqual(res.get(timeout=10), {"ok": True})
        published = drain(ps)
        ps.close()
        states = [p["status"] for p in published]
        self.assertIn("RETRY", states)
        self.assertEqual(states[-1], "SUCCESS")
        self.assertLess(states.index("RETRY"), states.index("SUCCESS"))
        retry = published[states.index("RETRY")]
        self.assertEqual(retry["result"]["exc_type"], "Internal")
        self.assertIsNone(retry["date_done"])
        self.assertEqual([e["status"] for e in self.events(tid)],
                         ["started", "failed", "started", "succeeded"])

    def test_a_duplicate_delivery_never_overwrites_a_finished_state(self):
        self.start_worker()
        app = self.app()
        tid = new_uuid()
        kw = self.kwargs()
        self.assertEqual(self.send(app, task_id=tid, kwargs=kw).get(timeout=30 * SLOW),
                         {"ok": True})
        before = self.meta(tid)
        ps = self.rb.pubsub(ignore_subscribe_messages=True)
        ps.subscribe(f"celery-task-meta-{tid}")
        # the same task id again, this time asking to fail: the finished SUCCESS stays
        self.send(app, task_id=tid, kwargs={**kw, "args": {"fail": "permanent"}})
        wait_for(lambda: self.r.llen(self.cq) == 0 and self.r.xlen(self.key("stream")) == 0,
                 what="duplicate consumed")
        for m in drain(ps, 1.0):
            self.assertEqual(m["status"], "SUCCESS")
        ps.close()
        after = self.meta(tid)
        self.assertEqual(after["status"], "SUCCESS")
        self.assertEqual(after["result"], before["result"])


class Timing(CeleryCase):
    def test_countdown_runs_no_earlier_than_its_eta(self):
        self.start_worker()
        app = self.app()
        t0 = time.time()
        res = self.send(app, countdown=2, kwargs=self.kwargs())
        self.assertEqual(res.get(timeout=30 * SLOW), {"ok": True})
        self.assertGreaterEqual(time.time() - t0, 2.0)
        started = [int(e["ts"]) for e in self.events(res.id) if e["status"] == "started"]
        self.assertTrue(started)
        self.assertGreaterEqual(min(started), int(t0 * 1000) + 2000)

    def test_an_eta_with_a_timezone_offset_is_honoured(self):
        self.start_worker()
        tz = dt.timezone(dt.timedelta(hours=-7))
        t0 = time.time()
        eta = dt.datetime.now(tz) + dt.timedelta(seconds=2)
        res = self.send(self.app(), eta=eta, kwargs=self.kwargs())
        self.assertEqual(res.get(timeout=30 * SLOW), {"ok": True})
        started = [int(e["ts"]) for e in self.events(res.id) if e["status"] == "started"]
        self.assertGreaterEqual(min(started), int(t0 * 1000) + 2000 - 5)

    def test_an_already_expired_task_is_not_run_and_ends_revoked(self):
        self.start_worker()
        app = self.app()
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=10)
        res = self.send(app, expires=past, kwargs=self.kwargs())
        with self.assertRaises(TaskRevokedError):
            res.get(timeout=30 * SLOW)
        self.assertEqual(res.state, "REVOKED")
        m = self.meta(res.id)
        self.assertEqual(m["result"]["exc_type"], "TaskRevokedError")
        self.assertEqual(m["result"]["exc_module"], "celery.exceptions")
        self.assertIsNotNone(m["date_done"])
        self.assertNotIn("started", [e["status"] for e in self.events(res.id)])
        # Celery's meta is written before the queue's finish (docs/celery.md), so the job
        # hash may lag the REVOKED the client saw by one script call.
        self.wait_status(res.id, "dead")
        h = self.job_hash(res.id)
        self.assertEqual(json.loads(h["error"])["code"], "timeout")
        # the ingress goes on
        self.assertEqual(self.send(app, kwargs=self.kwargs()).get(timeout=30 * SLOW),
                         {"ok": True})

    def test_a_task_that_expires_while_waiting_for_its_eta_is_revoked(self):
        self.start_worker()
        res = self.send(self.app(), countdown=2, expires=1, kwargs=self.kwargs())
        with self.assertRaises(TaskRevokedError):
            res.get(timeout=30 * SLOW)
        self.assertNotIn("started", [e["status"] for e in self.events(res.id)])

    def test_retries_in_the_headers_count_as_attempts_already_made(self):
        self.start_worker()
        # retries=2: this delivery is attempt 3; with max_attempts 3 a failure is final
        kw = {**self.kwargs(fail="transient"), "max_attempts": 3}
        res = self.send(self.app(), retries=2, kwargs=kw)
        with self.assertRaises(Exception) as cm:
            res.get(timeout=30 * SLOW)
        self.assertEqual(type(cm.exception).__name__, "Internal")
        attempts = [e["attempt"] for e in self.events(res.id) if e["status"] == "started"]
        self.assertEqual(attempts, ["3"])


class Priorities(CeleryCase):
    def check_order(self, app, sep, steps, prios):
        """Fill the lists first (priorities in 'prios', several of each, interleaved), then
        start one single-threaded worker: jobs must start by list step, FIFO within a step."""
        sent = []  # (priority step, task id) in send order
        step_of = {p: max(s for s in steps if s <= p) for p in prios}
        for i in range(8):
            for p in prios:
                tid = f"p{p}-{i}-{uuid.uuid4().hex[:6]}"
                self.send(app, task_id=tid, priority=p, kwargs=self.kwargs())
                sent.append((step_of[p], tid))
        for s in set(step_of.values()):
            name = self.cq if s == 0 else f"{self.cq}{sep}{s}"
            self.assertEqual(self.r.llen(name), 8 * sum(1 for p in prios if step_of[p] == s),
                             f"list {name!r}")
        self.start_worker(SNAPWORKER_CONCURRENCY=1,
                          SNAPWORKER_CELERY_PRIORITY_SEP=c_escape(sep),
                          SNAPWORKER_CELERY_PRIORITY_STEPS=",".join(map(str, steps)))
        wait_for(lambda: all(self.state_of(t) == "SUCCESS" for _, t in sent), 60,
                 what="all priority tasks done")
        # Steps map onto snapworker's priorities by their position in thirds (issue 13:
        # docs/producers.md "Celery"): FIFO by step within a priority, and a higher priority
        # runs first except that every 4th pick serves the lowest waiting (no starvation).
        cls = {st: steps.index(st) * 3 // len(steps) for st in set(step_of.values())}
        got = self.started_order()
        self.assertEqual(sorted(got), sorted(t for _, t in sent))
        pos = {t: i for i, t in enumerate(got)}
        for c in set(cls.values()):
            mine = [(st, t) for st, t in sent if cls[st] == c]
            want = [t for _, t in sorted(mine, key=lambda x: x[0])]  # stable: FIFO in a step
            self.assertEqual([t for t in got if t in set(want)], want, f"class {c}")
        means = {c: sum(pos[t] for st, t in sent if cls[st] == c) /
                 sum(1 for st, _ in sent if cls[st] == c) for c in set(cls.values())}
        order = sorted(means)
        self.assertEqual(sorted(means, key=means.get), order, means)

    def test_kombu_default_priority_lists_are_taken_lowest_step_first(self):
        app = self.app()  # kombu defaults: sep \x06\x16, steps 0,3,6,9
        self.check_order(app, KOMBU_SEP, [0, 3, 6, 9], [9, 5, 0, 3])

    def test_onyx_priority_lists_are_taken_lowest_step_first(self):
        app = self.app({"sep": ":", "priority_steps": list(range(5)),
                        "queue_order_strategy": "priority"}, task_default_priority=2)
        self.check_order(app, ":", [0, 1, 2, 3, 4], [4, 2, 0, 1])


class Databases(CeleryCase):
    BROKER_DB = 15   # as Onyx: broker db 15, results db 14
    BACKEND_DB = 14

    def test_broker_and_result_backend_in_different_databases(self):
        self.start_worker()
        res = self.send(self.app(), kwargs=self.kwargs())
        self.assertEqual(res.get(timeout=30 * SLOW), {"ok": True})
        key = f"celery-task-meta-{res.id}"
        self.assertEqual(self.rb.exists(key), 1)
        r15 = redis.Redis.from_url(self.broker)
        r0 = redis.Redis.from_url(db_url(self.broker, 0))
        try:
            self.assertEqual(r15.exists(key), 0)
            self.assertEqual(r0.exists(key), 0)
            # the job stream lives in the broker's database, next to the Celery list
            self.assertEqual(r15.exists(self.key("events")), 1)
            self.assertEqual(r0.exists(self.key("events")), 0)
        finally:
            r15.close()
            r0.close()

    def test_a_revoke_reaches_the_worker_on_the_broker_databases_channel(self):
        # kombu names the channel after the broker's database: /15.celery.pidbox
        self.start_subscribed()
        app = self.app()
        res = self.send(app, countdown=3, kwargs=self.kwargs())
        wait_for(lambda: self.job_hash(res.id).get("status") == "queued", 20,
                 what="task parked for its countdown")
        app.control.revoke(res.id)
        self.assert_revoked_unrun(res)


class Revoke(CeleryCase):
    """app.control.revoke(id) is a pidbox broadcast; snapworker runs its cancel for the id."""

    def test_revoke_of_a_queued_task_means_it_never_runs_and_ends_revoked(self):
        self.start_subscribed()
        app = self.app()
        res = self.send(app, countdown=3, kwargs=self.kwargs())
        # parked for its ETA: the job hash exists and says queued
        wait_for(lambda: self.job_hash(res.id).get("status") == "queued", 20,
                 what="task parked for its countdown")
        app.control.revoke(res.id)
        wait_for(lambda: self.job_hash(res.id).get("status") == "cancelled", 10,
                 what="job cancelled by the revoke")
        self.assert_revoked_unrun(res)  # REVOKED when its ETA comes, as a Celery worker does
        self.assertEqual([e["status"] for e in self.events(res.id)], ["cancelled"])
        self.assertEqual(json.loads(self.job_hash(res.id)["error"])["code"], "cancelled")
        # the ingress and the control connection go on
        self.assertEqual(self.send(app, kwargs=self.kwargs()).get(timeout=30 * SLOW),
                         {"ok": True})

    def test_revoke_with_terminate_stops_a_running_task_well_before_it_would_finish(self):
        self.start_subscribed()
        app = self.app()
        res = self.send(app, kwargs=self.kwargs(sleep_ms=60000))  # noop checks its cancel flag
        self.wait_status(res.id, "running", timeout=20)
        t0 = time.time()
        app.control.revoke(res.id, terminate=True, signal="SIGKILL")
        with self.assertRaises(TaskRevokedError):
            res.get(timeout=30 * SLOW)
        self.assertLess(time.time() - t0, 10 * SLOW)  # the cancel poll runs every second
        self.wait_status(res.id, "cancelled")
        self.assertEqual(json.loads(self.job_hash(res.id)["error"])["code"], "cancelled")
        self.assertEqual([e["status"] for e in self.events(res.id)], ["started", "cancelled"])

    def test_a_revoke_sent_before_the_task_is_delivered_drops_it_when_it_arrives(self):
        self.start_subscribed()
        app = self.app()
        tid = new_uuid()
        app.control.revoke([tid, "not a valid/id"])  # the invalid one is logged and ignored
        wait_for(lambda: self.job_hash(tid).get("status") == "cancelled", 10,
                 what="unknown id cancelled ahead of its task")
        self.assertGreater(self.r.ttl(self.key("job:" + tid)), 0)
        res = self.send(app, task_id=tid, kwargs=self.kwargs())
        self.assert_revoked_unrun(res)
        wait_for(lambda: self.r.llen(self.cq) == 0 and self.r.xlen(self.key("stream")) == 0,
                 what="the revoked task's message acked")

    def test_malformed_broadcasts_and_other_methods_do_not_stop_the_control_connection(self):
        w = self.start_subscribed()
        app = self.app()
        held = self.send(app, countdown=4, kwargs=self.kwargs())
        wait_for(lambda: self.job_hash(held.id).get("status") == "queued", 20,
                 what="task parked for its countdown")
        chan = self.pidbox()
        self.r.publish(chan, b"\x00\xffnot json {")
        self.r.publish(chan, json.dumps({"body": "%%%", "content-type": "application/json",
                                         "properties": {"body_encoding": "base64"}}))
        self.r.publish(chan, json.dumps({"body": base64.b64encode(b"[1, 2]").decode(),
                                         "content-type": "application/json",
                                         "properties": {"body_encoding": "base64"}}))
        app.control.ping(timeout=0.3)                      # no reply: snapworker answers none
        app.control.rate_limit("snapworker.noop", "1/s")
        app.control.broadcast("revoke", arguments={})      # a revoke without task_id
        # a revoke addressed to other workers leaves our job alone ...
        app.control.revoke(held.id, destination=["celery@elsewhere"])
        app.control.revoke(held.id, pattern="celery@*", matcher="glob")
        time.sleep(0.5)
        self.assertEqual(self.job_hash(held.id).get("status"), "queued")
        # ... one naming this worker (snapworker@<host>) cancels it
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()[:63])
        app.control.revoke(held.id, destination=["celery@elsewhere", f"snapworker@{host}"])
        self.assert_revoked_unrun(held)
        self.assertTrue(w.alive())
        self.assertEqual(self.send(app, kwargs=self.kwargs()).get(timeout=30 * SLOW),
                         {"ok": True})
        log = w.text()
        self.assertEqual(log.count("msg=celery_control_invalid"), 4, log[-3000:])
        self.assertIn("msg=celery_revoked job=" + held.id, log)


class Robustness(CeleryCase):
    def test_kill9_while_moving_messages_every_sent_task_still_completes(self):
        app = self.app()
        n = 2000
        ids = [f"k9-{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]
        env = dict(SNAPWORKER_LEASE_S=2, SNAPWORKER_CONCURRENCY=4)
        done_sending = threading.Event()

        def sender():
            try:
                for tid in ids:
                    self.send(app, task_id=tid, kwargs=self.kwargs())
            finally:
                done_sending.set()

        th = threading.Thread(target=sender)
        w = self.start_worker(**env)
        th.start()
        kills = 0
        while not done_sending.is_set() or kills < 5:
            time.sleep(random.uniform(0.1, 0.4))
            w.kill9()
            kills += 1
            w = self.start_worker(**env)
        th.join()

        def remaining():
            states = self.rb.mget([f"celery-task-meta-{t}" for t in ids])
            return [t for t, s in zip(ids, states) if not s or json.loads(s)["status"] != "SUCCESS"]

        wait_for(lambda: not remaining(), 180, interval=0.5,
                 what="all 2000 tasks SUCCESS after kill -9s")
        for tid in ids:
            self.assertEqual(AsyncResult(tid, app=app).get(timeout=10), {"ok": True})
        self.assertEqual(self.r.llen(self.cq), 0)
        wait_for(lambda: self.r.xlen(self.key("stream")) == 0, 60, what="stream emptied")

    def test_malformed_list_entries_do_not_stop_the_ingress_and_fail_when_an_id_is_known(self):
        app = self.app()
        v1 = self.app(task_protocol=1)
        bad = {}  # task id -> expected exc_type
        # not JSON at all, no id: nothing to answer, must simply be skipped
        self.r.lpush(self.cq, b"\x00\xffnot json {")
        self.r.lpush(self.cq, json.dumps({"headers": {}, "body": ""}))
        # wrong body encoding
        env = json.loads(self.raw_message(app, task_id="bad-enc-" + new_uuid(),
                                          kwargs=self.kwargs()))
        env["properties"]["body_encoding"] = "rot13"
        bad[env["headers"]["id"]] = "InvalidPayload"
        self.r.lpush(self.cq, json.dumps(env))
        # body that is not base64
        env = json.loads(self.raw_message(app, task_id="bad-b64-" + new_uuid(),
                                          kwargs=self.kwargs()))
        env["body"] = "%%%"
        bad[env["headers"]["id"]] = "InvalidPayload"
        self.r.lpush(self.cq, json.dumps(env))
        # protocol v1 (task_protocol=1): the id is in the body
        tid = "v1-" + new_uuid()
        self.send(v1, task_id=tid, kwargs=self.kwargs())
        bad[tid] = "InvalidPayload"
        # pickle serializer
        tid = "pickle-" + new_uuid()
        self.send(app, task_id=tid, kwargs=self.kwargs(), serializer="pickle")
        bad[tid] = "InvalidPayload"
        # positional arguments
        tid = "pos-" + new_uuid()
        self.send(app, task_id=tid, args=[1, 2])
        bad[tid] = "InvalidPayload"
        # invalid sandbox id
        tid = "badsb-" + new_uuid()
        self.send(app, task_id=tid, kwargs={"sandbox_id": "../..", "session_id": new_uuid()})
        bad[tid] = "InvalidPayload"
        # an unknown task name
        unknown = self.send(app, "snapworker.bake", kwargs=self.kwargs())
        good = self.send(app, kwargs=self.kwargs())

        w = self.start_worker()
        self.assertEqual(good.get(timeout=30 * SLOW), {"ok": True})
        with self.assertRaises(NotRegistered):
            unknown.get(timeout=30 * SLOW)
        self.assertEqual(self.meta(unknown.id)["result"]["exc_module"], "celery.exceptions")
        for tid, exc in bad.items():
            with self.assertRaises(Exception) as cm:
                AsyncResult(tid, app=app).get(timeout=30 * SLOW)
            self.assertEqual(type(cm.exception).__name__, exc, tid)
            m = self.meta(tid)
            self.assertEqual(m["status"], "FAILURE")
            self.assertEqual(m["result"]["exc_module"], "snapworker")
            self.assertTrue(m["result"]["exc_message"][0])
        self.assertTrue(w.alive())
        wait_for(lambda: self.r.llen(self.cq) == 0, what="list drained")
        # and the ingress still takes new work
        self.assertEqual(self.send(app, kwargs=self.kwargs()).get(timeout=30 * SLOW),
                         {"ok": True})


class Hardening(CeleryCase):
    """issue 10 items 4 and 8: secrets in Celery results, messages over the size limit."""

    def test_an_api_key_sent_through_celery_is_in_no_result_event_log_or_cli_output(self):
        key = "sk-live-CELERYREDACT-42"
        w = self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        res = self.send(self.app(), "snapworker.regenerate",
                        kwargs={"sandbox_id": sb, "session_id": ss,
                                "llm_config": {"provider": "openai", "api_key": key}})
        with self.assertRaises(Exception) as cm:
            res.get(timeout=30 * SLOW)
        self.assertEqual(type(cm.exception).__name__, "WorkspaceMissing")
        self.wait_status(res.id, "dead")
        raw_meta = self.rb.get(f"celery-task-meta-{res.id}")
        self.assertNotIn("CELERYREDACT", raw_meta)
        self.assertNotIn("kwargs", json.loads(raw_meta))  # no extended meta carrying the args
        for what, text in {"dead list": self.cli("dead", "list", check=True).stdout,
                           "job": self.cli("job", res.id, check=True).stdout,
                           "job hash": json.dumps(self.job_hash(res.id)),
                           "events": json.dumps([f for _i, f in self.r.xrange(self.key("events"))]),
                           "worker log": w.text()}.items():
            self.assertNotIn("CELERYREDACT", text, what)
        # the dead entry keeps the canonical payload whole for `dead requeue`
        self.assertIn(key, self.dead_entries()[0]["job"])

    def test_a_message_over_the_size_limit_gets_failure_and_a_dead_entry(self):
        w = self.start_worker()
        app = self.app()
        tid = "big-" + new_uuid()
        before = self.rb.get(f"celery-task-meta-{tid}")
        self.assertIsNone(before)
        # ~6.7 MiB of base64 body: over the 4 MiB limit of a kombu message
        res = self.send(app, task_id=tid, kwargs=self.kwargs(pad="x" * (5 * 1024 * 1024)))
        with self.assertRaises(Exception) as cm:
            res.get(timeout=60 * SLOW)
        self.assertEqual(type(cm.exception).__name__, "InvalidPayload")
        m = self.meta(tid)
        self.assertEqual(m["status"], "FAILURE")
        self.assertEqual(m["result"]["exc_module"], "snapworker")
        self.assertIn("over the 4 MiB limit", m["result"]["exc_message"][0])
        # the result is written before the finish script adds the dead entry
        dead = wait_for(lambda: [d for d in self.dead_entries() if d["job_id"] == tid],
                        what="the dead entry")
        self.assertEqual(len(dead), 1)
        self.assertEqual(json.loads(dead[0]["error"])["code"], "invalid_payload")
        self.assertLessEqual(len(dead[0]["job"]), 1024 * 1024)
        self.assertEqual(self.job_hash(tid).get("status"), "dead")
        wait_for(lambda: self.r.xlen(self.key("stream")) == 0, what="stream emptied")
        # and the ingress goes on
        self.assertEqual(self.send(app, kwargs=self.kwargs()).get(timeout=30 * SLOW), {"ok": True})
        self.assertTrue(w.alive())


class Jobs(CeleryCase):
    """snapshot and restore through Celery, with PostgreSQL and the file:// store."""
    SERVICES = ("redis", "postgres")

    def setUp(self):
        super().setUp()
        port = self.services.env["PG_PORT"]
        self.dbname = "c_" + uuid.uuid4().hex[:16]
        subprocess.run([f"{PGBIN}/psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d",
                        "postgres", "-qAt", "-c", f"CREATE DATABASE {self.dbname}"],
                       check=True, capture_output=True, timeout=60)
        self.dburl = f"postgresql://postgres@127.0.0.1:{port}/{self.dbname}"
        p = self.cli("migrate")
        self.assertEqual(p.returncode, 0, p.stderr)

    def env(self, **extra):
        extra.setdefault("DATABASE_URL", getattr(self, "dburl", ""))
        return super().env(**extra)

    def test_snapshot_then_restore_through_celery_return_their_results(self):
        self.start_worker()
        app = self.app()
        sb, ss = new_uuid(), new_uuid()
        sdir = os.path.join(self.tmp, "sandboxes", sb, "sessions", ss)
        os.makedirs(os.path.join(sdir, "outputs", "web"))
        os.makedirs(os.path.join(sdir, "attachments"))
        with open(os.path.join(sdir, "outputs", "web", "page.tsx"), "w") as f:
            f.write("export default function P() { return null }\n")
        snap = self.send(app, "snapworker.snapshot",
                         kwargs={"sandbox_id": sb, "session_id": ss}).get(timeout=60 * SLOW)
        self.assertEqual(snap["storage_path"],
                         f"public/snapshots/{ss}/{snap['snapshot_id']}.tar.gz")
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "store", snap["storage_path"])))
        shutil.rmtree(sdir)
        # Onyx-style call: the job's arguments as plain kwargs
        rest = self.send(app, "snapworker.restore",
                         kwargs={"sandbox_id": sb, "session_id": ss, "use_demo_data": False,
                                 "start_webapp": False}).get(timeout=60 * SLOW)
        self.assertEqual(rest["snapshot_storage_path"], snap["storage_path"])
        self.assertFalse(rest["fresh"])
        self.assertFalse(rest["skipped"])
        with open(os.path.join(sdir, "outputs", "web", "page.tsx")) as f:
            self.assertIn("export default", f.read())
