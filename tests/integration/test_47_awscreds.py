"""Managed services (issue 17): the S3 credentials chain, orphan snapshot objects, and
PostgreSQL over TLS.

Credentials (common/aws_creds.c): tests/integration/aws_standin.py plays STS
(AssumeRoleWithWebIdentity), IMDSv2 and the container endpoint, issuing credentials that
live LIFETIME_S seconds; tests/integration/s3proxy.py --issuer accepts a request only
while its key is one the stand-in issued, unexpired at arrival, unrevoked, with its own
session token and signature. Shown: a multipart upload throttled to outlive its first
credentials completes, its later parts signed with refreshed ones; the chain's order
(static keys > web identity > container > IMDS); the IMDSv2 token flow; a revoked role is
a permanent storage_error naming the bucket and the role, with no secret in the job's
error or the worker's log.
Orphans (`snapworker store gc`): a snapshot object no row names, older than the grace, is
removed with its sidecar; a young one and one a row names are kept.
PostgreSQL TLS: scripts/services starts PostgreSQL with ssl=on (PG_SSL_DIR, a CA and
server certificate made here with the openssl CLI); a restore works with
sslmode=verify-full and the right CA, and a wrong CA is a clear database_error."""
import hashlib
import json
import os
import random
import subprocess
import time
import urllib.error
import urllib.request

from harness import BIN, new_uuid, wait_for
import jobs_tree as jt
from aws_standin import Standin
from test_50_jobs import JobsCase

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1024 * 1024
BUCKET = "onyx-sandbox-files"
ROLE = "arn:aws:iam::123456789012:role/snapworker-irsa"
LIFETIME_S = 16     # refreshed at half-life (8 s); usable until 5 s before expiry

# The AWS credential chain is this module's subject; its workers' Redis traffic is
# test_50's, which the TLS pass runs: scripts/run-integration --tls leaves this module out.
TLS_PASS = False
FAST_TESTS = [
    "test_web_identity_is_chosen_over_imds_and_static_keys_over_both",
    "test_imdsv2_token_flow_and_a_get_without_the_token_is_refused",
    "test_a_revoked_role_is_a_permanent_storage_error_naming_the_bucket_not_a_secret",
    "test_store_gc_removes_old_orphan_snapshot_objects_and_keeps_young_and_referenced_ones",
]


class CredsCase(JobsCase):
    SERVICES = ("redis", "postgres", "s3rver")
    proxy = None
    standin = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.standin = Standin(lifetime_s=LIFETIME_S)
        cls.standin_url = cls.standin.start()
        cls.standin.add_role(ROLE)
        cls.proxy = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "s3proxy.py"),
             "--upstream", cls.services.env["S3_ENDPOINT"], "--access-key", "S3RVER",
             "--secret-key", "S3RVER", "--region", "us-east-1", "--issuer", cls.standin_url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = cls.proxy.stdout.readline()
        assert line.startswith("PORT="), line
        cls.proxy_url = "http://127.0.0.1:" + line.strip()[5:]

    @classmethod
    def tearDownClass(cls):
        if cls.proxy:
            cls.proxy.terminate()
            cls.proxy.wait(timeout=10)
        if cls.standin:
            cls.standin.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.ctl("reset")
        with self.standin.lock:
            self.standin.log.clear()
        self.token_file = os.path.join(self.tmp, "web-identity-token")
        with open(self.token_file, "w") as f:
            f.write(self.standin.web_token + "\n")

    def ctl(self, what, body=None):
        req = urllib.request.Request(self.proxy_url + "/__proxy/" + what,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     method="POST" if what != "stats" else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    # ---- environments: every source set or emptied explicitly ---------------------------
    def s3env(self, static=False, web=False, container=False, imds=False, **extra):
        e = {"SNAPWORKER_STORE": "s3://" + BUCKET, "AWS_ENDPOINT_URL_S3": self.proxy_url,
             "AWS_ENDPOINT_URL": "", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "",
             "SNAPWORKER_S3_PART_SIZE": 5 * MiB, "SNAPWORKER_STORE_RETRY_BUDGET_S": 20,
             "AWS_ACCESS_KEY_ID": "S3RVER" if static else "",
             "AWS_SECRET_ACCESS_KEY": "S3RVER" if static else "", "AWS_SESSION_TOKEN": "",
             "AWS_WEB_IDENTITY_TOKEN_FILE": self.token_file if web else "",
             "AWS_ROLE_ARN": ROLE if web else "", "AWS_ROLE_SESSION_NAME": "it-47" if web else "",
             "AWS_ENDPOINT_URL_STS": self.standin_url if web else "",
             "AWS_CONTAINER_CREDENTIALS_FULL_URI":
                 self.standin_url + "/container/creds" if container else "",
             "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
             "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.standin.container_auth if container else "",
             "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "",
             "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.standin_url if imds else "",
             "AWS_EC2_METADATA_DISABLED": "false" if imds else "true"}
        e.update(extra)
        return e

    def put_bytes(self, env, key, data):
        path = os.path.join(self.tmp, "obj-" + new_uuid())
        with open(path, "wb") as f:
            f.write(data)
        return self.cli("store", "put", key, path, **env)

    def keys_used(self):
        return [e["access_key"] for e in self.ctl("stats")["log"]]

    def source_of(self, ak):
        with self.standin.lock:
            c = self.standin.creds.get(ak)
            return c["source"] if c else ("static" if ak == "S3RVER" else None)

    def assert_no_secret(self, text, what):
        for s in self.standin.secrets_issued():
            self.assertNotIn(s, text, f"a secret leaked into {what}")

    # ---- tests ----------------------------------------------------------------------------
    def test_a_multipart_upload_spanning_a_credential_refresh_succeeds(self):
        env = self.s3env(web=True)
        # 6 parts of 5 MiB, each held 3 s by the proxy before its body is read: ~18 s, more
        # than the first credentials' usable life (LIFETIME_S - 5 s margin), so later parts
        # must be signed with refreshed credentials or the proxy refuses them (ExpiredToken)
        self.ctl("rules", [{"method": "PUT", "query": "partNumber=", "action": "delay_body",
                            "stall_s": 3, "count": -1}])
        data = random.Random(47).randbytes(6 * 5 * MiB)
        key = f"t{new_uuid()[:8]}/spanning.tar.gz"
        full = dict(os.environ)
        full.update({k: str(v) for k, v in self.env(**env).items()})
        t0 = time.time()
        p = subprocess.run([BIN, "store", "put", key, "-"], input=data, env=full,
                           capture_output=True, timeout=120)
        took = time.time() - t0
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertEqual(json.loads(p.stdout)["sha256"], hashlib.sha256(data).hexdigest())
        self.assertGreater(took, LIFETIME_S - 5, "the upload outlived the first credentials")
        log = self.ctl("stats")["log"]
        parts = [e for e in log if "partNumber=" in e["path"]]
        self.assertEqual(len(parts), 6, [e.get("result") for e in parts])
        self.assertTrue(all(e["result"] == "forwarded" for e in log), [e["result"] for e in log])
        used = [e["access_key"] for e in parts]
        self.assertGreaterEqual(len(set(used)), 2, "later parts were signed with new credentials")
        self.assertEqual(used, sorted(used, key=self.standin.issued.index),
                         "each part signs with the credentials current when it starts")
        self.assertEqual({self.source_of(k) for k in used}, {"web"})
        self.assertEqual(hashlib.sha256(self.get(env, key)).hexdigest(),
                         hashlib.sha256(data).hexdigest())
        self.assert_no_secret(p.stderr.decode(), "the CLI's stderr")

    def get(self, env, key):
        dst = os.path.join(self.tmp, "got-" + new_uuid())
        p = self.cli("store", "get", key, dst, **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(dst, "rb") as f:
            return f.read()

    def test_web_identity_is_chosen_over_imds_and_static_keys_over_both(self):
        ns = "t" + new_uuid()[:8]
        cases = [({"web": True, "imds": True}, "web", ["sts"]),
                 ({"container": True, "imds": True}, "container", ["container"]),
                 ({"static": True, "web": True, "container": True, "imds": True}, "static", []),
                 ({"imds": True}, "imds", ["imds", "imds", "imds"])]
        for i, (srcs, want, parts) in enumerate(cases):
            self.ctl("reset")
            with self.standin.lock:
                self.standin.log.clear()
            p = self.put_bytes(self.s3env(**srcs), f"{ns}/o{i}", b"x" * (i + 1))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual({self.source_of(k) for k in self.keys_used()}, {want}, srcs)
            self.assertEqual(self.standin.parts(), parts, srcs)
            self.assertEqual(self.ctl("stats")["sig_failures"], 0)

    def test_imdsv2_token_flow_and_a_get_without_the_token_is_refused(self):
        p = self.put_bytes(self.s3env(imds=True), f"t{new_uuid()[:8]}/imds", b"via imds")
        self.assertEqual(p.returncode, 0, p.stderr)
        with self.standin.lock:
            log = list(self.standin.log)
        self.assertEqual([(m, path, r) for _, m, path, r in log], [
            ("PUT", "/latest/api/token", "200"),
            ("GET", "/latest/meta-data/iam/security-credentials/", "200"),
            ("GET", "/latest/meta-data/iam/security-credentials/" + self.standin.imds_role, "200")])
        # the stand-in is IMDSv2-only: a GET without the session token gets nothing
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(self.standin_url + "/latest/meta-data/iam/security-credentials/",
                                   timeout=5)
        self.assertEqual(cm.exception.code, 401)
        # and a worker whose IMDS gives nothing (wrong endpoint) says so, without waiting long
        t0 = time.time()
        p = self.put_bytes(self.s3env(imds=True, AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:1"),
                           f"t{new_uuid()[:8]}/none", b"x")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no AWS credentials", p.stderr)
        self.assertIn("storage_error", p.stderr)
        self.assertLess(time.time() - t0, 10)

    def test_a_revoked_role_is_a_permanent_storage_error_naming_the_bucket_not_a_secret(self):
        role = ROLE + "-revoked-" + new_uuid()[:6]
        self.standin.add_role(role)
        env = self.s3env(web=True, AWS_ROLE_ARN=role)
        w = self.start_worker(**env)
        sb = new_uuid()
        ss1, ss2 = new_uuid(), new_uuid()
        for ss in (ss1, ss2):
            jt.build_workspace(self.session_dir(sb, ss), big_bytes=64 * 1024)
        self.ok(self.submit("snapshot", sb, ss1))          # the role works, creds are cached
        self.standin.revoke_role(role)                     # STS refuses, issued keys die
        h = self.dead(self.submit("snapshot", sb, ss2), "storage_error")
        err = json.loads(h["error"])
        self.assertFalse(err.get("retryable", False), err)
        self.assertIn(BUCKET, err["message"])
        self.assertIn("AccessDenied", err["message"])
        self.assertIn(role, err["message"])
        self.assert_no_secret(json.dumps(h), "the job hash")
        self.assert_no_secret(json.dumps(self.events()), "the events")
        self.assert_no_secret(w.text(), "the worker log")
        self.assertIn("sts", self.standin.parts())

    # ---- orphan snapshot objects ----------------------------------------------------------
    def test_store_gc_removes_old_orphan_snapshot_objects_and_keeps_young_and_referenced_ones(self):
        env = {"SNAPWORKER_STORE": "file://" + self.store_root}
        self.start_worker(**env)
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=1024)
        snap = self.ok(self.submit("snapshot", sb, ss))            # a row names this one
        two_hours_ago = time.time() - 7200

        def put(key, data):
            p = self.put_bytes(env, key, data)
            self.assertEqual(p.returncode, 0, p.stderr)
            return os.path.join(self.store_root, key)

        def age(path):
            for f in (path, path + ".sha256"):
                os.utime(f, (two_hours_ago, two_hours_ago))

        old = put(f"public/snapshots/{ss}/{new_uuid()}.tar.gz", b"orphan")
        young = put(f"public/snapshots/{ss}/{new_uuid()}.tar.gz", b"young orphan")
        elsewhere = put(f"public/other/{new_uuid()}.tar.gz", b"not a snapshot key")
        referenced = os.path.join(self.store_root, snap["storage_path"])
        for f in (old, elsewhere, referenced):
            age(f)
        p = self.cli("store", "gc", **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual((out["objects_seen"], out["objects_removed"], out["objects_kept"],
                          out["objects_referenced"]), (3, 1, 1, 1), out)
        self.assertFalse(os.path.exists(old))
        self.assertFalse(os.path.exists(old + ".sha256"), "the sidecar goes with its object")
        for f in (young, elsewhere, referenced):
            self.assertTrue(os.path.exists(f) and os.path.exists(f + ".sha256"), f)
        # the row's object still restores
        self.ok(self.submit("restore", sb, ss, {"start_webapp": False}))
        # without the database nothing is removed: the sweep fails before deleting
        age(young)
        p = self.cli("store", "gc", DATABASE_URL="postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
                     **env)
        self.assertEqual(p.returncode, 1)
        self.assertIn("database_error", p.stderr)
        self.assertTrue(os.path.exists(young))


def make_certs(folder):
    """A CA, a server certificate it signs (SAN IP 127.0.0.1, DNS localhost), and a second,
    unrelated CA: the openssl CLI, as an operator would."""
    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=snapworker test CA")
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key", "-out",
        "other-ca.crt", "-days", "2", "-subj", "/CN=some other CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    with open(os.path.join(folder, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")


class PgTlsCase(JobsCase):
    """PostgreSQL with ssl=on (scripts/services, PG_SSL_DIR); libpq does the TLS."""
    SERVICES = ("redis", "postgres")

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.certs = tempfile.mkdtemp(prefix="sw-pgtls-")
        make_certs(cls.certs)
        os.environ["PG_SSL_DIR"] = cls.certs
        try:
            super().setUpClass()
        finally:
            del os.environ["PG_SSL_DIR"]

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.certs, ignore_errors=True)

    def tls_url(self, ca):
        return (f"postgresql://postgres@127.0.0.1:{self.pg_port}/{self.dbname}"
                f"?sslmode=verify-full&sslrootcert={os.path.join(self.certs, ca)}")

    def test_a_restore_works_over_verify_full_tls_and_a_wrong_ca_is_a_clear_database_error(self):
        # The job's connection lives only as long as its job process (docs/processes.md), so
        # it is checked in the server's log of connections, not in pg_stat_ssl afterwards.
        self.psql("ALTER SYSTEM SET log_connections = on")
        self.psql("SELECT pg_reload_conf()")
        log = os.path.join(self.services.dir, "pg", "log")
        w = self.start_worker(DATABASE_URL=self.tls_url("ca.crt"))
        sb, ss = new_uuid(), new_uuid()
        res = self.ok(self.submit("restore", sb, ss, {"start_webapp": False}))
        self.assertIsNotNone(res.get("nextjs_port"), res)
        # the worker's own connections are TLS ones
        with open(log, errors="replace") as f:
            ours = [l for l in f if "connection authorized" in l and "application_name=snapworker" in l
                    and f"database={self.dbname}" in l]
        self.assertTrue(ours, "no connection of the worker in the server log")
        self.assertTrue(all("SSL enabled" in l for l in ours), ours)
        w.stop()
        # a CA that did not sign the server's certificate: refused, and said so
        p = self.cli("migrate", DATABASE_URL=self.tls_url("other-ca.crt"))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("database_error", p.stderr)
        self.assertIn("certificate verify failed", p.stderr)
        self.start_worker(DATABASE_URL=self.tls_url("other-ca.crt"))
        jid = self.submit("restore", sb, new_uuid(), {"start_webapp": False})
        h = wait_for(lambda: "database_error" in self.job_hash(jid).get("error", "") and
                     self.job_hash(jid), 30, what="the job's database_error")
        self.assertIn("certificate verify failed", json.loads(h["error"])["message"])


if __name__ == "__main__":
    import sys
    from harness import main
    sys.exit(main(__file__))
