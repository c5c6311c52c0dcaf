"""The first consumer (issue 2): enqueue, events, job hash, malformed entries,
no PostgreSQL needed, bad configuration, CLI."""
import json
import os
import subprocess
import threading
import time

from harness import ASAN, BIN, SWTestCase, new_uuid, wait_for

FAST = True


class QueueBasics(SWTestCase):
    SERVICES = ("redis",)

    def test_enqueue_wait_returns_the_result_with_started_and_succeeded_events(self):
        self.start_worker()
        jid = new_uuid()
        p = self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                     "--id", jid, "--wait", "--timeout", "20")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual(out["status"], "succeeded")
        self.assertEqual(out["result"], {"ok": True})
        statuses = [e["status"] for e in self.events(jid)]
        self.assertEqual(statuses, ["started", "succeeded"])
        h = self.job_hash(jid)
        self.assertEqual(h["status"], "succeeded")
        self.assertEqual(h["attempt"], "1")
        self.assertEqual(json.loads(h["result"]), {"ok": True})
        self.assertGreater(self.r.ttl(self.key("job:" + jid)), 0)
        # the stream holds only unfinished work
        wait_for(lambda: self.r.xlen(self.key("stream")) == 0, what="stream emptied")

    def test_jobs_added_before_any_worker_started_are_run(self):
        ids = []
        for _ in range(5):
            p = self.payload()
            ids.append(p["id"])
            self.xadd(p)
        self.start_worker()
        for jid in ids:
            self.wait_status(jid, "succeeded")

    def test_events_are_published_as_one_json_object_with_data_embedded(self):
        ps = self.r.pubsub()
        ps.subscribe(self.key("events"))
        self.start_worker()
        p = self.payload()
        self.xadd(p)
        got = []
        deadline = time.time() + 15
        while time.time() < deadline and len(got) < 2:
            m = ps.get_message(timeout=1)
            if m and m["type"] == "message":
                got.append(json.loads(m["data"]))
        ps.close()
        self.assertEqual([g["status"] for g in got], ["started", "succeeded"])
        self.assertEqual(got[1]["data"], {"ok": True})
        self.assertEqual(got[1]["job_id"], p["id"])
        self.assertEqual(got[1]["type"], "noop")
        self.assertIsInstance(got[1]["ts"], int)
        ev = self.events(p["id"])[1]
        self.assertEqual(json.loads(ev["data"]), {"ok": True})
        self.assertEqual(set(ev), {"job_id", "type", "status", "attempt", "data", "worker", "ts"})

    def test_pattern_subscribers_get_the_events_too(self):
        ps = self.r.pubsub()
        ps.psubscribe("snapworker:*")
        self.start_worker()
        p = self.payload()
        self.xadd(p)
        got = []
        deadline = time.time() + 15
        while time.time() < deadline and len(got) < 2:
            m = ps.get_message(timeout=1)
            if m and m["type"] == "pmessage":
                got.append(json.loads(m["data"])["status"])
        ps.close()
        self.assertEqual(got, ["started", "succeeded"])

    def test_malformed_entries_go_dead_with_their_code_and_good_jobs_still_run(self):
        w = self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        base = {"v": 1, "type": "noop", "tenant_id": "public", "sandbox_id": sb, "session_id": ss}
        bad = [
            ("not json", "invalid_payload", ""),
            (json.dumps([1, 2]), "invalid_payload", ""),
            (json.dumps({**base, "id": "missing-type", "type": None}), "invalid_payload", "missing-type"),
            (json.dumps({k: v for k, v in {**base, "id": "no-session"}.items() if k != "session_id"}),
             "invalid_payload", "no-session"),
            (json.dumps({**base, "id": "wrong-type", "max_attempts": "3"}), "invalid_payload", "wrong-type"),
            (json.dumps({**base, "id": "bad-sandbox", "sandbox_id": "../../etc"}), "invalid_payload", "bad-sandbox"),
            (json.dumps({**base, "id": "bad/id"}), "invalid_payload", ""),
            (json.dumps({**base, "id": "v2", "v": 2}), "invalid_payload", "v2"),
            (json.dumps({**base, "id": "unknown-type", "type": "bake"}), "unknown_job_type", "unknown-type"),
            (json.dumps({**base, "id": "huge", "args": {"pad": "x" * (2 * 1024 * 1024)}}), "invalid_payload", "huge"),
        ]
        for body, _code, _jid in bad:
            self.xadd(body)
        self.r.xadd(self.key("stream"), {"other": "field"})
        good = self.payload()
        self.xadd(good)
        self.wait_status(good["id"], "succeeded")
        wait_for(lambda: len(self.dead_entries()) == len(bad) + 1, what="all malformed entries dead")
        dead = self.dead_entries()
        for (body, code, jid), d in zip(bad, dead):
            err = json.loads(d["error"])
            self.assertEqual(err["code"], code, body[:80])
            self.assertFalse(err["retryable"])
            self.assertTrue(err["message"])
            self.assertEqual(d["job_id"], jid)
            self.assertEqual(d["job"], body[:1024 * 1024])
            self.assertTrue(d["source_id"])
        self.assertEqual(json.loads(dead[-1]["error"])["code"], "invalid_payload")
        self.assertEqual(self.job_hash("unknown-type")["status"], "dead")
        self.assertTrue(w.alive())
        wait_for(lambda: self.r.xlen(self.key("stream")) == 0, what="stream emptied")

    def test_the_worker_runs_noop_jobs_with_no_postgresql_reachable(self):
        w = self.start_worker(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none?connect_timeout=1")
        p = self.payload()
        self.xadd(p)
        self.wait_status(p["id"], "succeeded")
        self.assertTrue(w.alive())

    def test_an_idle_worker_keeps_its_private_memory_small_and_links_every_library(self):
        # The job libraries are linked normally (docs/decisions.md); what an idle daemon
        # must keep small is its private memory: RssAnon <= 2 MiB (docs/processes.md).
        # Their shared pages are counted in VmRSS but shared between replicas (PSS).
        w = self.start_worker()
        p = self.payload()
        self.xadd(p)
        self.wait_status(p["id"], "succeeded")
        with open(f"/proc/{w.proc.pid}/maps") as f:
            maps = f.read()
        for lib in ("libhiredis.so", "libpq.so", "libcurl.so", "libarchive.so", "libcrypto.so"):
            self.assertIn(lib, maps)
        if not ASAN:  # the sanitizers' shadow and quarantine are private memory of their own
            with open(f"/proc/{w.proc.pid}/status") as f:
                st = dict(l.split(":", 1) for l in f if ":" in l)
            anon_kb = int(st["RssAnon"].split()[0])
            # Over TLS, OpenSSL 3's SSL_CTX (provider tables, the fetched ciphers and
            # digests) is ~0.5 MiB of live heap of its own (docs/redis.md "Memory").
            limit = 2048 + (640 if self.services.env["REDIS_URL"].startswith("rediss") else 0)
            self.assertLessEqual(anon_kb, limit, f"idle RssAnon {anon_kb} kB")
        ldd = subprocess.run(["ldd", BIN], capture_output=True, text=True).stdout
        for lib in ("libpq.so", "libcurl", "libarchive.so", "libcrypto.so", "libhiredis",
                    "libevent", "libjansson"):
            self.assertIn(lib, ldd)

    def test_after_a_burst_of_noop_jobs_an_idle_worker_gives_its_private_memory_back(self):
        # When the 1 s tick finds the worker idle after work, the event loop goes on on a new
        # thread (the old one's exit returns its cache of freed blocks, strewn over the heap
        # the burst grew) and the heap is trimmed (worker/worker.c run_loop): ~1.8 MiB after
        # 30,000 jobs, where it used to stay at 2.2-2.35 MiB (docs/benchmarks.md).
        w = self.start_worker()
        pid = w.proc.pid

        def anon_kb():
            with open(f"/proc/{pid}/status") as f:
                return int(next(l for l in f if l.startswith("RssAnon:")).split()[1])

        pipe = self.r.pipeline(transaction=False)
        for i in range(30000):
            pipe.xadd(self.key("stream"), {"job": json.dumps(self.payload())})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        wait_for(lambda: self.r.xlen(self.key("stream")) == 0, timeout=120,
                 what="the burst drained")
        limit = 2048 + (640 if self.services.env["REDIS_URL"].startswith("rediss") else 0)
        if not ASAN:  # the sanitizers' shadow and quarantine are private memory of their own
            try:
                wait_for(lambda: anon_kb() <= limit, timeout=8, interval=0.25)
            except AssertionError:
                self.fail(f"idle RssAnon {anon_kb()} kB after the burst (limit {limit} kB)")
        # the loop on its new thread goes on serving
        p = self.payload()
        self.xadd(p)
        self.wait_status(p["id"], "succeeded")
        self.assertTrue(w.alive())

    def test_scripts_are_called_by_sha_and_survive_a_script_flush(self):
        def calls(name):
            return self.r.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0)

        loads0, sha0 = calls("script|load"), calls("evalsha")
        self.start_worker()
        first = self.payload()
        self.xadd(first)
        self.wait_status(first["id"], "succeeded")
        self.assertGreaterEqual(calls("script|load") - loads0, 7)  # every script, on connect
        self.assertGreater(calls("evalsha") - sha0, 0)
        self.r.script_flush()  # what a restarted Redis looks like: NOSCRIPT, then EVAL
        second = self.payload()
        self.xadd(second)
        self.wait_status(second["id"], "succeeded")

    def test_a_bad_configuration_value_exits_2_naming_it(self):
        for var, val in [("SNAPWORKER_LEASE_S", "soon"), ("REDIS_URL", "rediss://x:1?ssl_cert_reqs=maybe"),
                         ("SNAPWORKER_CONCURRENCY", "0"), ("SANDBOX_BACKEND", "docker")]:
            p = self.cli("run", **{var: val})
            self.assertEqual(p.returncode, 2, (var, p.stderr))
            self.assertIn(var, p.stderr)
        p = self.cli("--lease-s", "-1", "run")
        self.assertEqual(p.returncode, 2)
        self.assertIn("SNAPWORKER_LEASE_S", p.stderr)

    def test_configuration_that_cannot_work_exits_2_at_start_naming_the_variable(self):
        # issue 10 item 7: each of these used to start, then fail every job that needed it
        cases = [("SANDBOX_BASE_PATH", "relative/path"),
                 ("DATABASE_URL", "garbage://u:pw-S3CRET@x/db"),
                 ("SNAPWORKER_STORE", "s3://Not_A_Bucket"),
                 ("SNAPWORKER_STORE", "s3://10.1.2.3"),
                 ("SNAPWORKER_WEBAPP_CMD", ""),
                 ("SANDBOX_NAMESPACE", "Onyx_Sandboxes")]
        for var, val in cases:
            p = self.cli("run", timeout=10, **{var: val})
            self.assertEqual(p.returncode, 2, (var, val, p.stderr))
            self.assertIn(f"{var}: expected", p.stderr)
            self.assertNotIn("S3CRET", p.stderr + p.stdout)

    def test_secrets_in_a_bad_redis_url_are_not_printed(self):
        p = self.cli("run", REDIS_URL="redis://u:hunter2secret@host:99999/0")
        self.assertEqual(p.returncode, 2)
        self.assertNotIn("hunter2secret", p.stderr + p.stdout)

    def test_job_and_dead_commands_show_state(self):
        self.start_worker()
        jid = new_uuid()
        p = self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(), "--id", jid,
                     "--args", '{"fail":"permanent"}', "--wait", "--timeout", "20")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(json.loads(p.stdout)["error"]["code"], "internal")
        j = json.loads(self.cli("job", jid, check=True).stdout)
        self.assertEqual(j["status"], "dead")
        self.assertEqual(j["error"]["code"], "internal")
        lines = [json.loads(x) for x in self.cli("dead", "list", check=True).stdout.splitlines()]
        self.assertEqual(lines[0]["job_id"], jid)
        self.assertEqual(self.cli("job", "no-such-job").returncode, 1)

    def test_an_api_key_is_kept_only_in_the_dead_entry_and_requeue_still_uses_it(self):
        # issue 10 item 4 (docs/operations.md "Secrets in payloads"): the key used to be printed by `dead list`
        key = "sk-live-REDACTME-0123456789"
        w = self.start_worker()
        sb, ss = new_uuid(), new_uuid()
        args = {"llm_config": {"provider": "openai", "model_name": "gpt-4o", "api_key": key},
                "use_demo_data": False, "extra": [{"auth_token": key + "-2"}]}
        jid = new_uuid()
        # no session directory yet: workspace_missing, dead after one attempt
        p = self.cli("enqueue", "regenerate", "--sandbox", sb, "--session", ss, "--id", jid,
                     "--args", json.dumps(args), "--wait", "--timeout", "20")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(json.loads(p.stdout)["error"]["code"], "workspace_missing")
        self.assertNotIn(key, p.stdout + p.stderr)
        # a broken payload whose parse error would quote the key (jansson's "near '...'")
        broken = ('{"v":1,"id":"broken-1","type":"regenerate","tenant_id":"public","sandbox_id":"%s",'
                  '"session_id":"%s","args":{"llm_config":{"api_key": %s}}}' % (sb, ss, key))
        self.xadd(broken)
        wait_for(lambda: len(self.dead_entries()) == 2, what="both jobs dead")
        # what people and non-queue keys see: no key anywhere
        shown = {
            "dead list": self.cli("dead", "list", check=True).stdout,
            "job": self.cli("job", jid, check=True).stdout,
            "job hash": json.dumps(self.job_hash(jid)),
            "events": json.dumps([f for _i, f in self.r.xrange(self.key("events"))]),
            "dead errors": json.dumps([d["error"] for d in self.dead_entries()]),
            "worker log": w.text(),
        }
        for what, text in shown.items():
            self.assertNotIn("REDACTME", text, what)
        lines = [json.loads(x) for x in shown["dead list"].splitlines()]
        mine = [x for x in lines if x["job_id"] == jid][0]
        job = json.loads(mine["job"])
        self.assertEqual(job["args"]["llm_config"]["api_key"], "***")
        self.assertEqual(job["args"]["llm_config"]["provider"], "openai")
        self.assertEqual(job["args"]["extra"], [{"auth_token": "***"}])
        # the dead entry itself keeps the payload whole, so a requeue reruns with the key
        dead = [(i, f) for i, f in self.r.xrange(self.key("dead")) if f["job_id"] == jid]
        self.assertIn(key, dead[0][1]["job"])
        sdir = os.path.join(self.tmp, "sandboxes", sb, "sessions", ss)
        os.makedirs(os.path.join(sdir, "outputs"))
        self.cli("dead", "requeue", dead[0][0], check=True)
        self.wait_status(jid, "succeeded")
        with open(os.path.join(sdir, "opencode.json")) as f:
            self.assertIn(key, f.read())
        self.assertNotIn("REDACTME", json.dumps(self.job_hash(jid)))
        self.assertNotIn("REDACTME", self.cli("job", jid, check=True).stdout)
        self.assertNotIn("REDACTME", w.text())

    def test_enqueue_refuses_bad_ids_before_touching_redis(self):
        p = self.cli("enqueue", "noop", "--sandbox", "../x", "--session", new_uuid())
        self.assertEqual(p.returncode, 2)
        self.assertIn("sandbox_id", p.stderr)
        self.assertEqual(self.r.exists(self.key("stream")), 0)

    def test_enqueue_wait_times_out_with_exit_1_when_no_worker_runs(self):
        p = self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                     "--wait", "--timeout", "1")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(json.loads(p.stdout)["status"], "timeout")

    def test_an_idle_worker_uses_almost_no_cpu(self):
        w = self.start_worker()
        time.sleep(1.0)

        def cpu():
            with open(f"/proc/{w.proc.pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return int(parts[11]) + int(parts[12])  # utime + stime, clock ticks

        c0 = cpu()
        time.sleep(3.0)
        used = (cpu() - c0) / os.sysconf("SC_CLK_TCK")
        self.assertLess(used, 0.15, f"idle worker used {used:.2f} s of CPU in 3 s")
