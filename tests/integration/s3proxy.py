#!/usr/bin/python3
"""A verifying, fault-injecting HTTP proxy in front of s3rver (which checks no signature).

Owns: recomputing every request's AWS SigV4 with botocore (the signed headers the
client claims, its x-amz-date, method, raw path and query) and refusing mismatches
with 403 SignatureDoesNotMatch as S3 does; checking x-amz-content-sha256 against the
body; injecting faults chosen per test; counting what it saw. Does not own S3
semantics: everything that passes is forwarded to s3rver unchanged.

Run with Debian's python (botocore):
    /usr/bin/python3 s3proxy.py --upstream http://127.0.0.1:PORT \
        --access-key S3RVER --secret-key S3RVER [--region us-east-1] [--token T]
With --issuer URL (tests/integration/aws_standin.py) it also accepts temporary
credentials that stand-in issued: an access key other than --access-key is looked up
there (GET URL/__standin/lookup?ak=KEY) and the request passes only when the key is
known and not revoked (else 403 InvalidAccessKeyId), was unexpired when the request
arrived (else 400 ExpiredToken), carries that key's own x-amz-security-token (else 403
InvalidToken), and is signed with that key's secret. The log entry names the access key.
It prints "PORT=<n>" once listening. Control endpoints (not signed):
    POST /__proxy/rules   JSON list of rules, replacing the current ones:
        {"method": "GET", "query": "partNumber=2", "path": "substr", "suffix": ".tar.gz",
         "header": "range",
         "action": "status|drop|stall|delay_body|reset", "status": 503, "code": "SlowDown",
         "count": N (-1 = every time), "after_bytes": B (drop), "stall_s": S (stall and
         delay_body: wait S seconds before reading the request body, then go on),
         "every": K (optional: only every K-th matching request is faulted, the others
         pass; counted per rule), "forward": true (reset only: the request reaches S3 first,
         then the client gets the reset instead of the answer)}
        "reset" closes the connection with a TCP RST (SO_LINGER 0) and no answer.
    A body shorter than its Content-Length (the client died or gave up mid-body) is
    answered 400 IncompleteBody and never forwarded, as S3 does (s3rver would store
    the bytes that did arrive).
        "action": "hold", "name": "A": the matching request (checked and signed, not
        yet forwarded) waits until POST /__proxy/release {"name": "A"}; its log entry
        says "held" meanwhile. For a stalled client whose request is in flight.
    POST /__proxy/release {"name": N}   let requests held by rule N go on (no name: all)
    POST /__proxy/age {"seconds": S}    multipart uploads seen so far look S seconds older
    POST /__proxy/reset   clear rules and statistics (held requests are released)
    GET  /__proxy/stats   JSON: connections, requests, sig_failures, faults, log[], uploads{}

S3 semantics s3rver lacks, done here as AWS does:
    If-None-Match: * on PUT and CompleteMultipartUpload: 412 PreconditionFailed when the
        key exists (checked and written under one lock, so two conditional writes of a
        key never both succeed); the header is not forwarded.
    Multipart uploads are tracked (CreateMultipartUpload answers are read): abort
        (DELETE ?uploadId=) answers 204 and forgets the upload (s3rver says 405);
        UploadPart/Complete of an aborted upload get 404 NoSuchUpload; ListMultipartUploads
        (GET /BUCKET?uploads[&prefix=]) lists the open ones with their Initiated time.
"""
import argparse
import datetime
import hashlib
import hmac
import http.client
import json
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape as xml_escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}
UNSIGNED = "UNSIGNED-PAYLOAD"


class ClaimedHeadersSigner(S3SigV4Auth):
    """S3SigV4Auth over exactly the headers the client signed, as AWS verifies."""

    def __init__(self, creds, region, signed):
        super().__init__(creds, "s3", region)
        self._signed = signed

    def headers_to_sign(self, request):
        hm = super().headers_to_sign(request)  # HTTPHeaders, may drop blacklisted names
        for name in list(hm.keys()):
            if name.lower() not in self._signed:
                del hm[name]
        for name in self._signed:  # e.g. "expect", which botocore would leave out
            if name not in hm and name in request.headers:
                hm[name] = request.headers[name]
        return hm


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()  # conditional check + write, atomically
        self.uploads = {}    # upload id -> {"key", "initiated"} (open multipart uploads)
        self.aborted = set()
        self.holds = {}      # rule name -> threading.Event
        self.reset()

    def reset(self):
        with self.lock:
            self.rules = []
            self.connections = 0
            self.requests = 0
            self.sig_failures = 0
            self.faults = 0
            self.log = []
            for ev in self.holds.values():
                ev.set()
            self.holds = {}

    def hold_event(self, name):
        with self.lock:
            return self.holds.setdefault(name, threading.Event())


def s3_error(status, code, message):
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s</Message>"
            "</Error>" % (code, message)).encode()
    return status, body


def parse_auth(value):
    """AWS4-HMAC-SHA256 Credential=AK/DATE/REGION/s3/aws4_request, SignedHeaders=a;b, Signature=x"""
    if not value or not value.startswith("AWS4-HMAC-SHA256 "):
        return None
    out = {}
    for part in value[len("AWS4-HMAC-SHA256 "):].split(","):
        k, _, v = part.strip().partition("=")
        out[k] = v
    if not {"Credential", "SignedHeaders", "Signature"} <= set(out):
        return None
    cred = out["Credential"].split("/")
    if len(cred) != 5:
        return None
    return {"access_key": cred[0], "date": cred[1], "region": cred[2], "service": cred[3],
            "terminal": cred[4], "signed": out["SignedHeaders"].split(";"), "signature": out["Signature"]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "s3proxy"

    def log_message(self, fmt, *a):  # quiet
        pass

    def setup(self):
        super().setup()
        self.conn_no = 0  # numbered at its first S3 request (control calls do not count)

    # ---- plumbing ------------------------------------------------------
    def send_simple(self, status, body, ctype="application/xml", close=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return None
        n = int(self.headers.get("Content-Length") or 0)
        try:
            return self.rfile.read(n) if n else b""
        except OSError:  # reset mid-body: what arrived does not matter, it is incomplete
            self.close_connection = True
            return b""

    # ---- control endpoints -----------------------------------------------
    def control(self, body):
        st = self.server.state
        if self.path == "/__proxy/stats":
            with st.lock:
                data = {"connections": st.connections, "requests": st.requests,
                        "sig_failures": st.sig_failures, "faults": st.faults, "log": st.log,
                        "uploads": st.uploads}
            return self.send_simple(200, json.dumps(data).encode(), "application/json")
        if self.path == "/__proxy/reset":
            st.reset()
            return self.send_simple(200, b"{}", "application/json")
        if self.path == "/__proxy/rules":
            rules = json.loads(body or b"[]")
            with st.lock:
                st.rules = rules
            return self.send_simple(200, b"{}", "application/json")
        if self.path == "/__proxy/release":
            name = json.loads(body or b"{}").get("name")
            with st.lock:
                evs = [ev for n, ev in st.holds.items() if name is None or n == name]
            for ev in evs:
                ev.set()
            if name is not None and not evs:
                st.hold_event(name).set()  # released before it arrived: do not hold it
            return self.send_simple(200, b"{}", "application/json")
        if self.path == "/__proxy/age":
            secs = json.loads(body or b"{}").get("seconds", 0)
            with st.lock:
                for u in st.uploads.values():
                    u["initiated"] -= secs
            return self.send_simple(200, b"{}", "application/json")
        return self.send_simple(404, b"{}", "application/json")

    # ---- verification ----------------------------------------------------
    def issued(self, access_key):
        """The stand-in's record of a temporary access key, or None."""
        url = "%s/__standin/lookup?ak=%s" % (self.server.state.args.issuer,
                                             urllib.parse.quote(access_key))
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError:
            return None

    def verify(self, body):
        """None when the request is correctly signed, else (status, body) to answer."""
        a = self.server.state.args
        auth = parse_auth(self.headers.get("Authorization"))
        if auth is None:
            return s3_error(403, "AccessDenied", "missing or malformed Authorization")
        secret, want_token = a.secret_key, a.token
        if auth["access_key"] != a.access_key:
            rec = self.issued(auth["access_key"]) if a.issuer else None
            if rec is None or rec["revoked"]:
                return s3_error(403, "InvalidAccessKeyId", "unknown access key")
            if self.arrived > rec["expires"]:
                return s3_error(400, "ExpiredToken", "The provided token has expired.")
            if self.headers.get("x-amz-security-token") != rec["token"]:
                return s3_error(403, "InvalidToken", "The provided token is malformed or "
                                "otherwise invalid.")
            secret, want_token = rec["secret"], rec["token"]
            self.temporary = True
        amz_date = self.headers.get("x-amz-date") or ""
        if (auth["service"] != "s3" or auth["terminal"] != "aws4_request"
                or auth["region"] != a.region or auth["date"] != amz_date[:8]):
            return s3_error(403, "AuthorizationHeaderMalformed", "bad credential scope")
        signed = auth["signed"]
        for must in ("host", "x-amz-date", "x-amz-content-sha256"):
            if must not in signed:
                return s3_error(403, "AccessDenied", "header %s not signed" % must)
        token = self.headers.get("x-amz-security-token")
        if token is not None and "x-amz-security-token" not in signed:
            return s3_error(403, "AccessDenied", "x-amz-security-token not signed")
        if want_token and token != want_token:
            return s3_error(403, "InvalidToken", "missing or wrong session token")
        claimed = self.headers.get("x-amz-content-sha256") or ""
        if claimed != UNSIGNED and claimed != hashlib.sha256(body).hexdigest():
            return s3_error(400, "XAmzContentSHA256Mismatch", "payload hash mismatch")
        headers = {}
        for name in signed:
            vals = self.headers.get_all(name)
            if vals is None:
                return s3_error(403, "SignatureDoesNotMatch", "signed header %s absent" % name)
            headers[name] = ",".join(vals)
        req = AWSRequest(method=self.command, url="http://%s%s" % (self.headers["Host"], self.path),
                         headers=headers, data=body)
        req.context["timestamp"] = amz_date
        signer = ClaimedHeadersSigner(Credentials(auth["access_key"], secret), a.region, set(signed))
        canonical = signer.canonical_request(req)
        expected = signer.signature(signer.string_to_sign(req, canonical), req)
        if not hmac.compare_digest(expected, auth["signature"]):
            return s3_error(403, "SignatureDoesNotMatch",
                            "The request signature we calculated does not match the signature you "
                            "provided.")
        return None

    # ---- faults ------------------------------------------------------------
    def pick_rule(self, before_body=False):
        st = self.server.state
        with st.lock:
            for r in st.rules:
                if r.get("count", -1) == 0:
                    continue
                if (r.get("action") == "delay_body") != before_body:
                    continue
                if r.get("method") and r["method"] != self.command:
                    continue
                path, _, query = self.path.partition("?")
                if r.get("query") and r["query"] not in query:
                    continue
                if r.get("path") and r["path"] not in urllib.parse.unquote(path):
                    continue
                if r.get("suffix") and not urllib.parse.unquote(path).endswith(r["suffix"]):
                    continue
                if r.get("header") and self.headers.get(r["header"]) is None:
                    continue
                if r.get("every", 0) > 1:
                    r["_seen"] = r.get("_seen", 0) + 1
                    if r["_seen"] % r["every"]:
                        continue
                if r.get("count", -1) > 0:
                    r["count"] -= 1
                st.faults += 1
                return dict(r)
        return None

    # ---- the request ---------------------------------------------------------
    def handle_any(self):
        self.arrived = time.time()  # temporary credentials must be valid when a request arrives
        self.temporary = False       # verified here with a stand-in's key (set by verify)
        if not self.path.startswith("/__proxy/"):
            early = self.pick_rule(before_body=True)
            if early:
                time.sleep(early.get("stall_s", 1))
        body = self.read_body()
        if self.path.startswith("/__proxy/"):
            return self.control(body)
        st = self.server.state
        if not self.conn_no:
            with st.lock:
                st.connections += 1
                self.conn_no = st.connections
        entry = {"method": self.command, "path": self.path, "conn": self.conn_no,
                 "token": self.headers.get("x-amz-security-token"),
                 "range": self.headers.get("Range"),
                 "payload": self.headers.get("x-amz-content-sha256"),
                 "length": int(self.headers.get("Content-Length") or 0),
                 "received": len(body) if body is not None else None,
                 "access_key": (parse_auth(self.headers.get("Authorization")) or {}).get("access_key"),
                 "signed": (parse_auth(self.headers.get("Authorization")) or {}).get("signed", [])}
        with st.lock:
            st.requests += 1
            st.log.append(entry)
        if body is None:
            entry["result"] = "chunked"
            return self.send_simple(*s3_error(411, "MissingContentLength", "chunked body refused"))
        if len(body) < entry["length"]:
            entry["result"] = "incomplete"
            return self.send_simple(*s3_error(400, "IncompleteBody", "body shorter than "
                                              "Content-Length"), close=True)
        bad = self.verify(body)
        if bad:
            entry["result"] = "refused %d" % bad[0]
            if bad[0] == 403:
                with st.lock:
                    st.sig_failures += 1
            return self.send_simple(*bad)
        rule = self.pick_rule()
        if rule and rule.get("action", "status") == "status":
            entry["result"] = "fault %d" % rule.get("status", 503)
            return self.send_simple(*s3_error(rule.get("status", 503), rule.get("code", "SlowDown"),
                                              "injected"))
        if rule and rule["action"] == "stall":
            entry["result"] = "stall"
            time.sleep(rule.get("stall_s", 30))
            self.close_connection = True
            return
        if rule and rule["action"] == "reset":
            entry["result"] = "reset"
            if rule.get("forward"):  # single requests only (PUT, GET, ...), not multipart
                bucket, key = self.bucket_and_key()
                with st.write_lock:
                    if (self.headers.get("If-None-Match") == "*" and key
                            and self.exists(bucket, key)):
                        entry["result"] = "precondition failed"
                        return self.send_simple(*s3_error(412, "PreconditionFailed", "At least "
                                                          "one of the pre-conditions you "
                                                          "specified did not hold"))
                    self.forward_silently(body)
                entry["result"] = "forwarded, reset"
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if rule and rule["action"] == "hold":
            entry["result"] = "held"
            st.hold_event(rule.get("name", "")).wait()
        if self.s3_semantics(body, entry):
            return
        entry["result"] = "forwarded"
        self.forward(body, rule if rule and rule["action"] == "drop" else None)

    # ---- S3 semantics s3rver lacks -------------------------------------------
    def bucket_and_key(self):
        path = urllib.parse.unquote(self.path.partition("?")[0])
        bucket, _, key = path.lstrip("/").partition("/")
        return bucket, key

    def s3_semantics(self, body, entry):
        """Answer here what s3rver gets wrong; True when answered."""
        st = self.server.state
        q = urllib.parse.parse_qs(self.path.partition("?")[2], keep_blank_values=True)
        bucket, key = self.bucket_and_key()
        upload_id = (q.get("uploadId") or [None])[0]
        if self.command == "GET" and not key and "uploads" in q:
            return self.list_uploads(bucket, (q.get("prefix") or [""])[0], entry)
        if upload_id is not None:
            with st.lock:
                gone = upload_id in st.aborted or upload_id not in st.uploads
            if self.command == "DELETE":
                with st.lock:
                    st.uploads.pop(upload_id, None)
                    st.aborted.add(upload_id)
                entry["result"] = "aborted" if not gone else "abort unknown"
                if gone:
                    self.send_simple(*s3_error(404, "NoSuchUpload", "no such upload"))
                    return True
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True
            if gone:
                entry["result"] = "no such upload"
                self.send_simple(*s3_error(404, "NoSuchUpload", "no such upload"))
                return True
        conditional = (self.headers.get("If-None-Match") == "*" and key and
                       (self.command == "PUT" and "partNumber" not in q or
                        self.command == "POST" and upload_id is not None))
        if conditional:
            with st.write_lock:
                if self.exists(bucket, key):
                    entry["result"] = "precondition failed"
                    self.send_simple(*s3_error(412, "PreconditionFailed", "At least one of the "
                                               "pre-conditions you specified did not hold"))
                    return True
                entry["result"] = "forwarded"
                status = self.forward(body, None)
            if upload_id is not None and status == 200:
                with st.lock:
                    st.uploads.pop(upload_id, None)
            return True
        if self.command == "POST" and "uploads" in q:
            entry["result"] = "forwarded"
            status, data = self.forward(body, None, capture=True)
            m = data and data.split(b"<UploadId>")
            if status == 200 and m and len(m) > 1:
                uid = m[1].split(b"</UploadId>")[0].decode()
                with st.lock:
                    st.uploads[uid] = {"key": key, "initiated": time.time()}
            return True
        if self.command == "POST" and upload_id is not None:  # unconditional complete
            entry["result"] = "forwarded"
            if self.forward(body, None) == 200:
                with st.lock:
                    st.uploads.pop(upload_id, None)
            return True
        return False

    def exists(self, bucket, key):
        up = urllib.parse.urlsplit(self.server.state.args.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        try:
            conn.request("HEAD", "/%s/%s" % (bucket, urllib.parse.quote(key)))
            r = conn.getresponse()
            r.read()
            return r.status == 200
        finally:
            conn.close()

    def list_uploads(self, bucket, prefix, entry):
        st = self.server.state
        with st.lock:
            ups = sorted((u["key"], uid, u["initiated"]) for uid, u in st.uploads.items()
                         if u["key"].startswith(prefix))
        parts = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult>",
                 "<Bucket>%s</Bucket><Prefix>%s</Prefix><MaxUploads>1000</MaxUploads>"
                 "<IsTruncated>false</IsTruncated>" % (xml_escape(bucket), xml_escape(prefix))]
        for k, uid, t in ups:
            when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
            parts.append("<Upload><Key>%s</Key><UploadId>%s</UploadId><Initiated>%s</Initiated>"
                         "</Upload>" % (xml_escape(k), xml_escape(uid),
                                        when.strftime("%Y-%m-%dT%H:%M:%S.000Z")))
        parts.append("</ListMultipartUploadsResult>")
        entry["result"] = "listed uploads"
        self.send_simple(200, "".join(parts).encode())
        return True

    def forward_silently(self, body):
        """Send the request upstream and drop its answer (the client never sees it)."""
        up = urllib.parse.urlsplit(self.server.state.args.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP and k.lower() != "if-none-match"}
        try:
            conn.request(self.command, self.path, body=body if body else None, headers=headers)
            conn.getresponse().read()
        finally:
            conn.close()

    def forward(self, body, drop, capture=False):
        """Send the request upstream and its answer back; returns the status (and the
        body when capture)."""
        up = urllib.parse.urlsplit(self.server.state.args.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP and k.lower() != "if-none-match"}
        if getattr(self, "temporary", False):  # verified here; s3rver knows only its own key
            headers = {k: v for k, v in headers.items()
                       if k.lower() not in ("authorization", "x-amz-security-token")}
        try:
            conn.request(self.command, self.path, body=body if body else None, headers=headers)
            resp = conn.getresponse()
            self.send_response(resp.status)
            length = resp.getheader("Content-Length")
            data = None
            if (length is None or capture) and self.command != "HEAD":
                data = resp.read()
                length = str(len(data))
            captured = data
            for k, v in resp.getheaders():
                if k.lower() not in HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if self.command == "HEAD":
                return (resp.status, None) if capture else resp.status
            sent, limit = 0, (drop.get("after_bytes", 0) if drop else None)
            while True:
                chunk = data if data is not None else resp.read(256 * 1024)
                data = b"" if data is not None else None
                if not chunk:
                    break
                if limit is not None and sent + len(chunk) >= limit:
                    self.wfile.write(chunk[:limit - sent])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return (resp.status, None) if capture else resp.status
                self.wfile.write(chunk)
                sent += len(chunk)
            return (resp.status, captured) if capture else resp.status
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--access-key", default="S3RVER")
    p.add_argument("--secret-key", default="S3RVER")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--token", default="")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--issuer", default="", help="aws_standin.py URL: accept the keys it issued")
    args = p.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.state = State(args)
    print("PORT=%d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
