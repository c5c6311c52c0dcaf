"""Fencing the store commit and sweeping orphans (issue 10, items 2 and 6).

Regression (issue 10 item 2): a worker that stalls right before it commits a snapshot
object loses its lease; another worker reruns the job on the newer workspace and
succeeds; the first one resumes. Before write-once objects, its stale object replaced
the newer one, so the row, the job result and the sidecar disagreed with the stored
bytes and a restore brought back the old content. Now the first commit wins and the
resumed attempt adopts the stored object. Both stores, through the real commit path:
  file://  the worker's job process stops itself right before the commit
           (SNAPWORKER_TEST_STOP_BEFORE_COMMIT, docs/store.md "Test hooks") and the test
           then SIGSTOPs the daemon too, as a VM pause would stop both (docs/processes.md);
  s3://    the proxy holds the worker's commit request (single PUT, or
           CompleteMultipartUpload) and the test SIGSTOPs the worker, daemon and job
           process: the request is in flight when it pauses, and reaches S3 after the
           newer object.
Orphans (item 6): `snapworker store gc` removes temp files and aborts multipart uploads
older than SNAPWORKER_STORE_ORPHAN_GRACE_S, keeps younger ones and every object; a worker
sweeps between jobs. Restores check the object against the row's size_bytes.
A stale restore that ends dead (lease lost, last attempt) skips its on_dead port rollback,
which would take the port away from the live attempt (docs/store.md "Writes of a stale
attempt").

tests/integration/s3proxy.py acts as S3 does where s3rver does not (If-None-Match: *,
abort, ListMultipartUploads) and holds requests on demand."""
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request

from harness import BIN, children, new_uuid, pause, proc_state, resume, wait_for
import jobs_tree as jt
from test_50_jobs import JobsCase

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1024 * 1024
BUCKET = "onyx-sandbox-files"

FAST_TESTS = [
    "test_a_worker_stopped_before_its_file_commit_cannot_replace_the_newer_snapshot",
    "test_store_gc_removes_old_temp_files_and_keeps_young_ones_and_objects",
]


def members(data):
    """{name: bytes} of the regular files of a tar.gz."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        for m in tf.getmembers():
            if m.isfile():
                out[m.name] = tf.extractfile(m).read()
    return out


class FenceCase(JobsCase):
    SERVICES = ("redis", "postgres", "s3rver")
    proxy = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.proxy = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "s3proxy.py"),
             "--upstream", cls.services.env["S3_ENDPOINT"], "--access-key", "S3RVER",
             "--secret-key", "S3RVER", "--region", "us-east-1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = cls.proxy.stdout.readline()
        assert line.startswith("PORT="), line
        cls.proxy_url = "http://127.0.0.1:" + line.strip()[5:]

    @classmethod
    def tearDownClass(cls):
        if cls.proxy:
            cls.proxy.terminate()
            cls.proxy.wait(timeout=10)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.ctl("reset")

    def tearDown(self):
        self.ctl("release", {})
        for w in self.workers:  # a stopped worker cannot even die of SIGTERM
            if w.alive():
                resume(w.proc.pid)
        super().tearDown()

    def ctl(self, what, body=None):
        req = urllib.request.Request(self.proxy_url + "/__proxy/" + what,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     method="POST" if what != "stats" else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def s3env(self, **extra):
        e = {"SNAPWORKER_STORE": "s3://" + BUCKET, "AWS_ENDPOINT_URL_S3": self.proxy_url,
             "AWS_ENDPOINT_URL": "", "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
             "AWS_SESSION_TOKEN": "", "AWS_REGION": "us-east-1",
             "SNAPWORKER_S3_PART_SIZE": 5 * MiB, "SNAPWORKER_STORE_TIMEOUT_S": 120}
        e.update(extra)
        return e

    def fileenv(self, **extra):
        e = {"SNAPWORKER_STORE": "file://" + self.store_root}
        e.update(extra)
        return e

    def get_object(self, env, key):
        dst = os.path.join(self.tmp, "obj-" + new_uuid())
        p = self.cli("store", "get", key, dst, **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(dst, "rb") as f:
            data = f.read()
        os.unlink(dst)
        return data

    def head(self, env, key):
        p = self.cli("store", "head", key, **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def write_version(self, sdir, text, pad=0):
        with open(os.path.join(sdir, "outputs", "version.txt"), "w") as f:
            f.write(text + "\n" + "x" * pad)

    # ---- the stall scenario ---------------------------------------------------------
    def stalled_commit(self, env, stop_a, release_a, big_bytes):
        """Worker A snapshots v1 and is paused at its commit (stop_a); B reruns the job on
        v2 after A's lease lapsed and succeeds; A resumes (release_a). Returns B's
        result, the key and A's worker."""
        sb, ss = new_uuid(), new_uuid()
        sdir = self.session_dir(sb, ss)
        jt.build_workspace(sdir, big_bytes=big_bytes)
        self.write_version(sdir, "A")
        jid = new_uuid()
        a = self.start_worker(SNAPWORKER_LEASE_S=2, **env, **stop_a["env"])
        self.submit("snapshot", sb, ss, id=jid)
        stop_a["wait"](a)
        self.assertEqual(proc_state(a.proc.pid), "T", "worker A is stopped at its commit")
        self.write_version(sdir, "B", pad=5000)  # the workspace moves on: another size
        self.start_worker(SNAPWORKER_LEASE_S=2, **env)
        res_b = self.ok(jid, timeout=60)
        release_a(a)
        # A resumes, meets the stored object, and its finish is fenced out
        wait_for(lambda: re.search(r"job_lease_lost[^\n]*duration_ms", a.text()), 60,
                 what="worker A's fenced finish")
        return sb, ss, sdir, jid, res_b, a

    def check_outcome(self, env, sb, ss, sdir, jid, res_b):
        key = res_b["storage_path"]
        data = self.get_object(env, key)  # verified against the sidecar by the store
        files = members(data)
        self.assertTrue(files["outputs/version.txt"].startswith(b"B\n"),
                        "the stored object is B's snapshot, not A's stale one")
        self.assertEqual(hashlib.sha256(data).hexdigest(), res_b["sha256"])
        self.assertEqual(len(data), res_b["size_bytes"])
        head = self.head(env, key)
        self.assertEqual((head["size_bytes"], head["sha256"]), (len(data), res_b["sha256"]))
        self.assertEqual(self.psql(f"SELECT size_bytes FROM snapshot WHERE storage_path = '{key}'"),
                         str(len(data)))
        self.assertEqual(json.loads(self.job_hash(jid)["result"])["sha256"], res_b["sha256"])
        # and a restore brings back B's workspace
        shutil.rmtree(sdir)
        rid = self.submit("restore", sb, ss, {"start_webapp": False})
        self.ok(rid, timeout=60)
        with open(os.path.join(sdir, "outputs", "version.txt")) as f:
            self.assertTrue(f.read().startswith("B\n"))

    def test_a_worker_stopped_before_its_file_commit_cannot_replace_the_newer_snapshot(self):
        env = self.fileenv()

        def wait_stopped(a):
            # the hook stops the process that commits: the job process (docs/processes.md);
            # then the daemon is paused too, so the whole worker is stalled as by a VM pause
            # and its lease lapses
            wait_for(lambda: any(proc_state(k) == "T" for k in children(a.proc.pid)), 30,
                     what="worker A's job process to stop itself")
            pause(a.proc.pid)
            wait_for(lambda: proc_state(a.proc.pid) == "T", 10, what="worker A paused")

        stop = {"env": {"SNAPWORKER_TEST_STOP_BEFORE_COMMIT": "/snapshots/"}, "wait": wait_stopped}
        sb, ss, sdir, jid, res_b, a = self.stalled_commit(
            env, stop, lambda a: resume(a.proc.pid), big_bytes=1 * MiB)
        self.check_outcome(env, sb, ss, sdir, jid, res_b)
        folder = os.path.join(self.store_root, "public", "snapshots", ss)
        self.assertEqual(sorted(os.listdir(folder)),
                         sorted([os.path.basename(res_b["storage_path"]),
                                 os.path.basename(res_b["storage_path"]) + ".sha256"]),
                         "A's temp file was removed, nothing else left")

    def s3_stall(self, rule, big_bytes):
        env = self.s3env()
        self.ctl("rules", [dict(rule, action="hold", name="A", count=1)])

        def wait_held(a):
            wait_for(lambda: any(e.get("result") == "held" for e in self.ctl("stats")["log"]), 60,
                     what="A's commit request held by the proxy")
            pause(a.proc.pid)  # paused with its request in flight
            wait_for(lambda: proc_state(a.proc.pid) == "T", 10, what="worker A stopped")

        def release(a):
            self.ctl("release", {"name": "A"})  # the request reaches S3 now
            # and is answered before A runs again: resumed first, A's daemon could end its
            # job process (lease lost) while the proxy's held thread is still waking up,
            # and the request would then meet an aborted upload instead of B's object
            wait_for(lambda: all(e.get("result") != "held" for e in self.ctl("stats")["log"]), 30,
                     what="A's held request answered")
            resume(a.proc.pid)

        sb, ss, sdir, jid, res_b, a = self.stalled_commit(env, {"env": {}, "wait": wait_held},
                                                          release, big_bytes)
        log = self.ctl("stats")["log"]
        self.check_outcome(env, sb, ss, sdir, jid, res_b)
        self.assertIn("precondition failed", [e["result"] for e in log],
                      "A's commit met B's object: 412")
        return log

    def test_an_s3_multipart_commit_in_flight_when_its_worker_paused_cannot_replace_the_newer_snapshot(self):
        log = self.s3_stall({"method": "POST", "query": "uploadId=", "suffix": ".tar.gz"},
                            big_bytes=12 * MiB)
        aborted = [e for e in log if e["method"] == "DELETE" and "uploadId=" in e["path"]]
        self.assertEqual([e["result"] for e in aborted], ["aborted"],
                         [(e["method"], e["path"][-60:], e["result"]) for e in log if e["method"] != "PUT"])

    def test_an_s3_single_put_in_flight_when_its_worker_paused_cannot_replace_the_newer_snapshot(self):
        self.s3_stall({"method": "PUT", "suffix": ".tar.gz"}, big_bytes=64 * 1024)

    # ---- restore checks ----------------------------------------------------------------
    def test_a_restore_refuses_an_object_whose_size_differs_from_its_row(self):
        self.start_worker(**self.fileenv())
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=64 * 1024)
        snap = self.ok(self.submit("snapshot", sb, ss))
        shutil.rmtree(self.session_dir(sb, ss))
        self.psql(f"UPDATE snapshot SET size_bytes = size_bytes + 1 WHERE id = '{snap['snapshot_id']}'")
        h = self.dead(self.submit("restore", sb, ss, {"start_webapp": False}), "storage_error")
        err = json.loads(h["error"])
        self.assertFalse(err["retryable"])
        self.assertIn("snapshot row records", err["message"])
        self.assertFalse(os.path.exists(os.path.join(self.session_dir(sb, ss), "outputs")))
        self.assertEqual(self.stagings(sb), [])
        # an Onyx row (size_bytes 0) is not checked
        self.psql(f"UPDATE snapshot SET size_bytes = 0 WHERE id = '{snap['snapshot_id']}'")
        self.ok(self.submit("restore", sb, ss, {"start_webapp": False}))

    # ---- a stale restore that ends dead -------------------------------------------------
    def test_a_stale_restore_that_ends_dead_does_not_roll_back_the_live_attempts_port(self):
        """docs/store.md "Writes of a stale attempt": worker A takes the session's port P
        (memo: port_before null, port_job P) and is paused while its GET of the snapshot is
        held by the proxy. B reclaims the delivery (the same attempt and memo), restores and
        succeeds with P. A resumes, learns that its lease is lost and SIGTERMs its job
        process, whose GET (still held) is cancelled; as that was its last attempt
        (max_attempts 1) the attempt ends dead. Its on_dead rollback, a compare-and-set
        P -> NULL, would match and take P away from the session B restored (in production,
        from B's running dev server; no dev server here, the row is what the rollback
        changes): worker/exec.c skips it when the lease is known lost."""
        # kill grace 1 s: should the held GET ignore the SIGTERM, A's job process is killed
        # soon after and the attempt still ends dead
        env = self.s3env(SNAPWORKER_LEASE_S=2, SNAPWORKER_JOB_KILL_GRACE_S=1)
        sb, ss = new_uuid(), new_uuid()
        sdir = self.session_dir(sb, ss)
        jt.build_workspace(sdir, big_bytes=64 * 1024)
        a = self.start_worker(**env)
        self.ok(self.submit("snapshot", sb, ss))
        shutil.rmtree(sdir)
        self.assertEqual(self.port_of(ss), "null")
        self.ctl("rules", [{"method": "GET", "suffix": ".tar.gz", "action": "hold", "name": "A",
                            "count": 1}])
        jid = self.submit("restore", sb, ss, {"start_webapp": False}, max_attempts=1)
        wait_for(lambda: any(e.get("result") == "held" for e in self.ctl("stats")["log"]), 30,
                 what="A's GET of the snapshot held by the proxy")
        port = self.port_of(ss)
        self.assertNotEqual(port, "null", "A took the port before its GET")
        pause(a.proc.pid)
        wait_for(lambda: proc_state(a.proc.pid) == "T", 10, what="worker A paused")
        self.start_worker(**env)
        res_b = self.ok(jid, timeout=60)
        self.assertEqual(str(res_b["nextjs_port"]), port, "B restored with the memoised port")
        self.assertEqual(self.port_of(ss), port)
        resume(a.proc.pid)  # its GET stays held: A cannot finish the restore
        fenced = wait_for(lambda: re.search(r"job_lease_lost[^\n]*duration_ms[^\n]*", a.text()),
                          60, what="worker A's fenced finish").group(0)
        self.assertIn(jid, fenced)
        self.assertNotIn("delay_ms", fenced, "A's attempt ended dead, not retrying: " + fenced)
        self.assertEqual(self.port_of(ss), port, "the live attempt's port was not rolled back")
        self.assertRegex(a.text(), rf"on_dead_skipped[^\n]*{jid}")
        self.assertEqual(self.job_hash(jid)["status"], "succeeded")

    # ---- orphans ----------------------------------------------------------------------
    def test_store_gc_removes_old_temp_files_and_keeps_young_ones_and_objects(self):
        env = self.fileenv()
        ns = "t" + new_uuid()[:8]
        # a kill -9 mid-put leaves its temp file
        full = dict(os.environ)
        full.update({k: str(v) for k, v in self.env(**env).items()})
        proc = subprocess.Popen([BIN, "store", "put", f"{ns}/s/killed.tar.gz", "-"], env=full,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        proc.stdin.write(os.urandom(3 * MiB))
        proc.stdin.flush()
        folder = os.path.join(self.store_root, ns, "s")
        wait_for(lambda: os.path.isdir(folder) and any(n.startswith(".swtmp-") for n in os.listdir(folder)),
                 what="the temp file")
        proc.kill()
        proc.wait()
        proc.stdin.close()
        old = [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(".swtmp-")]
        self.assertEqual(len(old), 1)
        two_hours_ago = time.time() - 7200
        os.utime(old[0], (two_hours_ago, two_hours_ago))
        young = os.path.join(folder, ".swtmp-00000000000000ff")
        with open(young, "wb") as f:
            f.write(b"in progress")
        p = self.cli("store", "put", f"{ns}/s/kept.tar.gz", self.write_file("kept", b"obj"), **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        obj = os.path.join(folder, "kept.tar.gz")
        os.utime(obj, (two_hours_ago, two_hours_ago))  # old objects are never touched
        p = self.cli("store", "gc", ns + "/", **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual((out["seen"], out["removed"], out["kept"], out["truncated"]), (2, 1, 1, False))
        self.assertEqual(out["grace_s"], 3600)
        self.assertGreaterEqual(out["removed_bytes"], 1)
        self.assertFalse(os.path.exists(old[0]))
        self.assertTrue(os.path.exists(young))
        self.assertEqual(self.head(env, f"{ns}/s/kept.tar.gz")["size_bytes"], 3)
        # the grace is configurable
        p = self.cli("store", "gc", ns + "/", SNAPWORKER_STORE_ORPHAN_GRACE_S=60, **env)
        self.assertEqual(json.loads(p.stdout)["removed"], 0)
        os.utime(young, (time.time() - 120, time.time() - 120))
        p = self.cli("store", "gc", SNAPWORKER_STORE_ORPHAN_GRACE_S=60, **env)
        self.assertEqual(json.loads(p.stdout)["removed"], 1)
        self.assertTrue(os.path.exists(obj))

    def write_file(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def start_multipart_and_kill(self, env, key):
        full = dict(os.environ)
        full.update({k: str(v) for k, v in self.env(**env).items()})
        proc = subprocess.Popen([BIN, "store", "put", key, "-"], env=full, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.stdin.write(os.urandom(6 * MiB))  # the first 5 MiB part starts the upload
        proc.stdin.flush()
        wait_for(lambda: any(u["key"].endswith(key) for u in self.ctl("stats")["uploads"].values()),
                 30, what=f"an open multipart upload of {key}")
        proc.kill()
        proc.wait()
        proc.stdin.close()

    def test_store_gc_aborts_old_multipart_uploads_and_keeps_young_ones(self):
        env = self.s3env()
        ns = "t" + new_uuid()[:8]
        self.start_multipart_and_kill(env, f"{ns}/old.tar.gz")
        self.ctl("age", {"seconds": 7200})
        self.start_multipart_and_kill(env, f"{ns}/young.tar.gz")
        p = self.cli("store", "put", f"{ns}/obj.tar.gz", self.write_file("o", b"committed"), **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.ctl("reset")
        p = self.cli("store", "gc", ns + "/", **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual((out["seen"], out["removed"], out["kept"]), (2, 1, 1), out)
        st = self.ctl("stats")
        open_keys = sorted(u["key"].rsplit("/", 1)[1] for u in st["uploads"].values()
                           if u["key"].startswith(ns + "/"))
        self.assertEqual(open_keys, ["young.tar.gz"])
        self.assertEqual([e["result"] for e in st["log"] if e["method"] == "DELETE"], ["aborted"])
        self.assertEqual(st["sig_failures"], 0)  # ListMultipartUploads and abort are signed right
        self.assertEqual(self.head(env, f"{ns}/obj.tar.gz")["size_bytes"], 9)

    def test_a_worker_sweeps_its_tenants_old_temp_files_between_jobs(self):
        self.start_worker(**self.fileenv())
        sb, ss = new_uuid(), new_uuid()
        folder = os.path.join(self.store_root, "public", "snapshots", new_uuid())
        os.makedirs(folder)
        stale = os.path.join(folder, ".swtmp-00000000000000ee")
        with open(stale, "wb") as f:
            f.write(b"left by a kill -9")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=1024)
        self.ok(self.submit("snapshot", sb, ss))
        wait_for(lambda: not os.path.exists(stale), 10, what="the stale temp file swept")
        w = self.workers[0]
        wait_for(lambda: re.search(r"store_gc[^\n]*removed=1", w.text()), 10, what="store_gc log line")
