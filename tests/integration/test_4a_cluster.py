"""Redis Cluster (redis+cluster://h1:p1,h2:p2,h3:p3, database 0 only): every key of a queue
carries the hash tag {QUEUE}, so a queue lives in one slot on one master; queues spread over
the masters, the worker and the CLI follow MOVED and ASK, and a slot moved while a worker
drains it loses no job (at least once, docs/contract.md §3). Celery's lists cannot be read
from a Cluster (kombu's keys have no hash tag), so a Celery ingress over one is refused at
start.

Servers (scripts/services start DIR cluster): three masters without replicas, joined with
redis-cli --cluster create; plain TCP in both passes of the suite (TLS is test_48's
subject). The slot is moved by harness.migrate_slot, the documented way (SETSLOT IMPORTING
and MIGRATING, MIGRATE in batches, SETSLOT NODE), with pauses between batches while the
worker runs."""
import json
import uuid
from collections import Counter

from harness import SWTestCase, migrate_slot, new_uuid, node_client, slot_owner, wait_for


TLS_PASS = False  # plain Cluster in both passes: --tls would repeat the first


class ClusterCase(SWTestCase):
    SERVICES = ("cluster",)

    def ports(self):
        return [int(p) for p in self.services.env["CLUSTER_PORTS"].split(",")]

    def k(self, q, suffix):
        return f"snapworker:{{{q}}}:{suffix}"

    def slot_of(self, q):
        n = node_client(self.ports()[0], decode_responses=True)
        try:
            return int(n.execute_command("CLUSTER", "KEYSLOT", self.k(q, "stream")))
        finally:
            n.close()

    def owner_of(self, q):
        return slot_owner(self.ports(), self.slot_of(q))

    def queue_elsewhere(self, q):
        """A queue name whose slot is on another master than q's (asked of the server)."""
        mine = self.owner_of(q)
        for _ in range(200):
            c = "q" + uuid.uuid4().hex[:12]
            if self.owner_of(c) != mine:
                return c
        self.fail("no queue name on another master")

    def fill(self, q, n, **args):
        ids = []
        pipe = self.r.pipeline(transaction=False)
        for i in range(n):
            p = self.payload(args=args)
            ids.append(p["id"])
            pipe.xadd(self.k(q, "stream"), {"job": json.dumps(p)})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        return ids

    def statuses(self, q, ids):
        pipe = self.r.pipeline(transaction=False)
        for j in ids:
            pipe.hget(self.k(q, "job:" + j), "status")
        return pipe.execute()

    def enqueue_wait(self, q):
        jid = new_uuid()
        p = self.cli("enqueue", "noop", "--sandbox", new_uuid(), "--session", new_uuid(),
                     "--id", jid, "--wait", "--timeout", "30", SNAPWORKER_QUEUE=q)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["status"], "succeeded")
        return jid

    def wait_all_succeeded(self, q, ids, timeout=60):
        wait_for(lambda: all(s == "succeeded" for s in self.statuses(q, ids)), timeout=timeout,
                 interval=0.5, what=f"{len(ids)} jobs of {q} succeeded ({Counter(self.statuses(q, ids))})")
        wait_for(lambda: self.r.xlen(self.k(q, "stream")) == 0, what=f"stream of {q} emptied")
        wait_for(lambda: all(g["pending"] == 0 for g in self.r.xinfo_groups(self.k(q, "stream"))),
                 what=f"nothing pending on {q}")


class ClusterQueues(ClusterCase):
    def test_two_queues_on_different_masters_drain_with_one_worker_each(self):
        q1 = self.queue
        q2 = self.queue_elsewhere(q1)
        o1, o2 = self.owner_of(q1), self.owner_of(q2)
        self.assertNotEqual(o1, o2)
        w1 = self.start_worker()
        w2 = self.start_worker(SNAPWORKER_QUEUE=q2)
        ids1, ids2 = self.fill(q1, 200), self.fill(q2, 200)
        ids1.append(self.enqueue_wait(q1))
        ids2.append(self.enqueue_wait(q2))
        self.wait_all_succeeded(q1, ids1)
        self.wait_all_succeeded(q2, ids2)
        # each queue's keys are on its own master, and only there
        for q, owner in ((q1, o1), (q2, o2)):
            for p in self.ports():
                n = node_client(p, decode_responses=True)
                try:
                    self.assertEqual(n.execute_command("CLUSTER", "COUNTKEYSINSLOT", self.slot_of(q)) > 0,
                                     p == owner, (q, p, owner))
                finally:
                    n.close()
            succ = Counter(e["job_id"] for _i, e in self.r.xrange(self.k(q, "events"))
                           if e["status"] == "succeeded")
            self.assertEqual(len(succ), 201)
        self.assertTrue(w1.alive() and w2.alive())

    def test_a_celery_ingress_over_a_cluster_is_refused_at_start(self):
        url = self.services.env["REDIS_URL"]
        p = self.cli("run", CELERY_BROKER_URL=url, SNAPWORKER_CELERY_QUEUES="celery", timeout=20)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("Cluster", p.stderr)
        self.assertIn("CELERY_BROKER_URL", p.stderr)


class ClusterMigration(ClusterCase):
    def test_a_slot_moved_while_a_worker_drains_3000_jobs_loses_none(self):
        n = 3000
        q = self.queue
        slot, src = self.slot_of(q), self.owner_of(q)
        dst = [p for p in self.ports() if p != src][0]
        ids = self.fill(q, n, sleep_ms=5)  # ~4 s of work for 4 threads
        w = self.start_worker(SNAPWORKER_CONCURRENCY=4, SNAPWORKER_LEASE_S=5)
        wait_for(lambda: self.r.xlen(self.k(q, "events")) >= 0.2 * n, timeout=60, interval=0.02,
                 what="about 10% of the jobs done")
        before = self.r.xlen(self.k(q, "events"))
        self.assertLess(before, 2 * n, "the drain ended before the slot moved")
        batches = []
        moved = migrate_slot(self.ports(), slot, dst, batch=50, pause=0.2, between=batches.append)
        self.assertGreater(moved, n // 10)
        self.assertEqual(slot_owner(self.ports(), slot), dst)
        s = node_client(src)
        try:
            self.assertEqual(s.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot), 0)
        finally:
            s.close()
        self.wait_all_succeeded(q, ids, timeout=90)
        succ = Counter(e["job_id"] for _i, e in self.r.xrange(self.k(q, "events"))
                       if e["status"] == "succeeded")
        self.assertEqual([j for j in ids if succ[j] == 0], [], "jobs without a succeeded event")
        self.assertTrue(w.alive(), w.text()[-3000:])
        # and it goes on working against the new owner
        more = [self.enqueue_wait(q) for _ in range(3)]
        self.assertEqual(self.statuses(q, more), ["succeeded"] * 3)
        d = node_client(dst, decode_responses=True)
        try:
            self.assertEqual(d.hget(self.k(q, "job:" + more[0]), "status"), "succeeded")
        finally:
            d.close()
        print(f"\n  moved {moved} keys in {len(batches)} batches; ran twice: "
              f"{sum(1 for c in succ.values() if c > 1)}")
