#!/usr/bin/python3
"""A stand-in kube-apiserver for the kubernetes backend's tests: HTTPS REST on pods and
services, and pods/exec over WebSocket, with commands run as local processes.

Owns: a throwaway CA and certificates; bearer-token and client-certificate authentication;
GET/DELETE of pods and services from tables the test fills; the pods/exec WebSocket upgrade
and the channel protocols v5.channel.k8s.io and v4.channel.k8s.io; running each exec's argv
locally in a private mount namespace where the pod's folder is /workspace; injected faults;
a record of every request for assertions. Does not own: anything the worker decides.
Deliberately NOT implemented: SPDY (POST upgrades), tty and the resize channel, attach,
port-forward, the v1 and base64 channel protocols (a client offering only those gets the
bare 403 of a failed subprotocol handshake), watch/list/create, HTTP/2 (refused, below),
graceful termination (a deleted pod vanishes at once), RBAC (authenticated = allowed).

Run: /usr/bin/python3 k8s_standin.py --dir D [--port 0] [--mode v5|v4-only]
It prints URL=, CONTROL=, DIR=, CA=, CLIENT_CERT=, CLIENT_KEY= lines, then READY, and writes
them to D/env. SIGTERM (or stdin EOF with --exit-on-stdin-eof) stops it: every process an
exec started, detached ones included, is killed. Tests use the K8sStandin class at the end
of this file, which runs the CLI as a subprocess and drives the control endpoint.

Certificates (EC P-256, 2 days, made with the openssl CLI in D/pki at start):
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=k8s-standin-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign -keyout ca.key -out ca.crt
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj /CN=kube-apiserver -keyout server.key -out server.csr
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 2 \
        -extfile server.ext -out server.crt
      (server.ext: subjectAltName=IP:127.0.0.1,DNS:localhost, extendedKeyUsage=serverAuth)
    the client certificate likewise (/O=snapworker/CN=snapworker-test, clientAuth), and
    rogue.crt/rogue.key: a self-signed client certificate no one trusts.

Behaviour, and the API-server facts each part follows:
- TLS offers ALPN "h2", "http/1.1" in that order, as the Go API server does, so a client
  offering both gets h2. HTTP/2 is only spoken far enough to refuse it: on an h2
  connection (or after an HTTP/2 preface on any connection) every stream the client opens
  is reset with HTTP_1_1_REQUIRED and the connection ends with GOAWAY HTTP_1_1_REQUIRED.
  libcurl retries a plain REST request over HTTP/1.1 by itself; an exec upgrade written
  into an h2 connection (a client that forgot to force HTTP/1.1) fails at once. Each such
  connection is recorded as a request with method "PRI".
- Authentication: a verified client certificate or a known, unexpired bearer token; either
  one suffices (the API server's authenticators are a union). Otherwise 401 with a Status
  body. REST errors are metav1.Status JSON (kind/apiVersion/metadata/status/message/
  reason/details/code), JSON bodies end in a newline.
- DELETE returns 200 with the deleted object (pods: metadata.deletionTimestamp and
  deletionGracePeriodSeconds set); a DeleteOptions body whose preconditions.uid differs
  from the object's gives 409 Conflict; unknown names and wrong namespaces give 404
  NotFound with details {name, kind: the resource}.
- pods/exec: the pod is looked up (404) and the container checked (400: required when the
  pod has several, must exist) before the WebSocket handshake, as the REST handler does
  that first. Query values are decoded like Go's url.ParseQuery ('+' is a space, pairs
  with a raw ';' or a bad %-escape are dropped); every command= value is one argv item;
  stdin/stdout/stderr/tty are false only when absent, "false" (any case) or "0"; at least
  one stream is required (400). Handshake checks follow Go's x/net websocket server:
  non-GET 405, Upgrade/Connection/key problems 400, a version other than 13 gives 400 with
  "Sec-WebSocket-Version: 13"; these bodies are plain text and the connection closes.
  Only the FIRST Sec-WebSocket-Protocol header line is read, split on commas, and the
  first protocol the server accepts in the client's order wins. Mode "v5": a list that
  contains v5.channel.k8s.io is translated and gets v5 (the translator registers nothing
  else); a list without it is passed to the "kubelet", which accepts v4.channel.k8s.io.
  Mode "v4-only" (an old server): v4 only. No acceptable protocol: the exact bytes
  "HTTP/1.1 403 Forbidden\\r\\n\\r\\n" and close.
- After the 101 the server sends one empty message on the lowest writable channel (1, else
  2, else 3). Client frames must be masked (an unmasked one is answered with Close 1002);
  pings get pongs, continuation frames are joined, a Close is answered and ends the
  session, messages over 32 MiB end it with 1009. Channel 0 feeds the process's stdin;
  while the pipe is full the socket is not read (the real server blocks in the same way).
  On v5, the message {0xFF, 0x00} closes stdin; on v4 0xFF is just an unknown channel.
  stdout (1) and stderr (2) go out as single unmasked binary frames of at most 32 KiB of
  data plus the channel byte. When the process has exited and its output is drained, the
  status goes on channel 3 ({"metadata":{},"status":"Success"}, or the NonZeroExitCode
  Failure with details.causes[{"reason":"ExitCode","message":"N"}], or an InternalError
  with code 500 when the executable cannot be started), then Close 1000 and the TCP
  connection is closed at once without waiting for the client's Close.
- A process that is killed by signal S reports exit code 128+S, as container runtimes do.
  A process whose children keep stdout open: output is drained for up to 2 s after it
  exits, then the status is sent anyway.
- Closing the client side does not kill the remote process (nor does it on a real
  cluster); deleting the pod or stopping the stand-in does.

Processes: each exec runs `unshare --mount --propagation private -- python3 -I -S -c HELPER`
(plus --map-root-user when not root). The helper bind-mounts the pod's folder on /workspace
(created on the host if missing), reports its mount-namespace id, waits for a go byte, then
execs argv with PATH, HOME=/workspace, LANG=C.UTF-8 in /workspace. The stand-in holds an fd
on each namespace (so its id cannot be reused) and kills every process found in it when
the pod is deleted or the stand-in stops: detached dev servers included, nothing else.

Faults (control endpoint POST /faults, a list of rules; "match" = substring of the argv
joined by spaces, "count" = times it applies, -1 = always, the default):
    {"action": "drop", "bytes": N, "rst": false}  close TCP after N bytes of stdout data
    {"action": "stall", "bytes": N}       send nothing more after N bytes, keep the socket
    {"action": "no_status"}               after the output, Close 1000 without a status
    {"action": "exit", "code": N, "stderr": "text"}  do not run the command; exit N
    {"action": "delay_101", "seconds": S} wait before answering the upgrade
and POST /unauthorized_after {"k": K}: every authenticated API request after the K-th
(counted from now) gets 401.

Token rotation (POST /rotate {"dir": D, "token": B, "revoke": [A...], "match": M,
"method": X, "path": P, "nth": N}): the stand-in plays the kubelet too. The N-th API request
(default 1, counted from now) whose text "METHOD PATH ARGV..." (ARGV: an exec's command=
items joined by spaces) contains M, whose method is X and whose path is exactly P (each
only when given) triggers it, once: BEFORE that request is authenticated, D's `token`
is rewritten the way the kubelet's AtomicWriter updates a projected service-account volume
(kubelet_write below: a new ..TIMESTAMP folder, a ..data_tmp symlink to it renamed over
..data, the old folder removed; `token` stays a symlink to ..data/token), the tokens in
"revoke" are forgotten and B is accepted (no expiry). The triggering request then carries
the old token and gets 401 unless the client already switched. Its record has
"rotated": true. Every request record has "bearer": the first 12 hex digits of the SHA-256
of the bearer token it carried (token_id()), or null: which token was used, never the token.

Data kept in memory is capped (request bodies at 64 KiB,
records at 5000 each, queued output at 256 KiB; stdin is only counted and hashed).
"""
import argparse
import base64
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
MAX_HEADER = 64 * 1024
MAX_BODY = 1024 * 1024
MAX_RECORDED_BODY = 64 * 1024
MAX_RECORDS = 5000
MAX_WS_MESSAGE = 32 << 20          # x/net's DefaultMaxPayloadBytes
OUT_CHUNK = 32 * 1024              # io.Copy's buffer: one message per read
OUT_HIGH = 256 * 1024              # stop reading the pipes above this much queued output
DRAIN_AFTER_EXIT_S = 2.0
EXEC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WORKSPACE = "/workspace"

# Runs inside the new mount namespace: argv = [pod_dir, status_fd, go_fd, cmd...]
HELPER = r"""
import ctypes, os, sys
pod, sfd, gfd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
argv = sys.argv[4:]
def report(s):
    os.write(sfd, (s + "\n").encode())
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(pod.encode(), b"/workspace", None, 4096 | 16384, None) != 0:
    e = ctypes.get_errno()
    report("ERR mount %d %s" % (e, os.strerror(e)))
    os._exit(126)
report("NS " + os.readlink("/proc/self/ns/mnt"))
os.read(gfd, 1)
os.close(gfd)
os.chdir("/workspace")
os.set_inheritable(sfd, False)
env = {"PATH": @PATH@, "HOME": "/workspace", "LANG": "C.UTF-8"}
try:
    os.execvpe(argv[0], argv, env)
except OSError as e:
    report("ERR exec %d %s" % (e.errno, e.strerror))
    os._exit(127)
""".replace("@PATH@", repr(EXEC_PATH))


def now_rfc3339(offset=0.0):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def jdump(obj):
    return json.dumps(obj, separators=(",", ":"))


def status_body(code, reason, message, details=None):
    """A metav1.Status as the API server writes it for REST errors (fields in Go order)."""
    st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
          "message": message, "reason": reason}
    if details:
        st["details"] = details
    st["code"] = code
    return st


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(opcode, payload, fin=True, mask=None):
    """One RFC 6455 frame; unmasked unless mask (4 bytes) is given."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    mb = 0x80 if mask is not None else 0
    if n < 126:
        hdr = bytes([b0, mb | n])
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mb | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mb | 127, n)
    if mask is not None:
        return hdr + mask + ws_mask(payload, mask)
    return hdr + bytes(payload)


def ws_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (bytes(key) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def parse_bool(values):
    """apimachinery's Convert_Slice_string_To_bool: absent, "false" (any case), "0" = false."""
    if not values:
        return False
    v = values[0]
    return not (v.lower() == "false" or v == "0")


def _valid_escapes(s):
    i = 0
    while True:
        i = s.find("%", i)
        if i < 0:
            return True
        h = s[i + 1:i + 3]
        if len(h) != 2 or any(c not in "0123456789abcdefABCDEF" for c in h):
            return False
        i += 3


def parse_query(raw):
    """Go's url.ParseQuery: '&'-separated, '+' = space; pairs with ';' or bad escapes are
    dropped. Returns (dict name -> [values], list of dropped pairs)."""
    out, dropped = {}, []
    for pair in raw.split("&") if raw else []:
        if not pair:
            continue
        if ";" in pair or not _valid_escapes(pair):
            dropped.append(pair)
            continue
        k, _, v = pair.partition("=")
        k = urllib.parse.unquote_plus(k, errors="surrogateescape")
        v = urllib.parse.unquote_plus(v, errors="surrogateescape")
        out.setdefault(k, []).append(v)
    return out, dropped


# --------------------------------------------------------------------------- certificates

def make_pki(d):
    os.makedirs(d, exist_ok=True)

    def run(*args):
        p = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("openssl %s: %s" % (args[0], p.stderr.strip()))

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=k8s-standin-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", "ca.key", "-out", "ca.crt")
    exts = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                  "basicConstraints=CA:FALSE\n",
        "client": "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    }
    subj = {"server": "/CN=kube-apiserver", "client": "/O=snapworker/CN=snapworker-test"}
    for serial, name in ((2, "server"), (3, "client")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(exts[name])
        run("req", "-new", *ec, "-subj", subj[name], "-keyout", name + ".key", "-out", name + ".csr")
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(serial), "-days", "2", "-extfile", name + ".ext", "-out", name + ".crt")
    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=rogue", "-keyout", "rogue.key",
        "-out", "rogue.crt")
    return {k: os.path.join(d, k) for k in ("ca.crt", "server.crt", "server.key", "client.crt",
                                            "client.key", "rogue.crt", "rogue.key")}


# --------------------------------------------------------------------------- state

class Pod:
    def __init__(self, ns, name, uid, containers, folder):
        self.ns, self.name, self.uid = ns, name, uid
        self.containers = list(containers)
        self.dir = folder
        self.created = now_rfc3339()
        self.rv = 1
        self.namespaces = []   # [fd, (dev, ino)] of the mount namespaces of its execs
        self.procs = []        # Popen objects to reap

    def obj(self, deleting=None):
        meta = {"name": self.name, "namespace": self.ns, "uid": self.uid,
                "resourceVersion": str(self.rv), "creationTimestamp": self.created,
                "labels": {"app": "sandbox"}}
        if deleting is not None:
            meta["deletionTimestamp"] = now_rfc3339(deleting)
            meta["deletionGracePeriodSeconds"] = deleting
        return {"kind": "Pod", "apiVersion": "v1", "metadata": meta,
                "spec": {"containers": [{"name": c, "image": "standin/" + c}
                                        for c in self.containers],
                         "nodeName": "standin-node", "terminationGracePeriodSeconds": 30},
                "status": {"phase": "Running", "podIP": "10.0.0.2"}}


class Service:
    def __init__(self, ns, name, uid):
        self.ns, self.name, self.uid = ns, name, uid
        self.created = now_rfc3339()

    def obj(self):
        return {"kind": "Service", "apiVersion": "v1",
                "metadata": {"name": self.name, "namespace": self.ns, "uid": self.uid,
                             "resourceVersion": "1", "creationTimestamp": self.created},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                         "ports": [{"port": 3000, "targetPort": 3000, "protocol": "TCP"}]}}


def ns_id(fd_or_path):
    st = os.stat(fd_or_path)
    return (st.st_dev, st.st_ino)


def pids_in_namespaces(ids):
    found = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            if ns_id("/proc/%s/ns/mnt" % e) in ids:
                found.append(int(e))
        except OSError:
            pass
    return found


class State:
    def __init__(self, root, mode):
        self.root = root
        self.mode = mode
        self.lock = threading.Lock()
        self.tokens = {}            # token -> expiry (epoch s) or None
        self.pods = {}              # (ns, name) -> Pod
        self.services = {}          # (ns, name) -> Service
        self.faults = []
        self.unauth_after = None    # [K, count since set]
        self.rotation = None        # the /rotate rule, with "seen": matching requests so far
        self.deleted_pods = []      # deleted, their processes being killed
        self.reset_logs()

    def reset_logs(self):
        self.requests = []
        self.execs = []
        self.dropped = 0
        self.h2_rejected = 0
        self.tls_failures = 0
        self.seq = 0

    def add_record(self, lst, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            lst.append(rec)
            if len(lst) > MAX_RECORDS:
                del lst[0]
                self.dropped += 1

    def take_fault(self, action, argv_text):
        with self.lock:
            for r in self.faults:
                if r.get("action") != action or r.get("count", -1) == 0:
                    continue
                if r.get("match") and r["match"] not in argv_text:
                    continue
                if r.get("count", -1) > 0:
                    r["count"] -= 1
                return dict(r)
        return None

    def kill_pod(self, pod):
        """SIGKILL every process in the pod's exec namespaces, reap, drop the fds."""
        with self.lock:
            nss, pod.namespaces = pod.namespaces, []
            procs, pod.procs = pod.procs, []
        ids = {i for _fd, i in nss}
        for _ in range(5):
            pids = pids_in_namespaces(ids) if ids else []
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        for fd, _i in nss:
            os.close(fd)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def release_idle_namespace(self, pod, entry):
        """After an exec's process ended: forget its namespace if nothing lives in it."""
        if pids_in_namespaces({entry[1]}):
            return
        with self.lock:
            if entry in pod.namespaces:
                pod.namespaces.remove(entry)
                os.close(entry[0])


# --------------------------------------------------------------------------- HTTP plumbing

class Closed(Exception):
    pass


class Conn:
    """A buffered reader over a (TLS) socket with a stop-aware idle timeout."""

    def __init__(self, sock, srv):
        self.sock, self.srv = sock, srv
        self.buf = bytearray()

    def _fill(self, idle_limit=120.0):
        start = time.monotonic()
        while True:
            if self.srv.stopping.is_set():
                raise Closed()
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if time.monotonic() - start > idle_limit:
                    raise Closed()
                continue
            except (OSError, ssl.SSLError):
                raise Closed()
            if not data:
                raise Closed()
            self.buf += data
            return

    def read_head(self):
        while True:
            if self.buf[:3] == b"PRI":
                while len(self.buf) < 14:
                    self._fill()
                if bytes(self.buf[:14]) == b"PRI * HTTP/2.0":
                    return "h2"
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.buf[:i])
                del self.buf[:i + 4]
                return head
            if len(self.buf) > MAX_HEADER:
                return "too_big"
            self._fill()

    def read_exact(self, n, idle_limit=30.0):
        while len(self.buf) < n:
            self._fill(idle_limit=idle_limit)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > MAX_HEADER:
                raise Closed()
            self._fill(idle_limit=30.0)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            raise Closed()


class Request:
    def __init__(self, method, target, version, headers):
        self.method, self.target, self.version, self.headers = method, target, version, headers
        path, _, self.raw_query = target.partition("?")
        self.raw_path = path
        self.path = urllib.parse.unquote(path)
        self.query, self.dropped_query = parse_query(self.raw_query)
        self.body = b""

    def header(self, name):
        """First line of a header, as Go's Header.Get (names case-insensitive)."""
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None


def token_id(token):
    """What the request records keep of a bearer token: 12 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def kubelet_write(d, files):
    """Write files {name: text} into folder d as the kubelet's AtomicWriter updates a
    projected volume (the kubelet's atomic writer): the payload goes into a new
    ..YYYY_MM_DD_HH_MM_SS.NNNN folder, a ..data_tmp symlink to it is renamed over ..data
    (the one atomic step), the previous folder is removed, and each visible name is a
    symlink NAME -> ..data/NAME (made once). A reader that opens d/NAME gets the old or the
    new file whole, never a mix."""
    os.makedirs(d, exist_ok=True)
    data = os.path.join(d, "..data")
    old = os.readlink(data) if os.path.islink(data) else None
    ts = tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=d)
    os.chmod(ts, 0o755)
    for name, text in files.items():
        with open(os.path.join(ts, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(ts, name), 0o644)
    tmp = os.path.join(d, "..data_tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.basename(ts), tmp)
    os.rename(tmp, data)
    for name in files:
        link = os.path.join(d, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..data", name), link)
    if old:
        shutil.rmtree(os.path.join(d, old), ignore_errors=True)


def h2_frame(typ, flags, stream, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([typ, flags]) + \
        struct.pack("!I", stream) + payload


# --------------------------------------------------------------------------- the API server

class ApiServer:
    def __init__(self, state, pki, host="127.0.0.1", port=0):
        self.state = state
        self.pki = pki
        self.stopping = threading.Event()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["server.crt"], pki["server.key"])
        ctx.load_verify_locations(pki["ca.crt"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        self.ctx = ctx
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.lsock.listen(64)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.threads = set()
        self.tlock = threading.Lock()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        self.lsock.close()
        with self.state.lock:
            pods = list(self.state.pods.values())
            self.state.pods.clear()
            pods += self.state.deleted_pods
        for p in pods:
            self.state.kill_pod(p)
        deadline = time.monotonic() + 5
        for t in list(self.threads):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                raw, addr = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            t = threading.Thread(target=self._conn_thread, args=(raw, addr), daemon=True)
            with self.tlock:
                self.threads.add(t)
            t.start()

    def _conn_thread(self, raw, addr):
        try:
            self._serve(raw, addr)
        finally:
            with self.tlock:
                self.threads.discard(threading.current_thread())

    def _serve(self, raw, addr):
        raw.settimeout(10)
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.state.lock:
                self.state.tls_failures += 1
                self.state.last_tls_failure = str(e)
            raw.close()
            return
        sock.settimeout(0.5)
        alpn = sock.selected_alpn_protocol()
        cert = sock.getpeercert()
        user = None
        if cert:
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        user = v
        conn = Conn(sock, self)
        try:
            if alpn == "h2":
                self._reject_h2(conn, "ALPN h2")
                return
            while not self.stopping.is_set():
                head = conn.read_head()
                if head == "h2":
                    self._reject_h2(conn, "HTTP/2 preface on an http/1.1 connection")
                    return
                if head == "too_big":
                    conn.send(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                              b"Connection: close\r\nContent-Length: 0\r\n\r\n")
                    return
                if not self._one_request(conn, head, alpn, user):
                    return
        except Closed:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _reject_h2(self, conn, why):
        """Speak just enough HTTP/2 to refuse it: our SETTINGS, every stream the client opens
        reset with HTTP_1_1_REQUIRED (curl then retries a plain request over HTTP/1.1),
        then GOAWAY HTTP_1_1_REQUIRED. Anything that is not HTTP/2 after the preface (an
        HTTP/1.1 upgrade written into an h2 connection) ends it at once."""
        rec = {"t": time.time(), "h2": why, "streams_refused": 0, "garbage": None}
        with self.state.lock:
            self.state.h2_rejected += 1
        last = 0
        try:
            conn.send(h2_frame(0x4, 0, 0, b""))
            preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            if conn.read_exact(len(preface), idle_limit=0.5) != preface:
                rec["garbage"] = "no HTTP/2 preface"
            end = time.monotonic() + 2.0
            while rec["garbage"] is None and time.monotonic() < end:
                hdr = conn.read_exact(9, idle_limit=0.5)   # idle: the client has said it all
                ln = int.from_bytes(hdr[:3], "big")
                typ, flags = hdr[3], hdr[4]
                sid = int.from_bytes(hdr[5:9], "big") & 0x7FFFFFFF
                if ln > 16384 or typ > 9:
                    rec["garbage"] = hdr.decode("latin-1")
                    break
                payload = conn.read_exact(ln, idle_limit=0.5)
                if typ == 0x4 and not flags & 1:
                    conn.send(h2_frame(0x4, 1, 0, b""))
                elif typ == 0x6 and not flags & 1:
                    conn.send(h2_frame(0x6, 1, 0, payload))
                elif typ == 0x1:
                    last = max(last, sid)
                    rec["streams_refused"] += 1
                    conn.send(h2_frame(0x3, 0, sid, struct.pack("!I", 0xd)))
                elif typ == 0x7:
                    break
        except Closed:
            pass
        try:
            conn.send(h2_frame(0x7, 0, 0, struct.pack("!II", last, 0xd) +
                               b"k8s stand-in speaks HTTP/1.1 only (" + why.encode() + b")"))
            end = time.monotonic() + 0.5   # read what the client still sends so that closing
            while time.monotonic() < end:  # does not reset the connection before it reads this
                conn.buf.clear()
                conn._fill(idle_limit=0.5)
        except Closed:
            pass
        self.state.add_record(self.state.requests, {
            "method": "PRI", "path": "", "query": "", "params": {}, "headers": [], "body": "",
            "status": None, **rec})

    # ---- one HTTP/1.1 request; False = close the connection
    def _one_request(self, conn, head, alpn, user):
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            headers = []
            for ln in lines[1:]:
                k, sep, v = ln.partition(":")
                if not sep or not k or k != k.strip():
                    raise ValueError(ln)
                headers.append((k, v.strip(" \t")))
        except ValueError:
            conn.send(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            return False
        req = Request(method, target, version, headers)
        te = (req.header("Transfer-Encoding") or "").lower()
        if (req.header("Expect") or "").lower() == "100-continue":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if te == "chunked":
            body = bytearray()
            while True:
                size = int(conn.read_line().split(b";")[0] or b"0", 16)
                if size == 0:
                    while conn.read_line():
                        pass
                    break
                body += conn.read_exact(size)
                conn.read_exact(2)
                if len(body) > MAX_BODY:
                    conn.send(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                              b"Content-Length: 0\r\n\r\n")
                    return False
            req.body = bytes(body)
        else:
            n = int(req.header("Content-Length") or "0")
            if n > MAX_BODY:
                conn.send(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                          b"Content-Length: 0\r\n\r\n")
                return False
            req.body = conn.read_exact(n) if n else b""
        keep = version == "HTTP/1.1" and "close" not in (req.header("Connection") or "").lower()

        rec = {"t": time.time(), "method": method, "path": req.path, "query": req.raw_query,
               "params": req.query, "alpn": alpn, "client_cert": user,
               "headers": [[k, "<redacted>" if k.lower() == "authorization" else v]
                           for k, v in headers],
               "body": req.body[:MAX_RECORDED_BODY].decode("utf-8", "replace")}
        if req.dropped_query:
            rec["dropped_query"] = req.dropped_query
        auth = req.header("Authorization") or ""
        rec["bearer"] = token_id(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
        self.state.add_record(self.state.requests, rec)
        self._maybe_rotate(req, rec)

        who = self._authenticate(req, user)
        rec["user"] = who
        if who is None:
            self._json(conn, rec, 401, status_body(401, "Unauthorized", "Unauthorized"), keep)
            return keep

        parts = [p for p in req.path.split("/")]
        # ['', 'api', 'v1', 'namespaces', ns, kind, name, (sub)]
        if len(parts) in (7, 8) and parts[1:4] == ["api", "v1", "namespaces"] and \
                parts[5] in ("pods", "services"):
            ns, kind, name = parts[4], parts[5], parts[6]
            sub = parts[7] if len(parts) == 8 else None
            if sub is None:
                return self._rest(conn, req, rec, ns, kind, name, keep)
            if kind == "pods" and sub == "exec":
                return self._exec(conn, req, rec, ns, name)
        self._json(conn, rec, 404, status_body(404, "NotFound",
                                               "the server could not find the requested resource",
                                               {}), keep)
        return keep

    def _maybe_rotate(self, req, rec):
        """The /rotate rule: on its N-th matching request, rewrite the token file as the
        kubelet does and switch the accepted tokens, before this request is authenticated."""
        st = self.state
        text = " ".join([req.method, req.path] + req.query.get("command", []))
        with st.lock:
            r = st.rotation
            if r is None or (r.get("match") and r["match"] not in text) or \
                    (r.get("method") and r["method"] != req.method) or \
                    (r.get("path") and r["path"] != req.path):
                return
            r["seen"] += 1
            if r["seen"] < int(r.get("nth") or 1):
                return
            st.rotation = None
            kubelet_write(r["dir"], {"token": r["token"]})
            for old in r.get("revoke") or ():
                st.tokens.pop(old, None)
            st.tokens[r["token"]] = None
            rec["rotated"] = True

    def _authenticate(self, req, cert_user):
        st = self.state
        who = None
        if cert_user:
            who = "cert:" + cert_user
        auth = req.header("Authorization") or ""
        if who is None and auth[:7].lower() == "bearer ":
            tok = auth[7:].strip()
            with st.lock:
                if tok in st.tokens:
                    exp = st.tokens[tok]
                    if exp is None or exp > time.time():
                        who = "token:" + hashlib.sha256(tok.encode()).hexdigest()[:12]
        if who is not None:
            with st.lock:
                if st.unauth_after is not None:
                    st.unauth_after[1] += 1
                    if st.unauth_after[1] > st.unauth_after[0]:
                        who = None
        return who

    def _json(self, conn, rec, code, obj, keep=True, extra=()):
        body = (jdump(obj) + "\n").encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                  404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
                  500: "Internal Server Error"}.get(code, "Status")
        head = ["HTTP/1.1 %d %s" % (code, reason), "Audit-Id: " + str(uuid.uuid4()),
                "Cache-Control: no-cache, private", "Content-Type: application/json",
                "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
                "Content-Length: %d" % len(body)]
        head += list(extra)
        if not keep:
            head.append("Connection: close")
        rec["status"] = code
        conn.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def _raw(self, conn, rec, code, data):
        rec["status"] = code
        conn.send(data)

    # ---- REST
    def _rest(self, conn, req, rec, ns, kind, name, keep):
        st = self.state
        table = st.pods if kind == "pods" else st.services
        if req.method not in ("GET", "DELETE"):
            self._json(conn, rec, 405, status_body(405, "MethodNotAllowed",
                                                   "the server does not allow this method on the "
                                                   "requested resource", {}), keep)
            return keep
        not_found = status_body(404, "NotFound", '%s "%s" not found' % (kind, name),
                                {"name": name, "kind": kind})
        if req.method == "GET":
            with st.lock:
                o = table.get((ns, name))
                obj = o.obj() if o else None
            self._json(conn, rec, 200 if obj else 404, obj or not_found, keep)
            return keep
        opts = {}
        if req.body.strip():
            try:
                opts = json.loads(req.body)
                if not isinstance(opts, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                self._json(conn, rec, 400, status_body(400, "BadRequest",
                                                       "invalid DeleteOptions: %s" % e), keep)
                return keep
        grace = opts.get("gracePeriodSeconds")
        if grace is None and "gracePeriodSeconds" in req.query:
            try:
                grace = int(req.query["gracePeriodSeconds"][0])
            except ValueError:
                grace = None
        if grace is None:
            grace = 30
        pre = (opts.get("preconditions") or {}).get("uid")
        with st.lock:
            o = table.get((ns, name))
            if o is None:
                obj, code = not_found, 404
            elif pre is not None and pre != o.uid:
                obj, code = status_body(
                    409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": Precondition failed: UID in '
                    'precondition: %s, UID in object meta: %s' % (kind, name, pre, o.uid),
                    {"name": name, "kind": kind}), 409
            else:
                del table[(ns, name)]
                if kind == "pods":
                    o.rv += 1
                    obj = o.obj(deleting=grace)
                    st.deleted_pods.append(o)
                else:
                    obj = o.obj()
                code = 200
        self._json(conn, rec, code, obj, keep)
        if code == 200 and kind == "pods":
            threading.Thread(target=self._reap_deleted, args=(o,), daemon=True).start()
        return keep

    def _reap_deleted(self, pod):
        self.state.kill_pod(pod)
        with self.state.lock:
            if pod in self.state.deleted_pods:
                self.state.deleted_pods.remove(pod)

    # ---- pods/exec up to the 101
    def _exec(self, conn, req, rec, ns, name):
        st = self.state
        q = req.query
        argv = q.get("command", [])
        flags = {f: parse_bool(q.get(f)) for f in ("stdin", "stdout", "stderr", "tty")}
        proto_line = req.header("Sec-WebSocket-Protocol")
        offered = [p.strip() for p in proto_line.split(",")] if proto_line is not None else []
        ex = {"t": time.time(), "namespace": ns, "pod": name, "argv": argv,
              "container": (q.get("container") or [None])[0], "flags": flags,
              "query": req.raw_query, "offered": offered, "protocol": None, "http_status": None,
              "headers": rec["headers"], "stdin_bytes": 0, "stdin_sha256": None,
              "stdin_closed": False, "stdout_bytes": 0, "stderr_bytes": 0, "stdout_messages": 0,
              "max_message": 0, "exit_code": None, "status": None, "end": None, "done": False,
              "fault": None, "pings": 0, "client_close_code": None}
        st.add_record(st.execs, ex)

        def fail(code, reason, msg, details=None, extra=()):
            ex["http_status"] = code
            ex["done"] = True
            ex["end"] = "rejected"
            self._json(conn, rec, code, status_body(code, reason, msg, details), False, extra)
            return False

        def xnet(code, text, extra=""):  # x/net's plain handshake errors, then close
            ex["http_status"] = code
            ex["done"] = True
            ex["end"] = "rejected"
            self._raw(conn, rec, code, ("HTTP/1.1 %d %s\r\n%s\r\n%s" % (
                code, {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed"}[code],
                extra, text)).encode())
            return False

        if req.method not in ("GET", "POST"):
            return fail(405, "MethodNotAllowed",
                        "the server does not allow this method on the requested resource", {})
        with st.lock:
            pod = st.pods.get((ns, name))
        if pod is None:
            return fail(404, "NotFound", 'pods "%s" not found' % name, {"name": name, "kind": "pods"})
        container = ex["container"]
        if not container:
            if len(pod.containers) != 1:
                return fail(400, "BadRequest",
                            "a container name must be specified for pod %s, choose one of: [%s]"
                            % (name, " ".join(pod.containers)))
            container = ex["container"] = pod.containers[0]
        elif container not in pod.containers:
            return fail(400, "BadRequest", "container %s is not valid for pod %s" % (container, name))
        if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
            return fail(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")
        if flags["tty"]:
            return fail(400, "BadRequest", "tty is not supported by the k8s stand-in")
        if not argv:
            return fail(400, "BadRequest", "command: Required value")
        up = req.header("Upgrade")
        if not up:
            return fail(400, "BadRequest", "Upgrade request required")
        if up.lower() != "websocket":
            return fail(400, "BadRequest", "the k8s stand-in supports websocket upgrades only "
                                           "(got %r)" % up)
        if req.method != "GET":
            return xnet(405, "bad method")
        conn_tokens = [t.strip().lower() for t in (req.header("Connection") or "").split(",")]
        if "upgrade" not in conn_tokens:
            return xnet(400, "not websocket protocol")
        key = req.header("Sec-WebSocket-Key") or ""
        if not key:
            return xnet(400, "mismatch challenge/response")
        if req.header("Sec-WebSocket-Version") != "13":
            return xnet(400, "missing or bad WebSocket Version", "Sec-WebSocket-Version: 13\r\n")
        with st.lock:
            mode = st.mode
        chosen = None
        if mode == "v5" and V5 in offered:
            chosen = V5                       # the translator registers v5 only
        else:
            for p in offered:                 # the "kubelet": v4 (binary) only here
                if p == V4:
                    chosen = p
                    break
        if chosen is None:
            ex["http_status"] = 403
            ex["done"] = True
            ex["end"] = "rejected"
            self._raw(conn, rec, 403, b"HTTP/1.1 403 Forbidden\r\n\r\n")
            return False
        argv_text = " ".join(argv)
        delay = st.take_fault("delay_101", argv_text)
        if delay:
            ex["fault"] = delay
            end = time.monotonic() + float(delay.get("seconds", 1))
            while time.monotonic() < end and not self.stopping.is_set():
                time.sleep(0.05)
        ex["protocol"] = chosen
        ex["http_status"] = 101
        rec["status"] = 101
        ready_ch = 1 if flags["stdout"] else 2 if flags["stderr"] else 3
        resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n"
                % (ws_accept(key), chosen)).encode()
        conn.send(resp + ws_frame(2, bytes([ready_ch])))
        ExecSession(self, conn, ex, pod, container, argv, flags, chosen).run()
        return False


# --------------------------------------------------------------------------- after the 101

class ExecSession:
    def __init__(self, srv, conn, ex, pod, container, argv, flags, proto):
        self.srv, self.state = srv, srv.state
        self.sock = conn.sock
        self.inbuf = bytearray(conn.buf)   # bytes the client sent right after its request
        conn.buf.clear()
        self.ex, self.pod, self.container = ex, pod, container
        self.argv, self.flags, self.v5 = argv, flags, proto == V5
        self.out = bytearray()
        self.pending_len = None
        self.msg = None
        self.stdin_buf = bytearray()
        self.stdin_close_pending = False
        self.stdin_fd = None
        self.sha = hashlib.sha256()
        self.pipes = {}
        self.proc = None
        self.ns_entry = None
        self.exec_error = None
        self.exited_at = None
        self.exit_code = None
        self.phase = "run"      # run | closing | drop | stall | done
        self.end = None
        self.cut = None         # (action, bytes, rule)
        self.stdout_sent = 0
        self.client_gone = False
        self.no_status = None

    def upd(self, **kw):
        with self.state.lock:
            self.ex.update(kw)

    # ---- process
    def start_process(self):
        argv_text = " ".join(self.argv)
        st = self.state
        for action in ("drop", "stall"):
            r = st.take_fault(action, argv_text)
            if r:
                self.cut = (action, int(r.get("bytes", 0)), r)
                self.upd(fault=r)
                break
        self.no_status = st.take_fault("no_status", argv_text)
        if self.no_status:
            self.upd(fault=self.no_status)
        argv = self.argv
        ex_rule = st.take_fault("exit", argv_text)
        if ex_rule:
            self.upd(fault=ex_rule)
            argv = ["/bin/sh", "-c", 'printf "%s\\n" "$1" >&2; exit "$2"', "sh",
                    ex_rule.get("stderr", "k8s stand-in: injected failure"),
                    str(int(ex_rule.get("code", 1)))]
        s_r, s_w = os.pipe()
        g_r, g_w = os.pipe()
        pre = ["unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            pre.insert(1, "--map-root-user")
        cmd = pre + ["--", sys.executable, "-I", "-S", "-c", HELPER, self.pod.dir, str(s_w),
                     str(g_r), *argv]
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE if self.flags["stdin"] else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.flags["stdout"] else subprocess.DEVNULL,
                stderr=subprocess.PIPE if self.flags["stderr"] else subprocess.DEVNULL,
                pass_fds=(s_w, g_r), start_new_session=True, env={"PATH": EXEC_PATH})
        finally:
            os.close(s_w)
            os.close(g_r)
        with st.lock:
            self.pod.procs.append(self.proc)
        sfile = os.fdopen(s_r, "rb")
        try:
            ready, _, _ = select.select([sfile], [], [], 15)
            line = sfile.readline().decode(errors="replace").strip() if ready else ""
            if line.startswith("NS "):
                fd = os.open("/proc/%d/ns/mnt" % self.proc.pid, os.O_RDONLY)
                self.ns_entry = [fd, ns_id(fd)]
                with st.lock:
                    self.pod.namespaces.append(self.ns_entry)
                os.write(g_w, b"g")
                ready, _, _ = select.select([sfile], [], [], 15)
                line = sfile.readline().decode(errors="replace").strip() if ready else ""
            if line.startswith("ERR"):
                self.exec_error = line
            elif line or self.ns_entry is None:
                self.exec_error = "ERR helper %r" % line
        finally:
            os.close(g_w)
            sfile.close()
        if self.exec_error:
            self.proc.wait()
        if self.proc.stdin is not None:
            self.stdin_fd = self.proc.stdin.fileno()
            os.set_blocking(self.stdin_fd, False)
        for f, ch in ((self.proc.stdout, 1), (self.proc.stderr, 2)):
            if f is not None:
                os.set_blocking(f.fileno(), False)
                self.pipes[f.fileno()] = ch

    # ---- the loop
    def run(self):
        try:
            self.sock.setblocking(False)
            self.start_process()
            if self.cut and self.cut[1] == 0:
                self.trigger_cut()
            self.loop()
        except Exception as e:  # a bug here must not take the server down; record it
            self.end = self.end or "error: %r" % e
        finally:
            self.finish_records()

    def loop(self):
        while True:
            if self.srv.stopping.is_set():
                self.end = self.end or "server stopping"
                return
            if self.phase == "run" and self.proc_done():
                self.queue_end()
            if self.phase in ("closing", "drop") and not self.out:
                self.close_tcp(graceful=self.phase == "closing")
                return
            if self.client_gone:
                self.end = self.end or "client gone"
                return
            rl, wl = [], []
            read_sock = self.phase in ("run", "stall") and not self.stdin_buf
            if read_sock:
                if self.sock.pending():
                    self.read_sock()
                    continue
                rl.append(self.sock)
            if self.out:
                wl.append(self.sock)
            if self.phase == "run" and len(self.out) < OUT_HIGH:
                rl.extend(self.pipes)
            if self.stdin_buf and self.stdin_fd is not None:
                wl.append(self.stdin_fd)
            r, w, _ = select.select(rl, wl, [], 0.1)
            if self.stdin_fd is not None and self.stdin_fd in w:
                self.write_stdin()
            for fd in r:
                if fd is self.sock:
                    self.read_sock()
                elif fd in self.pipes and self.phase == "run":
                    self.read_pipe(fd)
            if self.sock in w:
                self.write_sock()

    def proc_done(self):
        if self.exited_at is None:
            rc = self.proc.poll()
            if rc is None:
                return False
            self.exited_at = time.monotonic()
            self.exit_code = 128 - rc if rc < 0 else rc
        if self.pipes and time.monotonic() - self.exited_at < DRAIN_AFTER_EXIT_S:
            return False
        for fd in list(self.pipes):
            self.close_pipe(fd)
        return True

    def close_pipe(self, fd):
        ch = self.pipes.pop(fd)
        f = self.proc.stdout if ch == 1 else self.proc.stderr
        f.close()

    def queue_end(self):
        if self.exec_error:
            what = self.exec_error.split(" ", 3)
            detail = what[3] if len(what) > 3 else self.exec_error
            msg = ("error executing command in container: failed to exec in container: failed "
                   "to start exec: OCI runtime exec failed: exec failed: unable to start "
                   "container process: exec: \"%s\": %s: unknown" % (
                       self.argv[0], "executable file not found in $PATH"
                       if "No such file" in detail else detail))
            status = {"metadata": {}, "status": "Failure",
                      "message": "Internal error occurred: " + msg, "reason": "InternalError",
                      "details": {"causes": [{"message": msg}]}, "code": 500}
        elif self.exit_code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            inner = ("command terminated with exit code %d" % self.exit_code if self.v5 else
                     "error executing command [%s], exit code %d" % (" ".join(self.argv),
                                                                    self.exit_code))
            status = {"metadata": {}, "status": "Failure",
                      "message": "command terminated with non-zero exit code: " + inner,
                      "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode",
                                              "message": str(self.exit_code)}]}}
        if self.no_status:
            self.end = "closed without status (fault)"
        else:
            self.out += ws_frame(2, b"\x03" + jdump(status).encode())
            self.upd(status=status)
            self.end = "status sent"
        self.out += ws_frame(8, struct.pack("!H", 1000))
        self.phase = "closing"

    def trigger_cut(self):
        action = self.cut[0]
        self.phase = "drop" if action == "drop" else "stall"
        self.end = "dropped after %d stdout bytes (fault)" % self.stdout_sent if action == "drop" \
            else "stalled after %d stdout bytes (fault)" % self.stdout_sent

    def read_pipe(self, fd):
        try:
            data = os.read(fd, OUT_CHUNK)
        except BlockingIOError:
            return
        if not data:
            self.close_pipe(fd)
            return
        ch = self.pipes[fd]
        trigger = False
        if ch == 1 and self.cut is not None:
            room = self.cut[1] - self.stdout_sent
            if len(data) >= room:
                data, trigger = data[:room], True
        if data:
            self.out += ws_frame(2, bytes([ch]) + data)
            with self.state.lock:
                if ch == 1:
                    self.stdout_sent += len(data)
                    self.ex["stdout_bytes"] += len(data)
                    self.ex["stdout_messages"] += 1
                else:
                    self.ex["stderr_bytes"] += len(data)
                self.ex["max_message"] = max(self.ex["max_message"], len(data))
        if trigger:
            self.trigger_cut()

    def write_sock(self):
        n = self.pending_len or min(len(self.out), 65536)
        try:
            sent = self.sock.send(self.out[:n])
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self.pending_len = n
            return
        except (OSError, ssl.SSLError):
            self.client_gone = True
            return
        self.pending_len = None
        del self.out[:sent]

    def read_sock(self):
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ssl.SSLError):
            self.client_gone = True
            return
        if not data:
            self.client_gone = True
            return
        self.inbuf += data
        self.parse_frames()

    def protocol_error(self, code, why):
        self.upd(protocol_error=why)
        self.end = "protocol error: " + why
        if self.phase != "stall":
            self.out += ws_frame(8, struct.pack("!H", code) + why.encode()[:100])
        self.phase = "closing"
        self.inbuf.clear()

    def parse_frames(self):
        buf = self.inbuf
        while len(buf) >= 2 and not self.stdin_buf and self.phase in ("run", "stall"):
            b0, b1 = buf[0], buf[1]
            fin, rsv, op = b0 & 0x80, b0 & 0x70, b0 & 0x0F
            masked, ln, pos = b1 & 0x80, b1 & 0x7F, 2
            if ln == 126:
                if len(buf) < 4:
                    return
                ln, pos = struct.unpack("!H", buf[2:4])[0], 4
            elif ln == 127:
                if len(buf) < 10:
                    return
                ln, pos = struct.unpack("!Q", buf[2:10])[0], 10
            if not masked:
                return self.protocol_error(1002, "client frame not masked")
            if rsv:
                return self.protocol_error(1002, "reserved bits set")
            if ln > MAX_WS_MESSAGE or (self.msg is not None and len(self.msg) + ln > MAX_WS_MESSAGE):
                return self.protocol_error(1009, "message too big")
            if len(buf) < pos + 4 + ln:
                return
            payload = ws_mask(buf[pos + 4:pos + 4 + ln], buf[pos:pos + 4])
            del buf[:pos + 4 + ln]
            if op >= 8:
                if not fin or ln > 125:
                    return self.protocol_error(1002, "bad control frame")
                if op == 8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    self.upd(client_close_code=code)
                    self.end = "client sent close %s" % code
                    if self.phase != "stall":
                        self.out += ws_frame(8, payload[:2])
                    self.phase = "closing"
                    return
                if op == 9:
                    with self.state.lock:
                        self.ex["pings"] += 1
                    if self.phase != "stall":
                        self.out += ws_frame(10, payload)
                elif op != 10:
                    return self.protocol_error(1002, "unknown opcode %d" % op)
                continue
            if op == 0:
                if self.msg is None:
                    return self.protocol_error(1002, "continuation without a message")
                self.msg += payload
            elif op in (1, 2):
                if self.msg is not None:
                    return self.protocol_error(1002, "new message inside a fragmented one")
                self.msg = bytearray(payload)
            else:
                return self.protocol_error(1002, "unknown opcode %d" % op)
            if fin:
                m, self.msg = self.msg, None
                self.deliver(m)

    def deliver(self, m):
        if not m:
            return
        ch, data = m[0], m[1:]
        if self.v5 and ch == 0xFF:
            if len(m) == 2 and m[1] == 0:
                self.upd(stdin_closed=True)
                self.stdin_close_pending = True
                self.maybe_close_stdin()
            return
        if ch != 0 or not data:
            return
        with self.state.lock:
            self.ex["stdin_bytes"] += len(data)
        self.sha.update(data)
        if self.stdin_fd is not None:
            self.stdin_buf += data

    def write_stdin(self):
        try:
            n = os.write(self.stdin_fd, self.stdin_buf[:65536])
            del self.stdin_buf[:n]
        except BlockingIOError:
            return
        except OSError:  # the process closed its stdin: the rest is lost, as in a pod
            self.stdin_buf.clear()
            self.close_stdin()
        if not self.stdin_buf:
            self.maybe_close_stdin()
            self.parse_frames()   # frames that waited behind the full pipe

    def maybe_close_stdin(self):
        if self.stdin_close_pending and not self.stdin_buf:
            self.close_stdin()

    def close_stdin(self):
        if self.stdin_fd is not None:
            self.stdin_fd = None
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def close_tcp(self, graceful):
        try:
            if self.cut and self.cut[2].get("rst") and not graceful:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if graceful:
                try:
                    self.sock.unwrap()   # close_notify, as Go's tls.Conn.Close sends; no wait
                except (ssl.SSLError, OSError, ValueError):
                    pass
        except OSError:
            pass
        self.phase = "done"

    def finish_records(self):
        self.close_stdin()
        for fd in list(self.pipes):
            self.close_pipe(fd)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc is not None and self.exit_code is None:
            rc = self.proc.poll()
            if rc is not None:
                self.exit_code = 128 - rc if rc < 0 else rc
        self.upd(exit_code=self.exit_code, end=self.end, done=True,
                 stdin_sha256=self.sha.hexdigest(), exec_error=self.exec_error)
        if self.ns_entry is not None and self.proc is not None and self.proc.poll() is not None:
            self.state.release_idle_namespace(self.pod, self.ns_entry)


# --------------------------------------------------------------------------- control endpoint

class Control(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "k8s-standin-control"

    def log_message(self, fmt, *a):
        pass

    def reply(self, code, obj):
        body = jdump(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        st = self.server.state
        if self.path == "/state":
            with st.lock:
                body = {"requests": st.requests, "execs": st.execs, "dropped": st.dropped,
                        "h2_rejected": st.h2_rejected, "tls_failures": st.tls_failures,
                        "mode": st.mode, "faults": st.faults,
                        "pods": [{"namespace": p.ns, "name": p.name, "uid": p.uid, "dir": p.dir}
                                 for p in st.pods.values()]}
                data = jdump(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data.encode())))
            self.end_headers()
            self.wfile.write(data.encode())
            return
        self.reply(404, {"error": "unknown"})

    def do_POST(self):
        st = self.server.state
        n = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(n) or b"null")
        except ValueError as e:
            return self.reply(400, {"error": str(e)})
        p = self.path
        if p == "/tokens":
            with st.lock:
                st.tokens[body["token"]] = body.get("expires")
            return self.reply(200, {})
        if p == "/tokens/remove":
            with st.lock:
                st.tokens.pop(body["token"], None)
            return self.reply(200, {})
        if p == "/pods":
            ns, name = body.get("namespace", "default"), body["name"]
            folder = os.path.join(st.root, "pods", ns, name)
            os.makedirs(folder, exist_ok=True)
            pod = Pod(ns, name, body.get("uid") or str(uuid.uuid4()),
                      body.get("containers") or ["sandbox", "file-sync"], folder)
            with st.lock:
                old = st.pods.get((ns, name))
                st.pods[(ns, name)] = pod
            if old:
                st.kill_pod(old)
            return self.reply(200, {"namespace": ns, "name": name, "uid": pod.uid, "dir": folder})
        if p == "/pods/remove":
            with st.lock:
                pod = st.pods.pop((body.get("namespace", "default"), body["name"]), None)
            if pod:
                st.kill_pod(pod)
            return self.reply(200, {"removed": pod is not None})
        if p == "/services":
            ns = body.get("namespace", "default")
            svc = Service(ns, body["name"], body.get("uid") or str(uuid.uuid4()))
            with st.lock:
                st.services[(ns, body["name"])] = svc
            return self.reply(200, {"uid": svc.uid})
        if p == "/mode":
            if body.get("mode") not in ("v5", "v4-only"):
                return self.reply(400, {"error": "mode is v5 or v4-only"})
            with st.lock:
                st.mode = body["mode"]
            return self.reply(200, {})
        if p == "/faults":
            with st.lock:
                st.faults = list(body or [])
            return self.reply(200, {})
        if p == "/unauthorized_after":
            with st.lock:
                st.unauth_after = None if body.get("k") is None else [int(body["k"]), 0]
            return self.reply(200, {})
        if p == "/rotate":
            if not body or not body.get("dir") or not body.get("token"):
                return self.reply(400, {"error": "dir and token are required"})
            with st.lock:
                st.rotation = dict(body, seen=0)
            return self.reply(200, {})
        if p == "/reset":
            with st.lock:
                st.reset_logs()
                st.faults = []
                st.unauth_after = None
                st.rotation = None
            return self.reply(200, {})
        if p == "/saw":
            return self.reply(200, {"places": saw(st, body["secret"])})
        self.reply(404, {"error": "unknown"})


def saw(st, secret):
    """Where a secret appeared in what clients sent (Authorization values are not kept)."""
    places = []
    with st.lock:
        reqs = [dict(r) for r in st.requests]
        execs = [dict(e) for e in st.execs]
    for r in reqs:
        where = "request %d %s %s" % (r["seq"], r["method"], r["path"])
        if secret in r["path"]:
            places.append(where + ": path")
        if secret in r["query"] or any(secret in v for vs in r["params"].values() for v in vs):
            places.append(where + ": query")
        for k, v in r["headers"]:
            if secret in k or secret in v:
                places.append(where + ": header " + k)
        if secret in r["body"]:
            places.append(where + ": body")
    for e in execs:
        for i, a in enumerate(e["argv"]):
            if secret in a:
                places.append("exec %d %s: argv[%d]" % (e["seq"], e["pod"], i))
    return places


# --------------------------------------------------------------------------- CLI

def main():
    ap = argparse.ArgumentParser(description="stand-in kube-apiserver for tests")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--mode", choices=("v5", "v4-only"), default="v5")
    ap.add_argument("--exit-on-stdin-eof", action="store_true")
    a = ap.parse_args()
    root = os.path.abspath(a.dir)
    os.makedirs(root, exist_ok=True)
    if not os.path.isdir(WORKSPACE):
        try:
            os.makedirs(WORKSPACE, exist_ok=True)   # the bind-mount target (we run as root)
        except OSError as e:
            print("k8s stand-in: %s is needed as a mount point and cannot be made: %s"
                  % (WORKSPACE, e), file=sys.stderr)
            return 2
    pki = make_pki(os.path.join(root, "pki"))
    state = State(root, a.mode)
    api = ApiServer(state, pki, port=a.port)
    ctl = ThreadingHTTPServer(("127.0.0.1", a.control_port), Control)
    ctl.daemon_threads = True
    ctl.state = state
    threading.Thread(target=ctl.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    api.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if a.exit_on_stdin_eof:
        def watch():
            while sys.stdin.buffer.read(4096):
                pass
            done.set()
        threading.Thread(target=watch, daemon=True).start()
    lines = ["URL=https://127.0.0.1:%d" % api.port,
             "CONTROL=http://127.0.0.1:%d" % ctl.server_address[1], "DIR=" + root,
             "CA=" + pki["ca.crt"], "CLIENT_CERT=" + pki["client.crt"],
             "CLIENT_KEY=" + pki["client.key"], "ROGUE_CERT=" + pki["rogue.crt"],
             "ROGUE_KEY=" + pki["rogue.key"]]
    with open(os.path.join(root, "env"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines + ["READY"]), flush=True)
    while not done.wait(0.5):
        pass
    ctl.shutdown()
    api.stop()
    return 0


# --------------------------------------------------------------------------- Python API

class K8sStandin:
    """Runs the stand-in as a subprocess and drives it.

        s = K8sStandin(mode="v5").start()
        s.add_token("tok", ttl=3600)
        pod = s.add_pod("sandbox-0b6f6a0e", namespace="onyx-sandboxes")   # {"uid", "dir"}
        s.kubeconfig(path, token="tok")
        ... run the worker ...
        assert s.execs()[-1]["argv"][0] == "tar" and not s.saw("sk-secret")
        s.stop()
    """

    def __init__(self, dir=None, mode="v5", python="/usr/bin/python3"):
        self._own_dir = dir is None
        self.dir = dir or tempfile.mkdtemp(prefix="k8s-standin-")
        self.mode, self.python = mode, python
        self.proc = None
        self.env = {}

    def start(self):
        self._log = open(os.path.join(self.dir, "standin.log"), "wb")
        self.proc = subprocess.Popen(
            [self.python, os.path.abspath(__file__), "--dir", self.dir, "--port", "0",
             "--mode", self.mode, "--exit-on-stdin-eof"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        while True:
            line = self.proc.stdout.readline().decode().strip()
            if not line:
                self.stop()
                raise RuntimeError("k8s stand-in did not start; see %s/standin.log" % self.dir)
            if line == "READY":
                break
            k, _, v = line.partition("=")
            self.env[k] = v
        self.url = self.env["URL"]
        self.host, self.port = "127.0.0.1", int(self.url.rsplit(":", 1)[1])
        self.control = self.env["CONTROL"]
        self.ca, self.client_cert, self.client_key = (self.env["CA"], self.env["CLIENT_CERT"],
                                                      self.env["CLIENT_KEY"])
        self.rogue_cert, self.rogue_key = self.env["ROGUE_CERT"], self.env["ROGUE_KEY"]
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            for f in (self.proc.stdin, self.proc.stdout):
                if f:
                    f.close()
            self._log.close()
        self.proc = None
        if self._own_dir and os.environ.get("SW_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _ctl(self, path, body=None, method="POST"):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", int(self.control.rsplit(":", 1)[1]), timeout=30)
        try:
            data = jdump(body).encode() if method == "POST" else None
            c.request(method, path, body=data, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            out = json.loads(r.read() or b"null")
            if r.status != 200:
                raise RuntimeError("stand-in control %s: %s" % (path, out))
            return out
        finally:
            c.close()

    # ---- tables
    def add_token(self, token, ttl=3600.0, expires=None):
        """expires: epoch seconds (in the past = expired); default now + ttl; ttl None = never."""
        if expires is None and ttl is not None:
            expires = time.time() + ttl
        self._ctl("/tokens", {"token": token, "expires": expires})

    def remove_token(self, token):
        self._ctl("/tokens/remove", {"token": token})

    def add_pod(self, name, namespace="onyx-sandboxes", containers=("sandbox", "file-sync"),
                uid=None):
        return self._ctl("/pods", {"namespace": namespace, "name": name, "uid": uid,
                                   "containers": list(containers)})

    def remove_pod(self, name, namespace="onyx-sandboxes"):
        return self._ctl("/pods/remove", {"namespace": namespace, "name": name})["removed"]

    def pod_dir(self, name, namespace="onyx-sandboxes"):
        return os.path.join(self.dir, "pods", namespace, name)

    def add_service(self, name, namespace="onyx-sandboxes", uid=None):
        return self._ctl("/services", {"namespace": namespace, "name": name, "uid": uid})["uid"]

    # ---- knobs
    def set_mode(self, mode):
        self._ctl("/mode", {"mode": mode})

    def set_faults(self, *rules):
        self._ctl("/faults", list(rules))

    def unauthorized_after(self, k):
        self._ctl("/unauthorized_after", {"k": k})

    def rotate_token(self, dir, token, revoke=(), match=None, method=None, path=None, nth=1):
        """On the nth API request (from now) whose "METHOD PATH ARGV" contains match, whose
        method is method and whose path is path (each only when not None): rewrite dir/token
        to token as the kubelet does (kubelet_write), forget the revoke tokens and accept
        token, before that request is authenticated. Once."""
        self._ctl("/rotate", {"dir": dir, "token": token, "revoke": list(revoke),
                              "match": match, "method": method, "path": path, "nth": nth})

    def reset(self):
        """Forget recorded requests and execs, faults, the 401 knob and a pending rotation
        (tables stay)."""
        self._ctl("/reset", {})

    # ---- what happened
    def state(self):
        return self._ctl("/state", method="GET")

    def requests(self):
        return self.state()["requests"]

    def execs(self):
        return self.state()["execs"]

    def wait_execs(self, n, timeout=10.0):
        """The first n exec records, once all of them are done."""
        deadline = time.time() + timeout
        while True:
            ex = self.execs()
            if len(ex) >= n and all(e["done"] for e in ex[:n]):
                return ex
            if time.time() > deadline:
                raise AssertionError("timed out waiting for %d finished execs: %s" % (n, ex))
            time.sleep(0.02)

    def saw(self, secret):
        return self._ctl("/saw", {"secret": secret})["places"]

    # ---- client side helpers
    def kubeconfig(self, path, namespace="onyx-sandboxes", token=None, token_file=None,
                   client_cert=False, embed=True, server=None):
        """Write a kubeconfig (YAML) whose current context points at the stand-in."""
        def b64(p):
            with open(p, "rb") as f:
                return base64.b64encode(f.read()).decode()
        cl = ["    server: " + (server or self.url)]
        cl.append("    certificate-authority-data: " + b64(self.ca) if embed
                  else "    certificate-authority: " + self.ca)
        us = []
        if token is not None:
            us.append("    token: " + token)
        if token_file is not None:
            us.append("    tokenFile: " + token_file)
        if client_cert:
            if embed:
                us.append("    client-certificate-data: " + b64(self.client_cert))
                us.append("    client-key-data: " + b64(self.client_key))
            else:
                us.append("    client-certificate: " + self.client_cert)
                us.append("    client-key: " + self.client_key)
        text = "\n".join([
            "apiVersion: v1", "kind: Config", "current-context: standin",
            "clusters:", "- name: standin", "  cluster:", *cl,
            "users:", "- name: standin-user", "  user:" + ("" if us else " {}"), *us,
            "contexts:", "- name: standin", "  context:", "    cluster: standin",
            "    user: standin-user", "    namespace: " + namespace, ""])
        with open(path, "w") as f:
            f.write(text)
        return path

    def ssl_context(self, alpn=("http/1.1",), client_cert=False):
        ctx = ssl.create_default_context(cafile=self.ca)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


if __name__ == "__main__":
    sys.exit(main())
