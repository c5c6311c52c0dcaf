"""Sandbox lifecycle (issue 12): sleep, sweep, prune, the scheduler, Onyx's Celery tasks and
per-tenant schemas, on real PostgreSQL and Redis with the file:// store and the local backend.

Each test gets its own database (migrated with `snapworker migrate`), sandbox base folder,
store root and queue. Periods are shortened with the test knobs SNAPWORKER_SCHEDULE_PERIOD_S,
SNAPWORKER_SCHEDULE_LOCK_TTL_S and SNAPWORKER_SNAPSHOT_RETENTION_S (docs/operations.md); the
scheduler's fence is reached with the test hook SNAPWORKER_TEST_STOP_BEFORE_ENQUEUE
(docs/lifecycle.md "Test hooks")."""
import json
import os
import signal
import subprocess
import time
import uuid

from celery import Celery
from celery.exceptions import NotRegistered

from harness import SLOW, SWTestCase, Worker, new_uuid, proc_state, wait_for, with_db
import jobs_tree as jt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TERMINAL = ("succeeded", "dead")


# run under ASan too (scripts/run-integration --fast)
FAST_TESTS = [
    "test_sleep_snapshots_the_sessions_clears_ports_and_marks_everything_asleep",
    "test_prune_keeps_the_latest_per_session_and_removes_older_rows_objects_and_sidecars",
    "test_an_unknown_tenant_schema_is_a_permanent_database_error",
]


class LifecycleCase(SWTestCase):
    SERVICES = ("redis", "postgres")

    def setUp(self):
        super().setUp()
        self.pg_port = self.services.env["PG_PORT"]
        self.dbname = "l_" + uuid.uuid4().hex[:16]
        self.psql("CREATE DATABASE " + self.dbname, db="postgres")
        self.dburl = f"postgresql://postgres@127.0.0.1:{self.pg_port}/{self.dbname}"
        self.base = os.path.join(self.tmp, "sandboxes")
        self.store_root = os.path.join(self.tmp, "store")
        p = self.cli("migrate")
        self.assertEqual(p.returncode, 0, p.stderr)

    # ---- helpers --------------------------------------------------------------
    def env(self, **extra):
        extra.setdefault("DATABASE_URL", self.dburl)
        extra.setdefault("SNAPWORKER_RETRY_BASE_MS", 100)
        extra.setdefault("SNAPWORKER_RETRY_MAX_MS", 500)
        extra.setdefault("SNAPWORKER_STATE_DIR", os.path.join(self.tmp, "worker-state"))
        extra.setdefault("SNAPWORKER_WEBAPP_WAIT_S", 0)
        return super().env(**extra)

    def psql(self, sql, db=None):
        p = subprocess.run([f"{jt.PGBIN}/psql", "-h", "127.0.0.1", "-p", self.pg_port, "-U",
                            "postgres", "-d", db or self.dbname, "-qAt", "-v", "ON_ERROR_STOP=1",
                            "-c", sql], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def job(self, type_, tenant="public", args=None, **ids):
        p = {"v": 1, "id": ids.pop("id", new_uuid()), "type": type_, "tenant_id": tenant,
             "args": args or {}}
        p.update(ids)
        self.xadd(p)
        return p["id"]

    def finish(self, jid, timeout=60):
        wait_for(lambda: self.job_hash(jid).get("status") in TERMINAL, timeout,
                 what=f"job {jid} to end (now {self.job_hash(jid)})")
        return self.job_hash(jid)

    def ok(self, jid, timeout=60):
        h = self.finish(jid, timeout)
        self.assertEqual(h["status"], "succeeded", h)
        return json.loads(h["result"])

    def sandbox(self, status="running", heartbeat="now()", created="now()", schema=None):
        sb, user = new_uuid(), new_uuid()
        t = f'"{schema}".' if schema else ""
        self.psql(f"INSERT INTO {t}sandbox (id, user_id, status, last_heartbeat, created_at) "
                  f"VALUES ('{sb}', '{user}', '{status}', {heartbeat}, {created})")
        return sb, user

    def session(self, user, port, sb=None, outputs=True, sid=None, schema=None):
        ss = sid or new_uuid()
        t = f'"{schema}".' if schema else ""
        self.psql(f"INSERT INTO {t}build_session (id, user_id, status, nextjs_port) "
                  f"VALUES ('{ss}', '{user}', 'active', {port if port else 'NULL'})")
        if sb:
            d = os.path.join(self.base, sb, "sessions", ss)
            os.makedirs(d)
            if outputs:
                os.makedirs(os.path.join(d, "outputs", "web", "node_modules"))
                with open(os.path.join(d, "outputs", "report.md"), "w") as f:
                    f.write("report of " + ss)
                with open(os.path.join(d, "outputs", "web", "node_modules", "big.js"), "w") as f:
                    f.write("x" * 1000)
        return ss

    def three_sessions(self):
        sb, user = self.sandbox()
        s1 = self.session(user, 3011, sb)
        s2 = self.session(user, 3012, sb)
        s3 = self.session(user, 3013, sb, outputs=False)
        return sb, user, [s1, s2, s3]

    def rows(self, sql):
        out = self.psql(sql)
        return [r.split("|") for r in out.splitlines()] if out else []

    def old_snapshots(self, sess, ages_days, tenant="public"):
        """One stored object (with its sidecar) and row per age, in the given order; the keys."""
        keys = []
        for days in ages_days:
            sid = new_uuid()
            key = f"{tenant}/snapshots/{sess}/{sid}.tar.gz"
            jt.write_object(self.store_root, key, b"snapshot " + key.encode())
            self.psql(f"INSERT INTO snapshot (id, session_id, storage_path, size_bytes, created_at) "
                      f"VALUES ('{sid}', '{sess}', '{key}', 1, now() - interval '{days} days')")
            keys.append(key)
        return keys

    def celery_worker(self, **extra):
        """A worker taking Celery tasks from queues snapworker and sandbox (Onyx's beat), and
        a Celery 5 client app for them (the caller closes it)."""
        base = self.services.env["REDIS_URL"]
        backend = with_db(base, 1)  # rediss:// keeps its TLS options
        self.start_worker(CELERY_BROKER_URL=base, CELERY_RESULT_BACKEND=backend,
                          SNAPWORKER_CELERY_QUEUES="snapworker,sandbox", **extra)
        return Celery("onyx", broker=base, backend=backend)

    def beat_task(self, name, **extra):
        """Onyx's beat sending task 'name' for tenant public on queue sandbox to a Celery
        worker (celery_worker(**extra)): the AsyncResult and its value."""
        app = self.celery_worker(**extra)
        try:
            r = app.send_task(name, kwargs={"tenant_id": "public"}, queue="sandbox")
            return r, r.get(timeout=60 * SLOW)
        finally:
            app.close()

    # ---- sleep ----------------------------------------------------------------
    def test_sleep_snapshots_the_sessions_clears_ports_and_marks_everything_asleep(self):
        sb, user, (s1, s2, s3) = self.three_sessions()
        other_sb, other_user = self.sandbox()
        other = self.session(other_user, 3020)
        self.start_worker(SNAPWORKER_SNAPSHOT_EXCLUDE="outputs/web/node_modules")
        res = self.ok(self.job("sleep", sandbox_id=sb))
        self.assertEqual(res["sessions"], 3)
        self.assertEqual(sorted(s["storage_path"].split("/")[2] for s in res["snapshots"]),
                         sorted([s1, s2]))
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{sb}'"), "sleeping")
        self.assertEqual(self.rows(f"SELECT id, status, coalesce(nextjs_port::text, 'null') "
                                   f"FROM build_session WHERE user_id = '{user}' ORDER BY id"),
                         sorted([[s, "idle", "null"] for s in (s1, s2, s3)]))
        # another user's session and sandbox are untouched
        self.assertEqual(self.rows(f"SELECT status, nextjs_port FROM build_session "
                                   f"WHERE id = '{other}'"), [["active", "3020"]])
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{other_sb}'"),
                         "running")
        snaps = self.rows("SELECT session_id, storage_path, size_bytes FROM snapshot "
                          "ORDER BY session_id")
        self.assertEqual(sorted(r[0] for r in snaps), sorted([s1, s2]))
        for sess, path, size in snaps:
            obj = os.path.join(self.store_root, path)
            self.assertEqual(os.path.getsize(obj), int(size))
            self.assertTrue(os.path.exists(obj + ".sha256"))
        # restorable: outputs/ gone, restore brings it back (without the excluded folder)
        d1 = os.path.join(self.base, sb, "sessions", s1)
        subprocess.run(["rm", "-rf", os.path.join(d1, "outputs")], check=True)
        self.ok(self.job("restore", sandbox_id=sb, session_id=s1,
                         args={"start_webapp": False}))
        with open(os.path.join(d1, "outputs", "report.md")) as f:
            self.assertEqual(f.read(), "report of " + s1)
        self.assertFalse(os.path.exists(os.path.join(d1, "outputs", "web", "node_modules")))
        # a second sleep of the (now sleeping) sandbox changes nothing
        before = self.rows("SELECT id, session_id, storage_path FROM snapshot ORDER BY id")
        self.assertEqual(self.ok(self.job("sleep", sandbox_id=sb)),
                         {"skipped": True, "status": "sleeping"})
        self.assertEqual(self.rows("SELECT id, session_id, storage_path FROM snapshot ORDER BY id"),
                         before)

    def test_a_sleep_that_fails_at_the_store_leaves_every_row_as_it_was_and_a_rerun_converges(self):
        sb, user, sessions = self.three_sessions()
        before = self.rows("SELECT id, status, coalesce(nextjs_port::text, 'null') "
                           "FROM build_session ORDER BY id")
        # the store root is a regular file: every object write fails
        bad = os.path.join(self.tmp, "not-a-folder")
        with open(bad, "w") as f:
            f.write("x")
        w = self.start_worker(SNAPWORKER_STORE="file://" + bad)
        h = self.finish(self.job("sleep", sandbox_id=sb, max_attempts=2))
        self.assertEqual(h["status"], "dead", h)
        self.assertEqual(json.loads(h["error"])["code"], "storage_error", h)
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{sb}'"), "running")
        self.assertEqual(self.rows("SELECT id, status, coalesce(nextjs_port::text, 'null') "
                                   "FROM build_session ORDER BY id"), before)
        self.assertEqual(self.psql("SELECT count(*) FROM snapshot"), "0")
        w.stop()
        # with the store back, two sleeps end in one state
        self.start_worker()
        first = self.ok(self.job("sleep", sandbox_id=sb))
        second = self.ok(self.job("sleep", sandbox_id=sb))
        self.assertEqual(len(first["snapshots"]), 2)
        self.assertTrue(second["skipped"])
        self.assertEqual(self.psql("SELECT count(*) FROM snapshot"), "2")
        self.assertEqual(self.psql(f"SELECT count(*) FROM build_session WHERE user_id = '{user}' "
                                   f"AND status = 'idle' AND nextjs_port IS NULL"), "3")

    # ---- sweep ----------------------------------------------------------------
    def test_sweep_enqueues_a_sleep_for_exactly_the_idle_sandboxes_once_a_minute(self):
        old = "now() - interval '2 hours'"
        idle_hb, _ = self.sandbox(heartbeat=old)
        fresh, _ = self.sandbox(heartbeat="now()")
        idle_null, _ = self.sandbox(heartbeat="NULL", created=old)
        young_null, _ = self.sandbox(heartbeat="NULL", created="now()")
        asleep, _ = self.sandbox(status="sleeping", heartbeat=old)
        self.start_worker(SANDBOX_IDLE_TIMEOUT_SECONDS=3600)
        minute = int(time.time()) // 60
        res = self.ok(self.job("sweep"))
        if res["minute"] != minute:  # crossed a minute boundary: the ids say which
            minute = res["minute"]
        self.assertEqual(res["idle"], 2)
        self.assertEqual(sorted(res["enqueued"]),
                         sorted(f"sleep:{s}:{minute}" for s in (idle_hb, idle_null)))
        again = self.ok(self.job("sweep"))
        if again["minute"] == minute:
            self.assertEqual(again["enqueued"], [])
        for s in (idle_hb, idle_null):
            self.ok(f"sleep:{s}:{minute}")
            self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{s}'"), "sleeping")
        for s in (fresh, young_null):
            self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{s}'"), "running")
        sleeps = [f for _i, f in self.r.xrange(self.key("stream"))
                  if json.loads(f["job"]).get("type") == "sleep"]
        self.assertLessEqual(len(sleeps), 2)

    # ---- scheduler ------------------------------------------------------------
    def schedulers(self, n, **extra):
        # two tenants need tenant schemas (docs/lifecycle.md "Tenants without schemas"); the
        # scheduler itself never touches the database
        env = dict(SNAPWORKER_SCHEDULE_PERIOD_S=1, SNAPWORKER_SCHEDULE_LOCK_TTL_S=2,
                   SNAPWORKER_TENANTS="public,acme", SNAPWORKER_TENANT_SCHEMAS=1)
        env.update(extra)
        out = []
        for i in range(n):
            s = Worker(self.env(**env), args=("schedule",), name=f"sched{len(self.workers)}")
            self.workers.append(s)
            out.append(s)
        return out

    def lock_pid(self):
        """The pid in the scheduler lock's value "<epoch>:<host>:<pid>:<rand>", or None."""
        v = self.r.get(self.key("schedule:lock"))
        return int(v.split(":")[-2]) if v else None

    def sweep_slots(self):
        slots = {}
        for _i, f in self.r.xrange(self.key("stream")):
            p = json.loads(f["job"])
            if p["type"] == "sweep":
                slots.setdefault(p["id"], 0)
                slots[p["id"]] += 1
        return slots

    def test_two_schedulers_enqueue_each_sweep_once_per_period_and_hand_over_when_killed(self):
        a, b = self.schedulers(2)
        time.sleep(4.5)
        slots = self.sweep_slots()
        self.assertTrue(all(v == 1 for v in slots.values()), slots)
        for tenant in ("public", "acme"):
            nums = sorted(int(k.split(":")[2]) for k in slots if k.split(":")[1] == tenant)
            self.assertGreaterEqual(len(nums), 3, slots)
            self.assertEqual(nums, list(range(nums[0], nums[0] + len(nums))), slots)
        prunes = [json.loads(f["job"])["id"] for _i, f in self.r.xrange(self.key("stream"))
                  if json.loads(f["job"])["type"] == "prune"]
        self.assertEqual(sorted(prunes), sorted(set(prunes)))
        self.assertEqual(len(prunes), 2)
        # kill -9 the leader: the other one leads within the lock TTL (2 s) and the sweeps go on
        holder = self.r.get(self.key("schedule:lock"))
        leader = a if holder.split(":")[-2] == str(a.proc.pid) else b
        other = b if leader is a else a
        leader.kill9()
        killed = time.time()
        wait_for(lambda: (self.r.get(self.key("schedule:lock")) or "").split(":")[-2:-1] ==
                 [str(other.proc.pid)], 5, what="the other scheduler to take the lock")
        self.assertLess(time.time() - killed, 2.0 + 1.5)
        n_before = max(int(k.split(":")[2]) for k in self.sweep_slots())
        wait_for(lambda: max(int(k.split(":")[2]) for k in self.sweep_slots()) >= n_before + 2, 6,
                 what="sweeps from the new leader")
        self.assertTrue(all(v == 1 for v in self.sweep_slots().values()), self.sweep_slots())
        self.assertIn("schedule_leader", other.text())

    def test_a_leader_paused_before_its_enqueue_is_fenced_out_after_another_took_over(self):
        # Sweep period 6 s, lock TTL 2 s. A stops itself (the test hook) right before it
        # enqueues period N, i.e. after the tick that renewed its lock. The lock lapses, B takes
        # over still within period N and enqueues it; then A resumes into its stale enqueue.
        # The ids alone would absorb that one; the fence must refuse it before the id is looked
        # at, so that a leader paused across periods cannot add a period nobody else covers.
        period = 6
        n = int(time.time()) // period + 1
        stop_at = f"sweep:public:{n}"
        a, = self.schedulers(1, SNAPWORKER_SCHEDULE_PERIOD_S=period,
                             SNAPWORKER_TEST_STOP_BEFORE_ENQUEUE=stop_at)
        wait_for(lambda: self.lock_pid() == a.proc.pid, 10, what="A to lead")
        token_a = self.r.get(self.key("schedule:lock"))
        b, = self.schedulers(1, SNAPWORKER_SCHEDULE_PERIOD_S=period)  # no hook
        wait_for(lambda: proc_state(a.proc.pid) == "T", period + 5,
                 what=f"A to stop itself before enqueueing {stop_at}")
        self.assertEqual(self.r.get(self.key("schedule:lock")), token_a,
                         "A stopped between renewing its lock and the enqueue")
        self.assertFalse(self.job_hash(stop_at), "A stopped before its enqueue")
        wait_for(lambda: self.lock_pid() == b.proc.pid, 5, what="B to take the lapsed lock")
        token_b = self.r.get(self.key("schedule:lock"))
        self.assertGreater(int(token_b.split(":")[0]), int(token_a.split(":")[0]))
        for tenant in ("public", "acme"):
            wait_for(lambda: self.job_hash(f"sweep:{tenant}:{n}"), 5,
                     what=f"B to enqueue sweep:{tenant}:{n}")
        self.assertIn(f"msg=schedule_enqueued job_id={stop_at}", b.text())
        os.kill(a.proc.pid, signal.SIGCONT)
        wait_for(lambda: "msg=schedule_fence_lost" in a.text(), 10,
                 what="the resumed A to meet the fence")
        fence = [l for l in a.text().splitlines() if "msg=schedule_fence_lost" in l]
        self.assertEqual(len(fence), 1, fence)
        self.assertIn(f"job_id={stop_at} token={token_a} ", fence[0])
        self.assertIn("scheduler lock no longer ours", fence[0])
        time.sleep(1.5)  # A's next ticks: it follows and enqueues nothing more
        self.assertTrue(a.alive())
        self.assertEqual(self.lock_pid(), b.proc.pid)
        mine = [l.split("job_id=")[1].split()[0] for l in a.text().splitlines()
                if "msg=schedule_enqueued" in l]
        self.assertTrue(mine, "A led and enqueued before its pause")
        self.assertTrue(all(not j.startswith("sweep:") or int(j.split(":")[2]) < n for j in mine),
                        mine)
        slots = self.sweep_slots()
        self.assertTrue(all(v == 1 for v in slots.values()), slots)
        for tenant in ("public", "acme"):
            self.assertEqual(slots.get(f"sweep:{tenant}:{n}"), 1, slots)
            self.assertEqual(self.job_hash(f"sweep:{tenant}:{n}")["status"], "queued")
        prunes = [json.loads(f["job"])["id"] for _i, f in self.r.xrange(self.key("stream"))
                  if json.loads(f["job"])["type"] == "prune"]
        self.assertEqual(sorted(prunes), sorted(set(prunes)))

    def test_a_worker_with_schedule_on_enqueues_and_runs_sweeps_and_prunes_each_period_once(self):
        # SNAPWORKER_SCHEDULE=1 inside `run`: an idle sandbox to sleep, and a session with two
        # old snapshots, one of which the prune removes. A worker deletes the stream entries of
        # the jobs it ended, so the jobs are counted by their hashes (deterministic ids) and the
        # enqueues by the schedulers' own log lines (one per job a scheduler added).
        idle, user = self.sandbox(heartbeat="now() - interval '2 hours'")
        self.session(user, 3041, idle)
        busy, _ = self.sandbox()
        _sb, other = self.sandbox()
        pruned_session = self.session(other, None)
        old = self.old_snapshots(pruned_session, (10, 20))
        env = dict(SNAPWORKER_SCHEDULE=1, SNAPWORKER_SCHEDULE_PERIOD_S=1,
                   SNAPWORKER_SCHEDULE_LOCK_TTL_S=10, SANDBOX_IDLE_TIMEOUT_SECONDS=3600,
                   SNAPWORKER_SNAPSHOT_RETENTION_DAYS=5, SNAPWORKER_SNAPSHOT_KEEP=1)
        a = self.start_worker(**env)

        def ids(type_):
            """The ids of the job hashes of 'type_', sweeps in period order."""
            out = [k.split(":job:", 1)[1] for k in self.r.scan_iter(self.key(f"job:{type_}:*"))]
            return sorted(out, key=lambda j: int(j.split(":")[2]) if type_ == "sweep" else j)

        def enqueued(*ws):
            return [l.split("job_id=")[1].split()[0] for w in ws for l in w.text().splitlines()
                    if "msg=schedule_enqueued" in l]

        def ran_by(jid, w):
            return self.job_hash(jid).get("worker", "").split(":")[-2] == str(w.proc.pid)

        # the prune of today and the sweeps of consecutive seconds, all run by this worker
        prune = wait_for(lambda: ids("prune"), 10, what="the scheduled prune")[0]
        self.assertEqual(prune, f"prune:public:{int(time.time()) // 86400}")
        res = self.ok(prune)
        self.assertEqual((res["rows"], res["objects"]), (1, 1), res)
        # that session's rows only: the sweeps' sleep of the idle sandbox may have added one
        self.assertEqual(self.rows("SELECT storage_path FROM snapshot WHERE session_id = "
                                   f"'{pruned_session}'"), [[old[0]]])
        self.assertFalse(os.path.exists(os.path.join(self.store_root, old[1])))
        self.assertTrue(ran_by(prune, a), self.job_hash(prune))
        wait_for(lambda: len(ids("sweep")) >= 3, 10, what="three scheduled sweeps")
        sweeps = ids("sweep")
        for jid in sweeps[:3]:
            self.ok(jid)
            self.assertTrue(ran_by(jid, a), self.job_hash(jid))
        nums = [int(j.split(":")[2]) for j in sweeps]
        self.assertEqual(nums, list(range(nums[0], nums[0] + len(nums))), sweeps)
        # the first sweep found the idle sandbox; its sleep ran here too
        sleeps = wait_for(lambda: ids("sleep"), 10, what="the sleep a sweep enqueued")
        self.assertEqual({j.split(":")[1] for j in sleeps}, {idle}, sleeps)
        self.ok(sleeps[0])
        self.assertTrue(ran_by(sleeps[0], a))
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{idle}'"), "sleeping")
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{busy}'"), "running")

        # a second such worker: still one sweep per period, one prune per day
        self.xadd(self.payload(id="long", args={"sleep_ms": 8000}))  # taken by A, alone so far
        self.wait_status("long", "running")
        self.assertTrue(ran_by("long", a))
        b = self.start_worker(**env)
        time.sleep(2.5)
        self.assertEqual(self.lock_pid(), a.proc.pid, "A still leads")
        self.assertNotIn("schedule_leader", b.text())
        self.assertEqual(enqueued(b), [])
        # A drains (its noop runs 8 s more) and hands the lock over at once, not after its
        # job or the lock TTL (10 s)
        a.proc.send_signal(signal.SIGTERM)
        termed = time.time()
        wait_for(lambda: self.lock_pid() == b.proc.pid, 5, what="B to lead")
        self.assertLess(time.time() - termed, 3.0)
        self.assertTrue(a.alive(), "A is still draining its job")
        n_before = int(ids("sweep")[-1].split(":")[2])
        wait_for(lambda: int(ids("sweep")[-1].split(":")[2]) >= n_before + 2, 6,
                 what="sweeps from B")
        last = ids("sweep")[-1]
        self.ok(last)
        self.assertTrue(ran_by(last, b), self.job_hash(last))
        self.assertEqual(a.proc.wait(timeout=30 * SLOW), 0)  # a second SIGTERM would cut it
        self.assertEqual(self.job_hash("long")["status"], "succeeded")
        # every scheduled job was added once, by one of the two, and there is no other
        adds = enqueued(a, b)
        self.assertEqual(sorted(adds), sorted(set(adds)), adds)
        self.assertEqual(sorted(adds), sorted(ids("sweep") + ids("prune")))
        self.assertEqual(ids("prune"), [prune], "B's first tick found today's prune known")
        self.assertIn(prune, enqueued(a))
        for jid in ids("sweep") + ids("prune"):
            self.assertEqual(self.finish(jid)["attempt"], "1", jid)
        sleeps = ids("sleep")  # one per minute at most, and only the idle sandbox's
        self.assertEqual({j.split(":")[1] for j in sleeps}, {idle}, sleeps)

    def test_several_tenants_without_tenant_schemas_are_refused_at_start(self):
        for args in (("schedule",), ("run",)):
            p = self.cli(*args, SNAPWORKER_TENANTS="public,acme", SNAPWORKER_SCHEDULE=1)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("SNAPWORKER_TENANTS: expected one tenant unless "
                          "SNAPWORKER_TENANT_SCHEMAS=1", p.stderr)
            self.assertIn("'public,acme'", p.stderr)

    # ---- prune ----------------------------------------------------------------
    def test_prune_keeps_the_latest_per_session_and_removes_older_rows_objects_and_sidecars(self):
        _sb, user = self.sandbox()
        a, b, c = (self.session(user, None) for _ in range(3))
        ages = {a: [10, 20, 30], b: [40], c: [0, 50]}  # days old
        keep, gone = [], []
        for sess, days in ages.items():
            for i, d in enumerate(sorted(days)):
                sid = new_uuid()
                key = f"public/snapshots/{sess}/{sid}.tar.gz"
                jt.write_object(self.store_root, key, b"snapshot " + key.encode())
                self.psql(f"INSERT INTO snapshot (id, session_id, storage_path, size_bytes, "
                          f"created_at) VALUES ('{sid}', '{sess}', '{key}', 1, "
                          f"now() - interval '{d} days')")
                (keep if i == 0 or d < 5 else gone).append(key)
        # another tenant's old rows are not this prune's
        other = f"acme/snapshots/{b}/{new_uuid()}.tar.gz"
        jt.write_object(self.store_root, other, b"acme")
        self.psql(f"INSERT INTO snapshot (id, session_id, storage_path, created_at) VALUES "
                  f"('{new_uuid()}', '{b}', '{other}', now() - interval '90 days')")
        self.start_worker(SNAPWORKER_SNAPSHOT_RETENTION_DAYS=5, SNAPWORKER_SNAPSHOT_KEEP=1)
        res = self.ok(self.job("prune"))
        self.assertEqual((res["rows"], res["objects"]), (len(gone), len(gone)))
        left = sorted(r[0] for r in self.rows("SELECT storage_path FROM snapshot"))
        self.assertEqual(left, sorted(keep + [other]))
        for k in gone:
            self.assertFalse(os.path.exists(os.path.join(self.store_root, k)), k)
            self.assertFalse(os.path.exists(os.path.join(self.store_root, k + ".sha256")), k)
        for k in keep + [other]:
            self.assertTrue(os.path.exists(os.path.join(self.store_root, k)), k)
            self.assertTrue(os.path.exists(os.path.join(self.store_root, k + ".sha256")), k)
        self.assertEqual(self.ok(self.job("prune"))["rows"], 0)

    # ---- Celery ---------------------------------------------------------------
    def test_onyx_celery_cleanup_idle_sandboxes_drives_a_sweep_end_to_end(self):
        idle, user = self.sandbox(heartbeat="now() - interval '2 hours'")
        self.session(user, 3031, idle)
        _r, out = self.beat_task("cleanup_idle_sandboxes", SANDBOX_IDLE_TIMEOUT_SECONDS=3600)
        self.assertEqual(out["idle"], 1)
        self.assertEqual(len(out["enqueued"]), 1)
        self.ok(out["enqueued"][0])
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{idle}'"), "sleeping")
        self.assertEqual(self.psql("SELECT count(*) FROM snapshot"), "1")

    def test_onyx_celery_cleanup_old_snapshots_drives_a_prune_end_to_end(self):
        _sb, user = self.sandbox()
        sess = self.session(user, None)
        keep, *gone = self.old_snapshots(sess, (1, 10, 20))
        acme = self.old_snapshots(sess, (30,), tenant="acme")  # not this tenant's
        r, out = self.beat_task("cleanup_old_snapshots", SNAPWORKER_SNAPSHOT_RETENTION_DAYS=5,
                                SNAPWORKER_SNAPSHOT_KEEP=1)
        self.assertEqual(out, {"rows": 2, "objects": 2, "retention_s": 5 * 86400, "keep": 1})
        h = self.job_hash(r.id)
        self.assertEqual((h["type"], h["status"]), ("prune", "succeeded"), h)
        self.assertEqual(sorted(x[0] for x in self.rows("SELECT storage_path FROM snapshot")),
                         sorted([keep] + acme))
        for k in gone:
            self.assertFalse(os.path.exists(os.path.join(self.store_root, k)), k)
            self.assertFalse(os.path.exists(os.path.join(self.store_root, k + ".sha256")), k)
        for k in [keep] + acme:
            self.assertTrue(os.path.exists(os.path.join(self.store_root, k)), k)

    def test_a_custom_celery_task_map_replaces_the_default_names(self):
        idle, user = self.sandbox(heartbeat="now() - interval '2 hours'")
        self.session(user, 3032, idle)
        keep, gone = self.old_snapshots(self.session(user, None), (1, 20))
        app = self.celery_worker(
            SNAPWORKER_CELERY_TASK_MAP="onyx.sandbox.prune_old=prune,onyx.sandbox.sweep_idle=sweep",
            SANDBOX_IDLE_TIMEOUT_SECONDS=3600, SNAPWORKER_SNAPSHOT_RETENTION_DAYS=5,
            SNAPWORKER_SNAPSHOT_KEEP=1)
        try:
            prune = app.send_task("onyx.sandbox.prune_old", queue="sandbox")  # tenant public
            sweep = app.send_task("onyx.sandbox.sweep_idle", kwargs={"tenant_id": "public"},
                                  queue="sandbox")
            default = app.send_task("cleanup_old_snapshots", kwargs={"tenant_id": "public"},
                                    queue="sandbox")
            always = app.send_task("snapworker.noop", queue="sandbox",
                                   kwargs={"sandbox_id": new_uuid(), "session_id": new_uuid()})
            self.assertEqual(prune.get(timeout=60 * SLOW)["rows"], 1)
            out = sweep.get(timeout=60 * SLOW)
            with self.assertRaises(NotRegistered):  # the map replaces the default one
                default.get(timeout=60 * SLOW)
            self.assertEqual(always.get(timeout=60 * SLOW), {"ok": True})
        finally:
            app.close()
        self.assertEqual(self.job_hash(prune.id)["type"], "prune")
        self.assertEqual(self.job_hash(sweep.id)["type"], "sweep")
        h = self.job_hash(default.id)  # refused by the worker, never run as a prune
        self.assertEqual((h["type"], h["status"]), ("celery", "dead"), h)
        self.assertEqual(json.loads(h["error"])["code"], "unknown_job_type", h)
        self.assertEqual((out["idle"], len(out["enqueued"])), (1, 1), out)
        self.ok(out["enqueued"][0])
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{idle}'"), "sleeping")
        self.assertEqual(self.psql(f"SELECT count(*) FROM snapshot WHERE storage_path = '{gone}'"),
                         "0")
        self.assertEqual(self.psql(f"SELECT count(*) FROM snapshot WHERE storage_path = '{keep}'"),
                         "1")

    # ---- tenant schemas -------------------------------------------------------
    def make_schema(self, name):
        with open(os.path.join(ROOT, "migrations", "001_init.sql")) as f:
            ddl = f.read()
        self.psql(f'CREATE SCHEMA "{name}"; SET search_path TO "{name}";\n' + ddl)

    def test_two_tenant_schemas_with_the_same_ids_and_ports_stay_apart(self):
        for t in ("t_one", "t_two"):
            self.make_schema(t)
        sb, user, ss = new_uuid(), new_uuid(), new_uuid()
        for t in ("t_one", "t_two"):
            self.psql(f"INSERT INTO \"{t}\".sandbox (id, user_id, status) "
                      f"VALUES ('{sb}', '{user}', 'running')")
            self.psql(f"INSERT INTO \"{t}\".build_session (id, user_id) VALUES ('{ss}', '{user}')")
        self.start_worker(SNAPWORKER_TENANT_SCHEMAS=1)
        os.makedirs(os.path.join(self.base, sb, "sessions", ss))
        r1 = self.ok(self.job("restore", tenant="t_one", sandbox_id=sb, session_id=ss,
                              args={"start_webapp": False}))
        r2 = self.ok(self.job("restore", tenant="t_two", sandbox_id=sb, session_id=ss,
                              args={"start_webapp": False}))
        self.assertEqual(r1["nextjs_port"], 3010)   # each schema allocates from its own rows
        self.assertEqual(r2["nextjs_port"], 3010)
        self.assertEqual(self.psql("SELECT count(*) FROM public.build_session"), "0")
        res = self.ok(self.job("sleep", tenant="t_one", sandbox_id=sb))
        self.assertEqual(len(res["snapshots"]), 1)
        self.assertTrue(res["snapshots"][0]["storage_path"].startswith("t_one/snapshots/"))
        self.assertEqual(self.psql('SELECT status FROM "t_one".sandbox'), "sleeping")
        self.assertEqual(self.psql('SELECT status FROM "t_two".sandbox'), "running")
        self.assertEqual(self.psql('SELECT nextjs_port FROM "t_two".build_session'), "3010")
        self.assertEqual(self.psql('SELECT count(*) FROM "t_one".snapshot'), "1")
        self.assertEqual(self.psql('SELECT count(*) FROM "t_two".snapshot'), "0")
        self.assertEqual(self.psql("SELECT count(*) FROM public.snapshot"), "0")

    def test_an_unknown_tenant_schema_is_a_permanent_database_error(self):
        self.start_worker(SNAPWORKER_TENANT_SCHEMAS=1)
        h = self.finish(self.job("sweep", tenant="no_such_tenant", max_attempts=5))
        self.assertEqual(h["status"], "dead", h)
        self.assertEqual(h.get("attempt"), "1", h)
        err = json.loads(h["error"])
        self.assertEqual(err.get("code"), "database_error", h)
        self.assertFalse(err.get("retryable"), h)
