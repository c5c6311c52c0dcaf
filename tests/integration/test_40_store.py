"""The snapshot store (issue 4) through `snapworker store`: file:// and s3:// round trips,
odd keys, 404 and delete semantics, SigV4 verified independently by tests/integration/
s3proxy.py (botocore) in front of s3rver, injected faults (503s, dropped and stalled
connections), no partial object ever visible, connection reuse, bounded memory.
Both upload paths: a regular file goes up as one known-length PUT (UNSIGNED-PAYLOAD,
retries rewind the file), a pipe as a multipart upload."""
import hashlib
import json
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid

from harness import ASAN, BIN, SLOW, SWTestCase

MiB = 1024 * 1024
BUCKET = "onyx-sandbox-files"
SECRET = "S3RVER"
HERE = os.path.dirname(os.path.abspath(__file__))


def data_of(size, seed):
    """Deterministic incompressible bytes."""
    return random.Random(seed).randbytes(size)


# run under ASan too (scripts/run-integration --fast)
# The store is this module's subject; its workers' Redis traffic is test_50's, which the
# TLS pass runs: scripts/run-integration --tls leaves this module out.
TLS_PASS = False
FAST_TESTS = [
    "test_piped_objects_of_every_boundary_size_go_up_multipart_with_verified_signatures",
    "test_files_of_every_boundary_size_go_up_as_one_unsigned_payload_put_with_verified_signatures",
    "test_a_get_dropped_mid_body_resumes_with_a_range_request",
    "test_503_slowdown_for_the_first_requests_is_retried_and_succeeds",
    "test_a_failing_part_aborts_the_multipart_upload_and_leaves_nothing_visible",
]

class StoreCase(SWTestCase):
    SERVICES = ("redis", "s3rver")
    proxy = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.proxy = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "s3proxy.py"),
             "--upstream", cls.services.env["S3_ENDPOINT"], "--access-key", "S3RVER",
             "--secret-key", SECRET, "--region", "us-east-1"],
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
        if cls.services:  # objects of up to 300 MiB: do not leave them in /tmp
            shutil.rmtree(cls.services.dir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.ns = "t-" + uuid.uuid4().hex[:10]  # key namespace of this test
        self.ctl("reset")

    # ---- proxy control ---------------------------------------------------
    def ctl(self, what, body=None):
        req = urllib.request.Request(self.proxy_url + "/__proxy/" + what,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     method="POST" if what != "stats" else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def rules(self, *rules):
        self.ctl("rules", list(rules))

    def stats(self):
        return self.ctl("stats")

    # ---- environments ----------------------------------------------------
    def s3(self, direct=False, **extra):
        e = {"SNAPWORKER_STORE": "s3://" + BUCKET,
             "AWS_ENDPOINT_URL_S3": self.services.env["S3_ENDPOINT"] if direct else self.proxy_url,
             "AWS_ENDPOINT_URL": "", "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": SECRET,
             "AWS_SESSION_TOKEN": "", "AWS_REGION": "us-east-1", "SNAPWORKER_S3_PART_SIZE": 5 * MiB,
             "SNAPWORKER_STORE_RETRY_BUDGET_S": 20, "SNAPWORKER_STORE_TIMEOUT_S": 10}
        e.update(extra)
        return e

    def file(self, **extra):
        e = {"SNAPWORKER_STORE": "file://" + os.path.join(self.tmp, "store")}
        e.update(extra)
        return e

    def store(self, env, *args, timeout=120):
        return self.cli("store", *args, timeout=timeout, **env)

    def ok(self, env, *args):
        p = self.store(env, *args)
        self.assertEqual(p.returncode, 0, f"store {args[:2]}: {p.stderr}")
        return p

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def full_env(self, env):
        full = dict(os.environ)
        full.update({k: str(v) for k, v in self.env(**env).items()})
        full.pop("SW_TMP", None)
        if ASAN:
            full.setdefault("ASAN_OPTIONS", "detect_leaks=1:exitcode=86")
        return full

    def put_pipe(self, env, key, data):
        """`store put KEY -` with data on a pipe (the multipart path)."""
        p = subprocess.run([BIN, "store", "put", key, "-"], env=self.full_env(env), input=data,
                           capture_output=True, timeout=120 * SLOW)
        err = p.stderr.decode(errors="replace")
        self.assertNotIn("AddressSanitizer", err)
        self.assertNotIn("runtime error:", err)
        self.assertEqual(p.returncode, 0, f"store put {key} -: {err}")
        return p

    def wait_for_result(self, result, timeout=15):
        """The proxy log once an entry with this result is in it."""
        deadline = time.time() + timeout * SLOW
        while True:
            st = self.stats()
            if any(e.get("result") == result for e in st["log"]) or time.time() > deadline:
                return st
            time.sleep(0.1)

    def keys(self, env, prefix):
        p = self.ok(env, "ls", prefix)
        return [line.split("\t")[0] for line in p.stdout.splitlines()]

    def assert_absent(self, env, key):
        self.assertEqual(self.keys(env, key), [])
        p = self.store(env, "head", key)
        self.assertEqual(p.returncode, 1)
        self.assertIn("snapshot_not_found", p.stderr)

    def round_trip(self, env, key, data, via="file"):
        """put (from a regular file, or from a pipe with via="pipe"), head, get, compare."""
        want = hashlib.sha256(data).hexdigest()
        src = self.write("src-" + uuid.uuid4().hex, data)
        if via == "pipe":
            info = json.loads(self.put_pipe(env, key, data).stdout)
        else:
            info = json.loads(self.ok(env, "put", key, src).stdout)
        self.assertEqual((info["size_bytes"], info["sha256"]), (len(data), want))
        head = json.loads(self.ok(env, "head", key).stdout)
        self.assertEqual((head["size_bytes"], head["sha256"]), (len(data), want))
        dst = os.path.join(self.tmp, "dst-" + uuid.uuid4().hex)
        self.ok(env, "get", key, dst)
        with open(dst, "rb") as f:
            back = f.read()
        self.assertEqual(len(back), len(data))
        self.assertTrue(back == data, f"{key}: bytes differ")
        os.unlink(src)
        os.unlink(dst)


SIZES = [0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1, 50 * MiB]


class RoundTrips(StoreCase):
    def test_objects_of_every_boundary_size_round_trip_through_the_file_store(self):
        env = self.file()
        for size in SIZES:
            self.round_trip(env, f"{self.ns}/obj-{size}.tar.gz", data_of(size, str(size)))
        listed = dict(line.split("\t") for line in self.ok(env, "ls", self.ns + "/").stdout.splitlines())
        self.assertEqual(listed, {f"{self.ns}/obj-{s}.tar.gz": str(s) for s in SIZES})
        # the sidecar is the documented format: 64 hex digits and a newline
        with open(os.path.join(self.tmp, "store", self.ns, "obj-1.tar.gz.sha256")) as f:
            self.assertEqual(f.read(), hashlib.sha256(data_of(1, "1")).hexdigest() + "\n")

    def test_objects_of_every_boundary_size_round_trip_through_the_file_store_from_a_pipe(self):
        env = self.file()
        for size in SIZES:
            self.round_trip(env, f"{self.ns}/obj-{size}.tar.gz", data_of(size, str(size)), via="pipe")
        listed = dict(line.split("\t") for line in self.ok(env, "ls", self.ns + "/").stdout.splitlines())
        self.assertEqual(listed, {f"{self.ns}/obj-{s}.tar.gz": str(s) for s in SIZES})

    def test_piped_objects_of_every_boundary_size_go_up_multipart_with_verified_signatures(self):
        env = self.s3()
        for size in SIZES:
            self.round_trip(env, f"{self.ns}/obj-{size}.tar.gz", data_of(size, str(size)), via="pipe")
        st = self.stats()
        self.assertEqual(st["sig_failures"], 0)
        results = {e["result"] for e in st["log"]}
        self.assertEqual(results, {"forwarded"})
        # every kind of request went through the verifier: single PUT, the three
        # multipart calls, GET and HEAD (no DELETE: objects are write-once, a put never
        # deletes an old sidecar first)
        kinds = {(e["method"], "uploads=" in e["path"], "partNumber=" in e["path"],
                  "uploadId=" in e["path"]) for e in st["log"]}
        for k in [("PUT", False, False, False), ("POST", True, False, False),
                  ("PUT", False, True, True), ("POST", False, False, True),
                  ("GET", False, False, False), ("HEAD", False, False, False)]:
            self.assertIn(k, kinds)
        self.assertNotIn(("DELETE", False, False, False), kinds)
        # 5 MiB exactly is one PUT; 5 MiB + 1 is two parts; 50 MiB is ten
        parts = [e["path"] for e in st["log"] if "partNumber=" in e["path"]]
        self.assertEqual(len(parts), 2 + 10)
        # every body of this path is hashed into its signature
        self.assertFalse([e for e in st["log"] if e["payload"] == "UNSIGNED-PAYLOAD"])
        listed = dict(line.split("\t") for line in self.ok(env, "ls", self.ns + "/").stdout.splitlines())
        self.assertEqual(listed, {f"{self.ns}/obj-{s}.tar.gz": str(s) for s in SIZES})

    def test_files_of_every_boundary_size_go_up_as_one_unsigned_payload_put_with_verified_signatures(self):
        env = self.s3()
        sizes = SIZES + [64 * MiB]
        for size in sizes:
            self.round_trip(env, f"{self.ns}/obj-{size}.tar.gz", data_of(size, str(size)))
        st = self.stats()
        self.assertEqual(st["sig_failures"], 0)
        self.assertEqual({e["result"] for e in st["log"]}, {"forwarded"})
        self.assertFalse([e["path"] for e in st["log"]
                          if "uploads=" in e["path"] or "uploadId=" in e["path"]], "no multipart")
        puts = [e for e in st["log"] if e["method"] == "PUT" and e["path"].endswith(".tar.gz")]
        self.assertEqual(sorted(e["length"] for e in puts), sorted(sizes))
        for e in puts:  # one streamed PUT each: Content-Length = size, signed UNSIGNED-PAYLOAD
            self.assertEqual(e["payload"], "UNSIGNED-PAYLOAD", e)
            self.assertIn("x-amz-content-sha256", e["signed"], e)
            self.assertEqual(e["received"], e["length"], e)
        sidecars = [e for e in st["log"] if e["method"] == "PUT" and e["path"].endswith(".sha256")]
        self.assertEqual(len(sidecars), len(sizes))
        for e in sidecars:  # small bodies keep their signed sha256
            self.assertRegex(e["payload"], "^[0-9a-f]{64}$")
        listed = dict(line.split("\t") for line in self.ok(env, "ls", self.ns + "/").stdout.splitlines())
        self.assertEqual(listed, {f"{self.ns}/obj-{s}.tar.gz": str(s) for s in sizes})

    def test_keys_with_spaces_plus_and_unicode_are_distinct_objects_in_both_stores(self):
        for env in (self.file(), self.s3()):
            names = [f"{self.ns}/a b/c d.tar.gz", f"{self.ns}/a+b/c+d.tar.gz",
                     f"{self.ns}/ünï/😀 snap~(1)&=.tar.gz", f"{self.ns}/a%20b/x.tar.gz"]
            for i, k in enumerate(names):
                self.round_trip(env, k, data_of(1000 + i, k))
            self.assertEqual(sorted(self.keys(env, self.ns + "/")), sorted(names))
            for i, k in enumerate(names):
                self.assertEqual(json.loads(self.ok(env, "head", k).stdout)["size_bytes"], 1000 + i)
        self.assertEqual(self.stats()["sig_failures"], 0)

    def test_get_of_a_missing_key_exits_1_with_snapshot_not_found(self):
        for env in (self.file(), self.s3()):
            dst = os.path.join(self.tmp, "never")
            p = self.store(env, "get", f"{self.ns}/missing.tar.gz", dst)
            self.assertEqual(p.returncode, 1)
            self.assertTrue(p.stderr.startswith("snapworker store: snapshot_not_found: "), p.stderr)
            self.assertFalse(os.path.exists(dst))

    def test_delete_of_a_missing_key_succeeds_and_delete_removes_object_and_sidecar(self):
        for env in (self.file(), self.s3()):
            self.ok(env, "rm", f"{self.ns}/never-there.tar.gz")
            key = f"{self.ns}/gone.tar.gz"
            self.round_trip(env, key, b"x" * 10)
            self.ok(env, "rm", key)
            self.assert_absent(env, key)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "store", self.ns, "gone.tar.gz.sha256")))

    def test_invalid_keys_are_refused_as_invalid_payload(self):
        for key in ["/abs.tar.gz", "a/../b", "a//b", "a/./b", "x.sha256", "a/.swtmp-1", "tab\there"]:
            p = self.store(self.file(), "head", key)
            self.assertEqual(p.returncode, 1, key)
            self.assertIn("invalid_payload", p.stderr, key)

    def test_a_corrupted_object_fails_its_sha256_check_permanently(self):
        env = self.file()
        key = f"{self.ns}/c.tar.gz"
        self.round_trip(env, key, data_of(100000, "c"))
        path = os.path.join(self.tmp, "store", self.ns, "c.tar.gz")
        with open(path, "r+b") as f:
            f.seek(5000)
            f.write(b"\x00corrupt\x00")
        dst = os.path.join(self.tmp, "c.out")
        p = self.store(env, "get", key, dst)
        self.assertEqual(p.returncode, 1)
        self.assertIn("storage_error", p.stderr)
        self.assertIn("sha256 mismatch", p.stderr)
        self.assertFalse(os.path.exists(dst), "a failed get leaves no partial file")


class Signatures(StoreCase):
    def test_a_wrong_secret_is_refused_as_a_permanent_authorization_error_without_the_secret(self):
        bad = "WrongSecret+abc/123XYZ"
        env = self.s3(AWS_SECRET_ACCESS_KEY=bad, SNAPWORKER_STORE_RETRY_BUDGET_S=30)
        src = self.write("w", b"hello")
        t0 = time.time()
        p = self.store(env, "put", f"{self.ns}/w.tar.gz", src)
        self.assertEqual(p.returncode, 1)
        self.assertIn("storage_error", p.stderr)
        self.assertIn("authorization", p.stderr)
        self.assertIn(BUCKET, p.stderr)
        self.assertIn(f"{self.ns}/w.tar.gz", p.stderr)
        self.assertNotIn(bad, p.stderr + p.stdout)
        st = self.stats()
        # refused by the verifier, and permanent: one request, no retry loop
        self.assertEqual(st["requests"], 1)
        self.assertEqual(st["sig_failures"], 1)
        self.assertLess(time.time() - t0, 10 * SLOW)
        for args in (("get", f"{self.ns}/w.tar.gz", "-"), ("head", "x"), ("ls", ""), ("rm", "x")):
            p = self.store(env, *args)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn("authorization", p.stderr)
            self.assertNotIn(bad, p.stderr)
        self.assert_absent(self.s3(), f"{self.ns}/w.tar.gz")

    def test_a_session_token_is_sent_and_signed_as_x_amz_security_token(self):
        token = "FwoGZXIvYXdzEJr//////////wEaDH+token=="
        env = self.s3(AWS_SESSION_TOKEN=token)
        self.round_trip(env, f"{self.ns}/tok.tar.gz", data_of(6 * MiB, "tok"))
        self.round_trip(env, f"{self.ns}/tok-mp.tar.gz", data_of(6 * MiB, "tok"), via="pipe")
        st = self.stats()
        self.assertEqual(st["sig_failures"], 0)
        self.assertGreater(len(st["log"]), 12)
        self.assertTrue(any(e["payload"] == "UNSIGNED-PAYLOAD" for e in st["log"]))
        self.assertTrue(any("partNumber=" in e["path"] for e in st["log"]))
        for e in st["log"]:
            self.assertEqual(e["token"], token, e)
            self.assertIn("x-amz-security-token", e["signed"], e)

    def test_requests_reuse_one_connection_within_a_process(self):
        env = self.s3()
        self.ok(env, "put", f"{self.ns}/rf.tar.gz", self.write("rf", data_of(16 * MiB, "rf")))
        st = self.stats()
        # the one PUT, PUT sidecar: one connection
        self.assertEqual([e["method"] for e in st["log"]], ["PUT", "PUT"])
        self.assertEqual(st["connections"], 1)
        self.ctl("reset")
        self.put_pipe(env, f"{self.ns}/r.tar.gz", data_of(16 * MiB, "r"))
        st = self.stats()
        # create, 4 parts, complete, PUT sidecar: 7 requests; one part may travel
        # while another request runs, so at most two connections
        self.assertGreaterEqual(st["requests"], 7)
        self.assertLessEqual(st["connections"], 2)


class Faults(StoreCase):
    def test_503_slowdown_for_the_first_requests_is_retried_and_succeeds(self):
        env = self.s3()
        self.rules({"action": "status", "status": 503, "code": "SlowDown", "count": 4})
        self.round_trip(env, f"{self.ns}/s.tar.gz", data_of(11 * MiB, "s"))
        st = self.stats()
        self.assertEqual(st["faults"], 4)
        self.assertEqual(sum(1 for e in st["log"] if e["result"] == "fault 503"), 4)

    def test_503_on_every_request_fails_with_retryable_storage_error_within_the_budget(self):
        env = self.s3(SNAPWORKER_STORE_RETRY_BUDGET_S=2)
        self.rules({"action": "status", "status": 503, "count": -1})
        t0 = time.time()
        p = self.store(env, "put", f"{self.ns}/f.tar.gz", self.write("f", b"abc"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("storage_error", p.stderr)
        self.assertIn("503", p.stderr)
        self.assertLess(time.time() - t0, 8 * SLOW)
        self.assertGreater(self.stats()["faults"], 2)  # it did retry
        self.rules()
        self.assert_absent(env, f"{self.ns}/f.tar.gz")

    def test_a_failing_part_aborts_the_multipart_upload_and_leaves_nothing_visible(self):
        env = self.s3(SNAPWORKER_STORE_RETRY_BUDGET_S=2)
        key = f"{self.ns}/mp.tar.gz"
        self.rules({"method": "PUT", "query": "partNumber=2", "action": "status", "status": 500,
                    "code": "InternalError", "count": -1})
        p = subprocess.run([BIN, "store", "put", key, "-"], env=self.full_env(env),
                           input=data_of(12 * MiB, "mp"), capture_output=True, timeout=60 * SLOW)
        self.assertEqual(p.returncode, 1)
        p.stderr = p.stderr.decode()
        self.assertIn("storage_error", p.stderr)
        st = self.stats()
        self.assertTrue(any(e["method"] == "DELETE" and "uploadId=" in e["path"] for e in st["log"]),
                        "the upload was aborted (s3rver answers 405, which is tolerated)")
        self.assertFalse(any(e["method"] == "POST" and "uploadId=" in e["path"] for e in st["log"]))
        self.rules()
        self.assert_absent(env, key)

    def test_a_503_on_the_one_put_restarts_it_from_the_first_byte_and_succeeds(self):
        env = self.s3()
        key = f"{self.ns}/r503.tar.gz"
        data = data_of(20 * MiB, "r503")
        self.rules({"method": "PUT", "suffix": ".tar.gz", "action": "status", "status": 503,
                    "code": "SlowDown", "count": 2})
        self.round_trip(env, key, data)
        st = self.stats()
        puts = [e for e in st["log"] if e["method"] == "PUT" and e["path"].endswith(".tar.gz")]
        # the proxy read every attempt's whole body before answering: each retry sent
        # all 20 MiB again from the start of the file
        self.assertEqual([e["result"] for e in puts], ["fault 503", "fault 503", "forwarded"])
        self.assertEqual([e["received"] for e in puts], [len(data)] * 3)
        self.assertEqual(st["sig_failures"], 0)
        self.assertEqual(json.loads(self.ok(env, "head", key).stdout)["sha256"],
                         hashlib.sha256(data).hexdigest())

    def test_500_on_every_put_of_a_file_fails_retryable_and_leaves_nothing_visible(self):
        env = self.s3(SNAPWORKER_STORE_RETRY_BUDGET_S=2)
        key = f"{self.ns}/r500.tar.gz"
        self.rules({"method": "PUT", "suffix": ".tar.gz", "action": "status", "status": 500,
                    "code": "InternalError", "count": -1})
        p = self.store(env, "put", key, self.write("r500", data_of(6 * MiB, "r500")))
        self.assertEqual(p.returncode, 1)
        self.assertIn("storage_error", p.stderr)
        self.assertIn("500", p.stderr)
        self.assertIn("gave up after", p.stderr)
        self.assertGreater(self.stats()["faults"], 2)
        self.rules()
        self.assert_absent(env, key)

    def start_put_of_file(self, env, key, path):
        return subprocess.Popen([BIN, "store", "put", key, path], env=self.full_env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def test_a_file_that_shrinks_during_its_put_fails_and_the_old_object_stays(self):
        env = self.s3()
        key = f"{self.ns}/shrink.tar.gz"
        self.round_trip(env, key, b"old" * 1000)
        self.ctl("reset")
        # the proxy reads the body late, so the upload blocks a few MiB in while the
        # file is cut short under it
        self.rules({"method": "PUT", "suffix": ".tar.gz", "action": "delay_body",
                    "stall_s": 1.5 * SLOW, "count": 1})
        src = self.write("shrink", data_of(64 * MiB, "shrink"))
        proc = self.start_put_of_file(env, key, src)
        time.sleep(0.5 * SLOW)
        os.truncate(src, MiB)
        out, err = proc.communicate(timeout=60 * SLOW)
        err = err.decode()
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("invalid_payload", err)
        self.assertIn("ended at byte", err)
        self.assertNotIn("AddressSanitizer", err)
        st = self.wait_for_result("incomplete")
        self.assertIn("incomplete", [e["result"] for e in st["log"]])
        # the old object is still the one stored, with its sidecar (write-once: a put
        # never deletes the sidecar of an existing object)
        head = json.loads(self.ok(env, "head", key).stdout)
        self.assertEqual(head, {"key": key, "size_bytes": 3000,
                                "sha256": hashlib.sha256(b"old" * 1000).hexdigest()})
        dst = os.path.join(self.tmp, "shrink.out")
        self.ok(env, "get", key, dst)
        with open(dst, "rb") as f:
            self.assertEqual(f.read(), b"old" * 1000)

    def test_a_file_that_grows_during_its_put_fails_before_the_last_byte_leaves(self):
        env = self.s3()
        key = f"{self.ns}/grow.tar.gz"
        self.rules({"method": "PUT", "suffix": ".tar.gz", "action": "delay_body",
                    "stall_s": 1.5 * SLOW, "count": 1})
        src = self.write("grow", data_of(64 * MiB, "grow"))
        proc = self.start_put_of_file(env, key, src)
        time.sleep(0.5 * SLOW)
        with open(src, "ab") as f:
            f.write(b"more")
        out, err = proc.communicate(timeout=60 * SLOW)
        err = err.decode()
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("invalid_payload", err)
        self.assertIn("more than the 67108864 bytes declared", err)
        st = self.wait_for_result("incomplete")
        self.assertIn("incomplete", [e["result"] for e in st["log"]])
        self.assert_absent(env, key)

    def test_a_put_of_a_file_killed_midway_leaves_nothing_visible(self):
        env = self.s3()
        key = f"{self.ns}/killed.tar.gz"
        self.rules({"method": "PUT", "suffix": ".tar.gz", "action": "delay_body",
                    "stall_s": 1.5 * SLOW, "count": 1})
        proc = self.start_put_of_file(env, key, self.write("killed", data_of(64 * MiB, "killed")))
        time.sleep(0.5 * SLOW)
        proc.kill()
        proc.communicate()
        st = self.wait_for_result("incomplete")
        puts = [e for e in st["log"] if e["method"] == "PUT"]
        self.assertEqual([e["result"] for e in puts], ["incomplete"])
        self.assertLess(puts[0]["received"], puts[0]["length"])
        self.assert_absent(env, key)

    def test_a_get_dropped_mid_body_resumes_with_a_range_request(self):
        env = self.s3()
        key = f"{self.ns}/d.tar.gz"
        data = data_of(7 * MiB, "d")
        self.round_trip(env, key, data)
        self.ctl("reset")
        self.rules({"method": "GET", "suffix": ".tar.gz", "action": "drop", "after_bytes": MiB + 17,
                    "count": 2})
        dst = os.path.join(self.tmp, "d.out")
        self.ok(env, "get", key, dst)
        with open(dst, "rb") as f:
            self.assertTrue(f.read() == data)
        ranges = [e["range"] for e in self.stats()["log"] if e["range"]]
        self.assertEqual(ranges, [f"bytes={MiB + 17}-", f"bytes={2 * (MiB + 17)}-"])

    def test_a_get_dropped_every_time_fails_with_storage_error_and_no_partial_file(self):
        env = self.s3(SNAPWORKER_STORE_RETRY_BUDGET_S=2)
        key = f"{self.ns}/dd.tar.gz"
        self.round_trip(env, key, data_of(3 * MiB, "dd"))
        self.rules({"method": "GET", "suffix": ".tar.gz", "action": "drop", "after_bytes": 0,
                    "count": -1})
        dst = os.path.join(self.tmp, "dd.out")
        t0 = time.time()
        p = self.store(env, "get", key, dst)
        self.assertEqual(p.returncode, 1)
        self.assertIn("storage_error", p.stderr)
        self.assertLess(time.time() - t0, 10 * SLOW)
        self.assertFalse(os.path.exists(dst))

    def test_a_stalled_put_times_out_with_storage_error_and_leaves_nothing_visible(self):
        env = self.s3(SNAPWORKER_STORE_RETRY_BUDGET_S=2, SNAPWORKER_STORE_TIMEOUT_S=1)
        key = f"{self.ns}/st.tar.gz"
        self.rules({"method": "PUT", "action": "stall", "stall_s": 20, "count": -1})
        t0 = time.time()
        p = self.store(env, "put", key, self.write("st", data_of(100000, "st")))
        took = time.time() - t0
        self.assertEqual(p.returncode, 1)
        self.assertIn("storage_error", p.stderr)
        self.assertIn("timeout", p.stderr.lower())
        self.assertLess(took, 12 * SLOW)
        self.rules()
        self.assert_absent(env, key)

    def test_a_stalled_get_times_out_with_storage_error(self):
        env = self.s3(SNAPWORKER_STORE_RETRY_BUDGET_S=1, SNAPWORKER_STORE_TIMEOUT_S=1)
        key = f"{self.ns}/sg.tar.gz"
        self.round_trip(env, key, b"y" * 1000)
        self.rules({"method": "GET", "suffix": ".tar.gz", "action": "stall", "stall_s": 20,
                    "count": -1})
        t0 = time.time()
        p = self.store(env, "get", key, "-")
        self.assertEqual(p.returncode, 1)
        self.assertIn("storage_error", p.stderr)
        self.assertLess(time.time() - t0, 12 * SLOW)

    def test_a_put_killed_midway_leaves_nothing_visible_in_either_store(self):
        for env, name in ((self.file(), "file"), (self.s3(direct=True), "s3")):
            key = f"{self.ns}/{name}/k.tar.gz"
            full = dict(os.environ)
            full.update({k: str(v) for k, v in self.env(**env).items()})
            proc = subprocess.Popen([BIN, "store", "put", key, "-"], env=full,
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            proc.stdin.write(data_of(12 * MiB, "k"))  # two parts gone up, a third buffered
            proc.stdin.flush()
            time.sleep(0.5 * SLOW)
            proc.kill()
            proc.wait()
            proc.stdin.close()
            self.assert_absent(env, key)
            if name == "file":
                folder = os.path.join(self.tmp, "store", self.ns, "file")
                self.assertTrue(any(n.startswith(".swtmp-") for n in os.listdir(folder)),
                                "the temp file exists on disk, yet nothing is listed")


def vm_hwm_kib(pid):
    """Peak RSS of the process's current image (VmHWM), None once it is gone.
    (wait4's ru_maxrss is no use here: Linux folds the spawning Python's own peak
    into the child's at exec.)"""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Memory(StoreCase):
    def test_a_300_mib_upload_from_a_pipe_peaks_under_32_mib_rss(self):
        env = self.s3(direct=True, SNAPWORKER_S3_PART_SIZE=8 * MiB)
        key = f"{self.ns}/big.tar.gz"
        proc = subprocess.Popen([BIN, "store", "put", key, "-"], env=self.full_env(env),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                v = vm_hwm_kib(proc.pid)
                if v is None or proc.poll() is not None:
                    break
                peak[0] = max(peak[0], v)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        h, block = hashlib.sha256(), os.urandom(MiB)
        for i in range(300):
            chunk = i.to_bytes(4, "big") + block[4:]
            h.update(chunk)
            proc.stdin.write(chunk)
        proc.stdin.flush()
        peak[0] = max(peak[0], vm_hwm_kib(proc.pid) or 0)  # every buffer is allocated by now
        proc.stdin.close()
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait()
        stop.set()
        sampler.join()
        self.assertEqual(proc.returncode, 0, err)
        info = json.loads(out)
        self.assertEqual((info["size_bytes"], info["sha256"]), (300 * MiB, h.hexdigest()))
        peak_mib = peak[0] / 1024
        self.assertGreater(peak_mib, 8)  # the sampler did see the process
        self.assertLess(peak_mib, 32 * (8 if ASAN else 1), f"peak RSS {peak_mib:.1f} MiB")
        head = json.loads(self.ok(env, "head", key).stdout)
        self.assertEqual(head["sha256"], h.hexdigest())
        self.ok(env, "rm", key)

    def test_a_300_mib_upload_from_a_file_streams_through_curls_buffer_alone(self):
        env = self.s3(direct=True, SNAPWORKER_S3_PART_SIZE=8 * MiB)
        key = f"{self.ns}/bigf.tar.gz"
        h = hashlib.sha256()
        src = os.path.join(self.tmp, "bigf")
        with open(src, "wb") as f:
            block = os.urandom(MiB)
            for i in range(300):
                chunk = i.to_bytes(4, "big") + block[4:]
                h.update(chunk)
                f.write(chunk)
        proc = subprocess.Popen([BIN, "store", "put", key, src], env=self.full_env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, vm_hwm_kib(proc.pid) or 0)
            time.sleep(0.02)
        out, err = proc.communicate()
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(json.loads(out)["sha256"], h.hexdigest())
        peak_mib = peak / 1024
        self.assertGreater(peak_mib, 4)  # the sampler did see the process
        # no part buffers: the process baseline plus curl's buffers
        self.assertLess(peak_mib, 20 * (8 if ASAN else 1), f"peak RSS {peak_mib:.1f} MiB")
        os.unlink(src)
        self.ok(env, "rm", key)
