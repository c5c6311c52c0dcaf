"""The queue's Lua scripts against a real Redis, one by one (issue 15): each file of
worker/lua/ opens with its KEYS/ARGV/reply contract, and here the documented KEYS and
ARGV produce the documented reply and key effects on a small scenario; a call with the
wrong number of KEYS fails with an error naming the script. No worker runs these calls:
the texts are composed as worker/scripts.c composes them (prelude + script), and one test
checks that a worker loads exactly those texts (SCRIPT EXISTS of their SHA1s)."""
import hashlib
import json
import os

from harness import ROOT, SWTestCase, new_uuid, wait_for

FAST = True

LUA = os.path.join(ROOT, "worker", "lua")
PRELUDE_MARK = "\n-- prelude: worker/lua/prelude.lua\n"
GROUP = "snapworker"


def script_names():
    return sorted(f[:-4] for f in os.listdir(LUA) if f.endswith(".lua") and f != "prelude.lua")


def text(name):
    """The text the worker sends for worker/lua/<name>.lua (worker/scripts.c)."""
    with open(os.path.join(LUA, name + ".lua")) as f:
        body = f.read()
    if PRELUDE_MARK in body:
        with open(os.path.join(LUA, "prelude.lua")) as f:
            return f.read() + body
    return body


class Scripts(SWTestCase):
    SERVICES = ("redis",)

    # ---- helpers ---------------------------------------------------------
    def run_script(self, name, keys, args=()):
        return self.r.eval(text(name), len(keys), *keys, *args)

    def k(self, suffix):
        return self.key(suffix)

    def streams(self):
        return [self.k("stream:high"), self.k("stream"), self.k("stream:low")]

    def delivered(self, payload, consumer="c1", stream="stream"):
        """XADD a payload and read it as 'consumer': (entry id, payload text)."""
        sk = self.k(stream)
        if not any(g["name"] == GROUP for g in (self.r.xinfo_groups(sk) if self.r.exists(sk) else [])):
            self.r.xgroup_create(sk, GROUP, id="$", mkstream=True)
        raw = json.dumps(payload)
        entry = self.r.xadd(sk, {"job": raw})
        got = self.r.xreadgroup(GROUP, consumer, {sk: ">"}, count=1)
        self.assertEqual(got[0][1][0][0], entry)
        return entry, raw

    def start(self, entries, consumer="c1", max_deliveries=5, uselock="1", recover="0"):
        """entries: [(entry, payload)]; returns the flat reply."""
        keys = [self.k("events"), self.k("delayed")]
        args = [GROUP, consumer, "30000", "1000", "250", recover, str(len(entries))]
        for entry, p in entries:
            keys += [self.k("job:" + p["id"]), self.k("lock:session:" + p["session_id"]),
                     self.k("stream")]
            args += [entry, p["id"], p["type"], uselock, str(max_deliveries), "0", ""]
        return self.run_script("start", keys, args)

    def finish(self, entry, p, outcome, attempt=1, data="{}", delay_ms=0, consumer="c1"):
        keys = [self.k("events"), self.k("delayed"), self.k("dead"), self.k("job:" + p["id"]),
                self.k("lock:session:" + p["session_id"]), self.k("stream")]
        args = [GROUP, consumer, "3600", "1000", "1000", "1", entry, p["id"], p["type"], outcome,
                str(attempt), data, "1"]
        if outcome != "succeeded":
            args += [str(delay_ms), ""]
        return self.run_script("finish", keys, args)

    def statuses(self, jid):
        return [e["status"] for e in self.events(jid)]

    def started_job(self):
        p = self.payload()
        entry, _raw = self.delivered(p)
        self.assertEqual(self.start([(entry, p)]), ["run", 1, 1, 0])
        return entry, p

    # ---- the files -------------------------------------------------------
    def test_every_script_file_opens_with_its_keys_argv_and_reply_contract(self):
        names = script_names()
        self.assertGreaterEqual(len(names), 11, names)
        for name in names:
            with open(os.path.join(LUA, name + ".lua")) as f:
                header = []
                for line in f:
                    if not line.startswith("--"):
                        break
                    header.append(line)
            head = "".join(header)
            self.assertTrue(head.startswith("-- snapworker " + name), f"{name}: first line")
            self.assertIn("KEYS", head, name)
            self.assertIn("ARGV", head, name)
            self.assertIn("Reply", head, name)

    def test_every_script_file_has_a_contract_test_here(self):
        tested = {n[len("test_"):].split("_script_")[0] for n in dir(self)
                  if n.startswith("test_") and "_script_" in n}
        self.assertEqual(set(script_names()) - tested, set())

    def test_a_worker_loads_exactly_the_composed_texts(self):
        self.start_worker()
        shas = {n: hashlib.sha1(text(n).encode()).hexdigest() for n in script_names()}

        def loaded():
            return all(self.r.script_exists(*shas.values()))
        wait_for(loaded, what="every script loaded by its composed text's SHA1")

    def test_a_call_with_the_wrong_number_of_keys_fails_naming_the_script(self):
        wrong = {  # name: (keys, args), one KEY short or over of the contract
            "start": ([self.k("events")], [GROUP, "c1", "30000", "1000", "250", "0", "0"]),
            "finish": ([self.k("events"), self.k("delayed")], [GROUP, "c1", "60", "1", "1", "0"]),
            "promote": ([self.k("delayed")], ["10", self.k("job:"), "1000"]),
            "renew": ([self.k("job:x")], [GROUP, "c1", "30000", "1", "1-0", "x", "0"]),
            "requeue_dead": ([self.k("dead")], ["1-0", self.k("job:")]),
            "celery_ingress": ([self.k("stream")], ["10", "1000", "100", ""]),
            "celery_result": (["celery-task-meta-a", "celery-task-meta-b"], ["60", "{}"]),
            "progress": ([self.k("events"), self.k("x")], ["id", "noop", "1", "{}", "c1"]),
            "enqueue": ([self.k("job:x")], [json.dumps(self.payload(id="x"))]),
            "cancel": ([self.k("job:x")], ["x", "60"]),
        }
        for name, (keys, args) in wrong.items():
            with self.subTest(script=name):
                with self.assertRaises(Exception) as cm:
                    self.run_script(name, keys, args)
                self.assertIn(name + ": expected", str(cm.exception))
        # nothing was written by any of them
        self.assertEqual(self.r.keys(self.k("*")), [])

    # ---- start -----------------------------------------------------------
    def test_start_script_runs_a_fresh_job_and_emits_started(self):
        p = self.payload()
        entry, _raw = self.delivered(p)
        self.assertEqual(self.start([(entry, p)]), ["run", 1, 1, 0])
        h = self.job_hash(p["id"])
        self.assertEqual((h["status"], h["attempt"], h["worker"], h["entry"], h["deliveries"]),
                         ("running", "1", "c1", entry, "1"))
        self.assertEqual(self.r.get(self.k("lock:session:" + p["session_id"])), p["id"])
        self.assertEqual(self.statuses(p["id"]), ["started"])

    def test_start_script_skips_a_job_running_under_a_live_lease_and_returns_the_memo(self):
        entry, p = self.started_job()
        self.r.hset(self.k("job:" + p["id"]), "m:port", "5432")
        # the same entry read by another consumer (a reclaim) while the lease is live
        self.assertEqual(self.start([(entry, p)], consumer="c2"), ["skip", 1, 1, 0])
        # our own re-read after a reconnect (recover) continues the attempt, memo included
        self.assertEqual(self.start([(entry, p)], recover="1"), ["run", 1, 1, 1, "port", "5432"])

    def test_start_script_parks_a_job_whose_session_is_locked_as_busy(self):
        _entry, p = self.started_job()
        q = self.payload(session_id=p["session_id"])
        e2, _raw = self.delivered(q)
        self.assertEqual(self.start([(e2, q)]), ["busy", 0, 0, 0])
        self.assertEqual(self.r.zcard(self.k("delayed")), 1)
        self.assertEqual(self.job_hash(q["id"])["status"], "queued")

    def test_start_script_marks_poison_past_max_deliveries(self):
        p = self.payload()
        entry, _raw = self.delivered(p)
        self.r.hset(self.k("job:" + p["id"]), mapping={"status": "retrying", "attempt": "1",
                                                       "deliveries": "5", "entry": entry})
        self.assertEqual(self.start([(entry, p)], max_deliveries=5), ["poison", 2, 6, 0])
        self.assertEqual(self.statuses(p["id"]), [])  # no `started` for a poison job

    def test_start_script_replays_an_ended_job_and_acks_it(self):
        entry, p = self.started_job()
        self.assertEqual(self.finish(entry, p, "succeeded", data='{"ok":true}'), ["ok"])
        e2, _raw = self.delivered(p)  # a raw XADD of a known id
        self.assertEqual(self.start([(e2, p)]), ["ended", 1, 1, 1, "succeeded", '{"ok":true}'])
        self.assertEqual(self.r.xlen(self.k("stream")), 0)
        self.assertEqual(self.statuses(p["id"]), ["started", "succeeded", "succeeded"])

    def test_start_script_does_not_replay_our_own_finish_to_our_own_re_read(self):
        # After a reconnect the worker re-reads its pending entries on one connection while
        # a finish is re-sent on the other; the read may run first and its reply come
        # last, handing the start script an entry this worker just ended: no second event.
        entry, p = self.started_job()
        self.assertEqual(self.finish(entry, p, "succeeded", data='{"ok":true}'), ["ok"])
        self.assertEqual(self.start([(entry, p)], recover="1"),
                         ["ended", 1, 1, 1, "succeeded", '{"ok":true}'])
        self.assertEqual(self.statuses(p["id"]), ["started", "succeeded"])
        # another consumer's re-read of the same entry still replays it
        self.assertEqual(self.start([(entry, p)], consumer="c2", recover="1")[0], "ended")
        self.assertEqual(self.statuses(p["id"]), ["started", "succeeded", "succeeded"])

    # ---- finish ----------------------------------------------------------
    def test_finish_script_succeeded_writes_the_result_and_acks(self):
        entry, p = self.started_job()
        self.assertEqual(self.finish(entry, p, "succeeded", data='{"ok":true}'), ["ok"])
        h = self.job_hash(p["id"])
        self.assertEqual((h["status"], h["result"]), ("succeeded", '{"ok":true}'))
        self.assertGreater(self.r.ttl(self.k("job:" + p["id"])), 0)
        self.assertIsNone(self.r.get(self.k("lock:session:" + p["session_id"])))
        self.assertEqual(self.r.xlen(self.k("stream")), 0)
        self.assertEqual(self.r.xpending(self.k("stream"), GROUP)["pending"], 0)
        self.assertEqual(self.statuses(p["id"]), ["started", "succeeded"])

    def test_finish_script_retry_parks_the_payload_with_a_failed_event(self):
        entry, p = self.started_job()
        err = '{"code":"storage_error","message":"x","retryable":true}'
        self.assertEqual(self.finish(entry, p, "retry", data=err, delay_ms=60000), ["ok"])
        h = self.job_hash(p["id"])
        self.assertEqual(h["status"], "retrying")
        members = self.r.zrange(self.k("delayed"), 0, -1, withscores=True)
        self.assertEqual(len(members), 1)
        self.assertEqual(json.loads(members[0][0])["id"], p["id"])
        self.assertEqual(int(members[0][1]), int(h["due_ms"]))
        self.assertEqual(self.statuses(p["id"]), ["started", "failed"])

    def test_finish_script_dead_adds_a_dead_entry(self):
        entry, p = self.started_job()
        err = '{"code":"invalid_payload","message":"x","retryable":false}'
        self.assertEqual(self.finish(entry, p, "dead", data=err), ["ok"])
        self.assertEqual(self.job_hash(p["id"])["status"], "dead")
        dead = self.dead_entries()
        self.assertEqual(len(dead), 1)
        self.assertEqual((dead[0]["job_id"], dead[0]["source_id"], dead[0]["error"]),
                         (p["id"], entry, err))
        self.assertEqual(self.statuses(p["id"]), ["started", "dead"])

    def test_finish_script_from_a_worker_that_lost_the_lease_is_lost(self):
        entry, p = self.started_job()
        self.assertEqual(self.finish(entry, p, "succeeded", consumer="c2"), ["lost"])
        self.assertEqual(self.job_hash(p["id"])["status"], "running")
        self.assertEqual(self.r.xlen(self.k("stream")), 1)

    def test_finish_script_refuses_a_stride_that_does_not_match(self):
        entry, p = self.started_job()
        keys = [self.k("events"), self.k("delayed"), self.k("dead"), self.k("job:" + p["id"]),
                self.k("lock:session:" + p["session_id"]), self.k("stream")]
        args = [GROUP, "c1", "3600", "1000", "1000", "1", entry, p["id"], p["type"], "retry", "1",
                "{}", "1"]  # retry without delay_ms and raw
        with self.assertRaisesRegex(Exception, r"finish: expected .* \(bad argument layout\)"):
            self.run_script("finish", keys, args)
        self.assertEqual(self.job_hash(p["id"])["status"], "running")

    # ---- promote ---------------------------------------------------------
    def test_promote_script_moves_a_due_member_to_its_priority_stream(self):
        p = self.payload(priority="high")
        self.r.hset(self.k("job:" + p["id"]), mapping={"status": "retrying", "due_ms": "1"})
        self.r.zadd(self.k("delayed"), {json.dumps(p): 1})
        later = self.payload()
        self.r.zadd(self.k("delayed"), {json.dumps(later): 32503680000000})  # year 3000
        moved, nxt, now = self.run_script(
            "promote", [self.k("delayed"), *self.streams(), self.k("events")],
            ["256", self.k("job:"), "1000"])
        self.assertEqual((moved, nxt), (1, 32503680000000))
        self.assertGreater(now, 1_600_000_000_000)
        entries = self.r.xrange(self.k("stream:high"))
        self.assertEqual(list(entries[0][1].keys()), ["due", "job"])
        self.assertEqual(json.loads(entries[0][1]["job"])["id"], p["id"])
        h = self.job_hash(p["id"])
        self.assertEqual(h["status"], "queued")
        self.assertNotIn("due_ms", h)
        self.assertEqual(self.r.zcard(self.k("delayed")), 1)

    # ---- renew -----------------------------------------------------------
    def renew(self, entry, p, consumer="c1"):
        keys = [self.k("job:" + p["id"]), self.k("lock:session:" + p["session_id"]), self.k("stream")]
        return self.run_script("renew", keys, [GROUP, consumer, "60000", "1", entry, p["id"], "1"])

    def test_renew_script_extends_the_lease_and_reports_a_cancel(self):
        entry, p = self.started_job()
        before = int(self.job_hash(p["id"])["lease_until"])
        self.assertEqual(self.renew(entry, p), [1])
        self.assertGreater(int(self.job_hash(p["id"])["lease_until"]), before)
        self.assertGreater(self.r.pttl(self.k("lock:session:" + p["session_id"])), 30000)
        self.r.hset(self.k("job:" + p["id"]), "cancel", "1")
        self.assertEqual(self.renew(entry, p), [2])
        self.assertEqual(self.renew(entry, p, consumer="c2"), [0])  # not ours

    # ---- poll_cancel -----------------------------------------------------
    def test_poll_cancel_script_reports_the_cancel_field_per_key(self):
        self.r.hset(self.k("job:a"), "status", "running")
        self.r.hset(self.k("job:b"), mapping={"status": "running", "cancel": "1"})
        self.assertEqual(self.run_script("poll_cancel", [self.k("job:a"), self.k("job:b")]), [0, 1])

    # ---- progress --------------------------------------------------------
    def test_progress_script_writes_one_progress_event(self):
        self.assertEqual(self.run_script("progress", [self.k("events")],
                                         ["j1", "noop", "1", '{"pct":50}', "c1"]), 1)
        ev = self.events("j1")
        self.assertEqual([(e["status"], e["data"], e["worker"]) for e in ev],
                         [("progress", '{"pct":50}', "c1")])

    # ---- requeue_dead ----------------------------------------------------
    def test_requeue_dead_script_moves_a_dead_entry_back_with_a_fresh_hash(self):
        p = self.payload(priority="low")
        did = self.r.xadd(self.k("dead"), {"job": json.dumps(p), "job_id": p["id"], "error": "{}"})
        self.r.hset(self.k("job:" + p["id"]), "status", "dead")
        keys = [self.k("dead"), *self.streams()]
        nid = self.run_script("requeue_dead", keys, [did, self.k("job:")])
        self.assertEqual(self.r.xrange(self.k("stream:low"))[0][0], nid)
        self.assertEqual(self.r.xlen(self.k("dead")), 0)
        self.assertEqual(self.job_hash(p["id"]), {})
        self.assertIsNone(self.run_script("requeue_dead", keys, [did, self.k("job:")]))

    # ---- Celery ------------------------------------------------------------
    def test_celery_ingress_script_moves_one_message_into_the_stream_it_routes_to(self):
        msg = json.dumps({"headers": {"id": "t-1", "task": "noop"}, "body": "e30="})
        self.r.lpush(self.k("celery-list"), msg)
        moved = self.run_script("celery_ingress", [*self.streams(), self.k("celery-list")],
                                ["256", "1000000", "1000", "0"])
        self.assertEqual(moved, 1)
        self.assertEqual(self.r.llen(self.k("celery-list")), 0)
        self.assertEqual(self.r.xrange(self.k("stream:high"))[0][1], {"celery": msg})
        # over the size limit: a cut copy with the task id the worker answers to
        self.r.lpush(self.k("celery-list"), msg)
        self.run_script("celery_ingress", [*self.streams(), self.k("celery-list")],
                        ["256", "10", "5", "2"])
        f = self.r.xrange(self.k("stream:low"))[0][1]
        self.assertEqual(f, {"celery_oversize": msg[:5], "bytes": str(len(msg)), "task_id": "t-1"})

    def test_celery_result_script_writes_once_and_keeps_a_ready_state(self):
        key = "celery-task-meta-" + new_uuid()
        ok = json.dumps({"status": "SUCCESS", "result": 1})
        self.assertEqual(self.run_script("celery_result", [key], ["60", ok]), [1])
        self.assertEqual(json.loads(self.r.get(key))["status"], "SUCCESS")
        self.assertGreater(self.r.ttl(key), 0)
        started = json.dumps({"status": "STARTED"})
        self.assertEqual(self.run_script("celery_result", [key], ["60", started]), [0])
        self.assertEqual(json.loads(self.r.get(key))["status"], "SUCCESS")
        self.r.delete(key)

    # ---- the producers' scripts --------------------------------------------
    def enqueue(self, p):
        keys = [self.k("job:" + p["id"]), *self.streams(), self.k("delayed")]
        return self.run_script("enqueue", keys, [json.dumps(p)])

    def test_enqueue_script_behind_the_schedulers_fence_adds_only_while_the_fence_holds(self):
        # worker/enqueue.c: its fence line in front of this very file, KEYS[6] and ARGV[2]
        with open(os.path.join(ROOT, "worker", "enqueue.c")) as f:
            src = f.read()
        fence = src[src.index('"if ARGV[2]'):].split(r'\n";', 1)[0][1:] + "\n"
        fenced = fence + text("enqueue")
        p = self.payload()
        keys = [self.k("job:" + p["id"]), *self.streams(), self.k("delayed"), self.k("fence")]
        self.r.set(self.k("fence"), "tok")
        self.assertEqual(self.r.eval(fenced, 6, *keys, json.dumps(p), "other"), -1)
        self.assertEqual(self.r.eval(fenced, 6, *keys, json.dumps(p), "tok")[0], 1)

    def test_enqueue_script_adds_a_job_once(self):
        p = self.payload()
        added, status, where = self.enqueue(p)
        self.assertEqual((added, status), (1, "queued"))
        self.assertEqual(self.r.xrange(self.k("stream"))[0][0], where)
        self.assertEqual(self.enqueue(p), [0, "queued", ""])
        self.assertEqual(self.r.xlen(self.k("stream")), 1)

    def test_cancel_script_ends_a_queued_job_and_flags_a_running_one(self):
        p = self.payload()
        self.enqueue(p)
        keys = [self.k("job:" + p["id"]), self.k("delayed"), self.k("events"), *self.streams()]
        self.assertEqual(self.run_script("cancel", keys, [p["id"], "60"]), ["cancelled", "queued"])
        self.assertEqual(self.r.xlen(self.k("stream")), 0)
        self.assertEqual(self.statuses(p["id"]), ["cancelled"])
        self.assertEqual(self.run_script("cancel", keys, [p["id"], "60"]), ["ended", "cancelled"])
        _entry, q = self.started_job()
        keys[0] = self.k("job:" + q["id"])
        self.assertEqual(self.run_script("cancel", keys, [q["id"], "60"]), ["cancelling", "running"])
        self.assertEqual(self.job_hash(q["id"])["cancel"], "1")
