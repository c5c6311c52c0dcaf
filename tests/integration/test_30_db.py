"""PostgreSQL layer against a real server: migrations, port allocation, snapshot rows,
reconnection (common/db.c, worker/cli_db.c, docs/database.md).

Each test gets its own database on the module's server, so port scopes never mix. Rows are
read with psql; the db_ calls are driven through the hidden `snapworker db-tool`
(one call per process, or `db-tool repl` for many calls over one connection).
"""
import os
import queue
import subprocess
import threading
import uuid

from harness import ASAN, BIN, SLOW, SWTestCase, new_uuid

FAST = True
TLS_PASS = False  # PostgreSQL through `db-tool`: the TLS pass of Redis would repeat it unchanged
PGBIN = "/usr/lib/postgresql/15/bin"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def as_postgres():
    return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []


class DbTestCase(SWTestCase):
    SERVICES = ("redis", "postgres")  # the base setUp opens a Redis client

    def setUp(self):
        super().setUp()
        env = self.services.env
        self.pg_port = env["PG_PORT"]
        self.dbname = "t_" + uuid.uuid4().hex[:16]
        self.psql("CREATE DATABASE " + self.dbname, db="postgres")
        self.dburl = f"postgresql://postgres@127.0.0.1:{self.pg_port}/{self.dbname}"

    # ---- helpers --------------------------------------------------------------
    def psql(self, sql, db=None):
        p = subprocess.run([f"{PGBIN}/psql", "-h", "127.0.0.1", "-p", self.pg_port, "-U", "postgres",
                            "-d", db or self.dbname, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def sw(self, *args, **extra):
        extra.setdefault("DATABASE_URL", self.dburl)
        return self.cli(*args, **extra)

    def tool(self, *args, **extra):
        p = self.sw("db-tool", *args, **extra)
        self.assertEqual(p.returncode, 0, f"db-tool {args}: {p.stderr}")
        return p.stdout.strip()

    def migrate(self, **extra):
        p = self.sw("migrate", **extra)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def full_env(self, **extra):
        e = dict(os.environ)
        e.update(self.env(DATABASE_URL=self.dburl, **extra))
        e.pop("SW_TMP", None)
        if ASAN:
            e.setdefault("ASAN_OPTIONS", "detect_leaks=1:exitcode=86")
        return e

    def parallel_tool(self, argvs, **extra):
        """Start every db-tool command at once; returns [(rc, stdout, stderr)]."""
        env = self.full_env(**extra)
        procs = [subprocess.Popen([BIN, "db-tool", *a], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for a in argvs]
        out = []
        for p in procs:
            o, e = p.communicate(timeout=120 * SLOW)
            self.assertFalse(p.returncode == 86 or any(m in e for m in SANITIZER_MARKERS), e)
            out.append((p.returncode, o.strip(), e))
        return out

    def port_of(self, sid):
        v = self.psql(f"SELECT coalesce(nextjs_port::text, 'null') FROM build_session "
                      f"WHERE id = '{sid}'")
        return v


class MigrationTest(DbTestCase):
    def test_migrate_twice_applies_once_and_records_each_version_once(self):
        first = self.migrate()
        self.assertIn("applied 1 001_init", first)
        second = self.migrate()
        self.assertNotIn("applied 1", second)
        self.assertIn("up to date", second)
        self.assertEqual(self.psql("SELECT version, name FROM snapworker_migrations"), "1|001_init")
        self.assertEqual(self.tool("version"), "1")

    def test_many_processes_migrating_at_once_apply_each_migration_once(self):
        env = self.full_env()
        procs = [subprocess.Popen([BIN, "migrate"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
        outs = [p.communicate(timeout=60 * SLOW) for p in procs]
        self.assertEqual([p.returncode for p in procs], [0] * 8, [e for _o, e in outs])
        self.assertEqual(sum(o.count("applied 1 001_init") for o, _e in outs), 1)
        self.assertEqual(self.psql("SELECT count(*) FROM snapworker_migrations"), "1")

    def test_tables_columns_and_defaults_are_onyx_compatible(self):
        self.migrate()
        rows = self.psql("SELECT table_name, column_name, data_type, is_nullable, "
                         "coalesce(column_default, '') FROM information_schema.columns "
                         "WHERE table_schema = 'public' AND table_name IN "
                         "('build_session', 'sandbox', 'snapshot') ORDER BY 1, ordinal_position")
        got = [tuple(r.split("|")) for r in rows.splitlines()]
        ts = "timestamp with time zone"
        vc = "character varying"
        want = [
            ("build_session", "id", "uuid", "NO", "gen_random_uuid()"),
            ("build_session", "user_id", "uuid", "YES", ""),
            ("build_session", "name", vc, "YES", ""),
            ("build_session", "status", vc, "NO", "'active'::character varying"),
            ("build_session", "created_at", ts, "NO", "now()"),
            ("build_session", "last_activity_at", ts, "NO", "now()"),
            ("build_session", "nextjs_port", "integer", "YES", ""),
            ("build_session", "demo_data_enabled", "boolean", "NO", "true"),
            ("sandbox", "id", "uuid", "NO", "gen_random_uuid()"),
            ("sandbox", "user_id", "uuid", "NO", ""),
            ("sandbox", "container_id", vc, "YES", ""),
            ("sandbox", "status", vc, "NO", "'provisioning'::character varying"),
            ("sandbox", "created_at", ts, "NO", "now()"),
            ("sandbox", "last_heartbeat", ts, "YES", ""),
            ("snapshot", "id", "uuid", "NO", "gen_random_uuid()"),
            ("snapshot", "session_id", "uuid", "NO", ""),
            ("snapshot", "storage_path", vc, "NO", ""),
            ("snapshot", "size_bytes", "bigint", "NO", "0"),
            ("snapshot", "created_at", ts, "NO", "now()"),
        ]
        self.assertEqual(got, want)
        # snapshot.session_id -> build_session(id) ON DELETE CASCADE; the only foreign key
        fks = self.psql("SELECT conrelid::regclass || '>' || confrelid::regclass || ':' || "
                        "confdeltype::text FROM pg_constraint WHERE contype = 'f'")
        self.assertEqual(fks, "snapshot>build_session:c")
        self.assertEqual(self.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'u' AND "
                                   "conrelid = 'sandbox'::regclass"), "1")
        idx = self.psql("SELECT indexdef FROM pg_indexes WHERE tablename = 'snapshot' "
                        "AND indexname = 'ix_snapshot_session_created'")
        self.assertIn("(session_id, created_at DESC)", idx)
        self.assertEqual(self.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                                   "AND tablename = 'user'"), "0")

    def test_external_mode_migrates_nothing_and_exits_zero(self):
        out = self.migrate(SNAPWORKER_DB_MANAGED="external")
        self.assertIn("nothing migrated", out)
        self.assertEqual(self.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0")

    def test_unreachable_database_exits_1_with_database_error_and_no_password(self):
        p = self.sw("migrate", DATABASE_URL="postgresql://bob:sekr3t@127.0.0.1:1/x?connect_timeout=2")
        self.assertEqual(p.returncode, 1)
        self.assertTrue(p.stderr.startswith("snapworker migrate: database_error: "), p.stderr)
        self.assertNotIn("sekr3t", p.stderr + p.stdout)


class PortTest(DbTestCase):
    def setUp(self):
        super().setUp()
        self.migrate()

    def allocate_all(self, n, start, end, **extra):
        sids = [new_uuid() for _ in range(n)]
        res = self.parallel_tool([("port-alloc", s) for s in sids],
                                 SANDBOX_NEXTJS_PORT_START=start, SANDBOX_NEXTJS_PORT_END=end,
                                 **extra)
        return sids, res

    def test_fifty_concurrent_allocations_get_fifty_distinct_ports(self):
        sids, res = self.allocate_all(50, 3010, 3070)
        self.assertEqual([r[0] for r in res], [0] * 50, [r[2] for r in res if r[0]])
        ports = [int(r[1]) for r in res]
        self.assertEqual(len(set(ports)), 50)
        self.assertTrue(all(3010 <= p < 3070 for p in ports))
        self.assertEqual(sorted(ports), list(range(3010, 3060)))  # first free first
        for sid, p in zip(sids, ports):
            self.assertEqual(self.port_of(sid), str(p))

    def test_forty_ports_for_fifty_sessions_give_ten_port_exhausted_with_null_ports(self):
        sids, res = self.allocate_all(50, 3010, 3050)
        ok = [(s, r) for s, r in zip(sids, res) if r[0] == 0]
        bad = [(s, r) for s, r in zip(sids, res) if r[0] != 0]
        self.assertEqual(len(ok), 40)
        self.assertEqual(len(bad), 10)
        self.assertEqual(sorted(int(r[1]) for _s, r in ok), list(range(3010, 3050)))
        for sid, r in bad:
            self.assertEqual(r[0], 1)
            self.assertIn("snapworker db-tool: port_exhausted:", r[2])
            self.assertEqual(self.port_of(sid), "null")
            self.assertEqual(self.tool("port", sid), "null")

    def test_allocating_twice_for_one_session_returns_the_same_port(self):
        sid = new_uuid()
        a = self.tool("port-alloc", sid)
        b = self.tool("port-alloc", sid)
        self.assertEqual(a, "3010")
        self.assertEqual(a, b)
        self.assertEqual(self.tool("port", sid), "3010")
        self.assertEqual(self.psql("SELECT count(*) FROM build_session"), "1")

    def test_a_freed_port_is_the_first_one_handed_out_again(self):
        s1, s2, s3 = new_uuid(), new_uuid(), new_uuid()
        self.assertEqual(self.tool("port-alloc", s1), "3010")
        self.assertEqual(self.tool("port-alloc", s2), "3011")
        self.assertEqual(self.tool("port-restore", s1, "3010", "null"), "changed")
        self.assertEqual(self.tool("port-alloc", s3), "3010")

    def test_port_restore_sets_the_port_only_when_it_holds_the_expected_value(self):
        sid = new_uuid()
        self.assertEqual(self.tool("port", sid), "null")  # unknown session reads as NULL
        port = self.tool("port-alloc", sid)
        self.assertEqual(self.tool("port-restore", sid, str(int(port) + 1), "null"), "unchanged")
        self.assertEqual(self.port_of(sid), port)
        self.assertEqual(self.tool("port-restore", sid, port, "null"), "changed")
        self.assertEqual(self.port_of(sid), "null")
        self.assertEqual(self.tool("port-restore", sid, "null", "3042"), "changed")
        self.assertEqual(self.port_of(sid), "3042")
        self.assertEqual(self.tool("port-restore", new_uuid(), "null", "3043"), "unchanged")

    def test_port_restore_never_hands_a_port_held_by_another_session(self):
        a, b = new_uuid(), new_uuid()
        pa = self.tool("port-alloc", a)
        self.tool("ensure", b)
        self.assertEqual(self.tool("port-restore", b, "null", pa), "changed")
        self.assertEqual(self.port_of(b), "null")
        self.assertEqual(self.port_of(a), pa)

    def test_kubernetes_scope_is_per_user(self):
        ua, ub = new_uuid(), new_uuid()
        a1, a2, b1 = new_uuid(), new_uuid(), new_uuid()
        for s, u in ((a1, ua), (a2, ua), (b1, ub)):
            self.tool("ensure", s, u)
        k8s = {"SANDBOX_BACKEND": "kubernetes"}
        self.assertEqual(self.tool("port-alloc", a1, **k8s), "3010")
        self.assertEqual(self.tool("port-alloc", a2, **k8s), "3011")
        self.assertEqual(self.tool("port-alloc", b1, **k8s), "3010")
        # the local backend's scope is global: a new session skips every held port
        self.assertEqual(self.tool("port-alloc", new_uuid()), "3012")

    def test_kubernetes_concurrent_allocations_of_one_user_are_distinct(self):
        user = new_uuid()
        sids = [new_uuid() for _ in range(20)]
        for s in sids:
            self.tool("ensure", s, user)
        res = self.parallel_tool([("port-alloc", s) for s in sids], SANDBOX_BACKEND="kubernetes",
                                 SANDBOX_NEXTJS_PORT_START=3010, SANDBOX_NEXTJS_PORT_END=3030)
        self.assertEqual([r[0] for r in res], [0] * 20, [r[2] for r in res if r[0]])
        self.assertEqual(sorted(int(r[1]) for r in res), list(range(3010, 3030)))

    def test_activate_sets_active_and_touches_last_activity(self):
        sid = new_uuid()
        self.tool("ensure", sid)
        self.psql(f"UPDATE build_session SET status = 'idle', last_activity_at = now() - "
                  f"interval '2 hours' WHERE id = '{sid}'")
        self.tool("activate", sid)
        row = self.psql(f"SELECT status, last_activity_at > now() - interval '1 minute' "
                        f"FROM build_session WHERE id = '{sid}'")
        self.assertEqual(row, "active|t")

    def test_external_mode_treats_an_unknown_session_as_permanent(self):
        sid = new_uuid()
        ext = {"SNAPWORKER_DB_MANAGED": "external"}
        for cmd in (("port", sid), ("port-alloc", sid), ("activate", sid),
                    ("snap-insert", new_uuid(), sid, "p", "1")):
            p = self.sw("db-tool", *cmd, **ext)
            self.assertEqual(p.returncode, 1, cmd)
            self.assertIn("database_error", p.stderr)
            self.assertIn("not found", p.stderr)
        self.assertEqual(self.psql("SELECT count(*) FROM build_session"), "0")
        self.tool("ensure", sid)  # an existing row works in external mode
        self.assertEqual(self.tool("port-alloc", sid, **ext), "3010")


class SnapshotRowTest(DbTestCase):
    def setUp(self):
        super().setUp()
        self.migrate()

    def test_inserting_a_snapshot_twice_keeps_one_row(self):
        sid, snap = new_uuid(), new_uuid()
        path = f"public/snapshots/{sid}/{snap}.tar.gz"
        self.tool("snap-insert", snap, sid, path, "1234")
        self.tool("snap-insert", snap, sid, "other/path.tar.gz", "99")
        self.assertEqual(self.psql("SELECT id, session_id, storage_path, size_bytes FROM snapshot"),
                         f"{snap}|{sid}|{path}|1234")

    def test_latest_returns_the_newest_snapshot_of_the_session(self):
        sid, other = new_uuid(), new_uuid()
        self.assertEqual(self.tool("snap-latest", sid), "none")
        paths = []
        for _ in range(3):
            snap = new_uuid()
            paths.append(f"public/snapshots/{sid}/{snap}.tar.gz")
            self.tool("snap-insert", snap, sid, paths[-1], "10")
        self.tool("snap-insert", new_uuid(), other, "public/snapshots/x/y.tar.gz", "1")
        self.assertEqual(self.tool("snap-latest", sid), paths[-1])
        self.assertEqual(self.tool("snap-latest", sid.upper()), paths[-1])

    def test_deleting_a_session_deletes_its_snapshots(self):
        sid = new_uuid()
        self.tool("snap-insert", new_uuid(), sid, "p.tar.gz", "1")
        self.psql(f"DELETE FROM build_session WHERE id = '{sid}'")
        self.assertEqual(self.psql("SELECT count(*) FROM snapshot"), "0")


class Repl:
    """`snapworker db-tool repl`: many db_ calls over one handle."""

    def __init__(self, env, errpath):
        self.err = open(errpath, "w+")
        self.errpath = errpath
        self.proc = subprocess.Popen([BIN, "db-tool", "repl"], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def call(self, line, timeout=30):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.lines.get(timeout=timeout * SLOW)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        rc = self.proc.wait(timeout=30 * SLOW)
        self.err.close()
        with open(self.errpath) as f:
            return rc, f.read()


class ReconnectTest(DbTestCase):
    def pg_ctl(self, *args):
        subprocess.run(as_postgres() + [f"{PGBIN}/pg_ctl", "-D",
                                        os.path.join(self.services.dir, "pg", "data"), *args],
                       check=True, capture_output=True, timeout=120)

    def stop_postgres(self):
        self.pg_ctl("-m", "fast", "-w", "stop")

    def start_postgres(self):
        d = self.services.dir
        self.pg_ctl("-l", os.path.join(d, "pg", "log"), "-o",
                    f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {d}/pg -c fsync=off "
                    "-c max_connections=200", "-w", "start")
        with open(os.path.join(d, "pg", "data", "postmaster.pid")) as f:
            pid = f.readline().strip()
        with open(os.path.join(d, "postgres.pid"), "w") as f:  # for scripts/services stop
            f.write(pid + "\n")

    def test_a_lost_connection_fails_retryably_then_the_same_handle_recovers(self):
        self.migrate()
        sid = new_uuid()
        repl = Repl(self.full_env(), os.path.join(self.tmp, "repl.err"))
        try:
            self.assertEqual(repl.call(f"port-alloc {sid}"), "ok 3010")
            self.stop_postgres()
            try:
                down = repl.call(f"port {sid}")
                self.assertTrue(down.startswith("err database_error retryable "), down)
                down = repl.call(f"port-alloc {new_uuid()}")
                self.assertTrue(down.startswith("err database_error retryable "), down)
            finally:
                self.start_postgres()
            self.assertEqual(repl.call(f"port {sid}"), "ok 3010")
            self.assertEqual(repl.call(f"port-alloc {new_uuid()}"), "ok 3011")
        finally:
            rc, err = repl.close()
        self.assertEqual(rc, 0, err)
        self.assertFalse(any(m in err for m in SANITIZER_MARKERS), err)

    def test_a_server_restart_between_calls_is_invisible(self):
        self.migrate()
        sid = new_uuid()
        repl = Repl(self.full_env(), os.path.join(self.tmp, "repl.err"))
        try:
            self.assertEqual(repl.call(f"port-alloc {sid}"), "ok 3010")
            self.stop_postgres()
            self.start_postgres()
            # the old connection is dead; the call reconnects once and succeeds
            self.assertEqual(repl.call(f"port {sid}"), "ok 3010")
            snap = new_uuid()
            self.assertEqual(repl.call(f"snap-insert {snap} {sid} p/{snap}.tar.gz 5"), "ok ")
        finally:
            rc, err = repl.close()
        self.assertEqual(rc, 0, err)
