#!/usr/bin/python3
"""tests/fuzz/gen_corpus.py - the seed corpora of the libFuzzer harnesses (tests/fuzz/corpus/<name>/).

Writes a handful of small valid and edge inputs per harness: payloads, Celery messages (a
few real ones copied from tests/unit/fixtures/celery, plus plain-body variants the fuzzer can
mutate without base64), tar streams (plain, gzip, zstd when the zstd module exists) with
folders, files, symlinks in and out of the tree, hard links, '..' names and devices, made with
Python's tarfile; kubeconfigs (copied from tests/unit/fixtures/kube); WebSocket frames and
response heads; metav1.Status bodies; S3 XML answers. Deterministic (fixed mtimes), so a rerun
changes nothing. Rerun with:

    /usr/bin/python3 tests/fuzz/gen_corpus.py
"""
import base64
import gzip
import io
import json
import os
import shutil
import struct
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")
SB = "2B2E6240-6F35-43EE-BC4E-41ADE6AE1AD4"
SS = "52fbb8b7-179a-4c2e-a468-7125f9e86391"


def write(name, fname, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def payloads():
    base = {"v": 1, "id": "job-1", "type": "noop", "tenant_id": "public", "sandbox_id": SB,
            "session_id": SS, "args": {"sleep_ms": 5}, "max_attempts": 5, "timeout_s": 900}
    write("payload", "valid.json", json.dumps(base))
    write("payload", "celery.json", json.dumps(dict(base, origin="celery", retries=2,
                                                    expires_ms=1700000000000, ignore_result=True)))
    write("payload", "minimal.json", json.dumps({k: base[k] for k in
                                                 ("id", "type", "tenant_id", "sandbox_id", "session_id")}))
    write("payload", "bad_uuid.json", json.dumps(dict(base, sandbox_id="2B2E6240-6F35-43EE-BC4E-41ADE6AE1AD")))
    write("payload", "dup_key.json", '{"id":"a","id":"b"}')
    write("payload", "bad_id.json", json.dumps(dict(base, id="../x")))
    write("payload", "limits.json", json.dumps(dict(base, max_attempts=1001, timeout_s=0)))
    write("payload", "not_object.json", "[1,2,3]")


def celery_msg(kwargs, task="snapworker.noop", tid="c-1", plain=False, headers=None):
    body = json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    h = {"lang": "py", "task": task, "id": tid, "eta": None, "expires": None, "retries": 0,
         "timelimit": [None, None], "root_id": tid, "parent_id": None, "ignore_result": False}
    h.update(headers or {})
    props = {"correlation_id": tid, "delivery_mode": 2, "priority": 0,
             "delivery_info": {"exchange": "", "routing_key": "snapworker"}}
    if not plain:
        props["body_encoding"] = "base64"
        body = base64.b64encode(body.encode()).decode()
    return json.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": h, "properties": props})


def celery():
    fx = os.path.join(ROOT, "tests/unit/fixtures/celery")
    for f in ("msg_kwargs.json", "msg_eta_offset.json", "msg_time_limit.json", "msg_protocol_v1.json",
              "msg_obj_arg.json", "msg_plain_body.json", "meta_success_rich.json"):
        shutil.copy(os.path.join(fx, f), os.path.join(OUT, "celery", f))
    kw = {"tenant_id": "acme", "sandbox_id": SB, "session_id": SS, "args": {"x": [1, 2.5, "\u00e9"]}}
    write("celery", "plain_kwargs.json", celery_msg(kw, plain=True))
    write("celery", "plain_extra.json", celery_msg(dict(kw, extra=1e100, timeout_s=30), plain=True,
                                                   headers={"eta": "2024-02-29T12:00:00.5+01:00",
                                                            "expires": "2030-01-01T00:00:00",
                                                            "timelimit": [60, 30]}))
    write("celery", "unknown_task.json", celery_msg(kw, task="other.task", plain=True))
    write("celery", "result.json", '{"a": [1, -0.0, 1e-7, 123456789.125, "\\u0000\\ud83d\\ude00"], "b": null}')
    write("celery", "escapes.txt", "\\x06\\x16\\n\\0101")


def tar_bytes(members, fmt=tarfile.PAX_FORMAT):
    """members: (name, type, extra) with type file/dir/sym/hard/fifo/chr."""
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=fmt) as t:
        for name, kind, extra in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            ti.uname = ti.gname = ""
            data = None
            if kind == "file":
                data = extra.encode() if isinstance(extra, str) else extra
                ti.size = len(data)
                ti.mode = 0o644
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = extra if isinstance(extra, int) else 0o755
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = extra
            elif kind == "hard":
                ti.type = tarfile.LNKTYPE
                ti.linkname = extra
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            elif kind == "chr":
                ti.type = tarfile.CHRTYPE
            elif kind == "suid":
                data = b"#!/bin/sh\n"
                ti.size = len(data)
                ti.mode = 0o4755
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    # tarfile pads to a 10 KiB record; the two zero blocks that end the archive are enough
    raw = bio.getvalue().rstrip(b"\0")
    return raw + b"\0" * (-len(raw) % 512 + 1024)


def archives():
    good = [("outputs", "dir", None), ("outputs/a.txt", "file", "hello\n"),
            ("outputs/sub", "dir", 0o700), ("outputs/sub/b.bin", "file", bytes(range(64))),
            ("outputs/sub/up", "sym", "../a.txt"), ("outputs/link", "sym", "sub/b.bin"),
            ("outputs/hard", "hard", "outputs/a.txt"), ("attachments", "dir", None),
            ("attachments/c.txt", "file", "c")]
    write("arc_extract", "good.tar", tar_bytes(good))
    write("arc_extract", "good.tar.gz", gzip.compress(tar_bytes(good), mtime=0))
    write("arc_extract", "gnu.tar", tar_bytes(good[:4] + [("outputs/" + "d" * 120 + "/f", "file", "x")],
                                              fmt=tarfile.GNU_FORMAT))
    try:
        import zstandard  # noqa: F401 (Debian: python3-zstandard; optional)
        write("arc_extract", "good.tar.zst", zstandard.ZstdCompressor().compress(tar_bytes(good)))
    except ImportError:
        pass
    write("arc_extract", "sym_escape.tar", tar_bytes([("outputs", "dir", None),
                                                      ("outputs/evil", "sym", "../../etc"),
                                                      ("outputs/evil/passwd", "file", "x")]))
    write("arc_extract", "sym_dotdot_after.tar", tar_bytes([("outputs", "dir", None),
                                                            ("outputs/d", "dir", None),
                                                            ("outputs/x", "sym", "d/../.."),
                                                            ("outputs/abs", "sym", "/etc/passwd")]))
    write("arc_extract", "dotdot.tar", tar_bytes([("outputs/../../x", "file", "x")]))
    write("arc_extract", "absolute.tar", tar_bytes([("/tmp/x", "file", "x")]))
    write("arc_extract", "hard_out.tar", tar_bytes([("outputs", "dir", None),
                                                    ("outputs/h", "hard", "/etc/passwd")]))
    write("arc_extract", "devices.tar", tar_bytes([("outputs", "dir", None), ("outputs/p", "fifo", None),
                                                   ("outputs/c", "chr", None),
                                                   ("outputs/s", "suid", None)]))
    write("arc_extract", "dup.tar", tar_bytes([("outputs", "dir", None), ("outputs/a", "file", "1"),
                                               ("outputs/a", "file", "2"), ("outputs/a", "dir", None)]))
    write("arc_extract", "empty.tar", tar_bytes([]))


def kube():
    fx = os.path.join(ROOT, "tests/unit/fixtures/kube")
    for f in sorted(os.listdir(fx)):
        shutil.copy(os.path.join(fx, f), os.path.join(OUT, "kubeconfig", f))


def frame(op, payload, fin=True, rsv=0):
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | op
    if n < 126:
        hdr = struct.pack("!BB", b0, n)
    elif n <= 0xFFFF:
        hdr = struct.pack("!BBH", b0, 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, 127, n)
    return hdr + payload


def ws():
    # byte 0: split point (x/255 of the rest); byte 1: bit 7 = head first, bits 0-1 = max_msg
    status = b'\x03{"metadata":{},"status":"Success"}'
    frames = (frame(2, b"\x01hello") + frame(2, b"\x02err", fin=False) + frame(9, b"ping") +
              frame(0, b" more") + frame(2, status) + frame(8, b"\x03\xe8bye"))
    write("ws", "frames.bin", b"\x80\x02" + frames)
    # a 16-bit length, then a 64-bit one whose payload the stream cuts short
    write("ws", "long.bin", b"\x10\x03" + frame(1, b"x" * 300) + frame(1, b"y" * 70000)[:200])
    write("ws", "bad_masked.bin", b"\x40\x02" + bytes([0x82, 0x81, 1, 2, 3, 4, 5]))
    write("ws", "close_codes.bin", b"\x00\x01" + frame(8, b"") + frame(8, b"\x03") + frame(8, b"\x03\xed"))
    head101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
               b"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n")
    write("ws", "head101.bin", b"\x60\x82" + head101 + frames)
    write("ws", "head403.bin", b"\x30\x82" + b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
          b"Content-Length: 40\r\n\r\n" + b'{"kind":"Status","message":"forbidden"}\n')
    write("ws", "head_chunked.bin", b"\x99\x82" + b"HTTP/1.1 400 Bad Request\nTransfer-Encoding: chunked\n\n"
          b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    write("ws", "head_lf.bin", b"\x05\x82" + b"HTTP/1.0 500 Oops\n\nbody until eof")


def k8s_status():
    write("k8s_status", "success.json", '{"metadata":{},"status":"Success"}')
    write("k8s_status", "exit.json", json.dumps({
        "metadata": {}, "status": "Failure", "message": "command terminated with non-zero exit code",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "42"}]}}))
    write("k8s_status", "failure.json", json.dumps({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "pods \"x\" not found", "reason": "NotFound", "details": {"name": "x", "kind": "pods"},
        "code": 404}))
    write("k8s_status", "text.txt", "upgrade request required\r\nmore")
    write("k8s_status", "blank.txt", " \n\t")


def s3():
    # byte 0 picks the HTTP status of the error answer (see fuzz_s3_xml.c); the rest is the body
    lst = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><Prefix>pre/snap/</Prefix>'
           '<Contents><Key>pre/snap/a&amp;b.tar.gz</Key><Size>123</Size></Contents>'
           '<Contents><Key>pre/snap/&#x65;&#233;</Key><Size>-1</Size></Contents>'
           '<Contents><Key>other</Key></Contents>'
           '<IsTruncated>true</IsTruncated><NextContinuationToken>tok&lt;1&gt;</NextContinuationToken>'
           '</ListBucketResult>')
    write("s3_xml", "list.xml", "\x00" + lst)
    write("s3_xml", "create.xml", "\x00<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
          "<UploadId>VXBsb2FkIElE&quot;</UploadId></InitiateMultipartUploadResult>")
    write("s3_xml", "complete.xml", "\x00<CompleteMultipartUploadResult><ETag>\"e\"</ETag>"
          "</CompleteMultipartUploadResult>")
    write("s3_xml", "complete_err.xml", "\x00<Error><Code>InternalError</Code><Message>x</Message></Error>"
          "CompleteMultipartUploadResult")
    write("s3_xml", "error503.xml", "\x08<Error><Code>SlowDown</Code><Message>Reduce</Message></Error>")
    write("s3_xml", "error404.xml", "\x04<Error><Code>NoSuchKey</Code></Error>")
    write("s3_xml", "error403.xml", "\x03<Error><Code>AccessDenied</Code></Error>")
    write("s3_xml", "entities.xml", "\x05<Code>&#0;&#x110000;&#65;&amp&lt;</Code><Code>")


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for n in ("payload", "celery", "arc_extract", "kubeconfig", "ws", "k8s_status", "s3_xml"):
        os.makedirs(os.path.join(OUT, n), exist_ok=True)
    payloads()
    celery()
    archives()
    kube()
    ws()
    k8s_status()
    s3()


if __name__ == "__main__":
    main()
