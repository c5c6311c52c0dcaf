#!/usr/bin/python3
"""tests/fixtures-gen/gen_pidbox.py - real Celery 5.2 / kombu 5.2 control broadcasts for
tests/unit/test_celery.c (celery_pidbox_parse, docs/celery.md "Revoke").

Starts a throwaway redis-server (scripts/services), SUBSCRIBEs to the channel kombu publishes
broadcasts on ("/<db>.celery.pidbox": kombu's Redis transport, its keyprefix_fanout + the
exchange), calls app.control.revoke(...), broadcast(...) and ping(...) for each case, and
stores the PUBLISHed text byte for byte as pidbox_<case>.json. expect.json says what a correct
parser must find for the worker named NODE, computed here with kombu's own selection rule
(kombu's Node.handle_message, kombu.matcher.match) and celery's maybe_list.
A few fixtures are real messages altered on purpose; those are marked "derived".
The outputs are committed under tests/unit/fixtures/celery_pidbox/. Rerun with:

    /usr/bin/python3 tests/fixtures-gen/gen_pidbox.py
"""
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import redis
from celery import Celery
from kombu.matcher import match
from kombu.utils.functional import maybe_list

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/unit/fixtures/celery_pidbox"
NODE = "snapworker@fixhost"
DB = 5
JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")


def selected(body):
    """kombu's Node.handle_message: does this broadcast reach the worker named NODE?"""
    dest, pattern, matcher = body.get("destination"), body.get("pattern"), body.get("matcher")
    if dest:
        return NODE in dest
    if pattern and matcher:
        return bool(match(NODE, pattern, matcher))
    return True


def oracle(body):
    e = {"method": body["method"], "for_us": selected(body), "ids": [], "invalid": 0,
         "terminate": False}
    if e["for_us"] and body["method"] == "revoke":
        args = body["arguments"]
        ids = maybe_list(args["task_id"]) or []
        e["ids"] = [i for i in ids if isinstance(i, str) and JOB_ID.match(i)]
        e["invalid"] = len(ids) - len(e["ids"])
        e["terminate"] = bool(args.get("terminate"))
    return e


def main():
    tmp = tempfile.mkdtemp(prefix="gen-pidbox-")
    env = subprocess.run([str(ROOT / "scripts/services"), "start", tmp, "redis"], check=True,
                         capture_output=True, text=True).stdout
    url = dict(line.split("=", 1) for line in env.split() if "=" in line)["REDIS_URL"]
    broker = url.rsplit("/", 1)[0] + f"/{DB}"
    try:
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        expect = {"node": NODE, "channel": f"/{DB}.celery.pidbox", "messages": gen(broker)}
        (OUT / "expect.json").write_text(json.dumps(expect, indent=1, sort_keys=True) + "\n")
    finally:
        subprocess.run([str(ROOT / "scripts/services"), "stop", tmp], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT.relative_to(ROOT)}")


def gen(broker):
    app = Celery("genpidbox", broker=broker)
    pickled = Celery("genpidbox-pickle", broker=broker)
    pickled.conf.task_serializer = "pickle"
    pickled.conf.accept_content = ["pickle", "json"]
    ctl = app.control
    cases = {
        "revoke_one": lambda: ctl.revoke("6f1c7c52-32b5-4d3e-9a40-2f4e0b8f1a11"),
        "revoke_list_terminate": lambda: ctl.revoke(["r-2", "r-3"], terminate=True,
                                                   signal="SIGKILL"),
        "revoke_result_terminate": lambda: app.AsyncResult("r-4").revoke(terminate=True),
        "revoke_dest_us": lambda: ctl.revoke("r-5", destination=[NODE, "celery@other"]),
        "revoke_dest_other": lambda: ctl.revoke("r-6", destination=["celery@other"]),
        "revoke_dest_empty": lambda: ctl.revoke("r-7", destination=[]),
        "revoke_glob_us": lambda: ctl.revoke("r-8", pattern="snapworker@*", matcher="glob"),
        "revoke_glob_other": lambda: ctl.revoke("r-9", pattern="celery@*", matcher="glob"),
        "revoke_pcre_us": lambda: ctl.revoke("r-10", pattern="snap.*@fix", matcher="pcre"),
        # re.match is anchored at the start: "worker@" is in the name but does not start it
        "revoke_pcre_other": lambda: ctl.revoke("r-11", pattern="worker@", matcher="pcre"),
        "revoke_invalid_ids": lambda: ctl.revoke(["ok-1", "bad/id", "", "x" * 129]),
        "ping": lambda: ctl.ping(timeout=0.05),
        "rate_limit": lambda: ctl.rate_limit("snapworker.noop", "1/s"),
        "revoke_pickle": lambda: pickled.control.revoke("r-12"),
    }
    r = redis.Redis.from_url(broker)
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(f"/{DB}.celery.pidbox")
    while ps.get_message(timeout=0.2):
        pass
    out = {}
    for name, send in cases.items():
        send()
        msg = None
        for _ in range(50):
            msg = ps.get_message(timeout=0.1)
            if msg:
                break
        assert msg, name
        raw = msg["data"]
        (OUT / f"pidbox_{name}.json").write_bytes(raw)
        env = json.loads(raw)
        if env["content-type"] == "application/json":
            out[name] = oracle(json.loads(base64.b64decode(env["body"])))
        else:
            out[name] = {"invalid_message": True}
    ps.close()

    # Derived from a real message on purpose: kombu would not write these.
    raw = json.loads((OUT / "pidbox_revoke_one.json").read_bytes())
    body = json.loads(base64.b64decode(raw["body"]))
    plain = dict(raw, body=json.dumps(body), properties=dict(raw["properties"]))
    del plain["properties"]["body_encoding"]  # no body_encoding: the body is the JSON text
    (OUT / "pidbox_plain_body.json").write_text(json.dumps(plain))
    out["plain_body"] = dict(oracle(body), derived=True)
    for name, b in (("body_not_object", [1, 2]), ("dest_string", dict(body, destination=NODE)),
                    ("no_task_id", dict(body, arguments={"terminate": True})),
                    ("unknown_matcher", dict(body, pattern="x", matcher="soundex"))):
        d = dict(raw, body=base64.b64encode(json.dumps(b).encode()).decode())
        (OUT / f"pidbox_{name}.json").write_text(json.dumps(d))
        out[name] = {"invalid_message": True, "derived": True}
    return out


if __name__ == "__main__":
    sys.exit(main())
