"""Redis over TLS (rediss://): the worker and the CLI against redis-server's TLS port, with
the certificate checks a client must make (docs/operations.md, REDIS_URL).

This module forces TLS on (REDIS_TLS = True) in both passes of the suite. Its servers come
from scripts/services: the module's redis serves TLS only (port 0) with a certificate of a
test CA whose SAN is IP:127.0.0.1 + DNS:localhost; "wronghost" serves one whose SAN is only
DNS:wrong.example (same CA); "mtls" requires a client certificate (tls-auth-clients yes).
The expected failure reasons are the ones OpenSSL gives redis-py (Debian python3-redis) for
the same server, so they are not copied by hand."""
import json
import os
import re
import time
from urllib.parse import quote

import redis

from harness import SLOW, SWTestCase, new_uuid, wait_for

TLS_PASS = False  # TLS in both passes already (REDIS_TLS = True)

FAST_TESTS = [
    "test_a_worker_drains_200_noop_jobs_over_rediss",
    "test_a_wrong_ca_is_refused_with_certificate_verify_failed_and_nothing_runs",
]

PASSWORD = "pw-TLS-S3CRET-4242"


class RedisTLS(SWTestCase):
    SERVICES = ("redis",)
    REDIS_TLS = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.services
        cls.tls = s.env["REDIS_TLS_DIR"]
        cls.port = int(s.env["REDIS_PORT"])
        cls.wrong_port = s.start_redis_tls("wronghost", os.path.join(cls.tls, "wronghost.crt"),
                                           os.path.join(cls.tls, "wronghost.key"))
        cls.mtls_port = s.start_redis_tls("mtls", os.path.join(cls.tls, "server.crt"),
                                          os.path.join(cls.tls, "server.key"),
                                          "--tls-auth-clients", "yes")

    # ---- helpers ---------------------------------------------------------------------
    def f(self, name):
        return os.path.join(self.tls, name)

    def url(self, host="localhost", port=None, ca="ca.crt", userinfo="", **q):
        query = {}
        if ca:
            query["ssl_ca_certs"] = self.f(ca)
            query.setdefault("ssl_cert_reqs", "required")
        query.update(q)
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        at = f"{userinfo}@" if userinfo else ""
        return f"rediss://{at}{host}:{port or self.port}/0" + (f"?{qs}" if qs else "")

    def client(self, port, **kw):
        kw.setdefault("ssl_ca_certs", self.f("ca.crt"))
        return redis.Redis(host="localhost", port=port, ssl=True, decode_responses=True, **kw)

    def py_reason(self, host, port, ca):
        """What OpenSSL says (through Python's ssl) about this server: the text after
        'certificate verify failed: '."""
        c = redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=self.f(ca),
                        ssl_check_hostname=True, socket_timeout=5)
        try:
            c.ping()
        except redis.ConnectionError as e:
            m = re.search(r"certificate verify failed: (.*?)(?: \(_ssl\.c:\d+\))?\.?$", str(e))
            self.assertIsNotNone(m, str(e))
            return m.group(1)
        finally:
            c.close()
        self.fail(f"redis-py connected to {host}:{port} with {ca}")

    def enqueue(self, url, jid=None, wait=True, timeout=20, **extra):
        args = ["enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                "--id", jid or new_uuid()]
        if wait:
            args += ["--wait", "--timeout", str(timeout)]
        return self.cli(*args, REDIS_URL=url, timeout=timeout + 30, **extra)

    def assert_refused(self, p, *reasons):
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        low = p.stderr.lower()
        self.assertIn("certificate verify failed", low, p.stderr)
        for r in reasons:
            self.assertIn(r.lower(), low, p.stderr)

    def wait_log(self, w, *needles, timeout=15):
        return wait_for(lambda: all(n.lower() in w.text().lower() for n in needles), timeout,
                        interval=0.1, what=f"{needles} in the worker's log:\n{w.text()[-2000:]}")

    def assert_not_run(self, client, jid, seconds=2.0):
        """A job added with 'client' is untouched after 'seconds': no hash, no event, no
        consumer group read it."""
        time.sleep(seconds * SLOW)
        self.assertEqual(client.hgetall(self.key("job:" + jid)), {})
        self.assertEqual(client.xlen(self.key("events")), 0)
        self.assertEqual(client.xlen(self.key("stream")), 1)
        groups = client.xinfo_groups(self.key("stream"))
        self.assertTrue(all(g["pending"] == 0 and g["entries-read"] in (None, 0) for g in groups),
                        groups)

    # ---- tests -----------------------------------------------------------------------
    def test_a_worker_drains_200_noop_jobs_over_rediss(self):
        self.assertTrue(self.services.env["REDIS_URL"].startswith("rediss://localhost:"))
        self.assertEqual(self.r.config_get("port")["port"], "0")  # no plaintext port at all
        ids = []
        pipe = self.r.pipeline(transaction=False)
        for _ in range(200):
            p = self.payload()
            ids.append(p["id"])
            pipe.xadd(self.key("stream"), {"job": json.dumps(p)})
        pipe.execute()
        w = self.start_worker(SNAPWORKER_CONCURRENCY=4)
        wait_for(lambda: sum(1 for e in self.events() if e["status"] == "succeeded") >= 200,
                 timeout=30, interval=0.1, what="200 jobs succeeded over TLS")
        pipe = self.r.pipeline(transaction=False)
        for jid in ids:
            pipe.hget(self.key("job:" + jid), "status")
        self.assertEqual(set(pipe.execute()), {"succeeded"})
        wait_for(lambda: self.r.xlen(self.key("stream")) == 0, what="stream emptied")
        self.assertTrue(w.alive())
        self.assertNotIn("certificate verify failed", w.text().lower())

    def test_the_cli_enqueues_waits_and_reads_jobs_over_tls(self):
        self.start_worker()
        jid = new_uuid()
        p = self.enqueue(self.services.env["REDIS_URL"], jid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["status"], "succeeded")
        j = json.loads(self.cli("job", jid, check=True).stdout)
        self.assertEqual(j["status"], "succeeded")
        self.assertEqual(self.job_hash(jid)["status"], "succeeded")
        # the IP literal is in the certificate too (SAN IP:127.0.0.1), checked by default
        p = self.enqueue(self.url(host="127.0.0.1"))
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_a_wrong_ca_is_refused_with_certificate_verify_failed_and_nothing_runs(self):
        reason = self.py_reason("localhost", self.port, "other-ca.crt")
        bad = self.url(ca="other-ca.crt")
        w = self.start_worker(REDIS_URL=bad)
        self.wait_log(w, "certificate verify failed", reason)
        p = self.payload()
        self.xadd(p)  # through the good connection: the worker must not see it
        self.assert_not_run(self.r, p["id"])
        q = self.enqueue(bad, wait=False, timeout=10)
        self.assert_refused(q, reason)
        self.assertEqual(self.r.xlen(self.key("stream")), 1)  # the CLI added nothing

    def test_a_host_name_not_in_the_certificate_is_refused_unless_the_check_is_off(self):
        # wronghost's certificate (test CA) names only DNS:wrong.example
        self.assertIn("hostname mismatch", self.py_reason("localhost", self.wrong_port, "ca.crt").lower())
        self.assertIn("ip address mismatch", self.py_reason("127.0.0.1", self.wrong_port, "ca.crt").lower())
        by_name = self.url(port=self.wrong_port)
        by_ip = self.url(host="127.0.0.1", port=self.wrong_port)
        w1 = self.start_worker(REDIS_URL=by_name)
        w2 = self.start_worker(REDIS_URL=by_ip)
        self.wait_log(w1, "certificate verify failed", "hostname mismatch")
        self.wait_log(w2, "certificate verify failed", "IP address mismatch")
        self.assert_refused(self.enqueue(by_name, wait=False, timeout=10), "hostname mismatch")
        self.assert_refused(self.enqueue(by_ip, wait=False, timeout=10), "IP address mismatch")
        wr = self.client(self.wrong_port, ssl_check_hostname=False)
        try:
            p = self.payload()
            wr.xadd(self.key("stream"), {"job": json.dumps(p)})
            self.assert_not_run(wr, p["id"], seconds=1.0)
            # the chain is still checked without the name: the right CA and no name check work
            off = self.url(port=self.wrong_port, ssl_check_hostname="false")
            self.start_worker(REDIS_URL=off)
            wait_for(lambda: wr.hget(self.key("job:" + p["id"]), "status") == "succeeded",
                     timeout=20, what="the job run with ssl_check_hostname=false")
            jid = new_uuid()
            q = self.enqueue(off, jid)
            self.assertEqual(q.returncode, 0, q.stderr)
            self.assertEqual(wr.hget(self.key("job:" + jid), "status"), "succeeded")
            # ... and a wrong CA is refused even then
            self.assert_refused(self.enqueue(self.url(port=self.wrong_port, ca="other-ca.crt",
                                                      ssl_check_hostname="false"),
                                             wait=False, timeout=10))
        finally:
            wr.close()

    def test_ssl_cert_reqs_none_connects_without_a_ca(self):
        none = self.url(ca=None, ssl_cert_reqs="none")
        self.assertNotIn("ssl_ca_certs", none)
        self.start_worker(REDIS_URL=none)
        jid = new_uuid()
        p = self.enqueue(none, jid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.job_hash(jid)["status"], "succeeded")
        # no verification at all: a certificate of another name is taken too
        p = self.enqueue(self.url(ca=None, port=self.wrong_port, ssl_cert_reqs="none"), wait=False)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_mutual_tls_refuses_a_client_without_a_certificate_and_takes_one_with_it(self):
        mr = self.client(self.mtls_port, ssl_certfile=self.f("client.crt"),
                         ssl_keyfile=self.f("client.key"))
        log = os.path.join(self.services.dir, "mtls", "redis.log")
        try:
            plain = self.url(port=self.mtls_port)
            w = self.start_worker(REDIS_URL=plain)
            p = self.payload()
            mr.xadd(self.key("stream"), {"job": json.dumps(p)})
            q = self.enqueue(plain, wait=False, timeout=10)
            self.assertNotEqual(q.returncode, 0, q.stdout + q.stderr)
            wait_for(lambda: "peer did not return a certificate" in open(log).read(),
                     what="redis-server refusing a client without a certificate")
            self.assert_not_run(mr, p["id"])
            self.assertEqual(mr.xlen(self.key("stream")), 1)  # the refused CLI added nothing
            w.stop()
            cert = self.url(port=self.mtls_port, ssl_certfile=self.f("client.crt"),
                            ssl_keyfile=self.f("client.key"))
            self.start_worker(REDIS_URL=cert)
            wait_for(lambda: mr.hget(self.key("job:" + p["id"]), "status") == "succeeded",
                     timeout=20, what="the job run with a client certificate")
            jid = new_uuid()
            q = self.enqueue(cert, jid)
            self.assertEqual(q.returncode, 0, q.stderr)
            self.assertEqual(json.loads(q.stdout)["status"], "succeeded")
        finally:
            mr.close()

    def test_the_password_never_appears_in_the_log_or_the_cli_output(self):
        user = "sw" + new_uuid()[:8]
        self.r.acl_setuser(user, enabled=True, passwords=["+" + PASSWORD], keys=["*"],
                           channels=["*"], commands=["+@all"])
        try:
            ui = f"{user}:{quote(PASSWORD)}"
            good = self.url(userinfo=ui)
            w_ok = self.start_worker(REDIS_URL=good)
            jid = new_uuid()
            p = self.enqueue(good, jid)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(self.job_hash(jid)["status"], "succeeded")
            # wrong CA and wrong password: both fail, neither prints the secret
            bad_ca = self.url(userinfo=ui, ca="other-ca.crt")
            bad_pw = self.url(userinfo=f"{user}:{quote(PASSWORD)}-wrong")
            w_ca = self.start_worker(REDIS_URL=bad_ca)
            w_pw = self.start_worker(REDIS_URL=bad_pw)
            self.wait_log(w_ca, "certificate verify failed")
            outs = [self.enqueue(bad_ca, wait=False, timeout=10),
                    self.enqueue(bad_pw, wait=False, timeout=10)]
            self.assertNotEqual(outs[0].returncode, 0)
            time.sleep(2 * SLOW)  # a few connection attempts of w_pw (AUTH refused each time)
            texts = {"worker": w_ok.text(), "worker, wrong CA": w_ca.text(),
                     "worker, wrong password": w_pw.text(),
                     "cli, wrong CA": outs[0].stdout + outs[0].stderr,
                     "cli, wrong password": outs[1].stdout + outs[1].stderr,
                     "cli": p.stdout + p.stderr}
            for what, text in texts.items():
                self.assertNotIn(PASSWORD, text, what)
                self.assertNotIn(quote(PASSWORD), text, what)
        finally:
            self.r.acl_deluser(user)

    def test_a_bad_tls_option_exits_2_naming_redis_url(self):
        p = self.cli("run", REDIS_URL=self.url(ssl_cert_reqs="sometimes"), timeout=10)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("REDIS_URL", p.stderr)
