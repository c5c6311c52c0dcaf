"""Job control (issue 13, docs/producers.md) against real workers: cancel while queued,
delayed and mid-restore; delays on Redis's clock; priorities without starvation;
idempotent enqueue; progress events; where an api key may live afterwards."""
import json
import os
import re
import subprocess
import threading
import time

import harness
from harness import SWTestCase, new_uuid, wait_for
import jobs_tree as jt
from test_50_jobs import HERE, JobsCase, free_port_block

FAST_TESTS = [
    "test_cancel_of_a_queued_job_removes_its_entry_and_it_never_runs",
    "test_cancel_of_a_delayed_job_removes_its_member",
    "test_a_delayed_job_starts_within_100_ms_of_its_due_time",
    "test_the_same_id_enqueued_twice_runs_once",
]

SECRET = "sk-ctl-" + "9f2e71c4d0a8"


def redis_ms(r):
    s, us = r.time()
    return s * 1000 + us // 1000


class Control(SWTestCase):
    SERVICES = ("redis",)

    def enqueue(self, *extra, type_="noop", args=None, **env):
        a = ["enqueue", type_, "--sandbox", new_uuid(), "--session", new_uuid()]
        if args is not None:
            a += ["--args", json.dumps(args)]
        p = self.cli(*a, *extra, **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def statuses(self, jid):
        return [e["status"] for e in self.events(jid)]

    def test_cancel_of_a_queued_job_removes_its_entry_and_it_never_runs(self):
        out = self.enqueue("--args", json.dumps({"sleep_ms": 1}))
        jid = out["id"]
        self.assertEqual(self.r.xlen(self.key("stream")), 1)
        p = self.cli("cancel", jid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"id": jid, "result": "cancelled", "previous": "queued"})
        self.assertEqual(self.r.xlen(self.key("stream")), 0)  # the payload is gone at once
        # a raw XADD nobody read yet: cancelled by id, dropped when the worker reads it
        raw = self.payload()
        p = self.cli("cancel", raw["id"])
        self.assertEqual(json.loads(p.stdout)["previous"], "unknown")
        self.xadd(raw)
        self.start_worker()
        probe = self.enqueue()["id"]
        self.wait_status(probe, "succeeded")
        wait_for(lambda: self.r.xlen(self.key("stream")) == 0, what="raw copy acked")
        for j in (jid, raw["id"]):
            self.assertEqual(self.job_hash(j)["status"], "cancelled")
            self.assertEqual(self.statuses(j), ["cancelled"])
            self.assertGreater(self.r.ttl(self.key("job:" + j)), 0)
        # cancelling an ended job changes nothing
        p = self.cli("cancel", probe)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(json.loads(p.stdout)["result"], "ended")

    def test_cancel_of_a_delayed_job_removes_its_member(self):
        self.start_worker()
        jid = self.enqueue("--delay", "30s", "--args", json.dumps({"api_key": SECRET}))["id"]
        self.assertEqual(self.r.zcard(self.key("delayed")), 1)
        p = self.cli("cancel", jid)
        self.assertEqual(json.loads(p.stdout)["result"], "cancelled")
        self.assertEqual(self.r.zcard(self.key("delayed")), 0)
        self.assertEqual(self.job_hash(jid)["status"], "cancelled")
        # a worker-side delay (raw XADD with delay_ms) is cancellable the same way
        raw = self.payload(delay_ms=30000)
        self.xadd(raw)
        wait_for(lambda: self.r.zcard(self.key("delayed")) == 1, what="raw delay parked")
        self.assertNotIn("delay_ms", self.r.zrange(self.key("delayed"), 0, 0)[0])
        self.assertEqual(json.loads(self.cli("cancel", raw["id"]).stdout)["result"], "cancelled")
        self.assertEqual(self.r.zcard(self.key("delayed")), 0)
        self.assertEqual(self.statuses(raw["id"]), ["cancelled"])

    def test_a_delayed_job_starts_within_100_ms_of_its_due_time(self):
        self.start_worker()
        probe = self.enqueue()["id"]
        self.wait_status(probe, "succeeded")
        due = redis_ms(self.r) + 1200
        a = self.enqueue("--at", str(due))["id"]                       # enqueue script
        raw = self.payload(delay_ms=700)                                # raw XADD, worker parks it
        entry = self.xadd(raw)
        raw_due = int(entry.split("-")[0]) + 700
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((due + 300) // 1000)) + \
            ".%03dZ" % ((due + 300) % 1000)
        b = self.enqueue("--at", iso, "--priority", "high")["id"]
        for jid, when in ((a, due), (raw["id"], raw_due), (b, due + 300)):
            self.wait_status(jid, "succeeded")
            started = [int(e["ts"]) for e in self.events(jid) if e["status"] == "started"]
            self.assertEqual(len(started), 1)
            self.assertGreaterEqual(started[0], when, jid)
            self.assertLess(started[0] - when, 100, jid)

    def test_the_same_id_enqueued_twice_runs_once(self):
        jid = new_uuid()
        first = self.enqueue("--id", jid)
        again = self.enqueue("--id", jid, "--priority", "high")
        self.assertTrue(first["added"])
        self.assertFalse(again["added"])
        self.assertEqual(self.r.xlen(self.key("stream:high")), 0)
        self.start_worker()
        self.wait_status(jid, "succeeded")
        third = self.enqueue("--id", jid)
        self.assertFalse(third["added"])
        self.assertEqual(third["status"], "succeeded")
        p = self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                     "--id", jid, "--wait", "--timeout", "5")
        self.assertEqual(json.loads(p.stdout)["status"], "succeeded")
        time.sleep(0.3)
        self.assertEqual(self.statuses(jid), ["started", "succeeded"])

    def test_a_high_job_overtakes_a_backlog_of_10000_low_jobs_and_low_ones_still_progress(self):
        pipe = self.r.pipeline(transaction=False)
        for i in range(10000):
            p = self.payload(args={"sleep_ms": 2}, priority="low")
            pipe.xadd(self.key("stream:low"), {"job": json.dumps(p)})
        pipe.execute()
        self.start_worker(SNAPWORKER_CONCURRENCY=2)
        wait_for(lambda: self.r.xlen(self.key("stream:low")) < 9900, 20, what="lows running")
        hi = self.payload(args={"sleep_ms": 2}, priority="high")
        hid = self.r.xadd(self.key("stream:high"), {"job": json.dumps(hi)})
        self.wait_status(hi["id"], "succeeded")
        # low jobs started after the high one was added and before it started: at most a batch
        evs = self.r.xrange(self.key("events"), min=hid)
        n = 0
        for _id, f in evs:
            if f["job_id"] == hi["id"]:
                break
            n += f["status"] == "started"
        self.assertLess(n, 256, f"{n} low jobs started first")
        # high jobs keep arriving faster than one worker runs them: lows still progress
        stop = time.time() + 3
        done_before = self.r.xlen(self.key("stream:low"))
        def flood():
            while time.time() < stop:
                pl = self.r.pipeline(transaction=False)
                for _ in range(100):
                    pl.xadd(self.key("stream:high"), {"job": json.dumps(
                        self.payload(args={"sleep_ms": 2}, priority="high"))})
                pl.execute()
                time.sleep(0.05)
        t = threading.Thread(target=flood)
        t.start()
        t.join()
        self.assertGreater(self.r.xlen(self.key("stream:high")), 100, "high backlog built up")
        progressed = done_before - self.r.xlen(self.key("stream:low"))
        self.assertGreater(progressed, 100, "low jobs starved")


class RestoreControl(JobsCase):
    def web_env(self, port, args):
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}} {args}"
        return dict(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=60,
                    SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 3,
                    SNAPWORKER_OUTPUTS_TEMPLATE=self.template_with_web())

    def test_cancel_mid_restore_rolls_back_and_ends_cancelled(self):
        port = free_port_block(3)
        self.start_worker(**self.web_env(port, "--delay 60"))
        sb, ss = new_uuid(), new_uuid()
        sdir = self.session_dir(sb, ss)
        os.makedirs(sdir)
        with open(os.path.join(sdir, "notes.txt"), "w") as f:
            f.write("kept\n")
        before = jt.describe(sdir)
        self.psql(f"INSERT INTO build_session (id) VALUES ('{ss}')")
        jid = self.submit("restore", sb, ss, {"llm_config": {"api_key": SECRET}})
        wait_for(lambda: self.port_of(ss) not in ("", "null"), 20, what="port allocated")
        wait_for(lambda: os.path.isdir(os.path.join(sdir, "outputs")), 20, what="swapped in")
        p = self.cli("cancel", jid)
        self.assertEqual(json.loads(p.stdout), {"id": jid, "result": "cancelling", "previous": "running"})
        self.wait_status(jid, "cancelled", timeout=20)
        h = self.job_hash(jid)
        self.assertEqual(json.loads(h["error"])["code"], "cancelled")
        self.assertEqual(self.port_of(ss), "null")
        self.assertEqual(self.stagings(sb), [])
        after = jt.describe(sdir)
        # the dev server's log stays for diagnosis, as after any failed restore (known gap)
        after.pop("nextjs.log", None)
        self.assertEqual(after, before)
        self.assertEqual([e["status"] for e in self.events(jid)], ["started", "cancelled"])
        self.assertEqual(self.dead_entries(), [])
        self.assertNotIn(SECRET, self.workers[0].text())

    def test_an_api_key_is_kept_only_in_a_queued_stream_entry_and_the_dead_entry(self):
        self.start_worker(SNAPWORKER_RETRY_BASE_MS=50)
        sb = new_uuid()
        llm = {"provider": "openai", "model_name": "gpt-5", "api_key": SECRET}
        ok = self.submit("restore", sb, new_uuid(), {"llm_config": llm, "start_webapp": False})
        self.ok(ok)
        # a snapshot of a missing session ends dead: the dead entry keeps the payload
        dead = self.submit("snapshot", sb, new_uuid(), {"token": SECRET})
        self.dead(dead, "workspace_missing")
        # queued behind a stopped worker: its stream entry holds the key (allowed)
        self.workers[0].stop()
        queued = self.payload("noop", {"llm_config": llm})
        self.xadd(queued)
        allowed, found = [], []
        for k in self.r.scan_iter("*"):
            t = self.r.type(k)
            if t == "stream":
                for eid, f in self.r.xrange(k):
                    if SECRET in json.dumps(f):
                        found.append((k, eid))
            elif t == "hash":
                if SECRET in json.dumps(self.r.hgetall(k)):
                    found.append((k, None))
            elif t == "zset":
                if SECRET in json.dumps(self.r.zrange(k, 0, -1)):
                    found.append((k, None))
            elif t == "string":
                if SECRET in (self.r.get(k) or ""):
                    found.append((k, None))
            elif t == "list":
                if SECRET in json.dumps(self.r.lrange(k, 0, -1)):
                    found.append((k, None))
        for k, eid in found:
            if k == self.key("dead"):
                allowed.append(k)
            elif k == self.key("stream") and json.loads(self.r.xrange(k, eid, eid)[0][1]["job"])["id"] == queued["id"]:
                allowed.append(k)
        self.assertEqual(len(found), 2, found)
        self.assertEqual(len(allowed), 2, found)
        outs = [self.cli("job", j).stdout for j in (ok, dead)]
        outs.append(self.cli("dead", "list").stdout)
        outs.append(self.workers[0].text())
        for o in outs:
            self.assertNotIn(SECRET, o)
        self.assertIn(dead, outs[2])

    def progress_workspace(self, sb, ss, files=30000):
        """jt.build_workspace plus `files` files of 2 KiB random bytes (incompressible) in
        folders of 1,000. With 30,000 a snapshot took 2.3 s here and a restore 7 s (3 and 7
        progress events), so each spans more than one event. Returns the session folder and
        its member count (outputs/ and everything below it; the empty attachments/ is not
        archived)."""
        sdir = self.session_dir(sb, ss)
        jt.build_workspace(sdir)
        many = os.path.join(sdir, "outputs", "many")
        for i in range(files):
            d = os.path.join(many, f"d{i // 1000:02d}")
            if i % 1000 == 0:
                os.makedirs(d)
            with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
                f.write(os.urandom(2048))
        return sdir, len(jt.describe(os.path.join(sdir, "outputs"))) + 1

    def check_progress(self, jid, entries, size_bytes):
        """The job's progress events: at least two, a second apart, `bytes` and `entries`
        integers that never go down, the entries seen to grow, and neither past the job's
        totals (the final totals are the result's: a last event may come before the end)."""
        prog = [e for e in self.events(jid) if e["status"] == "progress"]
        data = [json.loads(e["data"]) for e in prog]
        self.assertGreaterEqual(len(data), 2, data)
        for d in data:
            self.assertEqual(sorted(d), ["bytes", "entries"], d)
            self.assertIs(type(d["bytes"]), int, d)
            self.assertIs(type(d["entries"]), int, d)
        b, n = [d["bytes"] for d in data], [d["entries"] for d in data]
        self.assertEqual(b, sorted(b), data)
        self.assertEqual(n, sorted(n), data)
        self.assertLess(n[0], n[-1], data)
        self.assertGreaterEqual(n[0], 0, data)
        self.assertLessEqual(n[-1], entries, data)
        self.assertLessEqual(b[-1], size_bytes, data)
        # The worker spaces its emissions by >= 1 s on its own clock (worker/exec.c); `ts` is
        # Redis's time when the event is written, one round trip later, so two stamps can be
        # a few ms closer than that (998 ms seen on a loaded host). Faster than once a second
        # would show as gaps far below it.
        ts = [int(e["ts"]) for e in prog]
        self.assertTrue(all(b - a >= 950 for a, b in zip(ts, ts[1:])), ts)

    def test_a_restore_emits_progress_events(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        sdir, entries = self.progress_workspace(sb, ss)
        snap = self.ok(self.submit("snapshot", sb, ss), timeout=120)
        import shutil
        shutil.rmtree(sdir)
        jid = self.submit("restore", sb, ss, {"start_webapp": False})
        res = self.ok(jid, timeout=120)
        self.assertEqual(res["entries"], entries)
        self.check_progress(jid, entries, snap["size_bytes"])

    def test_a_snapshot_emits_progress_events(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        _sdir, entries = self.progress_workspace(sb, ss, files=50000)  # a longer snapshot
        jid = self.submit("snapshot", sb, ss)
        res = self.ok(jid, timeout=120)
        self.assertEqual(res["entries"], entries)
        self.check_progress(jid, entries, res["size_bytes"])

    def test_enqueue_wait_prints_progress_lines_or_a_bar_on_a_terminal(self):
        """`snapworker enqueue --wait`: progress to stderr (plain lines when stderr is a
        pipe, one bar redrawn in place with \\r when it is a terminal), the outcome as JSON
        on stdout."""
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        _sdir, entries = self.progress_workspace(sb, ss)
        args = ("enqueue", "snapshot", "--tenant", "public", "--sandbox", sb, "--session", ss,
                "--wait", "--timeout", "120")
        p = self.cli(*args, check=True, timeout=150)
        out = json.loads(p.stdout)
        self.assertEqual(out["status"], "succeeded", out)
        lines = [ln for ln in p.stderr.splitlines() if ln.startswith("progress ")]
        self.assertGreaterEqual(len(lines), 2, p.stderr)
        seen = []
        for ln in lines:
            m = re.fullmatch(r"progress snapshot: (\d+) bytes, (\d+) entries", ln)
            self.assertIsNotNone(m, ln)
            seen.append(int(m.group(2)))
        self.assertEqual(seen, sorted(seen), lines)
        self.assertLessEqual(seen[-1], entries, lines)
        self.assertNotIn("\r", p.stderr)
        # the same with stderr on a pseudo-terminal
        import pty
        master, slave = pty.openpty()
        full = dict(os.environ)
        full.update(self.env())
        full.pop("SW_TMP", None)
        proc = subprocess.Popen([harness.BIN, *args], env=full, stdout=subprocess.PIPE,
                                stderr=slave, text=True)
        os.close(slave)
        tty = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            tty += chunk
        out2 = json.loads(proc.stdout.read())
        proc.stdout.close()
        self.assertEqual(proc.wait(60), 0)
        os.close(master)
        self.assertEqual(out2["status"], "succeeded", out2)
        bars = re.findall(rb"\rsnapshot \[([#.]{30})\] (\d+\.\d) MiB, (\d+) entries", tty)
        self.assertGreaterEqual(len(bars), 2, tty)
        fills = [b[0].count(b"#") for b in bars]
        self.assertEqual(fills, sorted(fills), tty)
        self.assertTrue(tty.endswith(b"\r\n") or tty.endswith(b"\n"), tty[-80:])
        self.assertNotIn(b"progress snapshot:", tty)
