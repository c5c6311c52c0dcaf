#!/usr/bin/python3
"""Stand-ins for the AWS credential sources of common/aws_creds.c (test code, stdlib only).

Owns: one HTTP server playing three parts, each issuing short-lived credentials
(AccessKeyId/SecretAccessKey/SessionToken, `lifetime_s` seconds) that it remembers, so
tests/integration/s3proxy.py (--issuer URL) can accept a request only while its key is
one issued here, unexpired, not revoked, and sent with its own session token:
  STS       POST / (or GET /?Action=...) AssumeRoleWithWebIdentity: the form's
            WebIdentityToken must be `web_token` and RoleArn a known, unrevoked role;
            answers the STS XML (ErrorResponse 400 InvalidIdentityToken / 403 AccessDenied)
  IMDSv2    PUT /latest/api/token (needs X-aws-ec2-metadata-token-ttl-seconds), then
            GET /latest/meta-data/iam/security-credentials/[ROLE] with
            X-aws-ec2-metadata-token: a GET without a valid token is refused 401, as IMDSv2
            requires
  container GET /container/creds with Authorization: `container_auth`, else 401
Control (not AWS): GET /__standin/lookup?ak=KEY -> {"secret","token","expires","revoked",
"source"} or 404. Use in-process:  s = Standin(lifetime_s=20); url = s.start(); s.stop().
s.log lists (part, method, path, result) of every request; s.issued every key handed out.
"""
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Standin:
    def __init__(self, lifetime_s=20):
        self.lifetime_s = lifetime_s
        self.lock = threading.Lock()
        self.web_token = "jwt." + secrets.token_urlsafe(24)
        self.roles = {}                  # arn -> {"revoked": bool}
        self.imds_role = "snapworker-node-role"
        self.imds_tokens = set()
        self.container_auth = "ctr-" + secrets.token_urlsafe(16)
        self.creds = {}                  # access key -> dict
        self.issued = []                 # access keys in issue order
        self.log = []
        self.srv = None

    # ---- what tests call ------------------------------------------------------------
    def start(self):
        standin = self

        class H(Handler):
            st = standin

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return "http://127.0.0.1:%d" % self.srv.server_address[1]

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()

    def add_role(self, arn):
        with self.lock:
            self.roles[arn] = {"revoked": False}

    def revoke_role(self, arn):
        """STS refuses the role from now on and every key issued for it stops working."""
        with self.lock:
            self.roles[arn]["revoked"] = True
            for c in self.creds.values():
                if c["role"] == arn:
                    c["revoked"] = True

    def secrets_issued(self):
        """Every secret string handed out (to assert none leaks into logs or errors)."""
        with self.lock:
            out = [self.web_token, self.container_auth] + list(self.imds_tokens)
            for c in self.creds.values():
                out += [c["secret"], c["token"]]
            return out

    def parts(self):
        with self.lock:
            return [e[0] for e in self.log]

    # ---- internals ------------------------------------------------------------------
    def issue(self, source, role):
        ak = "ASIA" + secrets.token_hex(8).upper()
        c = {"secret": secrets.token_urlsafe(30), "token": "FQoG" + secrets.token_urlsafe(60),
             "expires": time.time() + self.lifetime_s, "revoked": False, "source": source,
             "role": role}
        with self.lock:
            self.creds[ak] = c
            self.issued.append(ak)
        return ak, c

    def note(self, part, method, path, result):
        with self.lock:
            self.log.append((part, method, path.split("?")[0], result))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    st = None

    def log_message(self, fmt, *a):
        pass

    def reply(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/__standin/lookup":
            ak = urllib.parse.parse_qs(query).get("ak", [""])[0]
            with self.st.lock:
                c = self.st.creds.get(ak)
                c = dict(c) if c else None
            return self.reply(200 if c else 404, json.dumps(c or {}))
        if path.startswith("/latest/"):
            return self.imds(path)
        if path == "/container/creds":
            return self.container()
        if path == "/" and "Action=" in query:
            return self.sts(urllib.parse.parse_qs(query))
        self.reply(404, "{}")

    def do_POST(self):
        form = urllib.parse.parse_qs(self.body().decode())
        if self.path.partition("?")[0] == "/":
            return self.sts(form)
        self.reply(404, "{}")

    def do_PUT(self):
        self.body()
        if self.path == "/latest/api/token":
            if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                self.st.note("imds", "PUT", self.path, "400 no ttl")
                return self.reply(400, "missing ttl", "text/plain")
            tok = "imds-" + secrets.token_urlsafe(24)
            with self.st.lock:
                self.st.imds_tokens.add(tok)
            self.st.note("imds", "PUT", self.path, "200")
            return self.reply(200, tok, "text/plain")
        self.reply(404, "{}")

    # ---- the three parts ------------------------------------------------------------
    def sts(self, form):
        st = self.st
        get = lambda k: (form.get(k) or [""])[0]
        action, arn = get("Action"), get("RoleArn")

        def err(status, code, msg):
            st.note("sts", self.command, self.path, "%d %s" % (status, code))
            self.reply(status, "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                       "<Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
                       "<RequestId>r-1</RequestId></ErrorResponse>" % (code, escape(msg)), "text/xml")

        if action != "AssumeRoleWithWebIdentity" or get("Version") != "2011-06-15":
            return err(400, "InvalidAction", "unsupported action")
        if not get("RoleSessionName"):
            return err(400, "ValidationError", "RoleSessionName missing")
        if get("WebIdentityToken") != st.web_token:
            return err(400, "InvalidIdentityToken", "token not valid")
        with st.lock:
            role = st.roles.get(arn)
        if role is None or role["revoked"]:
            return err(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        ak, c = st.issue("web", arn)
        st.note("sts", self.command, self.path, "200")
        self.reply(200, (
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
            "<AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:sa</SubjectFromWebIdentityToken>"
            "<AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROA:%s</AssumedRoleId></AssumedRoleUser>"
            "<Credentials><SessionToken>%s</SessionToken><SecretAccessKey>%s</SecretAccessKey>"
            "<Expiration>%s</Expiration><AccessKeyId>%s</AccessKeyId></Credentials>"
            "<Audience>sts.amazonaws.com</Audience></AssumeRoleWithWebIdentityResult>"
            "<ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>") % (
                escape(arn), escape(get("RoleSessionName")), escape(get("RoleSessionName")),
                escape(c["token"]), escape(c["secret"]), iso(c["expires"]), ak), "text/xml")

    def creds_json(self, source, role, imds):
        ak, c = self.st.issue(source, role)
        d = {"AccessKeyId": ak, "SecretAccessKey": c["secret"], "Token": c["token"],
             "Expiration": iso(c["expires"])}
        if imds:
            d.update({"Code": "Success", "Type": "AWS-HMAC", "LastUpdated": iso(time.time())})
        else:
            d["RoleArn"] = role
        return json.dumps(d)

    def imds(self, path):
        st = self.st
        with st.lock:
            ok = self.headers.get("X-aws-ec2-metadata-token") in st.imds_tokens
        if not ok:  # IMDSv2 only: no token, no answer
            st.note("imds", "GET", path, "401 no token")
            return self.reply(401, "", "text/plain")
        base = "/latest/meta-data/iam/security-credentials/"
        if path == base:
            st.note("imds", "GET", path, "200")
            return self.reply(200, st.imds_role, "text/plain")
        if path == base + st.imds_role:
            st.note("imds", "GET", path, "200")
            return self.reply(200, self.creds_json("imds", "instance:" + st.imds_role, True))
        st.note("imds", "GET", path, "404")
        self.reply(404, "", "text/plain")

    def container(self):
        st = self.st
        if self.headers.get("Authorization") != st.container_auth:
            st.note("container", "GET", self.path, "401")
            return self.reply(401, json.dumps({"code": "AccessDenied", "message": "bad token"}))
        st.note("container", "GET", self.path, "200")
        self.reply(200, self.creds_json("container", "pod-identity", False))
