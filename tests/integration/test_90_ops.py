"""Operations (issue 16): /metrics parsed by a real Prometheus text parser while jobs of
every type run (histograms count the jobs, queue depth follows the backlog, counters only
grow, HELP and TYPE for every family), queue figures shared by replicas, /readyz following
PostgreSQL, `snapworker stats` and `ls` (shapes, no secret shown), the /api actions' token
rule, the configuration reference generated from the code and documented, and the
deployment files (docker-compose config, Kubernetes manifests checked field by field)."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from harness import ROOT, SWTestCase, new_uuid, wait_for
import jobs_tree as jt
from test_50_jobs import free_port_block

from prometheus_client.parser import text_string_to_metric_families  # python3-prometheus-client
import yaml  # python3-yaml

FAST_TESTS = [
    "test_metrics_while_every_job_type_runs",
    "test_readyz_turns_503_when_postgres_stops_and_200_when_it_returns",
    "test_stats_and_ls_show_the_queue_and_never_a_secret",
    "test_api_actions_need_the_token_and_reads_never_show_a_secret",
    "test_queue_figures_are_read_once_per_interval_for_all_replicas",
]
SECRET = "sk-ops-secret-4242"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(port, path, method="GET", body=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None, ""


def parse(text):
    """{family name: family}; also checks HELP and TYPE precede every family's samples."""
    helped = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            fam = name if name in typed else base
            assert fam in typed, f"no TYPE for {name}"
            assert fam in helped, f"no HELP for {name}"
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams, family, name, **labels):
    for s in fams[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def counters(fams):
    """Every counter sample and every histogram _count/_sum/_bucket, keyed by name+labels."""
    out = {}
    for f in fams.values():
        if f.type in ("counter", "histogram"):
            for s in f.samples:
                if s.name.endswith("_created"):
                    continue
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Ops(SWTestCase):
    SERVICES = ("redis", "postgres")

    def setUp(self):
        super().setUp()
        self.pg_port = self.services.env["PG_PORT"]
        self.dbname = "o_" + new_uuid().replace("-", "")[:16]
        self.psql("CREATE DATABASE " + self.dbname, db="postgres")
        self.dburl = f"postgresql://postgres@127.0.0.1:{self.pg_port}/{self.dbname}"
        self.base = os.path.join(self.tmp, "sandboxes")
        p = self.cli("migrate")
        self.assertEqual(p.returncode, 0, p.stderr)

    def env(self, **extra):
        extra.setdefault("DATABASE_URL", getattr(self, "dburl", "postgresql://postgres@127.0.0.1:1/x"))
        extra.setdefault("SNAPWORKER_STATE_DIR", os.path.join(self.tmp, "worker-state"))
        extra.setdefault("SNAPWORKER_RETRY_BASE_MS", 50)
        extra.setdefault("SNAPWORKER_RETRY_MAX_MS", 100)
        return super().env(**extra)

    def psql(self, sql, db=None):
        p = subprocess.run([f"{jt.PGBIN}/psql", "-h", "127.0.0.1", "-p", self.pg_port, "-U",
                            "postgres", "-d", db or self.dbname, "-qAt", "-c", sql],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def http_worker(self, **extra):
        port = free_port()
        self.start_worker(SNAPWORKER_HTTP_ADDR=f"127.0.0.1:{port}", **extra)
        wait_for(lambda: http(port, "/healthz")[0] == 200, 15, what="/healthz 200")
        return port

    def scrape(self, port):
        st, text = http(port, "/metrics")
        self.assertEqual(st, 200, text)
        return parse(text)

    def submit(self, type_, args=None, sb=None, ss=None, **kw):
        p = self.payload(type_, args or {}, sandbox_id=sb or new_uuid(), session_id=ss or new_uuid(), **kw)
        self.xadd(p)
        return p["id"]

    def ended(self, jid):
        return self.job_hash(jid).get("status") in ("succeeded", "dead")

    # ---- /metrics --------------------------------------------------------------
    def test_metrics_while_every_job_type_runs(self):
        backlog = [self.submit("noop", {"sleep_ms": 150}) for _ in range(40)]  # before any worker
        port = self.http_worker(SNAPWORKER_CONCURRENCY=2, SNAPWORKER_METRICS_INTERVAL_S=1)
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(os.path.join(self.base, sb, "sessions", ss))
        snap = self.submit("snapshot", {}, sb, ss)
        regen_dir = os.path.join(self.base, sb, "sessions", new_uuid())
        os.makedirs(regen_dir)
        regen = self.submit("regenerate", {"llm_config": {"provider": "openai", "model_name": "m"},
                                           "nextjs_port": 3050, "disabled_tools": [],
                                           "files_target": "/workspace/files"},
                            sb, os.path.basename(regen_dir))
        dead = self.submit("noop", {"fail": "permanent"})
        retried = self.submit("noop", {"fail_attempts": 1})
        depths, prev = [], None
        deadline = time.time() + 30
        while time.time() < deadline:
            fams = self.scrape(port)
            cur = counters(fams)
            if prev:
                for k, v in prev.items():
                    self.assertGreaterEqual(cur.get(k, 0), v, f"{k} went down")
            prev = cur
            d = sample(fams, "snapworker_queue_depth", "snapworker_queue_depth", queue=self.queue)
            if d is not None:
                depths.append(d)
            if all(self.ended(j) for j in backlog + [snap, regen, dead, retried]) and depths and depths[-1] == 0:
                break
            time.sleep(0.3)
        # restore of the snapshot just taken (bytes both ways)
        shutil.rmtree(os.path.join(self.base, sb, "sessions", ss))
        restore = self.submit("restore", {"use_demo_data": False,
                                          "llm_config": {"provider": "openai", "model_name": "m"}}, sb, ss)
        wait_for(lambda: self.ended(restore), 30, what="restore to end")
        for j in backlog + [snap, regen, restore, retried]:
            self.assertEqual(self.job_hash(j)["status"], "succeeded", (j, self.job_hash(j)))
        self.assertEqual(self.job_hash(dead)["status"], "dead")
        # the depth followed the backlog: high at first, falling, 0 at the end
        self.assertGreaterEqual(max(depths), 20, depths)
        self.assertGreaterEqual(len(set(depths)), 3, depths)  # it fell in steps
        self.assertEqual(depths[-1], 0, depths)
        fams = self.scrape(port)
        q = self.queue
        jobs = lambda t, o: sample(fams, "snapworker_jobs", "snapworker_jobs_total", queue=q, type=t, outcome=o)
        self.assertEqual(jobs("noop", "succeeded"), 41)
        self.assertEqual(jobs("noop", "dead"), 1)
        self.assertEqual(jobs("noop", "failed"), 1)
        for t in ("snapshot", "restore", "regenerate"):
            self.assertEqual(jobs(t, "succeeded"), 1, t)
        h = fams["snapworker_job_duration_seconds"]
        self.assertEqual(h.type, "histogram")
        for t, n in (("noop", 43), ("snapshot", 1), ("restore", 1), ("regenerate", 1)):
            buckets = [(s.labels["le"], s.value) for s in h.samples
                       if s.name.endswith("_bucket") and s.labels["type"] == t]
            self.assertEqual(len(buckets), 21)
            self.assertEqual([b[0] for b in buckets][0], "0.001")
            self.assertEqual(buckets[-1], ("+Inf", n), t)
            self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
            self.assertEqual(sample(fams, "snapworker_job_duration_seconds",
                                    "snapworker_job_duration_seconds_count", type=t), n)
        # 40 noops slept 150 ms; only the three failed attempts (0 ms) are under 25 ms
        self.assertEqual(sample(fams, "snapworker_job_duration_seconds",
                                "snapworker_job_duration_seconds_bucket", type="noop", le="0.025"), 3)
        self.assertEqual(sample(fams, "snapworker_job_duration_seconds", "snapworker_job_duration_seconds_bucket",
                                type="noop", le="3600"), 43)
        wait = sample(fams, "snapworker_queue_wait_seconds", "snapworker_queue_wait_seconds_count", queue=q)
        self.assertGreaterEqual(wait, 46)  # every start, the retry's second one included
        self.assertGreater(sample(fams, "snapworker_queue_wait_seconds", "snapworker_queue_wait_seconds_sum", queue=q), 0.1)
        self.assertGreater(sample(fams, "snapworker_bytes", "snapworker_bytes_total", direction="snapshot"), 0)
        self.assertGreater(sample(fams, "snapworker_bytes", "snapworker_bytes_total", direction="restore"), 0)
        self.assertEqual(sample(fams, "snapworker_queue_dead", "snapworker_queue_dead", queue=q), 1)
        self.assertEqual(sample(fams, "snapworker_build_info", "snapworker_build_info"), 1)
        for fam in ("snapworker_inflight", "snapworker_queue_pending", "snapworker_queue_delayed",
                    "snapworker_queue_lag", "snapworker_reclaimed", "snapworker_redis_reconnects",
                    "snapworker_postgres_reconnects", "snapworker_job_retries", "snapworker_jobs_cancelled"):
            self.assertIn(fam, fams)

    def test_queue_figures_are_read_once_per_interval_for_all_replicas(self):
        ports = [self.http_worker(SNAPWORKER_METRICS_INTERVAL_S=5) for _ in range(2)]
        self.submit("noop", {"sleep_ms": 5})
        time.sleep(0.2)
        self.r.execute_command("CONFIG", "RESETSTAT")
        ages = []
        for i in range(20):
            fams = self.scrape(ports[i % 2])
            ages.append(sample(fams, "snapworker_queue_figures_age_seconds",
                               "snapworker_queue_figures_age_seconds", queue=self.queue))
        stats = self.r.info("commandstats")
        xinfo = stats.get("cmdstat_xinfo", {}).get("calls", 0)
        zcard = stats.get("cmdstat_zcard", {}).get("calls", 0)
        # one read of the figures: one ZCARD, an XINFO CONSUMERS per non-empty stream + 1
        self.assertLessEqual(zcard, 1, stats)
        self.assertLessEqual(xinfo, 4, stats)
        self.assertTrue(self.r.exists(self.key("stats")))
        self.assertTrue(all(a is not None and a < 5 for a in ages), ages)

    # ---- /readyz --------------------------------------------------------------------
    def test_readyz_turns_503_when_postgres_stops_and_200_when_it_returns(self):
        port = self.http_worker()
        self.assertEqual(json.loads(http(port, "/readyz")[1] or "{}").get("checks", {}).get("postgres"), None)
        sb, ss = new_uuid(), new_uuid()
        jt.build_workspace(os.path.join(self.base, sb, "sessions", ss))
        j = self.submit("snapshot", {}, sb, ss)  # a job that uses PostgreSQL and the store
        wait_for(lambda: self.ended(j), 30, what="snapshot")
        wait_for(lambda: json.loads(http(port, "/readyz")[1] or "{}").get("checks", {}).get("postgres") == "ok",
                 10, what="postgres checked")
        self.assertEqual(http(port, "/readyz")[0], 200)
        self.services.postgres("stop")
        try:
            try:
                wait_for(lambda: http(port, "/readyz")[0] == 503, 20, what="/readyz 503")
            except AssertionError:
                raise AssertionError(f"/readyz still {http(port, '/readyz')}") from None
            body = json.loads(http(port, "/readyz")[1])
            self.assertFalse(body["ready"])
            self.assertTrue(body["reason"].startswith("postgres"), body)
            self.assertEqual(body["checks"]["redis"], "ok")
            self.assertEqual(http(port, "/healthz")[0], 200)  # liveness does not depend on it
        finally:
            self.services.postgres("start")
        wait_for(lambda: http(port, "/readyz")[0] == 200, 20, what="/readyz 200 again")

    def test_readyz_without_postgres_for_a_noop_queue_and_with_forced_checks(self):
        port = self.http_worker(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none?connect_timeout=1")
        j = self.submit("noop")
        wait_for(lambda: self.ended(j), 10, what="noop")
        wait_for(lambda: http(port, "/readyz")[0] == 200, 10, what="ready without a database")
        port2 = self.http_worker(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
                                 SNAPWORKER_READY_CHECKS="redis,postgres")
        wait_for(lambda: http(port2, "/readyz")[0] == 503, 15, what="503 with postgres forced")
        self.assertIn("postgres", json.loads(http(port2, "/readyz")[1])["reason"])

    # ---- PostgreSQL reconnects --------------------------------------------------------
    def test_postgres_reconnects_count_connections_job_processes_lost(self):
        """snapworker_postgres_reconnects_total counts open connections found dead, as the
        Redis counter counts ready connections lost; a job process reports its own in its
        outcome (docs/processes.md). The readiness probe checks Redis only here, so it holds no
        PostgreSQL connection: every count comes from a job process."""
        tmpl = os.path.join(self.tmp, "tmpl")
        os.makedirs(os.path.join(tmpl, "web", "node_modules"))
        with open(os.path.join(tmpl, "web", "package.json"), "w") as f:
            f.write("{}")
        web = free_port_block(3)  # a port for each of the three sessions
        devserver = os.path.join(ROOT, "tests", "integration", "jobs_devserver.py")
        port = self.http_worker(SNAPWORKER_READY_CHECKS="redis", SNAPWORKER_OUTPUTS_TEMPLATE=tmpl,
                                SNAPWORKER_WEBAPP_CMD=f"/usr/bin/python3 {devserver} {{port}} --delay 4",
                                SNAPWORKER_WEBAPP_WAIT_S=30, SANDBOX_NEXTJS_PORT_START=web,
                                SANDBOX_NEXTJS_PORT_END=web + 3)
        count = lambda: sample(self.scrape(port), "snapworker_postgres_reconnects",
                               "snapworker_postgres_reconnects_total")

        def restore(ss, **args):
            return self.submit("restore", dict(args, use_demo_data=False), new_uuid(), ss)

        def done(jid):
            wait_for(lambda: self.ended(jid), 60, what=f"restore {jid}")
            h = self.job_hash(jid)
            self.assertEqual(h["status"], "succeeded", h)
            return json.loads(h["result"])

        done(restore(new_uuid(), start_webapp=False))
        self.assertEqual(count(), 0)
        # restarted between two restores: each job process connects afresh, nothing was lost
        self.services.postgres("stop")
        self.services.postgres("start")
        done(restore(new_uuid(), start_webapp=False))
        self.assertEqual(count(), 0)
        # restarted while a restore holds its connection (its port is committed, its dev
        # server takes 4 s): the job process finds the connection dead and reconnects
        ss = new_uuid()
        jid = restore(ss)
        port_of = lambda: self.psql(f"SELECT coalesce(nextjs_port::text, '') FROM build_session "
                                    f"WHERE id = '{ss}'")
        wait_for(lambda: port_of() != "", 20, what="port committed")
        self.services.postgres("stop")
        self.services.postgres("start")
        res = done(jid)
        self.addCleanup(os.killpg, res["webapp_pid"], signal.SIGKILL)  # the dev server
        self.assertEqual(res["nextjs_port"], int(port_of()))
        self.assertEqual(count(), 1)

    # ---- CLI ------------------------------------------------------------------------
    def test_stats_and_ls_show_the_queue_and_never_a_secret(self):
        llm = {"provider": "openai", "api_key": SECRET}
        queued = [self.submit("noop", {"llm_config": llm}) for _ in range(3)]
        p = self.cli("stats", "--json", check=True)
        st = json.loads(p.stdout)
        q = st["queues"][0]
        for k in ("name", "depth", "delayed", "pending", "dead", "oldest_age_s", "consumers",
                  "lag", "streams", "live_workers", "throughput_1m"):
            self.assertIn(k, q)
        self.assertEqual((q["name"], q["depth"], q["pending"], q["lag"]), (self.queue, 3, 0, 3))
        self.assertEqual(q["streams"], {"high": 0, "default": 3, "low": 0})
        self.assertGreaterEqual(q["oldest_age_s"], 0)
        # the high-priority stream is counted too
        self.r.xadd(self.key("stream:high"), {"job": json.dumps(self.payload("noop"))})
        q = json.loads(self.cli("stats", "--json", check=True).stdout)["queues"][0]
        self.assertEqual((q["depth"], q["streams"]["high"]), (4, 1))
        text = self.cli("stats", check=True).stdout
        self.assertIn("depth 4", text)
        ls = self.cli("ls", "--state", "queued", "--json", check=True).stdout
        ids = [json.loads(line)["id"] for line in ls.splitlines()]
        self.assertEqual(set(queued) - set(ids), set())
        self.assertEqual(ids[0], json.loads(self.r.xrange(self.key("stream:high"))[0][1]["job"])["id"])
        # run them (one dies, carrying the secret in its payload), then list ended states
        dead = self.submit("noop", {"fail": "permanent", "llm_config": llm})
        self.start_worker()
        wait_for(lambda: self.ended(dead) and all(self.ended(j) for j in queued), 15, what="jobs")
        out = ""
        for state in ("queued", "running", "delayed", "dead", "failed", "succeeded", "cancelled"):
            p = self.cli("ls", "--state", state, "--json", check=True)
            out += p.stdout
            out += self.cli("ls", "--state", state, check=True).stdout
        self.assertIn(dead, out)
        self.assertIn("noop asked to fail permanently", out)
        # (the stream:high entry is run by workers that read priorities; counted either way)
        self.assertGreaterEqual(len(self.cli("ls", "--state", "succeeded", "--json").stdout.splitlines()), 3)
        self.assertEqual(self.cli("ls", "--state", "succeeded", "--type", "snapshot", "--json").stdout, "")
        self.assertEqual(self.cli("ls", "--state", "bogus").returncode, 2)
        out += self.cli("stats", "--json").stdout
        self.assertNotIn(SECRET, out)

    # ---- /api actions -----------------------------------------------------------------
    def test_api_actions_need_the_token_and_reads_never_show_a_secret(self):
        port = self.http_worker(SNAPWORKER_HTTP_TOKEN="t0ken-abc")
        dead = self.submit("noop", {"fail": "permanent", "llm_config": {"api_key": SECRET}})
        wait_for(lambda: self.ended(dead), 10, what="dead")
        dead_id = self.r.xrange(self.key("dead"))[0][0]
        hdr = {"Content-Type": "application/json"}
        self.assertEqual(http(port, "/api/dead/requeue", "POST", {"id": dead_id}, hdr)[0], 401)
        bad = dict(hdr, Authorization="Bearer wrong")
        self.assertEqual(http(port, "/api/dead/requeue", "POST", {"id": dead_id}, bad)[0], 401)
        good = {"Authorization": "Bearer t0ken-abc"}
        self.assertEqual(http(port, "/api/dead/requeue", "POST", {"id": dead_id}, good)[0], 415)
        self.assertEqual(http(port, "/api/dead/requeue", "GET")[0], 404)
        self.assertEqual(self.r.xlen(self.key("dead")), 1)
        good.update(hdr)
        self.assertEqual(http(port, "/api/dead/requeue", "POST", {"id": "nope"}, good)[0], 400)
        self.assertEqual(http(port, "/api/dead/requeue", "POST", {"id": "1-1"}, good)[0], 404)
        reads = "".join(http(port, p)[1] for p in (
            "/api/queues", "/api/jobs?state=dead", "/api/jobs?state=failed",
            f"/api/job?id={dead}", "/metrics"))
        self.assertIn(dead, reads)
        self.assertNotIn(SECRET, reads)
        st, body = http(port, "/api/dead/requeue", "POST", {"id": dead_id}, good)
        self.assertEqual(st, 200, body)
        wait_for(lambda: self.r.xlen(self.key("dead")) == 1 and self.r.xrange(self.key("dead"))[0][0] != dead_id,
                 10, what="dead again after requeue")
        self.assertEqual(json.loads(http(port, "/api/dead/purge", "POST", {}, good)[1]), {"purged": 1})
        self.assertEqual(self.r.xlen(self.key("dead")), 0)
        # a 2 KiB body is over the 1 KiB cap
        self.assertNotEqual(http(port, "/api/dead/purge", "POST", {"id": "x" * 2048}, good)[0], 200)
        ro = self.http_worker()
        self.assertEqual(http(ro, "/api/dead/purge", "POST", {}, good)[0], 403)

    # ---- configuration reference ------------------------------------------------------
    def test_every_variable_the_code_reads_is_documented_and_the_reference_is_generated(self):
        table = self.cli("config", "--markdown", check=True).stdout
        with open(os.path.join(ROOT, "docs/operations.md")) as f:
            doc = f.read()
        self.assertIn(table.strip(), doc, "docs/operations.md: paste `snapworker config --markdown`")
        names = set(re.findall(r"^\| `([A-Z0-9_]+)`", table, re.M))
        for src in glob.glob(os.path.join(ROOT, "*/*.c")):
            with open(src) as f:
                names |= set(re.findall(r'getenv\("([A-Z0-9_]+)"\)', f.read()))
        self.assertGreater(len(names), 60)
        missing = sorted(n for n in names if f"`{n}`" not in doc)
        self.assertEqual(missing, [], "variables read by the code but not in docs/operations.md")

    # ---- deployment files ------------------------------------------------------------
    def test_docker_compose_config_validates(self):
        exe = shutil.which("docker-compose")
        self.assertIsNotNone(exe, "docker-compose missing: run scripts/bootstrap")
        p = subprocess.run([exe, "-f", os.path.join(ROOT, "docker-compose.yml"), "config"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        self.assertEqual(p.returncode, 0, p.stderr)
        cfg = yaml.safe_load(p.stdout)
        svcs = cfg["services"]
        for name, s in svcs.items():
            if "image" in s:
                self.assertRegex(s["image"], r"^[a-z0-9./-]+:[A-Za-z0-9._-]+$", name)
                self.assertNotRegex(s["image"], r":latest$", name)
        workers = [n for n, s in svcs.items() if s.get("command") == ["run"]]
        self.assertEqual(sum(svcs[n].get("deploy", {}).get("replicas", 1) for n in workers), 3)
        self.assertTrue(any("s3" in n or "minio" in n for n in svcs), list(svcs))

    def test_kubernetes_manifests_parse_and_use_known_fields(self):
        import k8s_fields as kf
        docs = []
        for path in sorted(glob.glob(os.path.join(ROOT, "deploy/kubernetes/*.yaml"))):
            with open(path) as f:
                for d in yaml.safe_load_all(f):
                    if d:
                        docs.append((os.path.basename(path), d))
        kinds = {d["kind"] for _, d in docs}
        self.assertEqual(kinds >= {"Deployment", "ServiceAccount", "Role", "RoleBinding", "ConfigMap",
                                   "Secret", "PodDisruptionBudget", "ScaledObject", "ServiceMonitor",
                                   "Service", "TriggerAuthentication"}, True, kinds)
        for path, d in docs:
            errs = kf.check(d)
            self.assertEqual(errs, [], f"{path}: {d['kind']}/{d['metadata'].get('name')}")
        by_kind = {d["kind"]: d for _, d in docs}
        # RBAC: exactly the verbs the kubernetes backend uses (docs/kubernetes.md)
        role = by_kind["Role"]
        rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"]) for r in role["rules"]}
        self.assertEqual(rules, {(("",), ("pods",)): ["delete", "get"],
                                 (("",), ("pods/exec",)): ["create", "get"],
                                 (("",), ("services",)): ["delete", "get"]})
        dep = by_kind["Deployment"]
        c = dep["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertIn("preStop", c["lifecycle"])
        self.assertIn("limits", c["resources"])
        self.assertGreater(dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 30)
        self.assertNotRegex(c["image"], r":latest$")
        so = by_kind["ScaledObject"]
        trig = so["spec"]["triggers"]
        self.assertEqual(len(trig), 3)
        streams = sorted(t["metadata"]["stream"] for t in trig)
        self.assertEqual(streams, ["snapworker:{default}:stream", "snapworker:{default}:stream:high",
                                   "snapworker:{default}:stream:low"])
        for t in trig:
            self.assertEqual(t["type"], "redis-streams")
            self.assertIn("streamLength", t["metadata"])
            self.assertNotIn("consumerGroup", t["metadata"])
        # the systemd unit: stop with SIGTERM, wait longer than the drain
        with open(os.path.join(ROOT, "deploy/systemd/snapworker.service")) as f:
            unit = f.read()
        for want in ("ExecStart=", "KillSignal=SIGTERM", "TimeoutStopSec=", "Restart=", "EnvironmentFile="):
            self.assertIn(want, unit)
