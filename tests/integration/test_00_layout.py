"""The layering of the sources, read from their #include lines (docs/STYLE §2, issue 15):
no include cycle among the modules of worker/, common/ includes nothing of jobs/ or
worker/, jobs/ nothing of worker/, no cycle between jobs/sandbox_local.c and
jobs/webapp.c, and worker/conn.c (one Redis connection) depends on nothing above it.
A module is a .c and its .h (and a <name>_priv.h, the module's private header). No
servers: it only reads files."""
import glob
import os
import re
import unittest

from harness import ROOT

FAST = True
TLS_PASS = False  # no servers: nothing for scripts/run-integration --tls to change

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


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

    def test_the_connection_module_depends_on_nothing_above_it(self):
        below = reachable(self.graph, "worker/conn")
        allowed = {"worker/cmdv", "worker/scripts", "worker/rtr"}  # rtr: the transport below it
        above = sorted(m for m in below if m.startswith("worker/") and m not in allowed)
        self.assertEqual(above, [])
        with open(os.path.join(ROOT, "worker", "conn.c"), encoding="utf-8") as f:
            calls = sorted(set(re.findall(r"\bwk_\w+\s*\(", f.read())))
        self.assertEqual(calls, [], "worker/conn.c calls the worker")
