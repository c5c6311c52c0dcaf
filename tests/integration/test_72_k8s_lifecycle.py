"""The sandbox lifecycle on the kubernetes backend: the sleep job against the stand-in API
server (k8s_standin.py), and snapshot excludes applied in the pod exactly as on local.

sleep: rows, statuses and ports in one transaction (as test_80_lifecycle.py checks on
local), then DELETE of the service and the pod, each with the uid a GET just read (the
stand-in's request records), and a sleep that finds the pod gone converges; a token rotated
between those REST calls is read again on the 401.
Excludes: the pod's tar gets an exact list of the member names that excl_match() leaves
out (jobs/sandbox_k8s.c, docs/lifecycle.md "Snapshot excludes on kubernetes"); the member
list must equal the local backend's for the same tree and patterns, and what a tar exclude
list cannot say exactly is refused as invalid_payload naming the pattern."""
import json
import os
import shutil
import tarfile

from harness import new_uuid
import test_71_k8s_jobs as t71

NS = t71.NS

# run under ASan too (scripts/run-integration --fast)
FAST_TESTS = [
    "test_sleep_snapshots_clears_ports_then_deletes_service_and_pod_with_their_uids",
    "test_excludes_give_the_same_members_as_the_local_backend",
]


class K8sLifecycle(t71.K8sCase):
    # ---- helpers --------------------------------------------------------------
    def sandbox_row(self, status="running"):
        sb, user = new_uuid(), new_uuid()
        self.psql(f"INSERT INTO sandbox (id, user_id, status, last_heartbeat, created_at) "
                  f"VALUES ('{sb}', '{user}', '{status}', now(), now())")
        return sb, user

    def session_row(self, user, port):
        ss = new_uuid()
        self.psql(f"INSERT INTO build_session (id, user_id, status, nextjs_port) "
                  f"VALUES ('{ss}', '{user}', 'active', {port})")
        return ss

    def sleep_job(self, sb, **kw):
        p = self.payload("sleep", {}, sandbox_id=sb, **kw)
        del p["session_id"]
        self.xadd(p)
        return p["id"]

    def rows(self, sql):
        out = self.psql(sql)
        return [r.split("|") for r in out.splitlines()] if out else []

    def deletes(self):
        return [r for r in self.s.requests() if r["method"] == "DELETE"]

    def members(self, key):
        with tarfile.open(os.path.join(self.store_root, key), "r:gz") as tf:
            return sorted(m.name.rstrip("/") for m in tf.getmembers())

    # ---- sleep ----------------------------------------------------------------
    def test_sleep_snapshots_clears_ports_then_deletes_service_and_pod_with_their_uids(self):
        sb, user = self.sandbox_row()
        s1 = self.session_row(user, 3011)
        s2 = self.session_row(user, 3012)           # a folder in the pod, without outputs/
        other_sb, other_user = self.sandbox_row()
        other = self.session_row(other_user, 3020)
        name = "sandbox-" + sb[:8]
        pod_uid = self.s.add_pod(name, namespace=NS)["uid"]
        svc_uid = self.s.add_service(name, namespace=NS)
        d1 = self.session_dir(sb, s1)
        os.makedirs(os.path.join(d1, "outputs", "web", "node_modules"))
        with open(os.path.join(d1, "outputs", "report.md"), "w") as f:
            f.write("report of " + s1)
        with open(os.path.join(d1, "outputs", "web", "node_modules", "big.js"), "w") as f:
            f.write("x" * 1000)
        os.makedirs(self.session_dir(sb, s2))
        os.makedirs(os.path.join(os.path.dirname(d1), "not-a-uuid", "outputs"))
        self.start_worker(SNAPWORKER_SNAPSHOT_EXCLUDE="outputs/web/node_modules")

        res = self.ok(self.sleep_job(sb))
        self.assertEqual(res["sessions"], 2)
        self.assertEqual([s["storage_path"].split("/")[2] for s in res["snapshots"]], [s1])
        key = res["snapshots"][0]["storage_path"]
        self.assertEqual(self.members(key), ["outputs", "outputs/report.md", "outputs/web"])
        # the transaction: rows, ports, statuses (as test_80 on local)
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{sb}'"), "sleeping")
        self.assertEqual(self.rows(f"SELECT id, status, coalesce(nextjs_port::text, 'null') "
                                   f"FROM build_session WHERE user_id = '{user}' ORDER BY id"),
                         sorted([[s, "idle", "null"] for s in (s1, s2)]))
        self.assertEqual(self.rows(f"SELECT status, nextjs_port FROM build_session "
                                   f"WHERE id = '{other}'"), [["active", "3020"]])
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{other_sb}'"),
                         "running")
        self.assertEqual(self.rows("SELECT session_id, storage_path FROM snapshot"), [[s1, key]])
        # then the teardown: service first, then pod, each fenced on the uid read by a GET
        base = f"/api/v1/namespaces/{NS}"
        dels = self.deletes()
        self.assertEqual([d["path"] for d in dels],
                         [f"{base}/services/{name}", f"{base}/pods/{name}"])
        self.assertEqual(json.loads(dels[0]["body"])["preconditions"], {"uid": svc_uid})
        self.assertEqual(json.loads(dels[1]["body"])["preconditions"], {"uid": pod_uid})
        paths = [(r["method"], r["path"]) for r in self.s.requests() if "/exec" not in r["path"]]
        self.assertEqual(paths, [("GET", f"{base}/services/{name}"),
                                 ("DELETE", f"{base}/services/{name}"),
                                 ("GET", f"{base}/pods/{name}"),
                                 ("DELETE", f"{base}/pods/{name}")])
        self.assertFalse(self.s.remove_pod(name, namespace=NS))     # already gone

        # a second sleep of the now sleeping sandbox: skipped, nothing deleted again
        self.s.reset()
        self.assertEqual(self.ok(self.sleep_job(sb)), {"skipped": True, "status": "sleeping"})
        self.assertEqual(self.deletes(), [])
        # a row still 'running' whose pod and service are already gone converges: no session
        # to list (exec 404, GET 404), the transaction, and a teardown that finds nothing
        self.psql(f"UPDATE sandbox SET status = 'running' WHERE id = '{sb}'")
        self.psql(f"UPDATE build_session SET status = 'active', nextjs_port = 3011 "
                  f"WHERE id = '{s1}'")
        self.s.reset()
        self.assertEqual(self.ok(self.sleep_job(sb)), {"sessions": 0, "snapshots": []})
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{sb}'"), "sleeping")
        self.assertEqual(self.rows(f"SELECT status, coalesce(nextjs_port::text, 'null') FROM "
                                   f"build_session WHERE id = '{s1}'"), [["idle", "null"]])
        self.assertEqual(self.deletes(), [])
        self.assertEqual(self.rows("SELECT session_id, storage_path FROM snapshot"), [[s1, key]])

    def test_a_token_rotated_between_the_teardowns_rest_calls_is_read_again_on_the_401(self):
        """The REST half of token rotation (test_71 has pods/exec): the kubelet swaps the
        projected token and the API server drops the old one between the GET/DELETE calls
        of one sleep's teardown (one client, its token read well under a minute ago). The
        GET that meets it gets 401, the client reads tokenFile again and repeats it with the
        new token, and the pod is still deleted with the uid that GET read."""
        tok_a, tok_b = "tok-rest-a-" + "5e6f" * 6, "tok-rest-b-" + "7a8b" * 6
        sa = os.path.join(self.tmp, "serviceaccount")
        t71.kubelet_write(sa, {"token": tok_a})
        self.s.add_token(tok_a, ttl=None)
        kc = self.s.kubeconfig(os.path.join(self.tmp, "kc-rotating"),
                               token_file=os.path.join(sa, "token"))
        sb, _user = self.sandbox_row()
        name = "sandbox-" + sb[:8]
        pod_uid = self.s.add_pod(name, namespace=NS)["uid"]
        self.s.add_service(name, namespace=NS)
        self.start_worker(KUBECONFIG=kc)
        base = f"/api/v1/namespaces/{NS}"
        self.s.rotate_token(sa, tok_b, revoke=[tok_a], method="GET", path=f"{base}/pods/{name}")
        jid = self.sleep_job(sb, max_attempts=1)
        self.assertEqual(self.ok(jid), {"sessions": 0, "snapshots": []})
        self.assertEqual(self.job_hash(jid)["attempt"], "1")
        self.assertEqual(self.psql(f"SELECT status FROM sandbox WHERE id = '{sb}'"), "sleeping")
        ida, idb = t71.token_id(tok_a), t71.token_id(tok_b)
        rest = [(r["method"], r["path"], r["bearer"], r["status"], r.get("rotated", False))
                for r in self.s.requests() if "/exec" not in r["path"]]
        self.assertEqual(rest, [("GET", f"{base}/services/{name}", ida, 200, False),
                                ("DELETE", f"{base}/services/{name}", ida, 200, False),
                                ("GET", f"{base}/pods/{name}", ida, 401, True),
                                ("GET", f"{base}/pods/{name}", idb, 200, False),
                                ("DELETE", f"{base}/pods/{name}", idb, 200, False)])
        self.assertEqual(json.loads(self.deletes()[1]["body"])["preconditions"], {"uid": pod_uid})
        self.assertFalse(self.s.remove_pod(name, namespace=NS))     # gone
        self.assert_no_leak(tok_a, tok_b)


# ---- excludes -----------------------------------------------------------------------
EXCLUDES = ["outputs/web/node_modules", "outputs/web/.next", "**/*.log", "outputs/*.tmp",
            "outputs/dir ", "outputs/b\\s"]


def build_exclude_tree(sdir):
    files = [
        "outputs/web/package.json",
        "outputs/web/node_modules/next/index.js",
        "outputs/web/node_modules/.bin/next",
        "outputs/web/.next/cache/x.pack",
        "outputs/web/app/.next/kept.txt",           # only outputs/web/.next goes
        "outputs/app.log",
        "outputs/a/b/deep.log",
        "outputs/a/b/deep.log.txt",                 # not *.log
        "outputs/x.tmp",
        "outputs/sub/y.tmp",                        # outputs/*.tmp is one level only
        "outputs/st*ar.tmp",                        # a '*' in a name: escaped in the list
        "outputs/[keep].txt",
        "outputs/q?.txt",
        "outputs/dir /inside.txt",                  # trailing space: excluded
        "outputs/dir/inside.txt",                   # no trailing space: kept
        "outputs/b\\s/f",                           # a backslash in a name: excluded
        "outputs/bs/f",
        "outputs/Ωmega.log",
        "outputs/line\nbreak.txt",                  # a kept name with a newline
        "attachments/upload.log",
        "attachments/keep.pdf",
        "attachments/nested/more.log",
    ]
    for rel in files:
        p = os.path.join(sdir, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write("data of " + rel)
    os.makedirs(os.path.join(sdir, "outputs", "empty.log"))   # a folder matching *.log
    os.symlink("web/package.json", os.path.join(sdir, "outputs", "link.log"))


class Excludes(t71.K8sCase):
    def members(self, key):
        with tarfile.open(os.path.join(self.store_root, key), "r:gz") as tf:
            return sorted(m.name.rstrip("/") for m in tf.getmembers())

    def rows(self, sql):
        out = self.psql(sql)
        return [r.split("|") for r in out.splitlines()] if out else []

    def local_dir(self, sb, ss):
        return os.path.join(self.base, sb, "sessions", ss)

    def test_excludes_give_the_same_members_as_the_local_backend(self):
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        sdir = self.session_dir(sb, ss)
        build_exclude_tree(sdir)
        shutil.copytree(sdir, self.local_dir(sb, ss), symlinks=True)
        w = self.start_worker()
        res = self.ok(self.submit("snapshot", sb, ss, args={"exclude": EXCLUDES}))
        w.stop()
        k8s = self.members(res["storage_path"])
        self.start_worker(SANDBOX_BACKEND="local")
        lres = self.ok(self.submit("snapshot", sb, ss, args={"exclude": EXCLUDES}))
        local = self.members(lres["storage_path"])
        self.assertEqual(k8s, local)
        self.assertEqual(res["entries"], lres["entries"])
        for gone in ("outputs/web/node_modules", "outputs/web/.next", "outputs/app.log",
                     "outputs/a/b/deep.log", "outputs/x.tmp", "outputs/st*ar.tmp",
                     "outputs/dir ", "outputs/b\\s", "outputs/empty.log", "outputs/link.log",
                     "attachments/upload.log", "attachments/nested/more.log"):
            self.assertNotIn(gone, k8s)
        for kept in ("outputs/web/app/.next/kept.txt", "outputs/a/b/deep.log.txt",
                     "outputs/sub/y.tmp", "outputs/[keep].txt", "outputs/q?.txt",
                     "outputs/dir/inside.txt", "outputs/bs/f", "outputs/line\nbreak.txt",
                     "attachments/keep.pdf", "attachments/nested"):
            self.assertIn(kept, k8s)
        # two execs: the file list, then tar with the list on stdin (no datum in a script)
        ex = [e for e in self.s.execs() if e["container"] == "file-sync"]
        self.assertEqual(len(ex), 3, [e["argv"][:2] for e in ex])   # state, list, tar
        self.assertTrue(ex[2]["flags"]["stdin"])
        self.assert_scripts_are_constants("node_modules", ".next", "*.log", ss)

    def test_without_a_match_the_plain_tar_runs(self):
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        sdir = self.session_dir(sb, ss)
        os.makedirs(os.path.join(sdir, "outputs", "web"))
        with open(os.path.join(sdir, "outputs", "web", "page.tsx"), "w") as f:
            f.write("x")
        self.start_worker()
        res = self.ok(self.submit("snapshot", sb, ss, args={"exclude": ["**/*.log"]}))
        self.assertEqual(self.members(res["storage_path"]),
                         ["outputs", "outputs/web", "outputs/web/page.tsx"])
        tar = [e for e in self.s.execs() if e["container"] == "file-sync"][-1]
        self.assertFalse(tar["flags"]["stdin"])

    def test_what_a_tar_exclude_list_cannot_say_is_refused_naming_the_pattern(self):
        self.start_worker()
        # 1. a kept member whose name ends in an excluded one: both tars would drop it too
        sb, ss = new_uuid(), new_uuid()
        self.pod(sb)
        sdir = self.session_dir(sb, ss)
        for rel in ("outputs/web/node_modules/x.js", "outputs/a/outputs/web/node_modules/y.js"):
            os.makedirs(os.path.dirname(os.path.join(sdir, rel)), exist_ok=True)
            open(os.path.join(sdir, rel), "w").close()
        h = self.dead(self.submit("snapshot", sb, ss, args={"exclude": ["outputs/web/node_modules"]}),
                      "invalid_payload")
        msg = json.loads(h["error"])["message"]
        self.assertIn("'outputs/web/node_modules'", msg)
        self.assertIn("unanchored", msg)
        # ... while "**/web/node_modules" means both, and is exact
        res = self.ok(self.submit("snapshot", sb, ss, args={"exclude": ["**/web/node_modules"]}))
        self.assertEqual(self.members(res["storage_path"]),
                         ["outputs", "outputs/a", "outputs/a/outputs", "outputs/a/outputs/web",
                          "outputs/web"])
        # 2. an excluded name with a newline: the list is one name a line
        sb2, ss2 = new_uuid(), new_uuid()
        self.pod(sb2)
        d2 = self.session_dir(sb2, ss2)
        os.makedirs(os.path.join(d2, "outputs"))
        open(os.path.join(d2, "outputs", "bad\nname.log"), "w").close()
        h = self.dead(self.submit("snapshot", sb2, ss2, args={"exclude": ["**/*.log"]}),
                      "invalid_payload")
        msg = json.loads(h["error"])["message"]
        self.assertIn("'**/*.log'", msg)
        self.assertIn("newline", msg)
        self.assertNotIn("bad", msg)        # the pattern is named, never the file
        self.assertEqual(self.rows(f"SELECT session_id FROM snapshot WHERE session_id IN "
                                   f"('{ss}', '{ss2}')"), [[ss]])


if __name__ == "__main__":
    import harness
    harness.main(__file__)
