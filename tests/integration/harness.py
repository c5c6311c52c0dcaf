"""Integration-test harness: real servers, real worker processes.

Owns: starting/stopping the throwaway servers (through scripts/services), spawning
snapworker processes with a per-test queue, the redis client, polling helpers, and
the runner that prints "N passed, N failed". Run a module with:
    /usr/bin/python3 tests/integration/harness.py tests/integration/test_10_queue.py
A module with FAST = True runs whole in the fast subset (scripts/run-integration
--fast, also run under ASan); FAST_TESTS = ["test_x", ...] names the tests of a
module that join it. Under ASan (SNAPWORKER_ASAN=1) every worker's stderr is scanned for sanitizer reports
and any report fails the test that owned the worker.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SNAPWORKER_BIN", os.path.join(ROOT, "snapworker"))
ASAN = os.environ.get("SNAPWORKER_ASAN") == "1"
SLOW = 3 if ASAN else 1  # timeouts scale under sanitizers

try:
    import redis  # Debian python3-redis
except ImportError:  # pragma: no cover
    redis = None


class Services:
    """Throwaway servers in one folder, stopped by their own pid."""

    def __init__(self, *names):
        self.dir = tempfile.mkdtemp(prefix="sw-it-")
        out = subprocess.run([os.path.join(ROOT, "scripts/services"), "start", self.dir, *names],
                             check=True, capture_output=True, text=True).stdout
        self.env = dict(line.split("=", 1) for line in out.split() if "=" in line)

    def restart_redis(self, kill=False):
        args = [os.path.join(ROOT, "scripts/services"), "restart-redis", self.dir]
        if kill:
            args.append("kill")
        subprocess.run(args, check=True)

    def postgres(self, verb):
        """'stop' or 'start' PostgreSQL on the same port and data (readiness tests)."""
        subprocess.run([os.path.join(ROOT, "scripts/services"), verb + "-postgres", self.dir],
                       check=True)

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts/services"), "stop", self.dir], check=False)
        if os.environ.get("SW_KEEP_TMP") != "1":  # set it to keep logs and data for a look
            shutil.rmtree(self.dir, ignore_errors=True)


def new_uuid():
    return str(uuid.uuid4())


class Worker:
    """One snapworker process; stderr (the log) goes to a file we can read."""

    def __init__(self, env, args=("run",), name="worker"):
        self.logpath = os.path.join(env["SW_TMP"], f"{name}-{time.time_ns()}.log")
        self.log = open(self.logpath, "wb")
        full = dict(os.environ)
        full.update(env)
        if ASAN:
            full.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=86")
            full.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.proc = subprocess.Popen([BIN, *args], env=full, stdout=self.log, stderr=self.log)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def text(self):
        self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def sanitizer_report(self):
        t = self.text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in t:
                return t[t.index(marker) - 200 if t.index(marker) > 200 else 0:][:4000]
        return None


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout * SLOW:.0f}s waiting for {what}")


class SWTestCase(unittest.TestCase):
    """Base class: module-wide services, a fresh queue per test, workers reaped."""

    SERVICES = ("redis",)
    services = None

    @classmethod
    def setUpClass(cls):
        cls.services = Services(*cls.SERVICES)

    @classmethod
    def tearDownClass(cls):
        if cls.services:
            cls.services.stop()

    def setUp(self):
        self.queue = "q" + uuid.uuid4().hex[:12]
        self.tmp = tempfile.mkdtemp(prefix="sw-t-", dir=self.services.dir)
        self.workers = []
        self.r = redis.Redis.from_url(self.services.env["REDIS_URL"], decode_responses=True)

    def tearDown(self):
        reports = []
        for w in self.workers:
            if w.alive():
                w.stop(signal.SIGKILL if not ASAN else signal.SIGTERM, timeout=30)
            rep = w.sanitizer_report()
            if rep:
                reports.append(rep)
        self.r.close()
        if reports:
            self.fail("sanitizer report from a worker:\n" + reports[0])

    # ---- environment and processes -----------------------------------
    def env(self, **extra):
        e = {
            "REDIS_URL": self.services.env["REDIS_URL"],
            "SNAPWORKER_QUEUE": self.queue,
            "SNAPWORKER_STORE": "file://" + os.path.join(self.tmp, "store"),
            "SANDBOX_BASE_PATH": os.path.join(self.tmp, "sandboxes"),
            "SW_TMP": self.tmp,
            "DATABASE_URL": self.services.env.get(
                "DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1"),
        }
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def start_worker(self, **extra):
        w = Worker(self.env(**extra), name=f"w{len(self.workers)}")
        self.workers.append(w)
        return w

    def cli(self, *args, check=False, timeout=60, **extra):
        full = dict(os.environ)
        full.update(self.env(**extra))
        full.pop("SW_TMP", None)
        if ASAN:
            full.setdefault("ASAN_OPTIONS", "detect_leaks=1:exitcode=86")
        p = subprocess.run([BIN, *args], env=full, capture_output=True, text=True,
                           timeout=timeout * SLOW)
        if check and p.returncode != 0:
            raise AssertionError(f"snapworker {' '.join(args)} -> {p.returncode}: {p.stderr}")
        if p.returncode == 86 or "AddressSanitizer" in p.stderr or "runtime error:" in p.stderr:
            raise AssertionError("sanitizer report from the CLI:\n" + p.stderr[-4000:])
        return p

    # ---- keys and payloads ---------------------------------------------
    def key(self, suffix):
        return f"snapworker:{{{self.queue}}}:{suffix}"

    def payload(self, type_="noop", args=None, **kw):
        p = {"v": 1, "id": kw.pop("id", new_uuid()), "type": type_, "tenant_id": "public",
             "sandbox_id": kw.pop("sandbox_id", new_uuid()),
             "session_id": kw.pop("session_id", new_uuid()), "args": args or {}}
        p.update(kw)
        return p

    def xadd(self, payload):
        body = payload if isinstance(payload, str) else json.dumps(payload)
        return self.r.xadd(self.key("stream"), {"job": body})

    def events(self, job_id=None):
        out = []
        for _id, f in self.r.xrange(self.key("events")):
            if job_id is None or f.get("job_id") == job_id:
                out.append(f)
        return out

    def job_hash(self, job_id):
        return self.r.hgetall(self.key("job:" + job_id))

    def wait_status(self, job_id, status, timeout=10.0):
        return wait_for(lambda: self.job_hash(job_id).get("status") == status, timeout,
                        what=f"job {job_id} status {status} (now {self.job_hash(job_id)})")

    def dead_entries(self):
        return [f for _id, f in self.r.xrange(self.key("dead"))]


def main(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    spec.loader.exec_module(mod)
    suite = unittest.defaultTestLoader.loadTestsFromModule(mod)
    fast_names = getattr(mod, "FAST_TESTS", None)
    if os.environ.get("SW_FAST") == "1" and not getattr(mod, "FAST", False) and fast_names:
        def pick(s):
            out = unittest.TestSuite()
            for t in s:
                if isinstance(t, unittest.TestSuite):
                    out.addTests(pick(t))
                elif t._testMethodName in fast_names:
                    out.addTest(t)
            return out
        suite = pick(suite)
    res = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    if res.skipped:  # skipping is not allowed: a skipped test counts as failed
        failed += len(res.skipped)
    print(f"{res.testsRun - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
