"""Regressions found by `make drills` (bench/drills store-faults): a job whose store call
met an error that the store then recovered from (an S3 503 retried with success, a lost
answer to its own commit adopted after the retry got 412) ended failed — and then dead,
because the rerun's 412 was read the same way — although the job itself returned success.
The worker read the stale `err.code` instead of the job's return value (worker/exec.c)."""
import json
import os
import subprocess
import urllib.request

import jobs_tree as jt
from harness import new_uuid
import test_50_jobs as t50

HERE = os.path.dirname(os.path.abspath(__file__))
BUCKET = "onyx-sandbox-files"


class RecoveredStoreErrors(t50.JobsCase):
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

    def ctl(self, what, body=None):
        req = urllib.request.Request(self.proxy_url + "/__proxy/" + what,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     method="POST" if what != "stats" else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def s3env(self):
        return {"SNAPWORKER_STORE": "s3://" + BUCKET, "AWS_ENDPOINT_URL_S3": self.proxy_url,
                "AWS_ENDPOINT_URL": "", "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
                "AWS_SESSION_TOKEN": "", "AWS_REGION": "us-east-1"}

    def snapshot_with_rule(self, rule):
        self.ctl("reset")
        self.ctl("rules", [rule])
        self.start_worker(**self.s3env())
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(self.session_dir(sb, ss), big_bytes=64 * 1024)
        jid = self.submit("snapshot", sb, ss)
        res = self.ok(jid, timeout=60)
        h = self.job_hash(jid)
        self.assertEqual(h["attempt"], "1", "succeeded at its first attempt")
        self.assertEqual([e["status"] for e in self.events(jid) if e["status"] != "progress"],
                         ["started", "succeeded"])
        results = [e.get("result") for e in self.ctl("stats")["log"]]
        self.assertEqual(self.psql(f"SELECT count(*) FROM snapshot WHERE id = '{res['snapshot_id']}'"), "1")
        return res, results

    def test_regression_drills_a_snapshot_whose_sidecar_put_got_one_503_succeeds(self):
        res, results = self.snapshot_with_rule({"method": "PUT", "suffix": ".sha256", "count": 1,
                                                "action": "status", "status": 503, "code": "SlowDown"})
        self.assertIn("fault 503", results)
        self.assertFalse(res.get("adopted", False))

    def test_regression_drills_a_snapshot_whose_commit_answer_was_lost_adopts_its_own_object(self):
        res, results = self.snapshot_with_rule({"method": "PUT", "suffix": ".tar.gz", "count": 1,
                                                "action": "reset", "forward": True})
        self.assertIn("forwarded, reset", results)
        self.assertIn("precondition failed", results, "the retry met its own object")
