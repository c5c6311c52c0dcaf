"""Fixtures: a throwaway Redis (scripts/services, as the integration tests use) and a
real snapworker worker on a fresh queue per test."""
import os
import sys
import tempfile
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402
from snapworker import Client  # noqa: E402


@pytest.fixture(scope="session")
def services():
    s = harness.Services("redis")
    yield s
    s.stop()


@pytest.fixture
def queue():
    return "py" + uuid.uuid4().hex[:12]


@pytest.fixture
def worker_env(services, queue):
    tmp = tempfile.mkdtemp(prefix="sw-py-", dir=services.dir)
    return {"REDIS_URL": services.env["REDIS_URL"], "SNAPWORKER_QUEUE": queue, "SW_TMP": tmp,
            "SNAPWORKER_STORE": "file://" + os.path.join(tmp, "store"),
            "SANDBOX_BASE_PATH": os.path.join(tmp, "sandboxes"),
            "SNAPWORKER_RETRY_BASE_MS": "50", "SNAPWORKER_RETRY_MAX_MS": "200",
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1"}


@pytest.fixture
def worker(worker_env):
    w = harness.Worker(worker_env, name="pyclient")
    yield w
    w.stop()
    rep = w.sanitizer_report()
    assert rep is None, rep


@pytest.fixture
def client(services, queue):
    c = Client(services.env["REDIS_URL"], queue=queue)
    yield c
    c.r.close()
