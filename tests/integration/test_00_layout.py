"""The layering of the sources, read from their #include lines (docs/STYLE §2, issue 15):
no include cycle among the modules of worker/, common/ includes nothing of jobs/ or
worker/, jobs/ nothing of worker/, no cycle between jobs/sandbox_local.c and
jobs/webapp.c, and worker/conn.c (one Redis connection) depends on nothing above it.
A module is a .c and its .h (and a <name>_priv.h, the module's private header).
It also checks that README, docs and comments cite only the repository's own files: no
design notes kept outside it, and no library's source file by path or line ("kombu/...py",
"celery/...py", CPython's "Lib/...", a Go file, a dist-packages folder, "base.py 958");
they name the library, its version and the function instead (docs/celery.md). No
servers: it only reads files."""
import glob
import os
import re
import unittest

from harness import ROOT

FAST = True
TLS_PASS = False  # no servers: nothing for scripts/run-integration --tls to change

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

# What README, docs and comments may not cite: a library's source file by path. A path-like
# token (PATH_TOKEN) is a citation when it is no file of the repository and it is
#   - a file of a Python package of the Celery stack or of redis-py ("kombu/pidbox.py",
#     "celery/app/amqp.py", "/usr/lib/python3/dist-packages/kombu/transport/redis.py"),
#   - a file of CPython's source tree ("Lib/json/encoder.py", "Python/pystrtod.c"),
#   - a Go file (the repository has none: "pkg/volume/util/atomic_writer.go"),
#   - an installed-packages folder ("/usr/lib/python3/dist-packages").
# A bare source file name followed by a line number ("amqp.py 294-300", "base.py 958",
# "redis.py:616") is one too, unless a file of the repository has that name.
PATH_TOKEN = re.compile(r"[\w.-]*(?:/[\w.-]+)+")
LIBRARY_FILE = re.compile(
    r"(?:^|/)(?:kombu|celery|billiard|redis|redis_py|amqp|vine)/(?:[\w-]+/)*[\w-]+\.py$"
    r"|(?:^|/)(?:Lib|Python|Objects|Modules|Include)/(?:[\w-]+/)*[\w-]+\.(?:py|c|h)$"
    r"|\.go$"
    r"|(?:^|/)(?:dist|site)-packages$")
LINE_CITATION = re.compile(
    r"(?<![\w/.-])([\w-]+\.(?:py|c|h|go|lua))`?(?::|,? )(\d+)(?!\w|[–-][A-Za-z])")
CITING_SUFFIXES = (".md", ".c", ".h", ".py", ".lua", ".sh")
SHEBANG = re.compile(r"#!\S*(?:/env\s+)?\S*\b(?:sh|bash|python3?)\b")


def module(path):
    """'worker/conn.c', 'worker/conn.h' -> 'worker/conn'; 'worker/http_priv.h' -> 'worker/http'."""
    return re.sub(r"_priv$", "", os.path.splitext(path)[0])


def includes():
    """{file: [included repository paths]} for common/, jobs/ and worker/."""
    out = {}
    for folder in ("common", "jobs", "worker"):
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "*.[ch]"))):
            rel = os.path.relpath(path, ROOT)
            with open(path, encoding="utf-8") as f:
                out[rel] = INCLUDE.findall(f.read())
    return out


def repository_files():
    """{relative path of every file} under ROOT, and their base names, skipping what the
    build, the services and the package managers leave there."""
    paths = set()
    for dirpath, dirnames, files in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".deps", "build", "run",
                                                         "node_modules", "__pycache__")]
        for name in files:
            paths.add(os.path.relpath(os.path.join(dirpath, name), ROOT))
    return paths, {os.path.basename(p) for p in paths}


def library_citations(text, rel, paths, names):
    """The library source files that 'text' (the file 'rel') cites: see LIBRARY_FILE."""
    hits = []
    here = os.path.dirname(rel)
    for m in PATH_TOKEN.finditer(text):
        token = m.group(0).rstrip(".")
        if not LIBRARY_FILE.search(token):
            continue
        inside = token.lstrip("/")
        if inside in paths or os.path.normpath(os.path.join(here, token)) in paths:
            continue
        hits.append(token)
    for m in LINE_CITATION.finditer(text):
        if m.group(1) not in names:
            hits.append(f"{m.group(1)} {m.group(2)}")
    return hits


def citing_files(paths):
    """README, the docs and the sources whose comments could cite: Markdown, C, Python, Lua,
    and scripts (a #! naming sh, bash or python)."""
    for rel in sorted(paths):
        path = os.path.join(ROOT, rel)
        if not rel.endswith(CITING_SUFFIXES):
            if "." in os.path.basename(rel):
                continue
            try:
                with open(path, "rb") as f:
                    if not SHEBANG.match(f.readline().decode("utf-8", "replace")):
                        continue
            except OSError:
                continue
        yield rel


def module_graph(files):
    g = {}
    for f, incs in files.items():
        g.setdefault(module(f), set())
        for inc in incs:
            if module(inc) != module(f):
                g[module(f)].add(module(inc))
    return g


def find_cycle(graph, nodes):
    """A cycle among 'nodes' (as a list, first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in nodes}
    stack = []

    def visit(n):
        colour[n] = GREY
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m not in colour:
                continue
            if colour[m] == GREY:
                return stack[stack.index(m):] + [m]
            if colour[m] == WHITE:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        colour[n] = BLACK
        return None

    for n in sorted(nodes):
        if colour[n] == WHITE:
            c = visit(n)
            if c:
                return c
    return None


def reachable(graph, start):
    seen, pending = set(), [start]
    while pending:
        n = pending.pop()
        for m in graph.get(n, ()):
            if m not in seen:
                seen.add(m)
                pending.append(m)
    return seen


class Layout(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = includes()
        cls.graph = module_graph(cls.files)

    def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree(self):
        self.assertEqual(find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, {"a", "b", "c"}),
                         ["a", "b", "c", "a"])
        self.assertIsNone(find_cycle({"a": {"b", "c"}, "b": {"c"}}, {"a", "b", "c"}))

    def test_no_include_cycle_among_the_modules_of_worker(self):
        nodes = {m for m in self.graph if m.startswith("worker/")}
        self.assertGreater(len(nodes), 15)
        cycle = find_cycle(self.graph, nodes)
        self.assertIsNone(cycle, "include cycle: " + " -> ".join(cycle or []))

    def test_no_header_includes_itself_through_others_anywhere(self):
        # file level (jobs/job.c -> jobs/jobs.h -> jobs/job.h is fine: a .c is a leaf)
        g = {f: set(incs) for f, incs in self.files.items()}
        cycle = find_cycle(g, set(g))
        self.assertIsNone(cycle, "include cycle: " + " -> ".join(cycle or []))

    def test_common_includes_nothing_of_jobs_or_worker(self):
        bad = [(f, i) for f, incs in self.files.items() if f.startswith("common/")
               for i in incs if i.startswith(("jobs/", "worker/"))]
        self.assertEqual(bad, [])

    def test_jobs_include_nothing_of_worker(self):
        bad = [(f, i) for f, incs in self.files.items() if f.startswith("jobs/")
               for i in incs if i.startswith("worker/")]
        self.assertEqual(bad, [])

    def test_sandbox_local_and_webapp_do_not_depend_on_each_other_both_ways(self):
        a, b = "jobs/sandbox_local", "jobs/webapp"
        self.assertIn(a, self.graph)
        self.assertIn(b, self.graph)
        self.assertFalse(b in reachable(self.graph, a) and a in reachable(self.graph, b),
                         "jobs/sandbox_local and jobs/webapp include each other")

    def test_webapp_calls_nothing_of_a_backend(self):
        # the include graph above cannot see a call through a forward declaration; the
        # dev-server code must reach a backend only through jobs/sandbox.h
        with open(os.path.join(ROOT, "jobs", "webapp.c"), encoding="utf-8") as f:
            calls = sorted(set(re.findall(r"\b(?:local_|sb_local_|k8s_|sb_k8s_)\w*\s*\(", f.read())))
        self.assertEqual(calls, [], "jobs/webapp.c calls a backend directly")

    def test_no_library_is_loaded_by_hand(self):
        # issue 15: libraries are linked; a dlopen would bring back forwarding by hand
        hits = []
        for path in sorted(glob.glob(os.path.join(ROOT, "*", "**", "*.[ch]"), recursive=True)):
            with open(path, encoding="utf-8", errors="replace") as f:
                if re.search(r"\b(dlopen|dlsym)\s*\(", f.read()):
                    hits.append(os.path.relpath(path, ROOT))
        self.assertEqual(hits, [])

    def test_no_c_file_runs_a_shell(self):
        # Safe by construction: the worker, its tests and its fuzzers spawn with argv arrays.
        # `sh -c` appears only where a sandbox pod leaves no choice (jobs/sandbox_k8s.c),
        # with a constant script and the data as positional parameters.
        shell = re.compile(r"\b(system|popen)\s*\(|\bexecl[pe]?\s*\(\s*\"/bin/sh\"")
        sh_c = re.compile(r'"sh"\s*,\s*"-c"\s*,\s*(\w+)')
        hits = []
        for path in sorted(glob.glob(os.path.join(ROOT, "*", "**", "*.[ch]"), recursive=True)):
            rel = os.path.relpath(path, ROOT)
            if rel.startswith(("build/", ".deps/")):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
            hits += [f"{rel}: {m.group(0)}" for m in shell.finditer(text)]
            for m in sh_c.finditer(text):
                if rel != "jobs/sandbox_k8s.c" or not m.group(1).startswith("SH_"):
                    hits.append(f"{rel}: {m.group(0)}")
        self.assertEqual(hits, [])

    def test_the_repository_cites_only_its_own_files(self):
        # README, docs and comments stand alone: no reference to design notes kept outside
        # the repository (their content lives in docs/contract.md and the other docs)
        outside = re.compile(r"\.\./shared|\b(DESIGN|STYLE|ONYX-COMPAT|K8S|NOTES-deps[\w-]*)\.md\b")
        me = os.path.relpath(__file__, ROOT)
        hits = []
        for dirpath, dirnames, files in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in (".git", ".deps", "build", "run",
                                                             "node_modules", "__pycache__")]
            for name in files:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)
                if rel == me or name.endswith((".png", ".gz", ".zst", ".tar")):
                    continue
                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                except (UnicodeDecodeError, OSError):
                    continue
                for m in outside.finditer(text):
                    hits.append(f"{rel}: {m.group(0)}")
        self.assertEqual(hits, [])

    def test_the_library_citation_finder_finds_the_old_citations(self):
        # the forms docs/celery.md and worker/celery_msg.c used before they were rewritten
        paths = {"tests/fixtures-gen/gen_celery.py", "worker/celery_msg.c",
                 "tests/fixtures/celery/make.py", "worker/lua/cancel.lua"}
        names = {os.path.basename(p) for p in paths}
        cited = {
            "`kombu/transport/redis.py` 616, 860–863, 1014–1019, 1200":
                "kombu/transport/redis.py",
            "(kombu's `Node.handle_message`,\n  `kombu/pidbox.py` 124–141).": "kombu/pidbox.py",
            "Naive means UTC: celery/utils/time.py\n * maybe_make_aware()": "celery/utils/time.py",
            "/* kombu's matchers (kombu/matcher.py): ": "kombu/matcher.py",
            "`celery/app/amqp.py` `as_task_v2` (280–364)": "celery/app/amqp.py",
            "(`celery/worker/consumer/consumer.py`\n`on_task_received`, 573)":
                "celery/worker/consumer/consumer.py",
            "(amqp.py 294–300)": "amqp.py 294",
            "(`task_protocol = 1`, amqp.py 366–)": "amqp.py 366",
            "SUCCESS (base.py 958).": "base.py 958",
            "(Lib/json/encoder.py). */": "Lib/json/encoder.py",
            "(Python/pystrtod.c rules)": "Python/pystrtod.c",
            "under `/usr/lib/python3/dist-packages`). File:line":
                "/usr/lib/python3/dist-packages",
            "projected volume (pkg/volume/util/atomic_writer.go): the":
                "pkg/volume/util/atomic_writer.go",
            # the repository's own files (one looks like a celery/ file: it is not one when
            # the repository has it), and library names that are no paths
            "(`tests/fixtures-gen/gen_celery.py`, fixtures in `tests/unit/fixtures/celery/`)":
                None,
            "`tests/fixtures/celery/make.py`, [make](../tests/fixtures/celery/make.py)": None,
            "[`worker/lua/cancel.lua`](../worker/lua/cancel.lua)": None,
            "`celery_msg.c` 12 times, gen_celery.py 3": None,
            "kombu.matcher.match, Celery's `AMQP.as_task_v2`, `celery.exceptions`": None,
            "kombu 5.2.4, python3-celery 5.2.6, celery_msg.h 64-bit, queue/celery.md": None,
            # not caught: a bare name with no line number, which may be any file's
            "(redis.py _set)": None,
        }
        for text, want in cited.items():
            got = library_citations(text, "docs/x.md", paths, names)
            self.assertEqual(got, [want] if want else [], text)

    def test_the_repository_cites_no_library_source_file(self):
        # name the library, its version and the function (docs/celery.md does) instead of a
        # path into its installed tree and line numbers that only hold for one version
        paths, names = repository_files()
        me = os.path.relpath(__file__, ROOT)
        files = [rel for rel in citing_files(paths) if rel != me]
        self.assertIn("docs/celery.md", files)
        self.assertIn("worker/celery_msg.c", files)
        self.assertIn("scripts/run-integration", files)
        hits = []
        for rel in files:
            try:
                with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, OSError):
                continue
            hits += [f"{rel}: {c}" for c in library_citations(text, rel, paths, names)]
        self.assertEqual(hits, [])

    def test_the_connection_module_depends_on_nothing_above_it(self):
        below = reachable(self.graph, "worker/conn")
        allowed = {"worker/cmdv", "worker/scripts", "worker/rtr"}  # rtr: the transport below it
        above = sorted(m for m in below if m.startswith("worker/") and m not in allowed)
        self.assertEqual(above, [])
        with open(os.path.join(ROOT, "worker", "conn.c"), encoding="utf-8") as f:
            calls = sorted(set(re.findall(r"\bwk_\w+\s*\(", f.read())))
        self.assertEqual(calls, [], "worker/conn.c calls the worker")
