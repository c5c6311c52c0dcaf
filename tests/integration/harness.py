"""Integration-test harness: real servers, real worker processes.

Owns: starting/stopping the throwaway servers (through scripts/services), spawning
snapworker processes with a per-test queue, the redis client, polling helpers, and
the runner that prints "N passed, N failed". Run a module with:
    /usr/bin/python3 tests/integration/harness.py tests/integration/test_10_queue.py
A module with FAST = True runs whole in the fast subset (scripts/run-integration
--fast, also run under ASan); FAST_TESTS = ["test_x", ...] names the tests of a
module that join it. Under ASan (SNAPWORKER_ASAN=1) every worker's stderr is scanned for sanitizer reports
and any report fails the test that owned the worker.

Redis modes (scripts/services): SW_REDIS_TLS=1 (scripts/run-integration --tls) serves the
module's redis over TLS only and REDIS_URL is rediss://...; a class sets REDIS_TLS = True
(or False) to force one mode. SERVICES may name "sentinel" or "cluster" instead of "redis"
(REDIS_URL redis+sentinel://... / redis+cluster://...); redis_client() opens a redis-py
client for every form of REDIS_URL the worker takes (self.r), and migrate_slot() moves one
Cluster slot the documented way.
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
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SNAPWORKER_BIN", os.path.join(ROOT, "snapworker"))
ASAN = os.environ.get("SNAPWORKER_ASAN") == "1"
SLOW = 3 if ASAN else 1  # timeouts scale under sanitizers
TLS = os.environ.get("SW_REDIS_TLS") == "1"  # scripts/run-integration --tls
SERVICES_SH = os.path.join(ROOT, "scripts/services")

try:
    import redis  # Debian python3-redis
except ImportError:  # pragma: no cover
    redis = None


# ---- Redis URLs and clients -------------------------------------------------------------
SSL_INT = {"ssl_check_hostname": lambda v: v.lower() in ("1", "true", "yes", "on")}


def _ssl_kwargs(scheme, query):
    if not scheme.startswith("rediss"):
        return {}
    kw = {"ssl": True}
    for k, v in query.items():
        if k.startswith("ssl_"):
            kw[k] = SSL_INT.get(k, str)(v)
    return kw


def parse_redis_url(url):
    """Any REDIS_URL form the worker takes, as {"kind": "plain"|"sentinel"|"cluster",
    "hosts": [(host, port)], "db", "master", "username", "password", "ssl": {...}}."""
    if url.startswith("sentinel://"):  # kombu: sentinel://h1:p1;sentinel://h2:p2/DB?master_name=N
        parts = url.split(";")
        hosts, last = [], None
        for part in parts:
            last = urlsplit(part)
            hosts.append((last.hostname, last.port or 26379))
        q = dict(parse_qsl(last.query))
        db = int(last.path.strip("/") or 0)
        return {"kind": "sentinel", "hosts": hosts, "db": db, "master": q.get("master_name"),
                "username": unquote(last.username) if last.username else None,
                "password": unquote(last.password) if last.password else None, "ssl": {}}
    sp = urlsplit(url)
    scheme = sp.scheme
    q = dict(parse_qsl(sp.query))
    userinfo, _, hostlist = sp.netloc.rpartition("@")
    user, _, pw = userinfo.partition(":")
    hosts = []
    for h in hostlist.split(","):
        host, _, port = h.rpartition(":")
        hosts.append((host.strip("[]"), int(port)))
    path = [x for x in sp.path.split("/") if x]
    out = {"hosts": hosts, "username": unquote(user) or None, "password": unquote(pw) or None,
           "ssl": _ssl_kwargs(scheme, q), "master": None, "db": 0}
    if scheme.endswith("+sentinel"):
        out.update(kind="sentinel", master=path[0], db=int(path[1]) if len(path) > 1 else 0)
    elif scheme.endswith("+cluster"):
        out.update(kind="cluster")
    else:
        out.update(kind="plain", db=int(path[0]) if path else 0)
    return out


def redis_client(url, **kw):
    """A redis-py client for REDIS_URL: redis://, rediss:// (from_url), redis+sentinel://
    and kombu's sentinel:// (the master through Sentinel), redis+cluster:// (RedisCluster)."""
    if url.startswith(("redis://", "rediss://")):
        return redis.Redis.from_url(url, **kw)
    u = parse_redis_url(url)
    auth = {k: u[k] for k in ("username", "password") if u[k]}
    if u["kind"] == "sentinel":
        from redis.sentinel import Sentinel
        sen = Sentinel(u["hosts"], socket_timeout=5, sentinel_kwargs=dict(u["ssl"]),
                       **u["ssl"], **auth)
        return sen.master_for(u["master"], db=u["db"], **kw)
    import logging
    from redis.cluster import ClusterNode, RedisCluster
    # redis-py logs a traceback for every MOVED/ASK it follows (and handles)
    logging.getLogger("redis.cluster").setLevel(logging.CRITICAL)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in u["hosts"]],
                        **u["ssl"], **auth, **kw)


def with_db(url, db):
    """The same redis:// or rediss:// URL with database 'db' (its query string kept)."""
    sp = urlsplit(url)
    return urlunsplit((sp.scheme, sp.netloc, f"/{db}", sp.query, sp.fragment))


def node_client(port, **kw):
    """A plain client of one node of a sentinel or cluster set (127.0.0.1:port)."""
    return redis.Redis(host="127.0.0.1", port=int(port), **kw)


def migrate_slot(ports, slot, dst_port, batch=100, pause=0.0, between=None):
    """Move Cluster slot 'slot' from its owner to node dst_port the documented way: SETSLOT
    IMPORTING on dst, MIGRATING on src, MIGRATE keys in batches (the "" 0 5000 KEYS form),
    then SETSLOT NODE on dst, src and the other masters. between(n_moved) is called (and
    'pause' slept) after each batch, so a test can work the queue while the slot is open.
    Returns the number of keys moved."""
    nodes = {int(p): node_client(p, decode_responses=True) for p in ports}
    try:
        ids = {p: r.execute_command("CLUSTER", "MYID") for p, r in nodes.items()}
        owner = slot_owner(list(nodes), slot)
        dst = int(dst_port)
        if owner is None or owner == dst:
            raise ValueError(f"slot {slot}: owner {owner}, destination {dst}")
        src_r, dst_r = nodes[owner], nodes[dst]
        dst_r.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
        src_r.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
        moved = 0
        while True:
            keys = src_r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            src_r.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            if between:
                between(moved)
            if pause:
                time.sleep(pause)
        dst_r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
        src_r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
        for p, r in nodes.items():
            if p not in (owner, dst):
                r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
        return moved
    finally:
        for r in nodes.values():
            r.close()


def slot_owner(ports, slot):
    """The port of the node that serves 'slot', as the first node says."""
    r = node_client(ports[0], decode_responses=True)
    try:
        for lo, hi, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return int(master[1])
    finally:
        r.close()
    return None


class Services:
    """Throwaway servers in one folder, stopped by their own pid. tls: None follows
    SW_REDIS_TLS, True/False forces the redis mode."""

    def __init__(self, *names, tls=None):
        self.dir = tempfile.mkdtemp(prefix="sw-it-")
        env = dict(os.environ)
        if tls is not None:
            env["SW_REDIS_TLS"] = "1" if tls else "0"
        self.tls = env.get("SW_REDIS_TLS") == "1" and "redis" in names
        out = self._sh("start", *names, env=env).stdout
        self.env = dict(line.split("=", 1) for line in out.split() if "=" in line)

    def _sh(self, verb, *args, env=None, check=True):
        return subprocess.run([SERVICES_SH, verb, self.dir, *map(str, args)], check=check,
                              capture_output=True, text=True, env=env)

    def _kv(self, out):
        return {k: v for k, v in (l.split("=", 1) for l in out.split() if "=" in l)}

    def restart_redis(self, kill=False):
        args = [SERVICES_SH, "restart-redis", self.dir]
        if kill:
            args.append("kill")
        subprocess.run(args, check=True)

    def redis_cli(self, *args, port=None):
        """redis-cli against the module's redis (TLS when it serves TLS); CompletedProcess."""
        return subprocess.run([*self.redis_cli_argv(port), *map(str, args)],
                              capture_output=True, text=True)

    def redis_cli_argv(self, port=None):
        port = str(port or self.env["REDIS_PORT"])
        if "REDIS_TLS_DIR" in self.env:
            return ["redis-cli", "--tls", "--cacert", os.path.join(self.env["REDIS_TLS_DIR"], "ca.crt"),
                    "-h", "localhost", "-p", port]
        return ["redis-cli", "-h", "127.0.0.1", "-p", port]

    # ---- sentinel and cluster sets (SERVICES = ("sentinel",) / ("cluster",)) ------------
    def sentinel_failover(self, settle=False):
        """SENTINEL FAILOVER; returns {"REDIS_MASTER_PORT", "REDIS_REPLICA_PORT"} once every
        sentinel names the new master (settle: and the old one is a replica in sync)."""
        return self._kv(self._sh("sentinel-failover", *(["settle"] if settle else [])).stdout)

    def sentinel_master(self):
        return int(self._kv(self._sh("sentinel-master").stdout)["REDIS_MASTER_PORT"])

    def kill_node(self, port, kill=False):
        self._sh("kill-node", port, *(["kill"] if kill else []))

    def start_node(self, port):
        self._sh("start-node", port)

    def start_redis_tls(self, name, cert, key, *args):
        """One more TLS redis-server of the module's test CA; returns its port."""
        return int(self._kv(self._sh("start-redis-tls", name, cert, key, *args).stdout)["PORT"])

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


def proc_state(pid):
    """The state letter of /proc/PID/stat ('R', 'S', 'T' = stopped, 'Z', ...), None when
    there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def gone(pid):
    return proc_state(pid) in (None, "Z", "X")


def children(pid):
    """The pids of every child of every thread of 'pid' (a worker's job processes, spares
    included; a dev server's start gate)."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def pause(pid):
    """A VM pause: the daemon and its job processes stop."""
    os.kill(pid, signal.SIGSTOP)
    for k in children(pid):
        os.kill(k, signal.SIGSTOP)


def resume(pid):
    for k in children(pid):
        os.kill(k, signal.SIGCONT)
    os.kill(pid, signal.SIGCONT)


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
    REDIS_TLS = None  # None: SW_REDIS_TLS decides; True/False forces the redis mode
    services = None

    @classmethod
    def setUpClass(cls):
        cls.services = Services(*cls.SERVICES, tls=cls.REDIS_TLS)

    @classmethod
    def tearDownClass(cls):
        if cls.services:
            cls.services.stop()

    def setUp(self):
        self.queue = "q" + uuid.uuid4().hex[:12]
        self.tmp = tempfile.mkdtemp(prefix="sw-t-", dir=self.services.dir)
        self.workers = []
        self.r = redis_client(self.services.env["REDIS_URL"], decode_responses=True)

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
