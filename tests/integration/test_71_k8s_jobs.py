"""snapshot, restore and regenerate on the kubernetes backend (issue 11): real workers with
SANDBOX_BACKEND=kubernetes against the stand-in API server (k8s_standin.py: pods/exec runs
the argv locally with the pod's folder on /workspace), Redis, PostgreSQL and the file://
store. The same tree-identity checks as test_50_jobs.py on the local backend, then what
only a pod has: non-zero exits, dropped streams, an expired token, a token rotated between
two execs of one restore (read again on the 401), an unknown pod, v4, and
hostile archives refused before a byte reaches the pod (the stand-in's records say which
execs had stdin). No api key, token or payload datum may show up in an argv, a URL or the
worker's log."""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import urllib.request

from harness import BIN, new_uuid
from k8s_standin import K8sStandin, kubelet_write, token_id
from test_50_jobs import HERE, JobsCase, free_port_block
import jobs_tree as jt

NS = "onyx-sandboxes"
TOKEN = "tok-" + "5eC7e7" * 6
SECRET = "sk-k8s-" + "c0ffee" * 5

# The kubernetes backend is this module's subject; its workers' Redis traffic is
# test_50's, which the TLS pass runs: scripts/run-integration --tls leaves this module out.
TLS_PASS = False
FAST_TESTS = [
    "test_snapshot_then_restore_gives_back_the_identical_tree_and_config",
    "test_regenerate_writes_the_three_files_in_the_pod",
    "test_hostile_archives_are_refused_before_any_byte_reaches_the_pod",
    "test_a_crash_between_keep_and_put_back_converges",
]

SCRIPTS_START = ("sh", "mkdir")  # every argv[0] the backend runs


class K8sCase(JobsCase):
    SERVICES = ("redis", "postgres")
    standin = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.standin = K8sStandin().start()
        cls.standin.add_token(TOKEN, ttl=3600)

    @classmethod
    def tearDownClass(cls):
        if cls.standin:
            cls.standin.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.s = self.standin
        self.s.reset()
        self.s.set_mode("v5")
        self.kubeconfig = self.s.kubeconfig(os.path.join(self.tmp, "kubeconfig"), token=TOKEN)

    def env(self, **extra):
        extra.setdefault("SANDBOX_BACKEND", "kubernetes")
        extra.setdefault("KUBECONFIG", getattr(self, "kubeconfig", ""))
        extra.setdefault("SANDBOX_NAMESPACE", NS)
        extra.setdefault("SNAPWORKER_K8S_API_TIMEOUT_S", 10)
        return super().env(**extra)

    # ---- pods -----------------------------------------------------------------
    def pod(self, sb):
        name = "sandbox-" + sb[:8]
        self.s.add_pod(name, namespace=NS)
        os.makedirs(self.s.pod_dir(name, NS), exist_ok=True)
        return name

    def snapshotted_session(self):
        """A pod, a session of a 1 MiB workspace snapshotted, then its folder removed: what a
        restore must give back. Returns sandbox, session, session folder, outputs/ tree."""
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        sdir = self.session_dir(sb, ss)
        jt.build_workspace(sdir, big_bytes=1 << 20)
        before = jt.describe(os.path.join(sdir, "outputs"))
        self.ok(self.submit("snapshot", sb, ss))
        shutil.rmtree(sdir)
        return sb, ss, sdir, before

    def session_dir(self, sb, ss):
        return os.path.join(self.s.pod_dir("sandbox-" + sb[:8], NS), "sessions", ss)

    def stagings(self, sb):
        d = os.path.dirname(self.session_dir(sb, new_uuid()))
        return [n for n in os.listdir(d) if n.startswith(".staging-")] if os.path.isdir(d) else []

    def keeps(self, sb):
        d = os.path.dirname(self.session_dir(sb, new_uuid()))
        return [n for n in os.listdir(d) if n.startswith(".config-")] if os.path.isdir(d) else []

    def stdin_execs(self):
        return [e for e in self.s.execs() if e["flags"]["stdin"]]

    def assert_no_leak(self, *secrets, worker=None):
        """Nothing secret (or datum) in an argv, a URL, a header or a body the stand-in saw,
        nor in the worker's log."""
        for x in secrets:
            self.assertEqual(self.s.saw(x), [], x)
            if worker is not None:
                self.assertNotIn(x, worker.text())

    def assert_scripts_are_constants(self, *data):
        """Every exec is `sh -c CONSTANT sh ARG...` (or mkdir): no datum inside a script."""
        for e in self.s.execs():
            argv = e["argv"]
            self.assertIn(argv[0], SCRIPTS_START, argv)
            if argv[0] == "sh":
                self.assertEqual(argv[1], "-c")
                for d in data:
                    self.assertNotIn(d, argv[2], "datum inside a script")


class StartupTests:  # mixed into RoundTrip: one set of servers for both
    def test_the_worker_exits_2_without_kubernetes_credentials(self):
        env = dict(os.environ)
        env.update(self.env(KUBECONFIG=os.path.join(self.tmp, "missing-kubeconfig")))
        env.pop("KUBERNETES_SERVICE_HOST", None)
        p = subprocess.run([BIN, "run"], env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("SANDBOX_BACKEND=kubernetes needs kubernetes credentials", p.stderr)


class DevServerTests:  # mixed into RoundTrip: one set of servers for both
    def test_restore_starts_the_dev_server_in_the_pod_and_a_second_one_replaces_it(self):
        port = free_port_block(1)
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}} --delay 0.3"
        self.start_worker(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=20,
                          SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 1)
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        sdir = self.session_dir(sb, ss)
        web = os.path.join(sdir, "outputs", "web")
        os.makedirs(os.path.join(web, "node_modules"))
        with open(os.path.join(web, "package.json"), "w") as f:
            f.write("{}")
        res = self.ok(self.submit("restore", sb, ss))
        pid = res["webapp_pid"]
        self.assertIsInstance(pid, int)
        self.assertTrue(res["skipped"])
        with open(os.path.join(sdir, "nextjs.pid")) as f:
            self.assertEqual(int(f.read()), pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            self.assertLess(r.status, 500)
        with open(os.path.join(sdir, "nextjs.log")) as f:
            self.assertIn(f"stand-in dev server on {port}", f.read())
        res2 = self.ok(self.submit("restore", sb, ss))
        self.assertNotEqual(res2["webapp_pid"], pid)
        self.assertTrue(jt.wait_gone(pid))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            self.assertLess(r.status, 500)

    def test_a_dev_server_that_dies_fails_the_restore_and_rolls_back(self):
        port = free_port_block(1)
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}} --fail-after 0.3"
        tmpl = self.template_with_web()
        self.start_worker(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=10,
                          SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 1,
                          SNAPWORKER_OUTPUTS_TEMPLATE=tmpl)
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        h = self.dead(self.submit("restore", sb, ss, max_attempts=1), "backend_error")
        self.assertIn("dev server", json.loads(h["error"])["message"])
        self.assertEqual(self.port_of(ss), "null")
        self.assertFalse(os.path.exists(self.session_dir(sb, ss)))
        self.assertEqual(self.stagings(sb), [])


class RoundTrip(K8sCase, StartupTests, DevServerTests):
    def test_snapshot_then_restore_gives_back_the_identical_tree_and_config(self):
        w = self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        pod = self.pod(sb)
        sdir = self.session_dir(sb, ss)
        jt.build_workspace(sdir, big_bytes=4 << 20)
        with open(os.path.join(sdir, "attachments", "upload.txt"), "w") as f:
            f.write("user upload\n")
        before = jt.describe(os.path.join(sdir, "outputs"))
        att_before = jt.describe(os.path.join(sdir, "attachments"))
        res = self.ok(self.submit("snapshot", sb, ss))
        key = f"public/snapshots/{ss}/{res['snapshot_id']}.tar.gz"
        self.assertEqual(res["storage_path"], key)
        with open(os.path.join(self.store_root, key), "rb") as f:
            data = f.read()
        self.assertEqual(data[:2], b"\x1f\x8b")  # compressed all the way from the pod
        self.assertEqual(res["size_bytes"], len(data))
        self.assertEqual(res["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(res["entries"], len(before) + 1 + len(att_before) + 1)
        self.assertEqual(self.psql(f"SELECT storage_path || ' ' || size_bytes FROM snapshot "
                                   f"WHERE session_id = '{ss}'"), f"{key} {len(data)}")
        tar = [e for e in self.s.execs() if e["container"] == "file-sync" and
               e["stdout_bytes"] > 0]
        self.assertEqual(len(tar), 1)
        self.assertEqual(tar[0]["stdout_bytes"], len(data))

        shutil.rmtree(sdir)
        self.s.reset()
        llm = {"provider": "openai", "model_name": "gpt-5", "api_key": SECRET}
        res = self.ok(self.submit("restore", sb, ss, {"llm_config": llm, "use_demo_data": False}))
        self.assertEqual(res["snapshot_storage_path"], key)
        self.assertFalse(res["fresh"])
        self.assertFalse(res["skipped"])
        self.assertEqual(res["entries"], len(before) + 1 + len(att_before) + 1)
        self.assertEqual(jt.describe(os.path.join(sdir, "outputs")), before)
        self.assertEqual(jt.describe(os.path.join(sdir, "attachments")), att_before)
        self.assertEqual(os.readlink(os.path.join(sdir, "files")), "/workspace/files")
        st = os.lstat(os.path.join(sdir, "opencode.json"))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(os.path.join(sdir, "opencode.json")) as f:
            oc = json.load(f)
        self.assertEqual(oc["model"], "openai/gpt-5")
        self.assertEqual(oc["provider"]["openai"]["options"]["apiKey"], SECRET)
        with open(os.path.join(sdir, "AGENTS.md")) as f:
            agents = f.read()
        self.assertIn(str(res["nextjs_port"]), agents)
        self.assertNotIn("{{", agents)
        self.assertEqual(self.port_of(ss), str(res["nextjs_port"]))
        self.assertEqual(self.psql(f"SELECT status FROM build_session WHERE id = '{ss}'"), "active")
        self.assertEqual(self.stagings(sb), [])
        self.assertEqual(sorted(os.listdir(sdir)),
                         ["AGENTS.md", "attachments", "files", "opencode.json", "outputs"])
        # the archive went in whole, compressed, on stdin, and only once it was checked
        sent = [e for e in self.stdin_execs() if e["stdin_bytes"] == len(data)]
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["stdin_sha256"], hashlib.sha256(data).hexdigest())
        self.assertTrue(all(e["pod"] == pod and e["protocol"] == "v5.channel.k8s.io"
                            for e in self.s.execs()))
        self.assert_no_leak(SECRET, TOKEN, worker=w)
        self.assert_scripts_are_constants(ss, sb, SECRET, "gpt-5")
        self.assertNotIn(SECRET, json.dumps(self.events()))

    def test_restore_over_v4_gives_back_the_identical_tree(self):
        self.s.set_mode("v4-only")
        self.start_worker()
        sb, ss, sdir, before = self.snapshotted_session()
        res = self.ok(self.submit("restore", sb, ss, {"llm_config": {"api_key": SECRET}}))
        self.assertFalse(res["skipped"])
        self.assertEqual(jt.describe(os.path.join(sdir, "outputs")), before)
        ex = self.s.execs()
        self.assertTrue(ex and all(e["protocol"] == "v4.channel.k8s.io" for e in ex))
        self.assertTrue(all(not e["stdin_closed"] for e in self.stdin_execs()))
        self.assertEqual(self.stagings(sb), [])
        self.assert_no_leak(SECRET, TOKEN)

    def test_regenerate_writes_the_three_files_in_the_pod(self):
        w = self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        sdir = self.session_dir(sb, ss)
        os.makedirs(sdir)
        res = self.ok(self.submit("regenerate", sb, ss, {
            "llm_config": {"provider": "anthropic", "model_name": "claude", "api_key": SECRET},
            "nextjs_port": 3044, "disabled_tools": [], "files_target": "/workspace/demo_data"}))
        self.assertEqual(res, {"written": ["files", "AGENTS.md", "opencode.json"]})
        self.assertEqual(os.readlink(os.path.join(sdir, "files")), "/workspace/demo_data")
        with open(os.path.join(sdir, "opencode.json")) as f:
            oc = json.load(f)
        self.assertEqual(oc["permission"]["question"], "allow")
        self.assertEqual(oc["provider"]["anthropic"]["options"]["apiKey"], SECRET)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(sdir, "AGENTS.md")).st_mode), 0o644)
        oc_path = os.path.join(sdir, "opencode.json")
        self.assertEqual(stat.S_IMODE(os.lstat(oc_path).st_mode), 0o600)
        # twice: each file is replaced (a 0644 opencode.json too: the new one is 0600), no
        # temp file and no kept copy is left
        os.chmod(oc_path, 0o644)
        self.ok(self.submit("regenerate", sb, ss, {"use_demo_data": False}))
        self.assertEqual(os.readlink(os.path.join(sdir, "files")), "/workspace/files")
        self.assertEqual(stat.S_IMODE(os.lstat(oc_path).st_mode), 0o600)
        self.assertEqual(sorted(os.listdir(sdir)), ["AGENTS.md", "files", "opencode.json"])
        self.assertEqual(self.keeps(sb), [])
        self.dead(self.submit("regenerate", sb, new_uuid()), "workspace_missing")
        self.assert_no_leak(SECRET, TOKEN, worker=w)
        self.assert_scripts_are_constants(SECRET, ss)

    def test_restore_without_any_snapshot_lays_out_the_template_in_the_pod(self):
        tmpl = os.path.join(self.tmp, "template")
        os.makedirs(os.path.join(tmpl, "web"))
        with open(os.path.join(tmpl, "web", "README.md"), "w") as f:
            f.write("template\n")
        self.start_worker(SNAPWORKER_OUTPUTS_TEMPLATE=tmpl)
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        res = self.ok(self.submit("restore", sb, ss))
        self.assertTrue(res["fresh"])
        sdir = self.session_dir(sb, ss)
        with open(os.path.join(sdir, "outputs", "web", "README.md")) as f:
            self.assertEqual(f.read(), "template\n")
        self.assertEqual(os.listdir(os.path.join(sdir, "attachments")), [])
        self.assertTrue(os.path.isfile(os.path.join(sdir, "AGENTS.md")))
        # a second restore finds the workspace: skipped, port kept
        res2 = self.ok(self.submit("restore", sb, ss))
        self.assertTrue(res2["skipped"])
        self.assertEqual(res2["nextjs_port"], res["nextjs_port"])


class Failures(K8sCase):
    def workspace_with_snapshot(self, sb, ss):
        """A snapshot row and object of a small workspace, then the session left with only
        its old attachments/ (what a restore must put back on failure)."""
        sdir = self.session_dir(sb, ss)
        jt.build_workspace(sdir, big_bytes=256 << 10)
        snap = self.ok(self.submit("snapshot", sb, ss))
        shutil.rmtree(os.path.join(sdir, "outputs"))
        with open(os.path.join(sdir, "attachments", "old.txt"), "w") as f:
            f.write("the user's old upload\n")
        self.s.reset()
        return snap, jt.describe(sdir)

    def assert_rolled_back(self, sb, ss, tree):
        self.assertEqual(jt.describe(self.session_dir(sb, ss)), tree)
        self.assertEqual(self.port_of(ss), "null")
        self.assertEqual(self.stagings(sb), [])

    def test_a_non_zero_exit_in_the_pod_is_a_backend_error_and_rolls_back(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        snap, tree = self.workspace_with_snapshot(sb, ss)
        # the swap's command (no stdin: the stand-in's "exit" fault does not run the command,
        # so a fault on a command fed stdin would race the server's reset of the connection)
        self.s.set_faults({"match": ': > "$j/none"', "action": "exit", "code": 2,
                           "stderr": "mv: cannot move: No space left on device", "count": 1})
        h = self.dead(self.submit("restore", sb, ss, max_attempts=1), "backend_error")
        err = json.loads(h["error"])
        self.assertFalse(err["retryable"], err)
        self.assertIn("swap in pod", err["message"])
        self.assertIn("exited 2", err["message"])
        self.assertIn("sandbox-" + sb[:8], err["message"])
        self.assertIn("No space left on device", err["message"])
        self.assert_rolled_back(sb, ss, tree)

    def test_a_failure_after_the_swap_puts_the_old_attachments_back(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        snap, tree = self.workspace_with_snapshot(sb, ss)
        # SH_CONFIG's split of stdin (the config keep/put back scripts name opencode.json too)
        self.s.set_faults({"match": "tail -c +", "action": "exit", "code": 1,
                           "stderr": "mv: cannot move", "count": -1})
        h = self.dead(self.submit("restore", sb, ss, max_attempts=1), "backend_error")
        self.assertIn("config write", json.loads(h["error"])["message"])
        self.assert_rolled_back(sb, ss, tree)
        # the swap did happen before the failure: its journal was used and removed
        self.assertTrue(any("swap" in e["argv"][2] and "undo()" in e["argv"][2]
                            for e in self.s.execs() if e["argv"][0] == "sh"))

    def test_a_crash_between_the_moves_of_a_swap_converges_on_the_next_attempt(self):
        """The journal a swap left after moving the old attachments aside (the worker died
        there) is undone by the next restore's stage_begin; that restore then succeeds."""
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        snap, tree = self.workspace_with_snapshot(sb, ss)
        sdir = self.session_dir(sb, ss)
        # what SH_SWAP leaves after its first mv: journal with the old attachments, and the
        # restore's attachments already moved in
        os.makedirs(os.path.join(sdir, ".swap"))
        os.rename(os.path.join(sdir, "attachments"), os.path.join(sdir, ".swap", "attachments"))
        os.makedirs(os.path.join(sdir, "attachments"))
        with open(os.path.join(sdir, "attachments", "half.txt"), "w") as f:
            f.write("from the crashed attempt\n")
        res = self.ok(self.submit("restore", sb, ss))
        self.assertFalse(res["skipped"])
        self.assertFalse(os.path.exists(os.path.join(sdir, ".swap")))
        with open(os.path.join(self.store_root, snap["storage_path"]), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), snap["sha256"])
        # the snapshot's attachments replaced the old ones; nothing of the crashed attempt
        self.assertNotIn("half.txt", os.listdir(os.path.join(sdir, "attachments")))
        self.assertTrue(os.path.isdir(os.path.join(sdir, "outputs", "a", "b", "c", "d")))

    def test_a_dropped_restore_stream_is_a_retryable_backend_error_and_rolls_back(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        snap, tree = self.workspace_with_snapshot(sb, ss)
        self.s.set_faults({"match": "tar -x", "action": "drop", "bytes": 0, "rst": True,
                           "count": -1})
        h = self.dead(self.submit("restore", sb, ss, max_attempts=1), "backend_error")
        err = json.loads(h["error"])
        self.assertTrue(err["retryable"], err)
        self.assertIn("restore tar", err["message"])
        self.assert_rolled_back(sb, ss, tree)

    def test_a_dropped_snapshot_stream_is_retried_and_leaves_one_object_and_one_row(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=2 << 20)
        self.s.set_faults({"match": "tar -c", "action": "drop", "bytes": 300000, "count": 1})
        jid = self.submit("snapshot", sb, ss)
        res = self.ok(jid)
        self.assertEqual(self.job_hash(jid)["attempt"], "2")
        d = os.path.join(self.store_root, "public", "snapshots", ss)
        self.assertEqual(sorted(os.listdir(d)),
                         [f"{res['snapshot_id']}.tar.gz", f"{res['snapshot_id']}.tar.gz.sha256"])
        with open(os.path.join(d, f"{res['snapshot_id']}.tar.gz"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), res["sha256"])
        self.assertEqual(self.psql(f"SELECT count(*) FROM snapshot WHERE session_id = '{ss}'"), "1")
        drops = [e for e in self.s.execs() if e["fault"]]
        self.assertEqual(len(drops), 1)

    def test_an_expired_token_is_a_backend_error_naming_the_pod_never_the_token(self):
        expired = "tok-expired-" + "9f" * 10
        self.s.add_token(expired, expires=1)
        kc = self.s.kubeconfig(os.path.join(self.tmp, "kc-expired"), token=expired)
        w = self.start_worker(KUBECONFIG=kc)
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        h = self.dead(self.submit("restore", sb, ss, max_attempts=1), "backend_error")
        err = json.loads(h["error"])
        self.assertIn("sandbox-" + sb[:8], err["message"])
        self.assertIn("401", err["message"])
        self.assertNotIn(expired, json.dumps(h))
        self.assertNotIn(expired, w.text())
        self.assertEqual(self.port_of(ss), "null")

    def test_a_token_rotated_mid_restore_is_read_again_on_the_401_and_the_job_succeeds(self):
        """The kubelet rewrites the projected token (a new ..data, swapped by a symlink
        rename) and the API server stops taking the old one, between two execs of ONE
        restore (one attempt, one job process, its client holding token A read well under a
        minute ago, so only the 401 rule can save it): the refused upgrade makes the client
        read tokenFile again and retry once with token B. The job succeeds; A is never sent
        after that retry and B never before the file held it."""
        tok_a, tok_b = "tok-rot-a-" + "1a2b" * 6, "tok-rot-b-" + "3c4d" * 6
        sa = os.path.join(self.tmp, "serviceaccount")
        kubelet_write(sa, {"token": tok_a})
        self.s.add_token(tok_a, ttl=None)
        kc = self.s.kubeconfig(os.path.join(self.tmp, "kc-rotating"),
                               token_file=os.path.join(sa, "token"))
        w = self.start_worker(KUBECONFIG=kc)
        sb, ss, sdir, before = self.snapshotted_session()
        self.s.reset()
        data_before = os.readlink(os.path.join(sa, "..data"))
        # rotate when the restore opens its archive stream: earlier execs of the job used A
        self.s.rotate_token(sa, tok_b, revoke=[tok_a], match="tar -x")
        jid = self.submit("restore", sb, ss, max_attempts=1)
        res = self.ok(jid)
        self.assertEqual(self.job_hash(jid)["attempt"], "1")
        self.assertFalse(res["skipped"])
        self.assertEqual(jt.describe(os.path.join(sdir, "outputs")), before)
        self.assertNotEqual(os.readlink(os.path.join(sa, "..data")), data_before)
        with open(os.path.join(sa, "token")) as f:
            self.assertEqual(f.read(), tok_b)

        reqs = self.s.requests()
        ida, idb = token_id(tok_a), token_id(tok_b)
        seen = [(r["seq"], r["bearer"], r["status"], r.get("rotated", False)) for r in reqs]
        rot = [i for i, r in enumerate(reqs) if r.get("rotated")]
        self.assertEqual(len(rot), 1, seen)
        i = rot[0]
        # before the file changed: several calls of this job, all with A, all accepted
        self.assertGreaterEqual(i, 2, seen)
        self.assertTrue(all(r["bearer"] == ida and r["status"] < 400 for r in reqs[:i]), seen)
        # the upgrade that met the rotation carried A and got 401; the next request is the
        # same upgrade again with B, then every later call of the job uses B
        self.assertEqual((reqs[i]["bearer"], reqs[i]["status"]), (ida, 401), seen)
        self.assertEqual((reqs[i + 1]["path"], reqs[i + 1]["query"]),
                         (reqs[i]["path"], reqs[i]["query"]))
        self.assertGreaterEqual(len(reqs) - i - 1, 2, seen)
        self.assertTrue(all(r["bearer"] == idb and r["status"] < 400 for r in reqs[i + 1:]),
                        seen)
        self.assertEqual(len([r for r in reqs if r["status"] == 401]), 1, seen)
        # the archive went in whole over the connection opened with B
        tar_x = [e for e in self.stdin_execs() if "tar -x" in e["argv"][2]]
        self.assertEqual(len(tar_x), 1)
        self.assertGreater(tar_x[0]["stdin_bytes"], 0)
        self.assert_no_leak(tok_a, tok_b, worker=w)

    def test_an_unknown_pod_is_a_permanent_backend_error(self):
        self.start_worker()
        sb, ss = new_uuid(), new_uuid()   # no pod for this sandbox (asleep, or gone)
        h = self.dead(self.submit("restore", sb, ss, max_attempts=3), "backend_error")
        self.assertEqual(h["attempt"], "1")
        self.assertIn("pod not found", json.loads(h["error"])["message"])
        self.assertEqual(self.port_of(ss), "null")
        h = self.dead(self.submit("snapshot", sb, ss, max_attempts=3), "backend_error")
        self.assertEqual(h["attempt"], "1")

    def test_hostile_archives_are_refused_before_any_byte_reaches_the_pod(self):
        self.start_worker(SNAPWORKER_MAX_RESTORE_ENTRIES=100)
        outside = os.path.join(self.tmp, "outside")
        os.makedirs(outside)
        sb = new_uuid()
        self.pod(sb)
        kinds = {"dotdot": "unsafe_archive", "absolute": "unsafe_archive",
                 "symlink_then_file": "unsafe_archive", "hardlink_out": "unsafe_archive",
                 "device": "unsafe_archive", "corrupt": "unsafe_archive",
                 "entry_bomb": "archive_too_large"}
        for kind, code in kinds.items():
            with self.subTest(kind=kind):
                self.s.reset()
                ss = new_uuid()
                key = f"public/snapshots/{ss}/{new_uuid()}.tar.gz"
                jt.write_object(self.store_root, key, jt.hostile_archive(kind, outside),
                                sidecar=kind != "corrupt")
                h = self.dead(self.submit("restore", sb, ss, {"snapshot_storage_path": key}), code)
                self.assertEqual(h["attempt"], "1")
                self.assertEqual(self.stdin_execs(), [])   # not one byte went to the pod
                self.assertEqual(self.port_of(ss) or "null", "null")
                self.assertFalse(os.path.exists(self.session_dir(sb, ss)))
                self.assertEqual(self.stagings(sb), [])
                self.assertEqual(os.listdir(outside), [])


CONFIG_NAMES = ("files", "AGENTS.md", "opencode.json")
OLD_KEY = "sk-old-" + "5a1ad" * 6


def write_old_config(sdir):
    """A session's config as a previous job left it: the link, AGENTS.md 0644 and an
    opencode.json holding the old key at 0600."""
    os.makedirs(sdir, exist_ok=True)
    os.symlink("/workspace/old-files", os.path.join(sdir, "files"))
    with open(os.path.join(sdir, "AGENTS.md"), "w") as f:
        f.write("# the old AGENTS.md\\n")
    os.chmod(os.path.join(sdir, "AGENTS.md"), 0o644)
    fd = os.open(os.path.join(sdir, "opencode.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"provider": {"openai": {"options": {"apiKey": OLD_KEY}}}}))


def config_of(sdir):
    """name -> None (absent), ("link", target) or ("file", bytes, mode)."""
    out = {}
    for n in CONFIG_NAMES:
        p = os.path.join(sdir, n)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            out[n] = None
            continue
        if stat.S_ISLNK(st.st_mode):
            out[n] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[n] = ("dir",)
        else:
            with open(p, "rb") as f:
                out[n] = ("file", f.read(), stat.S_IMODE(st.st_mode))
    return out


def web_outputs(sdir):
    """outputs/web with package.json and node_modules/: a workspace the restore skips to, then
    starts the dev server in."""
    web = os.path.join(sdir, "outputs", "web")
    os.makedirs(os.path.join(web, "node_modules"), exist_ok=True)
    with open(os.path.join(web, "package.json"), "w") as f:
        f.write("{}")


class ConfigRollback(K8sCase):
    """Issue 10 item 4 on the kubernetes backend: the session's files, AGENTS.md and
    opencode.json are kept aside in the pod ({sessions}/.config-{session}/) before a restore or
    regenerate rewrites them, and a failed attempt puts them back (or removes new ones), also
    after a crash between the keep and the put back."""
    LLM = {"provider": "openai", "model_name": "gpt-5", "api_key": SECRET}

    def failing_server_worker(self):
        port = free_port_block(1)
        cmd = f"/usr/bin/python3 {HERE}/jobs_devserver.py {{port}} --fail-after 0.2"
        return self.start_worker(SNAPWORKER_WEBAPP_CMD=cmd, SNAPWORKER_WEBAPP_WAIT_S=10,
                                 SANDBOX_NEXTJS_PORT_START=port, SANDBOX_NEXTJS_PORT_END=port + 1)

    def assert_no_secret_in(self, sdir):
        for root, _dirs, files in os.walk(sdir):
            for n in files:
                p = os.path.join(root, n)
                if not os.path.islink(p):
                    with open(p, "rb") as f:
                        self.assertNotIn(SECRET.encode(), f.read(), p)

    def assert_config_written_then_failed(self):
        """The new config did reach the pod (the failure came after it): one config write."""
        self.assertEqual(len([e for e in self.stdin_execs() if "tail -c +" in e["argv"][2]]), 1)

    def test_a_failed_restore_puts_the_old_config_back_byte_identical(self):
        w = self.failing_server_worker()
        sb = new_uuid()
        self.pod(sb)
        ss = new_uuid()
        sdir = self.session_dir(sb, ss)
        web_outputs(sdir)
        write_old_config(sdir)
        before = config_of(sdir)
        self.assertEqual(before["opencode.json"][2], 0o600)
        h = self.dead(self.submit("restore", sb, ss, {"llm_config": self.LLM}, max_attempts=1),
                      "backend_error")
        self.assertIn("dev server", json.loads(h["error"])["message"])
        self.assert_config_written_then_failed()
        self.assertEqual(config_of(sdir), before)
        self.assert_no_secret_in(sdir)
        self.assertEqual(self.keeps(sb), [])
        self.assertEqual(self.port_of(ss), "null")
        # the keep, the put back and the cleanup ran in the sandbox container, as the write
        keep = [e for e in self.s.execs() if e["argv"][0] == "sh" and "kept" in e["argv"][2]]
        self.assertEqual(len(keep), 3)
        self.assertTrue(all(e["container"] == "sandbox" for e in keep))
        self.assert_scripts_are_constants(ss, SECRET, OLD_KEY)
        self.assert_no_leak(SECRET, worker=w)

    def test_a_failed_restore_removes_config_the_session_did_not_have(self):
        self.failing_server_worker()
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        sdir = self.session_dir(sb, ss)
        web_outputs(sdir)
        self.dead(self.submit("restore", sb, ss, {"llm_config": self.LLM}, max_attempts=1),
                  "backend_error")
        self.assert_config_written_then_failed()
        self.assertEqual(config_of(sdir), {n: None for n in CONFIG_NAMES})
        self.assertEqual(sorted(set(os.listdir(sdir)) - {"nextjs.log"}), ["outputs"])
        self.assertEqual(self.keeps(sb), [])

    def crashed_keep(self, sb, ss, jid, complete=True):
        """What an attempt of job jid leaves when the worker dies after its keep (and, when
        complete, after writing the new config): the keep folder with the session's original
        config (and the marker, written last), the session holding the new files: a new
        key in a 0644 opencode.json, as the bug left it."""
        sdir = self.session_dir(sb, ss)
        keep = os.path.join(os.path.dirname(sdir), ".config-" + ss)
        os.makedirs(keep, mode=0o700)
        for n in CONFIG_NAMES:
            p = os.path.join(sdir, n)
            if os.path.islink(p):
                os.symlink(os.readlink(p), os.path.join(keep, n))
            elif os.path.exists(p):
                shutil.copy2(p, os.path.join(keep, n))
            else:
                open(os.path.join(keep, n + ".absent"), "w").close()
        if not complete:   # died before the marker: the session still has its originals
            with open(os.path.join(keep, "opencode.json"), "w") as f:
                f.write("half-copied")
            return keep
        with open(os.path.join(keep, "kept"), "w") as f:
            f.write(jid)
        for n in CONFIG_NAMES:
            p = os.path.join(sdir, n)
            if os.path.lexists(p):
                os.unlink(p)
        os.symlink("/workspace/demo_data", os.path.join(sdir, "files"))
        with open(os.path.join(sdir, "AGENTS.md"), "w") as f:
            f.write("# new AGENTS.md of the crashed attempt\\n")
        with open(os.path.join(sdir, "opencode.json"), "w") as f:
            f.write(json.dumps({"provider": {"openai": {"options": {"apiKey": SECRET}}}}))
        os.chmod(os.path.join(sdir, "opencode.json"), 0o644)
        return keep

    def test_a_crash_between_keep_and_put_back_converges(self):
        self.failing_server_worker()
        sb = new_uuid()
        self.pod(sb)
        # 1. the rerun of the crashed job fails: the ORIGINAL config comes back, not the
        #    crashed attempt's files (which a fresh keep would have taken for the originals)
        ss, jid = new_uuid(), new_uuid()
        sdir = self.session_dir(sb, ss)
        web_outputs(sdir)
        write_old_config(sdir)
        before = config_of(sdir)
        self.crashed_keep(sb, ss, jid)
        self.assertNotEqual(config_of(sdir), before)
        self.dead(self.submit("restore", sb, ss, {"llm_config": self.LLM}, max_attempts=1,
                              id=jid), "backend_error")
        self.assertEqual(config_of(sdir), before)
        self.assert_no_secret_in(sdir)
        self.assertEqual(self.keeps(sb), [])
        # 2. the same with a session that had no config: the crashed attempt's files go
        s2, j2 = new_uuid(), new_uuid()
        d2 = self.session_dir(sb, s2)
        web_outputs(d2)
        self.crashed_keep(sb, s2, j2)
        self.dead(self.submit("restore", sb, s2, {"llm_config": self.LLM}, max_attempts=1,
                              id=j2), "backend_error")
        self.assertEqual(config_of(d2), {n: None for n in CONFIG_NAMES})
        self.assertEqual(self.keeps(sb), [])
        # 3. a keep that died before its marker is made again from the session (still the
        #    originals): its half copy is never put back
        s3, j3 = new_uuid(), new_uuid()
        d3 = self.session_dir(sb, s3)
        web_outputs(d3)
        write_old_config(d3)
        b3 = config_of(d3)
        self.crashed_keep(sb, s3, j3, complete=False)
        self.dead(self.submit("restore", sb, s3, {"llm_config": self.LLM}, max_attempts=1,
                              id=j3), "backend_error")
        self.assertEqual(config_of(d3), b3)
        self.assertEqual(self.keeps(sb), [])
        # 4. a rerun that succeeds (no dev server to start) writes the new config and drops
        #    the crashed attempt's keep
        s4, j4 = new_uuid(), new_uuid()
        d4 = self.session_dir(sb, s4)
        os.makedirs(os.path.join(d4, "outputs"))
        write_old_config(d4)
        self.crashed_keep(sb, s4, j4)
        self.ok(self.submit("restore", sb, s4, {"llm_config": self.LLM, "use_demo_data": False},
                            id=j4))
        c4 = config_of(d4)
        self.assertEqual(c4["files"], ("link", "/workspace/files"))
        self.assertEqual(c4["opencode.json"][2], 0o600)
        self.assertIn(SECRET.encode(), c4["opencode.json"][1])
        self.assertEqual(self.keeps(sb), [])

    def test_a_regenerate_failing_mid_way_puts_the_old_config_back(self):
        self.start_worker()
        sb = new_uuid()
        self.pod(sb)
        args = {"llm_config": self.LLM, "files_target": "/workspace/demo_data"}
        # 1. the write ran to its end, then the stream closed without a status: retryable,
        #    and the job (one attempt) ends dead with the old config back
        for had_config in (True, False):
            with self.subTest(had_config=had_config):
                self.s.reset()
                ss = new_uuid()
                sdir = self.session_dir(sb, ss)
                os.makedirs(sdir)
                if had_config:
                    write_old_config(sdir)
                before = config_of(sdir)
                self.s.set_faults({"match": "tail -c +", "action": "no_status", "count": 1})
                h = self.dead(self.submit("regenerate", sb, ss, args, max_attempts=1),
                              "backend_error")
                self.assertTrue(json.loads(h["error"])["retryable"], h)
                self.assertEqual(len([e for e in self.s.execs() if e["fault"]]), 1)
                self.assertEqual(config_of(sdir), before)
                self.assert_no_secret_in(sdir)
                self.assertEqual(self.keeps(sb), [])
        # 2. the write fails after replacing files and AGENTS.md (opencode.json is a folder
        #    it cannot move over): those two come back, the folder is left alone
        self.s.reset()
        ss = new_uuid()
        sdir = self.session_dir(sb, ss)
        write_old_config(sdir)
        os.unlink(os.path.join(sdir, "opencode.json"))
        os.makedirs(os.path.join(sdir, "opencode.json", "x"))
        before = config_of(sdir)
        h = self.dead(self.submit("regenerate", sb, ss, args, max_attempts=1), "backend_error")
        self.assertIn("config write", json.loads(h["error"])["message"])
        self.assertEqual(config_of(sdir), before)
        self.assertEqual(os.listdir(os.path.join(sdir, "opencode.json")), ["x"])
        self.assertEqual(self.keeps(sb), [])
        self.assertEqual(sorted(os.listdir(sdir)), ["AGENTS.md", "files", "opencode.json"])
