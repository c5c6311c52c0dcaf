"""snapshot, restore and regenerate through real workers (issue 5): Redis, PostgreSQL, the
file:// store, the local sandbox backend, and a stand-in dev server.

Each test gets its own database on the module's server (so port scopes never mix), migrated
with `snapworker migrate`, its own sandbox base folder and store root. Helpers live in
jobs_tree.py (workspace, tree description, hostile archives, pg stop/start) and
jobs_devserver.py (the dev-server stand-in)."""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

from harness import SWTestCase, children, gone, new_uuid, proc_state, wait_for
import jobs_tree as jt

HERE = os.path.dirname(os.path.abspath(__file__))
TERMINAL = ("succeeded", "dead")


def free_port_block(n):
    """A start port p such that p..p+n-1 are free on loopback right now."""
    for _ in range(200):
        p = 20000 + (uuid.uuid4().int % 30000)
        ok = True
        for q in range(p, p + n):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", q))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return p
    raise AssertionError("no free port block")


def listeners(port):
    """Pids holding a socket that listens on 'port' (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    pids = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{d}/fd"):
                if os.readlink(f"/proc/{d}/fd/{fd}") in inodes:
                    pids.add(int(d))
        except OSError:
            pass
    return sorted(pids)


def devservers(port):
    """Live pids whose argv is the stand-in dev server (jobs_devserver.py) on 'port'."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"jobs_devserver.py") for a in argv) and str(port).encode() in argv \
                and not gone(int(d)):
            out.append(int(d))
    return sorted(out)


# run under ASan too (scripts/run-integration --fast)
FAST_TESTS = [
    "test_snapshot_then_restore_gives_back_the_identical_tree_and_config",
    "test_regenerate_rewrites_config_and_reports_what_it_wrote",
    "test_restore_without_any_snapshot_lays_out_a_fresh_workspace_from_the_template",
    "test_hostile_or_corrupt_archives_end_dead_and_leave_nothing_behind",
    "test_restore_starts_the_dev_server_records_its_pid_and_the_port_answers",
    "test_a_worker_killed_between_spawning_the_dev_server_and_recording_it_leaves_no_orphan",
    "test_issue10_a_forged_pid_file_never_makes_the_worker_signal_a_process",
    "test_issue10_a_symlinked_layout_folder_is_refused_and_nothing_outside_changes",
    "test_a_snapshot_over_the_size_cap_ends_dead_and_stores_nothing",
]

class JobsCase(SWTestCase):
    SERVICES = ("redis", "postgres")

    def setUp(self):
        super().setUp()
        env = self.services.env
        self.pg_port = env["PG_PORT"]
        self.dbname = "j_" + uuid.uuid4().hex[:16]
        self.psql("CREATE DATABASE " + self.dbname, db="postgres")
        self.dburl = f"postgresql://postgres@127.0.0.1:{self.pg_port}/{self.dbname}"
        self.base = os.path.join(self.tmp, "sandboxes")
        self.store_root = os.path.join(self.tmp, "store")
        p = self.cli("migrate")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.servers = []  # dev-server pids to stop at the end

    def tearDown(self):
        for pid in self.servers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        super().tearDown()

    # ---- helpers --------------------------------------------------------------
    def env(self, **extra):
        extra.setdefault("DATABASE_URL", self.dburl)
        extra.setdefault("SNAPWORKER_RETRY_BASE_MS", 100)
        extra.setdefault("SNAPWORKER_RETRY_MAX_MS", 1000)
        extra.setdefault("SNAPWORKER_STATE_DIR", os.path.join(self.tmp, "worker-state"))
        return super().env(**extra)

    def psql(self, sql, db=None):
        p = subprocess.run([f"{jt.PGBIN}/psql", "-h", "127.0.0.1", "-p", self.pg_port, "-U",
                            "postgres", "-d", db or self.dbname, "-qAt", "-v", "ON_ERROR_STOP=1",
                            "-c", sql], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def port_of(self, sid):
        return self.psql(f"SELECT coalesce(nextjs_port::text, 'null') FROM build_session "
                         f"WHERE id = '{sid}'")

    def session_dir(self, sb, ss):
        return os.path.join(self.base, sb, "sessions", ss)

    def submit(self, type_, sb, ss, args=None, **kw):
        p = self.payload(type_, args or {}, sandbox_id=sb, session_id=ss, **kw)
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

    def dead(self, jid, code, timeout=60):
        h = self.finish(jid, timeout)
        self.assertEqual(h["status"], "dead", h)
        self.assertEqual(json.loads(h["error"])["code"], code, h)
        return h

    def template_with_web(self):
        """An outputs template whose web/ has package.json and node_modules/."""
        t = os.path.join(self.tmp, "tmpl")
        if not os.path.isdir(t):
            os.makedirs(os.path.join(t, "web", "node_modules"))
            with open(os.path.join(t, "web", "package.json"), "w") as f:
                f.write("{}")
        return t

    def stagings(self, sb):
        d = os.path.join(self.base, sb, "sessions")
        return [n for n in os.listdir(d) if n.startswith(".staging-")] if os.path.isdir(d) else []


class RoundTrip(JobsCase):
    def test_snapshot_then_restore_gives_back_the_identical_tree_and_config(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        sdir = self.session_dir(sb, ss)
        jt.build_workspace(sdir)
        before = jt.describe(os.path.join(sdir, "outputs"))
        res = self.ok(self.submit("snapshot", sb, ss))
        key = f"public/snapshots/{ss}/{res['snapshot_id']}.tar.gz"
        self.assertEqual(res["storage_path"], key)
        obj = os.path.join(self.store_root, key)
        with open(obj, "rb") as f:
            data = f.read()
        self.assertEqual(res["size_bytes"], len(data))
        self.assertEqual(res["sha256"], hashlib.sha256(data).hexdigest())
        with open(obj + ".sha256") as f:
            self.assertEqual(f.read().strip(), res["sha256"])
        self.assertEqual(res["entries"], len(before) + 1)  # + the outputs/ folder itself
        self.assertEqual(self.psql(f"SELECT storage_path || ' ' || size_bytes FROM snapshot "
                                   f"WHERE session_id = '{ss}'"), f"{key} {len(data)}")

        shutil.rmtree(sdir)
        llm = {"provider": "openai", "model_name": "gpt-5", "api_key": "sk-test-secret"}
        res = self.ok(self.submit("restore", sb, ss, {"llm_config": llm, "use_demo_data": False}))
        self.assertEqual(res["snapshot_storage_path"], key)
        self.assertFalse(res["fresh"])
        self.assertFalse(res["skipped"])
        self.assertIsNone(res["webapp_pid"])
        self.assertEqual(res["entries"], len(before) + 1)
        self.assertEqual(jt.describe(os.path.join(sdir, "outputs")), before)
        self.assertEqual(os.listdir(os.path.join(sdir, "attachments")), [])
        self.assertEqual(os.readlink(os.path.join(sdir, "files")),
                         os.path.join(self.base, sb, "files"))
        with open(os.path.join(sdir, "opencode.json")) as f:
            oc = json.load(f)
        self.assertEqual(oc["model"], "openai/gpt-5")
        with open(os.path.join(sdir, "AGENTS.md")) as f:
            agents = f.read()
        self.assertIn(str(res["nextjs_port"]), agents)
        self.assertNotIn("{{", agents)
        self.assertEqual(self.port_of(ss), str(res["nextjs_port"]))
        self.assertEqual(self.psql(f"SELECT status || ' ' || (now() - last_activity_at < "
                                   f"interval '1 minute') FROM build_session WHERE id = '{ss}'"),
                         "active true")
        self.assertEqual(self.stagings(sb), [])
        # the secret reaches opencode.json only: not the job hash, events or the log
        self.assertNotIn("sk-test-secret", json.dumps(self.events()))
        self.assertNotIn("sk-test-secret", self.workers[0].text())

    def test_regenerate_rewrites_config_and_reports_what_it_wrote(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        sdir = self.session_dir(sb, ss)
        os.makedirs(sdir)
        res = self.ok(self.submit("regenerate", sb, ss, {
            "llm_config": {"provider": "anthropic", "model_name": "claude"},
            "nextjs_port": 3044, "disabled_tools": [], "files_target": "/workspace/files"}))
        self.assertEqual(res, {"written": ["files", "AGENTS.md", "opencode.json"]})
        self.assertEqual(os.readlink(os.path.join(sdir, "files")), "/workspace/files")
        with open(os.path.join(sdir, "opencode.json")) as f:
            self.assertEqual(json.load(f)["permission"]["question"], "allow")
        self.dead(self.submit("regenerate", sb, new_uuid()), "workspace_missing")

    def test_snapshot_without_outputs_is_empty_and_without_session_is_workspace_missing(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        self.dead(self.submit("snapshot", sb, ss), "workspace_missing")
        os.makedirs(self.session_dir(sb, ss))
        self.assertEqual(self.ok(self.submit("snapshot", sb, ss)), {"empty": True})
        self.assertEqual(self.psql(f"SELECT count(*) FROM snapshot WHERE session_id = '{ss}'"), "0")

    def test_restore_without_any_snapshot_lays_out_a_fresh_workspace_from_the_template(self):
        tmpl = os.path.join(self.tmp, "template")
        os.makedirs(os.path.join(tmpl, "web"))
        with open(os.path.join(tmpl, "web", "README.md"), "w") as f:
            f.write("template\n")
        self.start_worker(SNAPWORKER_OUTPUTS_TEMPLATE=tmpl)
        sb, ss = new_uuid(), new_uuid()
        res = self.ok(self.submit("restore", sb, ss))
        self.assertTrue(res["fresh"])
        self.assertIsNone(res["snapshot_storage_path"])
        sdir = self.session_dir(sb, ss)
        self.assertTrue(os.path.isfile(os.path.join(sdir, "outputs", "web", "README.md")))
        self.assertTrue(os.path.isdir(os.path.join(sdir, "attachments")))
        self.assertTrue(os.path.isfile(os.path.join(sdir, "AGENTS.md")))


class Idempotence(JobsCase):
    def test_the_same_snapshot_twice_gives_one_object_and_one_row(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=1 << 20)
        sid = new_uuid()
        r1 = self.ok(self.submit("snapshot", sb, ss, {"snapshot_id": sid}))
        r2 = self.ok(self.submit("snapshot", sb, ss, {"snapshot_id": sid.upper()}))
        self.assertEqual(r1["storage_path"], r2["storage_path"])
        # the same job id again: the worker answers from the job hash
        jid = self.submit("snapshot", sb, ss)
        r3 = self.ok(jid)
        self.xadd(self.payload("snapshot", {}, id=jid, sandbox_id=sb, session_id=ss))
        wait_for(lambda: len([e for e in self.events(jid) if e["status"] == "succeeded"]) >= 2,
                 what="terminal event re-emitted")
        self.assertEqual(r3["snapshot_id"], jid)
        self.assertEqual(sorted(os.listdir(os.path.join(self.store_root, "public", "snapshots", ss))),
                         sorted([f"{sid}.tar.gz", f"{sid}.tar.gz.sha256",
                                 f"{jid}.tar.gz", f"{jid}.tar.gz.sha256"]))
        self.assertEqual(self.psql(f"SELECT count(*) FROM snapshot WHERE session_id = '{ss}'"), "2")

    def test_the_same_restore_twice_keeps_the_port(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        r1 = self.ok(self.submit("restore", sb, ss))
        r2 = self.ok(self.submit("restore", sb, ss))
        self.assertEqual(r1["nextjs_port"], r2["nextjs_port"])
        self.assertTrue(r2["skipped"])
        self.assertEqual(self.port_of(ss), str(r1["nextjs_port"]))

    def test_a_requested_port_is_recorded_and_one_held_by_another_session_is_refused(self):
        self.start_worker()
        sb, s1, s2 = new_uuid(), new_uuid(), new_uuid()
        r1 = self.ok(self.submit("restore", sb, s1, {"nextjs_port": 3077}))
        self.assertEqual(r1["nextjs_port"], 3077)
        self.assertEqual(self.port_of(s1), "3077")
        self.dead(self.submit("restore", sb, s2, {"nextjs_port": 3077}, max_attempts=1),
                  "port_exhausted")
        self.assertEqual(self.port_of(s2), "null")
        self.assertEqual(self.port_of(s1), "3077")


def files_under(root):
    """Every file below root (hidden temp files included), relative; folders are not listed."""
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _dirs, names in os.walk(root) for n in names)


class SizeCap(JobsCase):
    """SNAPWORKER_MAX_SNAPSHOT_BYTES (docs/lifecycle.md "Snapshot excludes and size cap"): the
    archive as stored (compressed) is counted as it is uploaded. Random bytes do not compress,
    so an archive is a little over the bytes of its files."""
    CAP = 2 << 20

    def session_with(self, sb, nbytes):
        ss = new_uuid()
        out = os.path.join(self.session_dir(sb, ss), "outputs")
        os.makedirs(out)
        with open(os.path.join(out, "random.bin"), "wb") as f:
            f.write(os.urandom(nbytes))
        return ss

    def test_a_snapshot_over_the_size_cap_ends_dead_and_stores_nothing(self):
        self.start_worker(SNAPWORKER_MAX_SNAPSHOT_BYTES=self.CAP)
        sb = new_uuid()
        over, under = self.session_with(sb, 3 << 20), self.session_with(sb, 1 << 20)
        jid = self.submit("snapshot", sb, over)
        h = self.dead(jid, "archive_too_large")
        self.assertEqual(h["attempt"], "1")  # permanent (docs/contract.md §4): not retried
        err = json.loads(h["error"])
        self.assertFalse(err["retryable"])
        self.assertIn("SNAPWORKER_MAX_SNAPSHOT_BYTES", err["message"])
        self.assertIn(f"({self.CAP} bytes)", err["message"])
        dead = [e for e in self.dead_entries() if e["job_id"] == jid]
        self.assertEqual(len(dead), 1, self.dead_entries())
        self.assertEqual(json.loads(dead[0]["error"]), err)
        self.assertEqual([e["status"] for e in self.events(jid) if e["status"] != "progress"],
                         ["started", "dead"])  # no `failed`: no retry
        # the upload was aborted: no object, no sidecar, no temp file; no row
        self.assertEqual(files_under(self.store_root), [])
        self.assertEqual(self.psql("SELECT count(*) FROM snapshot"), "0")
        # under the cap: stored, with its row
        res = self.ok(self.submit("snapshot", sb, under))
        self.assertGreater(res["size_bytes"], 1 << 20)
        self.assertLessEqual(res["size_bytes"], self.CAP)
        self.assertEqual(files_under(self.store_root),
                         [res["storage_path"], res["storage_path"] + ".sha256"])
        self.assertEqual(self.psql("SELECT session_id || ' ' || size_bytes FROM snapshot"),
                         f"{under} {res['size_bytes']}")


class Ports(JobsCase):
    def restore_many(self, n, port_span):
        start = 41000
        env = dict(SANDBOX_NEXTJS_PORT_START=start, SANDBOX_NEXTJS_PORT_END=start + port_span,
                   SNAPWORKER_CONCURRENCY=8)
        sb = new_uuid()
        sessions = [new_uuid() for _ in range(n)]
        ids = [self.submit("restore", sb, s, max_attempts=1) for s in sessions]
        self.start_worker(**env)
        self.start_worker(**env)
        hashes = [self.finish(j, timeout=120) for j in ids]
        return sb, sessions, hashes

    def test_fifty_concurrent_restores_get_fifty_distinct_ports(self):
        sb, sessions, hashes = self.restore_many(50, 60)
        self.assertEqual([h["status"] for h in hashes], ["succeeded"] * 50)
        ports = [json.loads(h["result"])["nextjs_port"] for h in hashes]
        self.assertEqual(len(set(ports)), 50)
        self.assertTrue(all(41000 <= p < 41060 for p in ports))
        self.assertEqual(len(set(h["worker"] for h in hashes)), 2)
        self.assertEqual(self.stagings(sb), [])

    def test_forty_ports_for_fifty_restores_leaves_ten_port_exhausted_with_null_ports(self):
        sb, sessions, hashes = self.restore_many(50, 40)
        ok = [h for h in hashes if h["status"] == "succeeded"]
        dead = [(s, h) for s, h in zip(sessions, hashes) if h["status"] == "dead"]
        self.assertEqual((len(ok), len(dead)), (40, 10))
        self.assertEqual(len(set(json.loads(h["result"])["nextjs_port"] for h in ok)), 40)
        for s, h in dead:
            self.assertEqual(json.loads(h["error"])["code"], "port_exhausted")
            self.assertEqual(self.port_of(s), "null")
            self.assertFalse(os.path.exists(self.session_dir(sb, s)))


class HostileArchives(JobsCase):
    KINDS = {
        "dotdot": "unsafe_archive", "absolute": "unsafe_archive",
        "symlink_then_file": "unsafe_archive", "hardlink_out": "unsafe_archive",
        "device": "unsafe_archive", "fifo": "unsafe_archive",
        "corrupt": "unsafe_archive", "entry_bomb": "archive_too_large",
    }

    def test_hostile_or_corrupt_archives_end_dead_and_leave_nothing_behind(self):
        self.start_worker(SNAPWORKER_MAX_RESTORE_ENTRIES=100)
        outside = os.path.join(self.tmp, "outside")
        os.makedirs(outside)
        sb = new_uuid()
        for kind, code in self.KINDS.items():
            with self.subTest(kind=kind):
                ss = new_uuid()
                key = f"public/snapshots/{ss}/{new_uuid()}.tar.gz"
                jt.write_object(self.store_root, key, jt.hostile_archive(kind, outside),
                                sidecar=kind != "corrupt")
                # via the latest row for half of them, the explicit path for the rest
                if kind in ("dotdot", "device", "corrupt", "entry_bomb"):
                    self.psql(f"INSERT INTO build_session (id) VALUES ('{ss}')")
                    self.psql(f"INSERT INTO snapshot (id, session_id, storage_path) VALUES "
                              f"('{new_uuid()}', '{ss}', '{key}')")
                    args = {}
                else:
                    args = {"snapshot_storage_path": key}
                h = self.dead(self.submit("restore", sb, ss, args), code)
                self.assertEqual(h["attempt"], "1")  # permanent: not retried
                self.assertEqual(self.port_of(ss) or "null", "null")
                self.assertFalse(os.path.exists(self.session_dir(sb, ss)))
                self.assertEqual(self.stagings(sb), [])
                self.assertEqual(os.listdir(outside), [])
                self.assertFalse(os.path.exists(os.path.join(self.base, sb, "escaped.txt")))
                self.assertFalse(os.path.exists(os.path.join(self.base, "escaped.txt")))

    def test_a_sidecar_mismatch_is_a_permanent_storage_error_and_the_old_port_comes_back(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        self.psql(f"INSERT INTO build_session (id, nextjs_port) VALUES ('{ss}', NULL)")
        key = f"public/snapshots/{ss}/{new_uuid()}.tar.gz"
        jt.write_object(self.store_root, key, jt.hostile_archive("setuid", self.tmp))
        with open(os.path.join(self.store_root, key + ".sha256"), "w") as f:
            f.write("0" * 64)
        self.dead(self.submit("restore", sb, ss, {"snapshot_storage_path": key}), "storage_error")
        self.assertEqual(self.port_of(ss), "null")
        self.assertFalse(os.path.exists(self.session_dir(sb, ss)))
        self.assertEqual(self.stagings(sb), [])

    def test_a_snapshot_path_of_another_session_is_invalid_payload(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        other = f"public/snapshots/{new_uuid()}/{new_uuid()}.tar.gz"
        self.dead(self.submit("restore", sb, ss, {"snapshot_storage_path": other}),
                  "invalid_payload")
        self.dead(self.submit("restore", sb, ss, {"snapshot_storage_path":
                                                  f"other/snapshots/{ss}/{new_uuid()}.tar.gz"}),
                  "invalid_payload")
        self.assertEqual(self.psql(f"SELECT count(*) FROM build_session WHERE id = '{ss}'"), "0")


class Serialization(JobsCase):
    def test_a_snapshot_and_a_restore_of_one_session_never_overlap(self):
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=30 << 20)
        pairs = []
        for _ in range(3):
            pairs.append((self.submit("snapshot", sb, ss), self.submit("restore", sb, ss)))
        self.start_worker(SNAPWORKER_CONCURRENCY=4)
        self.start_worker(SNAPWORKER_CONCURRENCY=4)
        spans = []
        for a, b in pairs:
            for jid in (a, b):
                self.ok(jid, timeout=120)
                ev = self.events(jid)
                start = max(int(e["ts"]) for e in ev if e["status"] == "started")
                end = max(int(e["ts"]) for e in ev if e["status"] == "succeeded")
                spans.append((start, end, jid))
        spans.sort()
        for (s1, e1, j1), (s2, e2, j2) in zip(spans, spans[1:]):
            self.assertLessEqual(e1, s2, f"{j1} [{s1},{e1}] overlaps {j2} [{s2},{e2}]")


class DevServer(JobsCase):
    def test_restore_starts_the_dev_server_records_its_pid_and_the_port_answers(self):
        port = free_port_block(1)
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}} --delay 0.5"
        self.start_worker(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=30,
                          SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 1,
                          AWS_SECRET_ACCESS_KEY="aws-secret-value", CELERY_BROKER_URL="")
        sb, ss = new_uuid(), new_uuid()
        web = os.path.join(self.session_dir(sb, ss), "outputs", "web")
        os.makedirs(os.path.join(web, "node_modules"))
        os.makedirs(os.path.join(self.session_dir(sb, ss), "attachments"))
        with open(os.path.join(web, "package.json"), "w") as f:
            f.write("{}")
        res = self.ok(self.submit("restore", sb, ss))
        pid = res["webapp_pid"]
        self.assertIsInstance(pid, int)
        self.servers.append(pid)
        self.assertTrue(res["skipped"])
        self.assertEqual(res["nextjs_port"], port)
        sdir = self.session_dir(sb, ss)
        with open(os.path.join(sdir, "nextjs.pid")) as f:
            self.assertEqual(int(f.read()), pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            self.assertLess(r.status, 500)
        with open(f"/proc/{pid}/environ", "rb") as f:
            names = [kv.split(b"=", 1)[0].decode() for kv in f.read().split(b"\0") if kv]
        for bad in ("REDIS_URL", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "SNAPWORKER_QUEUE"):
            self.assertNotIn(bad, names)
        self.assertIn("PATH", names)
        self.assertEqual(os.getsid(pid), pid)
        with open(os.path.join(sdir, "nextjs.log")) as f:
            self.assertIn(f"stand-in dev server on {port}", f.read())
        # a second restore replaces the server: the old pid goes away, the new one answers
        res2 = self.ok(self.submit("restore", sb, ss))
        self.servers.append(res2["webapp_pid"])
        self.assertNotEqual(res2["webapp_pid"], pid)
        self.assertTrue(jt.wait_gone(pid))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            self.assertLess(r.status, 500)

    def test_a_dev_server_that_dies_fails_the_restore_and_rolls_everything_back(self):
        port = free_port_block(1)
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}} --fail-after 0.3"
        self.start_worker(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=10,
                          SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 1,
                          SNAPWORKER_OUTPUTS_TEMPLATE=self.template_with_web())
        sb, ss = new_uuid(), new_uuid()
        self.dead(self.submit("restore", sb, ss, max_attempts=2), "backend_error")
        self.assertEqual(self.port_of(ss), "null")
        self.assertFalse(os.path.exists(self.session_dir(sb, ss)))
        self.assertEqual(self.stagings(sb), [])

    def test_a_worker_killed_between_spawning_the_dev_server_and_recording_it_leaves_no_orphan(self):
        """docs/reliability.md "Fixed": the job process stops itself after the spawn and before
        the record (SNAPWORKER_TEST_STOP_BEFORE_WEBAPP_RECORD), the worker is killed -9 there
        (the job process follows it, PR_SET_PDEATHSIG). The server was spawned behind its start
        gate, which sees EOF and exits without exec'ing: nothing of that attempt keeps the
        port, and the rerun's server is the only one and owns it."""
        port = free_port_block(1)
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}}"
        env = dict(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=30, SNAPWORKER_LEASE_S=2,
                   SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 1)
        sb, ss = new_uuid(), new_uuid()
        sdir = self.session_dir(sb, ss)
        web = os.path.join(sdir, "outputs", "web")
        os.makedirs(os.path.join(web, "node_modules"))
        os.makedirs(os.path.join(sdir, "attachments"))
        with open(os.path.join(web, "package.json"), "w") as f:
            f.write("{}")
        try:
            a = self.start_worker(SNAPWORKER_TEST_STOP_BEFORE_WEBAPP_RECORD=ss, **env)
            jid = self.submit("restore", sb, ss)
            job = wait_for(lambda: next((k for k in children(a.proc.pid) if proc_state(k) == "T"),
                                        None), 30, what="worker A's job process to stop itself")
            spawned = children(job)
            self.servers += spawned  # killed at the end whatever happens
            self.assertEqual(len(spawned), 1, "the job process spawned the dev server")
            a.kill9()
            wait_for(lambda: gone(job), 10, what="the job process to die with its worker")
            wait_for(lambda: gone(spawned[0]), 10,
                     what=f"what the killed attempt spawned to go (now {proc_state(spawned[0])}, "
                          f"stand-in servers on the port {devservers(port)})")
            self.assertEqual(devservers(port), [])
            self.assertEqual(listeners(port), [])
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "worker-state", "webapp-" + ss)))
            # the rerun, on another worker once A's lease lapsed
            self.start_worker(**env)
            res = self.ok(jid, timeout=60)
            pid = res["webapp_pid"]
            self.servers.append(pid)
            self.assertEqual(devservers(port), [pid])
            wait_for(lambda: listeners(port) == [pid], 10, what=f"{pid} listening on {port} "
                     f"(now {listeners(port)})")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                self.assertLess(r.status, 500)
            with open(os.path.join(sdir, "nextjs.pid")) as f:
                self.assertEqual(int(f.read()), pid)
        finally:
            self.servers += devservers(port)


def tree_of(root):
    """{relative path: (kind, bytes or link target)} of everything under root, links unfollowed."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", None)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), os.stat(p).st_mode & 0o7777)
    return out


def start_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


class HostileSandbox(JobsCase):
    """Issue 10: what a sandbox can write must not steer the worker (docs/jobs.md
    "What a hostile sandbox cannot do")."""

    def web_session(self, sb, ss):
        web = os.path.join(self.session_dir(sb, ss), "outputs", "web")
        os.makedirs(os.path.join(web, "node_modules"))
        with open(os.path.join(web, "package.json"), "w") as f:
            f.write("{}")
        return self.session_dir(sb, ss)

    def test_issue10_a_forged_pid_file_never_makes_the_worker_signal_a_process(self):
        port = free_port_block(2)
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}}"
        w = self.start_worker(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=30,
                              SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 2)
        sleeper = subprocess.Popen(["/bin/sleep", "300"], start_new_session=True)
        try:
            sb = new_uuid()
            for victim in (sleeper.pid, w.proc.pid):
                with self.subTest(victim="sleeper" if victim == sleeper.pid else "worker"):
                    ss = new_uuid()
                    sdir = self.web_session(sb, ss)
                    with open(os.path.join(sdir, "nextjs.pid"), "w") as f:
                        f.write(f"{victim}\n")
                    with open(os.path.join(sdir, "nextjs.pid.start"), "w") as f:
                        f.write(f"{victim} {start_ticks(victim)}\n")
                    res = self.ok(self.submit("restore", sb, ss))
                    self.servers.append(res["webapp_pid"])
                    time.sleep(0.5)
                    self.assertIsNone(sleeper.poll(), "the sleeper was signalled")
                    self.assertTrue(w.alive(), "the worker was signalled")
                    with open(os.path.join(sdir, "nextjs.pid")) as f:  # still written for Onyx
                        self.assertEqual(int(f.read()), res["webapp_pid"])
                    # the server it started is replaced by the next restore: the worker's own
                    # record says which process that is, whatever nextjs.pid says
                    with open(os.path.join(sdir, "nextjs.pid"), "w") as f:
                        f.write(f"{victim}\n")
                    res2 = self.ok(self.submit("restore", sb, ss))
                    self.servers.append(res2["webapp_pid"])
                    self.assertTrue(jt.wait_gone(res["webapp_pid"]))
                    self.assertIsNone(sleeper.poll(), "the sleeper was signalled")
                    self.assertTrue(w.alive(), "the worker was signalled")
                    os.killpg(res2["webapp_pid"], signal.SIGKILL)
                    jt.wait_gone(res2["webapp_pid"])
        finally:
            sleeper.kill()
            sleeper.wait()

    def test_issue10_a_symlinked_layout_folder_is_refused_and_nothing_outside_changes(self):
        self.start_worker()
        outside = os.path.join(self.tmp, "outside")
        llm = {"provider": "openai", "model_name": "m", "api_key": "sk-must-not-leak"}
        for pos in ("sandbox", "sessions", "session", "outputs"):
            for job in ("regenerate", "snapshot", "restore"):
                with self.subTest(position=pos, job=job):
                    sb, ss = new_uuid(), new_uuid()
                    shutil.rmtree(outside, ignore_errors=True)
                    # the link's target looks like the folder it replaces, with a secret inside
                    if pos == "outputs":
                        os.makedirs(self.session_dir(sb, ss))
                        os.makedirs(os.path.join(outside, "web"))
                        with open(os.path.join(outside, "web", "secret.txt"), "w") as f:
                            f.write("host secret")
                        os.symlink(outside, os.path.join(self.session_dir(sb, ss), "outputs"))
                    else:
                        real = {"sandbox": os.path.join(outside, "sessions", ss),
                                "sessions": os.path.join(outside, ss), "session": outside}[pos]
                        os.makedirs(os.path.join(real, "outputs"))
                        with open(os.path.join(real, "outputs", "secret.txt"), "w") as f:
                            f.write("host secret")
                        link = {"sandbox": os.path.join(self.base, sb),
                                "sessions": os.path.join(self.base, sb, "sessions"),
                                "session": self.session_dir(sb, ss)}[pos]
                        os.makedirs(os.path.dirname(link), exist_ok=True)
                        os.symlink(outside, link)
                    before = tree_of(outside)
                    args = {"llm_config": llm} if job != "snapshot" else {}
                    h = self.dead(self.submit(job, sb, ss, args), "backend_error")
                    self.assertEqual(h["attempt"], "1")  # permanent
                    self.assertEqual(tree_of(outside), before)
                    self.assertEqual(os.listdir(os.path.join(self.store_root, "public", "snapshots"))
                                     if os.path.isdir(os.path.join(self.store_root, "public")) else [], [])

    def test_issue10_opencode_json_holding_the_api_key_is_written_0600(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        os.makedirs(self.session_dir(sb, ss))
        self.ok(self.submit("regenerate", sb, ss, {"llm_config": {"provider": "openai",
                                                                  "api_key": "sk-one"}}))
        oc = os.path.join(self.session_dir(sb, ss), "opencode.json")
        self.assertEqual(os.stat(oc).st_mode & 0o777, 0o600)
        res = self.ok(self.submit("restore", sb, new_uuid()))
        self.assertTrue(res["fresh"])

    def test_issue10_a_failed_restore_puts_the_sessions_config_back_as_it_was(self):
        port = free_port_block(1)
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}} --fail-after 0.2"
        self.start_worker(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=10,
                          SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 1)
        sb, ss = new_uuid(), new_uuid()
        llm = {"provider": "openai", "model_name": "m", "api_key": "sk-new-secret"}
        # an existing session with config: the failed restore leaves it as it was
        os.makedirs(self.session_dir(sb, ss))
        self.ok(self.submit("regenerate", sb, ss, {"llm_config": {"provider": "openai",
                                                                  "api_key": "sk-old"}}))
        self.web_session(sb, ss)
        before = tree_of(self.session_dir(sb, ss))
        self.dead(self.submit("restore", sb, ss, {"llm_config": llm}, max_attempts=1),
                  "backend_error")
        after = tree_of(self.session_dir(sb, ss))
        after.pop("nextjs.log", None)
        self.assertEqual(after, before)
        # an existing session without config: none is left behind
        s2 = new_uuid()
        sdir = self.web_session(sb, s2)
        self.dead(self.submit("restore", sb, s2, {"llm_config": llm}, max_attempts=1),
                  "backend_error")
        self.assertEqual(sorted(set(os.listdir(sdir)) - {"nextjs.log"}), ["outputs"])
        self.assertEqual(self.stagings(sb), [])


class PostgresOutage(JobsCase):
    """Stops and starts this class's own PostgreSQL (same data dir and port)."""

    def slow_server_env(self, port, extra_args):
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}} {extra_args}"
        return dict(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=30,
                    SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 3,
                    SNAPWORKER_OUTPUTS_TEMPLATE=self.template_with_web())

    def test_postgres_stopped_during_a_restore_is_retried_and_leaks_no_port(self):
        port = free_port_block(3)
        self.start_worker(**self.slow_server_env(port, "--delay 3"))
        sb, ss = new_uuid(), new_uuid()
        jid = self.submit("restore", sb, ss, max_attempts=20)
        # the port is allocated and committed, then the dev server takes ~3 s to answer
        wait_for(lambda: self.port_of(ss) not in ("", "null"), 20, what="port allocated")
        jt.pg_stop(self.services.dir)
        try:
            wait_for(lambda: self.job_hash(jid).get("status") == "retrying" or
                     int(self.job_hash(jid).get("attempt", "1")) > 1, 30, what="a retry")
        finally:
            time.sleep(1)
            jt.pg_start(self.services.dir, self.pg_port)
        res = self.ok(jid, timeout=90)
        self.servers.append(res["webapp_pid"])
        self.assertEqual(self.port_of(ss), str(res["nextjs_port"]))
        self.assertEqual(self.psql("SELECT count(*) FROM build_session WHERE nextjs_port IS NOT NULL"),
                         "1")
        self.assertEqual(self.stagings(sb), [])

    def test_postgres_down_when_a_restore_ends_dead_rolls_the_port_back_once_it_returns(self):
        port = free_port_block(3)
        self.start_worker(**self.slow_server_env(port, "--fail-after 3"))
        sb, ss = new_uuid(), new_uuid()
        self.psql(f"INSERT INTO build_session (id) VALUES ('{ss}')")
        jid = self.submit("restore", sb, ss, max_attempts=1)
        wait_for(lambda: self.port_of(ss) not in ("", "null"), 20, what="port allocated")
        jt.pg_stop(self.services.dir)
        try:
            w = self.workers[0]
            wait_for(lambda: "on_dead_retry" in w.text(), 30, what="on_dead retried")
            self.assertNotEqual(self.job_hash(jid).get("status"), "dead")
        finally:
            jt.pg_start(self.services.dir, self.pg_port)
        self.dead(jid, "backend_error", timeout=60)
        self.assertEqual(self.port_of(ss), "null")
        self.assertFalse(os.path.exists(self.session_dir(sb, ss)))


class S3RoundTrip(JobsCase):
    """The same round trip against s3rver (multipart upload: 5 MiB parts, a 12 MiB file)."""
    SERVICES = ("redis", "postgres", "s3rver")

    def s3env(self):
        return {"SNAPWORKER_STORE": "s3://onyx-sandbox-files",
                "AWS_ENDPOINT_URL_S3": self.services.env["S3_ENDPOINT"], "AWS_ENDPOINT_URL": "",
                "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
                "AWS_SESSION_TOKEN": "", "AWS_REGION": "us-east-1",
                "SNAPWORKER_S3_PART_SIZE": 5 * 1024 * 1024}

    def test_snapshot_to_s3_then_restore_from_it_gives_back_the_identical_tree(self):
        self.start_worker(**self.s3env())
        sb, ss = new_uuid(), new_uuid()
        sdir = self.session_dir(sb, ss)
        jt.build_workspace(sdir, big_bytes=12 * 1024 * 1024)
        before = jt.describe(os.path.join(sdir, "outputs"))
        snap = self.ok(self.submit("snapshot", sb, ss))
        p = self.cli("store", "head", snap["storage_path"], **self.s3env())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(str(snap["size_bytes"]), p.stdout)
        shutil.rmtree(sdir)
        res = self.ok(self.submit("restore", sb, ss))
        self.assertEqual(res["snapshot_storage_path"], snap["storage_path"])
        self.assertEqual(jt.describe(os.path.join(sdir, "outputs")), before)
        self.assertEqual(self.stagings(sb), [])
        self.assertNotIn("S3RVER", json.dumps(self.events()))
