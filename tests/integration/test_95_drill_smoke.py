"""The drill machinery itself (bench/drills) must not rot: a small kill -9 drill (120 mixed
jobs on 3 workers, 2 of them killed) runs in under a minute and finds no loss and no
duplicated effect. The full drills are `make drills` (docs/reliability.md), not part of
`make test`."""
import json
import os
import subprocess
import tempfile
import unittest

from harness import ROOT, BIN


class DrillSmoke(unittest.TestCase):
    def test_a_small_kill9_drill_loses_nothing_and_duplicates_nothing(self):
        out = tempfile.mktemp(prefix="drill-smoke-", suffix=".json")
        p = subprocess.run([os.path.join(ROOT, "bench", "drills"), "--smoke", "--json", out],
                           env=dict(os.environ, SNAPWORKER_BIN=BIN), capture_output=True,
                           text=True, timeout=120)
        try:
            with open(out) as f:
                r = json.load(f)["results"]["kill9"]
        finally:
            if os.path.exists(out):
                os.unlink(out)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        self.assertNotIn("error", r)
        self.assertEqual(r["enqueued"], 120)
        self.assertEqual(r["lost"], 0, r)
        self.assertEqual(r["duplicated"], 0, r["dup_detail"])
        self.assertEqual(r["succeeded"] + sum(r["failed"].values()), 120)
        self.assertGreaterEqual(r["checks"]["workers killed"], 1)
        self.assertGreater(r["checks"]["dev-server starts"], 0, "the stand-in dev server ran")
        self.assertGreater(r["checks"]["snapshot rows"], 0)
