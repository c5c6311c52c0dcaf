"""Heavy jobs in job processes (issue 15, docs/processes.md): a crash, a kill or a resource
limit ends only its own job (`internal`, retryable, naming the signal) while noop jobs keep
flowing through the same daemon; a job stuck in a blocking read is ended by a cancel or its
deadline (SIGTERM, then SIGKILL after SNAPWORKER_JOB_KILL_GRACE_S); and the daemon's private
memory stays flat across 200 restores.

The crashes use the test hook of worker/jobchild.c: a noop job with args.crash runs in a job
process when SNAPWORKER_TEST_HOOKS=1, and only there."""
import json
import os
import signal
import time

from harness import ASAN, SLOW, children, new_uuid, wait_for
from test_50_jobs import JobsCase
import jobs_tree as jt

# The crash test stays out of the ASan run: the sanitizer's runtime installs its own SIGSEGV/
# SIGABRT handling in the job process, so a crash there is not the plain signal death this
# test asserts on (once in CI a crashed job process under ASan was not seen to end). The
# normal suite runs it; the ASan run keeps the cancel path, which has the most cleanup code.
FAST_TESTS = [
    "test_a_job_blocked_in_a_read_is_cancelled_within_the_grace",
]
MiB = 1024 * 1024


def job_children(pid, spares=False):
    """Pids of the daemon's job processes (`snapworker ... __job PPID`) that hold a job;
    with spares=True also the started ones waiting for one (comm "sw-spare")."""
    out = []
    for k in children(pid):
        try:
            with open(f"/proc/{k}/cmdline", "rb") as f:
                if b"__job" not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{k}/comm") as f:
                if spares or f.read().strip() != "sw-spare":
                    out.append(k)
        except OSError:
            pass
    return out


def rss_anon_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon")


class JobProcesses(JobsCase):
    def error_of(self, jid):
        return json.loads(self.job_hash(jid)["error"])

    def noops(self, n):
        ids = []
        for _ in range(n):
            p = self.payload("noop")
            self.xadd(p)
            ids.append(p["id"])
        return ids

    def all_succeeded(self, ids, timeout=60):
        wait_for(lambda: all(self.job_hash(j).get("status") == "succeeded" for j in ids), timeout,
                 what=f"{len(ids)} noop jobs to succeed")

    def test_crashes_and_kills_end_only_their_job_while_noops_run_through(self):
        env = dict(SNAPWORKER_TEST_HOOKS=1, SNAPWORKER_CONCURRENCY=4)
        if not ASAN:  # the sanitizers reserve terabytes of address space
            env["SNAPWORKER_JOB_MEMORY_MAX"] = 256 * MiB
        w = self.start_worker(**env)
        crashes = {"segv": "SIGSEGV", "abort": "SIGABRT"}
        if not ASAN:
            crashes["alloc"] = "SIGABRT"  # RLIMIT_AS: the allocation is refused, xmalloc aborts
        jobs = {}
        for what in crashes:
            p = self.payload("noop", {"crash": what}, max_attempts=1)
            self.xadd(p)
            jobs[what] = p["id"]
        hang = self.payload("noop", {"crash": "hang"}, max_attempts=1)
        self.xadd(hang)
        ids = self.noops(150)
        # the hung one is killed from outside, as the kernel's OOM killer would
        wait_for(lambda: len(job_children(w.proc.pid)) >= 1 and
                 self.job_hash(hang["id"]).get("status") == "running", 20,
                 what="the hung job's process")
        wait_for(lambda: all(self.job_hash(j).get("status") == "dead" for j in jobs.values()), 30,
                 what="the crashed jobs to end")
        for k in job_children(w.proc.pid):
            os.kill(k, signal.SIGKILL)
        jobs["kill"] = hang["id"]
        crashes["kill"] = "SIGKILL"
        ids += self.noops(100)
        for what, jid in jobs.items():
            h = self.finish(jid, 30)
            self.assertEqual(h["status"], "dead", h)
            e = self.error_of(jid)
            self.assertEqual(e["code"], "internal", e)
            self.assertTrue(e["retryable"], e)
            self.assertIn(crashes[what], e["message"])
            self.assertIn("job process killed by signal", e["message"])
        self.all_succeeded(ids)
        self.assertTrue(w.alive())
        # only spares are left (a new one names itself once it has loaded: slower under ASan)
        wait_for(lambda: job_children(w.proc.pid) == [], 10, what="no job process but spares")
        self.assertRegex(w.text(), r"job_process[^\n]*exit=\"?signal SIGSEGV")

    def test_a_crash_is_retried_and_a_later_attempt_can_succeed(self):
        # retryable: with attempts left, the crashed attempt is followed by another one
        self.start_worker(SNAPWORKER_TEST_HOOKS=1, SNAPWORKER_RETRY_BASE_MS=10)
        p = self.payload("noop", {"crash": "abort"}, max_attempts=2)
        self.xadd(p)
        h = self.finish(p["id"], 30)
        self.assertEqual(h["attempt"], "2")
        self.assertEqual([e["status"] for e in self.events(p["id"])],
                         ["started", "failed", "started", "dead"])

    def test_a_restore_over_its_file_size_limit_is_killed_by_sigxfsz(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=2 * MiB)
        self.ok(self.submit("snapshot", sb, ss))
        self.workers[0].stop()
        w = self.start_worker(SNAPWORKER_JOB_FSIZE_MAX=1 * MiB, SNAPWORKER_CONCURRENCY=2)
        jid = self.submit("restore", new_uuid(), ss, {"start_webapp": False}, max_attempts=1)
        ids = self.noops(100)
        h = self.finish(jid, 60)
        self.assertEqual(h["status"], "dead", h)
        e = self.error_of(jid)
        self.assertEqual((e["code"], e["retryable"]), ("internal", True), e)
        self.assertIn("SIGXFSZ", e["message"])
        self.all_succeeded(ids)
        self.assertTrue(w.alive())

    def test_a_job_blocked_in_a_read_is_cancelled_within_the_grace(self):
        grace = 2
        w = self.start_worker(SNAPWORKER_TEST_HOOKS=1, SNAPWORKER_JOB_KILL_GRACE_S=grace)
        p = self.payload("noop", {"crash": "hang"})
        self.xadd(p)
        wait_for(lambda: job_children(w.proc.pid), 20, what="the job process")
        self.wait_status(p["id"], "running")
        t0 = time.monotonic()
        out = json.loads(self.cli("cancel", p["id"], check=True).stdout)
        self.assertEqual(out["result"], "cancelling")
        self.wait_status(p["id"], "cancelled", timeout=grace + 5)
        took = time.monotonic() - t0
        self.assertLess(took, (grace + 2.5) * SLOW, f"cancelled after {took:.1f}s")
        self.assertGreaterEqual(took, grace - 0.5, "the read ignores SIGTERM: SIGKILL ends it")
        self.assertEqual(self.error_of(p["id"])["code"], "cancelled")
        wait_for(lambda: not job_children(w.proc.pid), 5, what="the job process reaped")
        # and a deadline ends one the same way
        p = self.payload("noop", {"crash": "hang"}, timeout_s=1, max_attempts=1)
        self.xadd(p)
        h = self.finish(p["id"], 1 + grace + 5)
        self.assertEqual(self.error_of(p["id"])["code"], "timeout", h)
        self.assertTrue(w.alive())

    def test_a_thread_keeps_one_spare_job_process_and_it_goes_with_the_worker(self):
        w = self.start_worker(SNAPWORKER_CONCURRENCY=1)
        sb, ss = new_uuid(), new_uuid()
        os.makedirs(self.session_dir(sb, ss))
        args = {"llm_config": {"provider": "openai", "model_name": "m"}, "nextjs_port": 3000,
                "disabled_tools": []}
        for _ in range(3):
            self.ok(self.submit("regenerate", sb, ss, args))
            wait_for(lambda: len(job_children(w.proc.pid, spares=True)) == 1 and
                     not job_children(w.proc.pid), 10, what="one spare job process, waiting")
        spare = job_children(w.proc.pid, spares=True)[0]
        self.assertEqual(job_children(w.proc.pid), [])
        with open(f"/proc/{spare}/status") as f:
            st = f.read()
        self.assertIn("NoNewPrivs:\t1", st)
        lines = [l for l in w.text().splitlines() if "msg=job_process" in l]
        self.assertEqual([l.split("spare=")[1].split()[0] for l in lines], ["0", "1", "1"])
        with open(f"/proc/{spare}/limits") as f:
            lim = f.read()
        self.assertRegex(lim, r"Max core file size\s+0\s+0")
        self.assertEqual(w.stop(), 0)
        wait_for(lambda: not os.path.exists(f"/proc/{spare}"), 10, what="the spare gone")

    def test_the_daemons_private_memory_stays_flat_across_200_restores(self):
        w = self.start_worker(SNAPWORKER_CONCURRENCY=2)
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=64 * 1024)
        self.ok(self.submit("snapshot", sb, ss))

        def restores(n):
            ids = [self.submit("restore", new_uuid(), ss, {"start_webapp": False})
                   for _ in range(n)]
            for jid in ids:
                res = self.ok(jid, 120)
                self.assertFalse(res["skipped"])

        restores(20)  # warm-up: allocator arenas of the threads, connections, caches
        before = rss_anon_kb(w.proc.pid)
        restores(200)
        after = rss_anon_kb(w.proc.pid)
        print(f"daemon RssAnon: {before} kB after 20 restores, {after} kB after 220")
        self.assertLessEqual(after, before * 1.10, f"RssAnon {before} -> {after} kB")
        text = w.text()
        self.assertGreaterEqual(text.count("job_process"), 221)
