"""Redis Sentinel (redis+sentinel://h1:p1,h2:p2,h3:p3/MASTER/DB, and kombu's
sentinel://h1:p1;sentinel://h2:p2/DB?master_name=NAME): the worker and the CLI find the
master through the sentinels, and follow it when it changes.

Servers (scripts/services start DIR sentinel): a master, one replica and three sentinels
(down-after-milliseconds 1000, failover-timeout 10000), one set per class because a
failover or a kill changes the set. The promise checked is the one docs/contract.md §3 and
docs/queue.md ("Connections, restarts, outages") make for a Redis that goes away: at least
once. Every enqueued job ends succeeded on the new master, none is lost; a job may run twice
(writes the old master acknowledged after the promotion are discarded when it becomes a
replica, so their jobs run again), and duplicates are therefore not counted as failures.
The enqueued entries themselves are on the replica before the fault (WAIT), so a lost job
can only be the worker's doing.

These sets are plain TCP in both passes of the suite (SW_REDIS_TLS covers the module's
single redis; TLS is test_48's subject)."""
import json
import time
from collections import Counter

from harness import SLOW, SWTestCase, new_uuid, node_client, wait_for


TLS_PASS = False  # plain Sentinel set in both passes: --tls would repeat the first


class SentinelCase(SWTestCase):
    SERVICES = ("sentinel",)

    def sentinel_ports(self):
        return [int(p) for p in self.services.env["SENTINEL_PORTS"].split(",")]

    def use_master(self, port=None):
        """self.r := a plain client of the master the sentinels name now (or 'port')."""
        self.r.close()
        self.r = node_client(port or self.services.sentinel_master(), decode_responses=True)
        return self.r

    def fill(self, n, **args):
        ids = []
        pipe = self.r.pipeline(transaction=False)
        for i in range(n):
            p = self.payload(args=args)
            ids.append(p["id"])
            pipe.xadd(self.key("stream"), {"job": json.dumps(p)})
            if i % 2000 == 1999:
                pipe.execute()
        pipe.execute()
        # every entry is on the replica before any fault
        self.assertEqual(self.r.execute_command("WAIT", 1, 10000), 1)
        return ids

    def succeeded_events(self):
        return Counter(e["job_id"] for e in self.events() if e["status"] == "succeeded")

    def statuses(self, ids):
        out = []
        for k in range(0, len(ids), 2000):
            pipe = self.r.pipeline(transaction=False)
            for jid in ids[k:k + 2000]:
                pipe.hget(self.key("job:" + jid), "status")
            out += pipe.execute()
        return out

    def assert_all_succeeded_none_lost(self, ids, workers, timeout=120):
        """On the master the sentinels name: every job's hash says succeeded, each has a
        succeeded event (duplicates allowed: at least once), the stream and the pending
        list are empty, and the workers still live."""
        def done():
            self.use_master()
            return all(s == "succeeded" for s in self.statuses(ids))
        wait_for(done, timeout=timeout, interval=1.0,
                 what=f"all {len(ids)} jobs succeeded on the new master "
                      f"({Counter(self.statuses(ids))})")
        succ = self.succeeded_events()
        missing = [j for j in ids if succ[j] == 0]
        self.assertEqual(missing, [], f"{len(missing)} jobs without a succeeded event")
        wait_for(lambda: self.r.xlen(self.key("stream")) == 0, timeout=30,
                 what="stream emptied on the new master")
        wait_for(lambda: all(g["pending"] == 0 for g in self.r.xinfo_groups(self.key("stream"))),
                 timeout=30, what="nothing pending on the new master")
        for w in workers:
            self.assertTrue(w.alive(), w.text()[-3000:])
        return succ

    def assert_more_jobs_run_on(self, master_port, n=10):
        """n jobs enqueued by the CLI through the sentinels end succeeded on master_port:
        the workers work against the new master."""
        ids = [new_uuid() for _ in range(n)]
        for jid in ids:
            self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                     "--id", jid, check=True)
        m = self.use_master(master_port)
        wait_for(lambda: all(m.hget(self.key("job:" + j), "status") == "succeeded" for j in ids),
                 timeout=60, interval=0.5, what=f"{n} jobs enqueued after the switch succeeded")


class SentinelBasics(SentinelCase):
    def test_the_url_names_the_sentinels_and_the_master(self):
        env = self.services.env
        self.assertEqual(env["REDIS_URL"],
                         "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports())
                         + "/mymaster/0")
        self.assertEqual(self.services.sentinel_master(), int(env["REDIS_MASTER_PORT"]))

    def test_a_worker_on_redis_sentinel_drains_jobs_and_the_cli_enqueues_through_it(self):
        ids = self.fill(300)
        w = self.start_worker(SNAPWORKER_CONCURRENCY=4)
        jid = new_uuid()
        p = self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                     "--id", jid, "--wait", "--timeout", "30")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["status"], "succeeded")
        self.assert_all_succeeded_none_lost(ids + [jid], [w], timeout=60)
        # the work is on the master, and the replica has it too (nothing went elsewhere)
        master = int(self.services.env["REDIS_MASTER_PORT"])
        replica = node_client(self.services.env["REDIS_REPLICA_PORT"], decode_responses=True)
        try:
            self.assertEqual(self.r.connection_pool.connection_kwargs["port"], master)
            wait_for(lambda: replica.hget(self.key("job:" + jid), "status") == "succeeded",
                     what="the replica has the result")
        finally:
            replica.close()

    def test_kombus_sentinel_url_form_works_for_the_worker_and_the_cli(self):
        ports = self.sentinel_ports()
        url = ";".join(f"sentinel://127.0.0.1:{p}" for p in ports) + "/0?master_name=mymaster"
        self.start_worker(REDIS_URL=url)
        jid = new_uuid()
        p = self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                     "--id", jid, "--wait", "--timeout", "30", REDIS_URL=url)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.use_master().hget(self.key("job:" + jid), "status"), "succeeded")

    def test_a_celery_producer_on_kombus_sentinel_transport_reaches_the_worker(self):
        # kombu keeps the master's name in transport options; snapworker takes it from the
        # URL query (docs/redis.md), so the worker's CELERY_BROKER_URL is kombu's plus it
        from celery import Celery
        ports = self.sentinel_ports()
        kombu_url = ";".join(f"sentinel://127.0.0.1:{p}" for p in ports) + "/0"
        url = kombu_url + "?master_name=mymaster"
        cq = "sw-sentinel-" + new_uuid()[:8]
        self.start_worker(REDIS_URL=url, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url,
                          SNAPWORKER_CELERY_QUEUES=cq)
        app = Celery("sw-sentinel", broker=kombu_url, backend=kombu_url)
        app.conf.broker_transport_options = {"master_name": "mymaster"}
        app.conf.result_backend_transport_options = {"master_name": "mymaster"}
        try:
            res = app.send_task("snapworker.noop", queue=cq,
                                kwargs={"sandbox_id": new_uuid(), "session_id": new_uuid()})
            self.assertEqual(res.get(timeout=30 * SLOW), {"ok": True})
            self.assertEqual(res.state, "SUCCESS")
        finally:
            app.close()

    def test_an_unknown_master_name_is_not_served_and_says_so(self):
        url = self.services.env["REDIS_URL"].replace("/mymaster/", "/nosuchmaster/")
        p = self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                     REDIS_URL=url, timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("nosuchmaster", p.stderr)


class SentinelFailover(SentinelCase):
    def test_sentinel_failover_while_two_workers_drain_10000_jobs_loses_none(self):
        n = 10000
        env = dict(SNAPWORKER_CONCURRENCY=4, SNAPWORKER_LEASE_S=5, SNAPWORKER_EVENTS_MAXLEN=10 * n)
        ids = self.fill(n, sleep_ms=5)  # ~6 s of work for 2 x 4 threads: the switch lands mid-drain
        old = int(self.services.env["REDIS_MASTER_PORT"])
        workers = [self.start_worker(**env), self.start_worker(**env)]
        wait_for(lambda: self.r.xlen(self.key("events")) >= 0.6 * n, timeout=60, interval=0.02,
                 what="about 30% of the jobs done (two events each)")
        t0 = time.time()
        sw = self.services.sentinel_failover()
        new = int(sw["REDIS_MASTER_PORT"])
        self.assertNotEqual(new, old)
        self.assertEqual(int(sw["REDIS_REPLICA_PORT"]), old)
        done_at_switch = Counter(self.statuses(ids))  # on the old master, as it then was
        self.assertLess(done_at_switch["succeeded"], n, "the drain ended before the failover")
        succ = self.assert_all_succeeded_none_lost(ids, workers)
        self.assertEqual(self.services.sentinel_master(), new)
        self.assert_more_jobs_run_on(new)
        for w in workers:
            self.assertTrue(w.alive(), w.text()[-3000:])
        print(f"\n  failover: {time.time() - t0:.1f} s to all done; "
              f"ran twice: {sum(1 for c in succ.values() if c > 1)}")


class SentinelMasterKilled(SentinelCase):
    def test_kill_9_of_the_master_mid_drain_of_2000_jobs_loses_none(self):
        n = 2000
        env = dict(SNAPWORKER_CONCURRENCY=4, SNAPWORKER_LEASE_S=5)
        ids = self.fill(n, sleep_ms=5)
        old = int(self.services.env["REDIS_MASTER_PORT"])
        workers = [self.start_worker(**env), self.start_worker(**env)]
        wait_for(lambda: self.r.xlen(self.key("events")) >= 0.6 * n, timeout=60, interval=0.02,
                 what="about 30% of the jobs done")
        self.r.close()
        self.services.kill_node(old, kill=True)
        wait_for(lambda: self.services.sentinel_master() != old, timeout=30, interval=0.2,
                 what="the sentinels to promote the replica")
        new = self.services.sentinel_master()
        # the old master comes back empty (no AOF) as a master, until the sentinels make it a
        # replica: a worker that kept its address instead of asking the sentinels would
        # write there
        self.services.start_node(old)
        self.assert_all_succeeded_none_lost(ids, workers)
        self.assertEqual(self.services.sentinel_master(), new)
        self.assert_more_jobs_run_on(new)
        for w in workers:
            self.assertTrue(w.alive(), w.text()[-3000:])
