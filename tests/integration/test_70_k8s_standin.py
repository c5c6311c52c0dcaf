"""The stand-in kube-apiserver (tests/integration/k8s_standin.py) checked on its own, with a
minimal WebSocket client written here (masking, v5 and v4): the upgrade and the accept
value, subprotocol choice per server mode, the bare 403, the initial empty message, output
and status on their channels, stdin with and without the v5 close, 32 KiB messages, the
pod's /workspace, frame rules, authentication, REST and DELETE semantics, faults, HTTP/2
refusal, and the records tests assert on. It does not run the worker binary."""
import base64
import hashlib
import json
import os
import random
import socket
import ssl
import struct
import time
import unittest
import urllib.parse

from k8s_standin import K8sStandin, kubelet_write, token_id, ws_accept

FAST = False  # no worker binary involved: nothing for ASan to check
TLS_PASS = False  # no Redis: nothing for scripts/run-integration --tls to change

NS = "onyx-sandboxes"
POD = "sandbox-0b6f6a0e"
TOKEN = "tok-" + "a1b2c3d4" * 4
BOTH = "v5.channel.k8s.io, v4.channel.k8s.io"


class Reply:
    """What one exec produced, as a client sees it."""

    def __init__(self):
        self.messages = []        # (channel, payload) of every data message, empty ones too
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.status_raw = bytearray()
        self.close_code = None
        self.pongs = []
        self.eof = None           # "close frame", "eof" (TCP closed without Close), "timeout"

    @property
    def status(self):
        return json.loads(bytes(self.status_raw)) if self.status_raw else None


class WS:
    """One TLS connection to the stand-in, upgraded to a WebSocket."""

    def __init__(self, sa, path, protocols=BOTH, token=TOKEN, method="GET", extra=(),
                 version="13", upgrade=True, ctx=None, proto_lines=None):
        self.sa = sa
        raw = socket.create_connection((sa.host, sa.port), timeout=10)
        self.sock = (ctx or sa.ssl_context()).wrap_socket(raw, server_hostname="127.0.0.1")
        self.key = base64.b64encode(os.urandom(16)).decode()
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % sa.port]
        if token:
            lines.append("Authorization: Bearer " + token)
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + self.key]
            if version is not None:
                lines.append("Sec-WebSocket-Version: " + version)
        for p in (proto_lines if proto_lines is not None else [protocols] if protocols else []):
            lines.append("Sec-WebSocket-Protocol: " + p)
        lines += list(extra)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            if not self._recv():
                break
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.raw_head = head + b"\r\n\r\n"
        self.buf = bytearray(rest)
        hl = head.decode("latin-1").split("\r\n")
        self.code = int(hl[0].split(" ")[1])
        self.headers = {}
        for ln in hl[1:]:
            k, _, v = ln.partition(":")
            self.headers.setdefault(k.strip().lower(), v.strip())
        self.protocol = self.headers.get("sec-websocket-protocol")

    def _recv(self):
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise
        except (ssl.SSLError, OSError):
            return False
        if not d:
            return False
        self.buf += d
        return True

    def body(self):
        """The rest of a non-101 answer, to the connection's end (or Content-Length)."""
        n = self.headers.get("content-length")
        while n is None or len(self.buf) < int(n):
            if not self._recv():
                break
        return bytes(self.buf)

    # ---- frames
    def frame(self, opcode, payload, fin=True, mask=True):
        n = len(payload)
        b0 = (0x80 if fin else 0) | opcode
        mb = 0x80 if mask else 0
        if n < 126:
            hdr = bytes([b0, mb | n])
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, mb | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, mb | 127, n)
        if not mask:
            return hdr + payload
        key = os.urandom(4)
        k = (key * (n // 4 + 1))[:n]
        body = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big") \
            if n else b""
        return hdr + key + body

    def send_frame(self, opcode, payload, fin=True, mask=True):
        self.sock.sendall(self.frame(opcode, payload, fin, mask))

    def send_stdin(self, data, chunk=32 * 1024):
        for i in range(0, len(data), chunk):
            self.send_frame(2, b"\x00" + data[i:i + chunk])

    def close_stdin(self):
        self.send_frame(2, b"\xff\x00")

    def read_frame(self, timeout=10):
        """(fin, opcode, payload, header length) or None at EOF."""
        self.sock.settimeout(timeout)
        while True:
            b = self.buf
            if len(b) >= 2:
                assert not b[1] & 0x80, "server frames must not be masked"
                ln, pos = b[1] & 0x7F, 2
                if ln == 126 and len(b) >= 4:
                    ln, pos = struct.unpack("!H", b[2:4])[0], 4
                elif ln == 127 and len(b) >= 10:
                    ln, pos = struct.unpack("!Q", b[2:10])[0], 10
                if ln < 126 or pos > 2:
                    if len(b) >= pos + ln:
                        out = (bool(b[0] & 0x80), b[0] & 0x0F, bytes(b[pos:pos + ln]), pos)
                        del b[:pos + ln]
                        return out
            if not self._recv():
                return None

    def run(self, timeout=20):
        """Read to the end: data messages by channel, then the status and the Close."""
        r = Reply()
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                r.eof = "timeout"
                return r
            try:
                f = self.read_frame(timeout=left)
            except socket.timeout:
                r.eof = "timeout"
                return r
            if f is None:
                r.eof = "eof"
                return r
            fin, op, payload, _h = f
            assert fin, "the stand-in sends single-frame messages"
            if op == 8:
                r.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                r.eof = "close frame"
                # the server closes TCP right after its Close: nothing may follow
                assert self.read_frame(timeout=5) is None
                return r
            if op == 10:
                r.pongs.append(payload)
                continue
            assert op == 2, "data messages are binary, got opcode %d" % op
            ch, data = payload[0], payload[1:]
            r.messages.append((ch, data))
            {1: r.stdout, 2: r.stderr, 3: r.status_raw}[ch].extend(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def exec_path(argv, container="sandbox", pod=POD, ns=NS, stdin=False, stdout=True,
              stderr=True, raw_flags=None):
    q = [("command", a) for a in argv]
    if container is not None:
        q.append(("container", container))
    if raw_flags is not None:
        q += raw_flags
    else:
        q += [("stdin", "true" if stdin else "false"), ("stdout", "true" if stdout else "false"),
              ("stderr", "true" if stderr else "false"), ("tty", "false")]
    return "/api/v1/namespaces/%s/pods/%s/exec?%s" % (ns, pod, urllib.parse.urlencode(
        q, quote_via=urllib.parse.quote))


def gone(pid, timeout=10.0):
    """The process has died (a zombie waiting for init to reap it counts as dead)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


class StandinCase(unittest.TestCase):
    sa = None

    @classmethod
    def setUpClass(cls):
        cls.sa = K8sStandin().start()

    @classmethod
    def tearDownClass(cls):
        if cls.sa:
            cls.sa.stop()

    def setUp(self):
        self.sa.reset()
        self.sa.set_mode("v5")
        self.sa.add_token(TOKEN)
        self.pod = self.sa.add_pod(POD, NS)

    # ---- helpers
    def exec_(self, argv, stdin_data=None, v5_close=True, protocols=BOTH, container="sandbox",
              pod=POD, expect_protocol=None, timeout=20, **kw):
        ws = WS(self.sa, exec_path(argv, container=container, pod=pod,
                                   stdin=stdin_data is not None, **kw), protocols=protocols)
        try:
            if ws.code != 101:
                self.fail((ws.raw_head + ws.body()).decode("latin-1"))
            if expect_protocol:
                self.assertEqual(ws.protocol, expect_protocol)
            if stdin_data is not None:
                ws.send_stdin(stdin_data)
                if v5_close:
                    ws.close_stdin()
            r = ws.run(timeout=timeout)
            r.protocol = ws.protocol
            return r
        finally:
            ws.close()

    def rest(self, method, path, body=None, token=TOKEN, ctx=None):
        import http.client
        c = http.client.HTTPSConnection("127.0.0.1", self.sa.port, timeout=10,
                                        context=ctx or self.sa.ssl_context())
        try:
            h = {"Authorization": "Bearer " + token} if token else {}
            if body is not None:
                h["Content-Type"] = "application/json"
            c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    def last_exec(self):
        return self.sa.wait_execs(len(self.sa.execs()))[-1]

    # ---- the upgrade
    def test_101_with_the_right_accept_value_and_the_ready_message_first(self):
        ws = WS(self.sa, exec_path(["true"]))
        try:
            self.assertEqual(ws.code, 101)
            self.assertEqual(ws.headers["upgrade"].lower(), "websocket")
            self.assertEqual(ws.headers["connection"].lower(), "upgrade")
            self.assertEqual(ws.headers["sec-websocket-accept"], ws_accept(ws.key))
            self.assertEqual(ws.headers["sec-websocket-accept"], base64.b64encode(hashlib.sha1(
                (ws.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode())
            self.assertEqual(ws.protocol, "v5.channel.k8s.io")
            fin, op, payload, _ = ws.read_frame()
            self.assertEqual((fin, op, payload), (True, 2, b"\x01"))   # empty message on stdout
            r = ws.run()
        finally:
            ws.close()
        self.assertEqual(r.status, {"metadata": {}, "status": "Success"})
        self.assertEqual((r.close_code, r.eof), (1000, "close frame"))
        # the ready message goes to the lowest writable channel
        self.assertEqual(self.exec_(["true"], stdout=False).messages[0], (2, b""))
        only_in = self.exec_(["true"], stdin_data=b"", stdout=False, stderr=False)
        self.assertEqual(only_in.messages[0], (3, b""))
        self.assertEqual(only_in.status["status"], "Success")

    def test_protocol_choice_follows_the_server_mode(self):
        v5, v4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
        # a modern server translates whenever v5 is offered, whatever the order
        self.assertEqual(self.exec_(["true"], protocols=BOTH).protocol, v5)
        self.assertEqual(self.exec_(["true"], protocols=v4 + ", " + v5).protocol, v5)
        self.assertEqual(self.exec_(["true"], protocols="base64.channel.k8s.io, " + v4).protocol, v4)
        self.sa.set_mode("v4-only")
        r = self.exec_(["sh", "-c", "exit 4"], protocols=BOTH)
        self.assertEqual(r.protocol, v4)
        self.assertEqual(r.status["details"]["causes"], [{"reason": "ExitCode", "message": "4"}])
        # v5 alone against an old server: x/net's bare 403, no body, connection closed
        ws = WS(self.sa, exec_path(["true"]), protocols=v5)
        self.assertEqual(ws.raw_head + ws.body(), b"HTTP/1.1 403 Forbidden\r\n\r\n")
        ws.close()
        # only the first Sec-WebSocket-Protocol line counts
        self.sa.set_mode("v5")
        ws = WS(self.sa, exec_path(["true"]), proto_lines=["base64.channel.k8s.io", BOTH])
        self.assertEqual(ws.code, 403)
        ws.close()
        got = [(e["offered"], e["protocol"], e["http_status"]) for e in self.sa.wait_execs(6)]
        self.assertEqual(got[-1], (["base64.channel.k8s.io"], None, 403))
        self.assertEqual(got[4], ([v5], None, 403))
        self.assertEqual(got[1], ([v4, v5], v5, 101))

    def test_handshake_errors_before_the_upgrade(self):
        ws = WS(self.sa, exec_path(["true"]), version="8")
        self.assertEqual(ws.code, 400)
        self.assertEqual(ws.headers.get("sec-websocket-version"), "13")
        ws.close()
        ws = WS(self.sa, exec_path(["true"]), method="POST")
        self.assertEqual(ws.code, 405)
        ws.close()
        ws = WS(self.sa, exec_path(["true"]), upgrade=False)
        self.assertEqual(ws.code, 400)
        self.assertEqual(json.loads(ws.body())["message"], "Upgrade request required")
        ws.close()
        ws = WS(self.sa, exec_path(["true"], stdout=False, stderr=False))
        self.assertEqual(ws.code, 400)
        self.assertIn("at least 1 of stdin, stdout, stderr", json.loads(ws.body())["message"])
        ws.close()

    def test_query_booleans_follow_the_api_server_rule(self):
        r = self.exec_(["true"], raw_flags=[("stdout", "TRUE"), ("stderr", "FaLsE"), ("stdin", "0"),
                                            ("tty", "false")])
        self.assertEqual(r.messages[0], (1, b""))
        self.assertEqual(self.last_exec()["flags"],
                         {"stdin": False, "stdout": True, "stderr": False, "tty": False})
        r = self.exec_(["true"], raw_flags=[("stderr", ""), ("stdout", "no")])   # empty = true
        self.assertEqual(self.last_exec()["flags"],
                         {"stdin": False, "stdout": True, "stderr": True, "tty": False})

    # ---- running commands
    def test_echo_round_trip_with_argv_items_kept_whole(self):
        odd = ["a b", "+plus", "x&y=z", "100%", "sémaphore", "", "-n"]
        r = self.exec_(["sh", "-c", 'printf "%s|" "$@"; echo err >&2', "sh", *odd])
        self.assertEqual(r.stdout.decode(), "".join(a + "|" for a in odd))
        self.assertEqual(bytes(r.stderr), b"err\n")
        self.assertEqual(r.status, {"metadata": {}, "status": "Success"})
        ex = self.last_exec()
        self.assertEqual(ex["argv"], ["sh", "-c", 'printf "%s|" "$@"; echo err >&2', "sh", *odd])
        self.assertEqual((ex["container"], ex["protocol"], ex["exit_code"]),
                         ("sandbox", "v5.channel.k8s.io", 0))
        # a clean environment, HOME and cwd in /workspace
        r = self.exec_(["sh", "-c", "pwd; echo $HOME; env | sort"])
        lines = r.stdout.decode().split("\n")
        self.assertEqual(lines[:2], ["/workspace", "/workspace"])
        self.assertNotIn("TOKEN", r.stdout.decode())

    def test_exit_codes_and_a_missing_executable(self):
        for proto in ("v5.channel.k8s.io", "v4.channel.k8s.io"):
            r = self.exec_(["sh", "-c", "echo partial; exit 3"], protocols=proto)
            st = r.status
            self.assertEqual((st["status"], st["reason"]), ("Failure", "NonZeroExitCode"))
            self.assertEqual(st["details"]["causes"], [{"reason": "ExitCode", "message": "3"}])
            self.assertEqual(st["metadata"], {})
            self.assertNotIn("code", st)
            self.assertEqual(bytes(r.stdout), b"partial\n")
            self.assertEqual(r.close_code, 1000)
        r = self.exec_(["sh", "-c", "kill -9 $$"])
        self.assertEqual(r.status["details"]["causes"][0]["message"], "137")
        r = self.exec_(["no-such-binary-xyz", "arg"])
        st = r.status
        self.assertEqual((st["status"], st["reason"], st["code"]), ("Failure", "InternalError", 500))
        self.assertIn("no-such-binary-xyz", st["message"])
        self.assertTrue(st["message"].startswith("Internal error occurred: "))
        self.assertEqual(r.close_code, 1000)

    def test_stdin_streamed_and_closed_on_v5(self):
        data = random.Random(7).randbytes(300 * 1024 + 17)
        ws = WS(self.sa, exec_path(["sha256sum"], stdin=True))
        try:
            self.assertEqual(ws.code, 101)
            ws.send_frame(9, b"are you there")                      # ping -> pong
            ws.send_frame(2, b"\x00" + data[:100000])               # 64-bit length frame
            ws.send_frame(2, b"\x00" + data[100000:100010], fin=False)  # fragmented message
            ws.send_frame(9, b"mid")                                 # control frame in between
            ws.send_frame(0, data[100010:100020], fin=False)
            ws.send_frame(0, data[100020:120000])
            ws.send_frame(2, b"\x00")                                # empty: ignored
            ws.send_stdin(data[120000:])
            ws.close_stdin()
            r = ws.run()
        finally:
            ws.close()
        self.assertEqual(r.stdout.decode().split()[0], hashlib.sha256(data).hexdigest())
        self.assertEqual(r.status["status"], "Success")
        self.assertEqual(r.pongs, [b"are you there", b"mid"])
        ex = self.last_exec()
        self.assertEqual((ex["stdin_bytes"], ex["stdin_sha256"], ex["stdin_closed"], ex["pings"]),
                         (len(data), hashlib.sha256(data).hexdigest(), True, 2))

    def test_a_full_stdin_pipe_stops_the_server_reading_so_pings_wait_too(self):
        ws = WS(self.sa, exec_path(["sh", "-c", "sleep 1; cat > /dev/null"], stdin=True))
        try:
            t = time.time()
            ws.send_stdin(b"x" * (512 * 1024))   # far more than a pipe holds
            ws.send_frame(9, b"still there?")
            ws.close_stdin()
            fin, op, payload, _ = ws.read_frame()      # the ready message
            fin, op, payload, _ = ws.read_frame()
            self.assertEqual((op, payload), (10, b"still there?"))
            self.assertGreater(time.time() - t, 0.8)   # answered only once cat drained stdin
            r = ws.run()
        finally:
            ws.close()
        self.assertEqual(r.status["status"], "Success")
        self.assertEqual(self.last_exec()["stdin_bytes"], 512 * 1024)

    def test_v4_has_no_stdin_close_so_head_c_ends_the_input(self):
        data = random.Random(8).randbytes(70000)
        r = self.exec_(["sh", "-c", 'head -c "$1" | sha256sum', "sh", str(len(data))],
                       stdin_data=data, v5_close=False, protocols="v4.channel.k8s.io")
        self.assertEqual(r.protocol, "v4.channel.k8s.io")
        self.assertEqual(r.stdout.decode().split()[0], hashlib.sha256(data).hexdigest())
        self.assertEqual(r.status["status"], "Success")
        # {0xFF, 0x00} means nothing on v4: cat never sees EOF (the client gives up)
        ws = WS(self.sa, exec_path(["cat"], stdin=True), protocols="v4.channel.k8s.io")
        ws.send_stdin(b"hello")
        ws.close_stdin()
        r = ws.run(timeout=1.0)
        ws.close()
        self.assertEqual((bytes(r.stdout), r.eof, r.status), (b"hello", "timeout", None))
        self.assertFalse(self.sa.execs()[-1]["stdin_closed"])

    def test_one_mib_of_stdout_comes_in_messages_of_at_most_32_kib(self):
        r = self.exec_(["head", "-c", "1048576", "/dev/urandom"])
        self.assertEqual(len(r.stdout), 1048576)
        sizes = [len(d) for ch, d in r.messages if ch == 1 and d]
        self.assertLessEqual(max(sizes), 32768)
        self.assertGreaterEqual(len(sizes), 32)
        self.assertEqual(r.status["status"], "Success")
        self.assertEqual(self.last_exec()["stdout_bytes"], 1048576)

    def test_workspace_is_the_pod_folder_shared_by_both_containers_and_private_to_the_pod(self):
        r = self.exec_(["sh", "-c", "mkdir -p sessions/s1 && echo hello > sessions/s1/a.txt"])
        self.assertEqual(r.status["status"], "Success")
        with open(os.path.join(self.pod["dir"], "sessions/s1/a.txt")) as f:
            self.assertEqual(f.read(), "hello\n")
        r = self.exec_(["cat", "/workspace/sessions/s1/a.txt"], container="file-sync")
        self.assertEqual(bytes(r.stdout), b"hello\n")
        other = self.sa.add_pod("sandbox-ffff0000", NS)
        r = self.exec_(["ls", "-A", "/workspace"], pod="sandbox-ffff0000")
        self.assertEqual((bytes(r.stdout), r.status["status"]), (b"", "Success"))
        self.assertEqual(os.listdir(other["dir"]), [])
        self.assertFalse(os.path.exists("/workspace/sessions/s1/a.txt"))   # host untouched

    def test_detached_processes_die_with_the_pod(self):
        r = self.exec_(["sh", "-c", "setsid nohup sleep 300 >/dev/null 2>&1 < /dev/null & echo $!"])
        pid = int(r.stdout.decode())
        self.assertEqual(r.status["status"], "Success")
        os.kill(pid, 0)   # still running after the exec ended
        code, obj = self.rest("DELETE", "/api/v1/namespaces/%s/pods/%s" % (NS, POD))
        self.assertEqual(code, 200)
        self.assertTrue(gone(pid))

    def test_stopping_the_standin_kills_what_its_execs_left_running(self):
        with K8sStandin() as sa:
            sa.add_token(TOKEN)
            sa.add_pod(POD, NS)
            ws = WS(sa, exec_path(["sh", "-c", "nohup setsid sleep 300 >/dev/null 2>&1 & echo $!"]))
            r = ws.run()
            ws.close()
            pid = int(r.stdout.decode())
            os.kill(pid, 0)
        self.assertTrue(gone(pid))

    def test_a_child_holding_stdout_delays_the_status_by_at_most_two_seconds(self):
        t = time.time()
        r = self.exec_(["sh", "-c", "sleep 30 & echo started"])
        took = time.time() - t
        self.assertEqual((bytes(r.stdout), r.status["status"]), (b"started\n", "Success"))
        self.assertTrue(1.5 < took < 6, took)
        self.sa.remove_pod(POD, NS)   # and the sleep goes with the pod

    # ---- frame rules and faults
    def test_an_unmasked_client_frame_is_refused_with_1002(self):
        ws = WS(self.sa, exec_path(["cat"], stdin=True))
        try:
            ws.read_frame()                                   # ready message
            ws.send_frame(2, b"\x00hello", mask=False)
            r = ws.run()
        finally:
            ws.close()
        self.assertEqual((r.close_code, bytes(r.stdout), r.status), (1002, b"", None))
        self.assertIn("not masked", self.last_exec()["protocol_error"])

    def test_drop_after_n_bytes_of_stdout(self):
        self.sa.set_faults({"action": "drop", "bytes": 100000, "match": "/dev/zero", "count": 1})
        r = self.exec_(["head", "-c", "1048576", "/dev/zero"])
        self.assertEqual((len(r.stdout), r.status, r.close_code, r.eof), (100000, None, None, "eof"))
        self.assertIn("dropped", self.last_exec()["end"])
        r = self.exec_(["head", "-c", "1048576", "/dev/zero"])    # count 1: the next one is fine
        self.assertEqual((len(r.stdout), r.status["status"]), (1048576, "Success"))

    def test_stall_no_status_injected_exit_and_delayed_101(self):
        self.sa.set_faults({"action": "stall", "bytes": 5, "match": "stall-me"},
                           {"action": "no_status", "match": "no-status"},
                           {"action": "exit", "code": 7, "match": "fail-me", "stderr": "boom"},
                           {"action": "delay_101", "seconds": 0.5, "match": "slow"})
        r = self.exec_(["echo", "stall-me", "and more"], timeout=1.0)
        self.assertEqual((bytes(r.stdout), r.eof), (b"stall", "timeout"))
        r = self.exec_(["echo", "no-status"])
        self.assertEqual((bytes(r.stdout), r.status, r.close_code), (b"no-status\n", None, 1000))
        r = self.exec_(["touch", "/workspace/fail-me"])
        self.assertEqual((r.status["details"]["causes"][0]["message"], bytes(r.stderr)),
                         ("7", b"boom\n"))
        self.assertFalse(os.path.exists(os.path.join(self.pod["dir"], "fail-me")))
        t = time.time()
        self.assertEqual(self.exec_(["echo", "slow"]).status["status"], "Success")
        self.assertGreaterEqual(time.time() - t, 0.5)
        self.assertEqual(self.sa.execs()[-1]["argv"], ["echo", "slow"])

    # ---- authentication
    def test_expired_unknown_and_revoked_credentials_get_401(self):
        unauthorized = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
        self.sa.add_token("old-token", expires=time.time() - 1)
        path = "/api/v1/namespaces/%s/pods/%s" % (NS, POD)
        self.assertEqual(self.rest("GET", path, token="old-token"), (401, unauthorized))
        self.assertEqual(self.rest("GET", path, token="nobody"), (401, unauthorized))
        self.assertEqual(self.rest("GET", path, token=None), (401, unauthorized))
        ws = WS(self.sa, exec_path(["true"]), token="old-token")
        self.assertEqual((ws.code, json.loads(ws.body())), (401, unauthorized))
        ws.close()
        self.assertEqual(self.rest("GET", path)[0], 200)
        # a client certificate signed by the cluster CA is enough; a rogue one fails TLS
        self.assertEqual(self.rest("GET", path, token=None,
                                   ctx=self.sa.ssl_context(client_cert=True))[0], 200)
        rogue = self.sa.ssl_context()
        rogue.load_cert_chain(self.sa.rogue_cert, self.sa.rogue_key)
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.rest("GET", path, token=None, ctx=rogue)
        # fault: 401 after K requests
        self.sa.unauthorized_after(2)
        self.assertEqual([self.rest("GET", path)[0] for _ in range(4)], [200, 200, 401, 401])
        self.sa.unauthorized_after(None)
        self.assertEqual(self.rest("GET", path)[0], 200)

    def test_rotate_rewrites_the_token_file_as_the_kubelet_does_then_switches_tokens(self):
        d = os.path.join(self.sa.dir, "sa-%d" % random.randrange(1 << 30))
        kubelet_write(d, {"token": "tok-a"})
        first = os.readlink(os.path.join(d, "..data"))
        self.assertTrue(first.startswith("..") and os.path.isdir(os.path.join(d, first)))
        self.assertEqual(os.readlink(os.path.join(d, "token")), "..data/token")
        self.sa.add_token("tok-a")
        path = "/api/v1/namespaces/%s/pods/%s" % (NS, POD)
        self.sa.reset()
        # on the 2nd GET of that exact path (the exec below is a GET of a longer path)
        self.sa.rotate_token(d, "tok-b", revoke=["tok-a"], method="GET", path=path, nth=2)
        self.assertEqual(self.rest("GET", path, token="tok-a")[0], 200)
        self.assertEqual(self.exec_(["true"]).status["status"], "Success")   # TOKEN still works
        with open(os.path.join(d, "token")) as f:
            self.assertEqual(f.read(), "tok-a")
        self.assertEqual(self.rest("GET", path, token="tok-a")[0], 401)    # the trigger
        with open(os.path.join(d, "token")) as f:
            self.assertEqual(f.read(), "tok-b")
        second = os.readlink(os.path.join(d, "..data"))
        self.assertNotEqual(second, first)
        self.assertEqual(sorted(os.listdir(d)), sorted(["..data", "token", second]))
        self.assertEqual(self.rest("GET", path, token="tok-b")[0], 200)
        self.assertEqual(self.rest("GET", path, token="tok-a")[0], 401)    # revoked
        self.assertEqual(self.rest("GET", path, token="tok-b")[0], 200)    # once: no rotation
        with open(os.path.join(d, "token")) as f:
            self.assertEqual(f.read(), "tok-b")
        reqs = self.sa.requests()
        self.assertEqual([(r["bearer"], r["status"], r.get("rotated", False)) for r in reqs],
                         [(token_id("tok-a"), 200, False), (token_id(TOKEN), 101, False),
                          (token_id("tok-a"), 401, True), (token_id("tok-b"), 200, False),
                          (token_id("tok-a"), 401, False), (token_id("tok-b"), 200, False)])
        self.assertEqual(self.sa.saw("tok-a"), [])
        self.rest("GET", path, token=None)
        self.assertIsNone(self.sa.requests()[-1]["bearer"])

    # ---- REST
    def test_not_found_and_bad_container(self):
        ws = WS(self.sa, exec_path(["true"], pod="sandbox-nothere"))
        self.assertEqual((ws.code, json.loads(ws.body())),
                         (404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": 'pods "sandbox-nothere" not found',
                                "reason": "NotFound",
                                "details": {"name": "sandbox-nothere", "kind": "pods"},
                                "code": 404}))
        ws.close()
        ws = WS(self.sa, exec_path(["true"], ns="default"))
        self.assertEqual(ws.code, 404)
        ws.close()
        ws = WS(self.sa, exec_path(["true"], container=None))
        self.assertEqual(ws.code, 400)
        self.assertIn("a container name must be specified", json.loads(ws.body())["message"])
        ws.close()
        ws = WS(self.sa, exec_path(["true"], container="nginx"))
        self.assertEqual((ws.code, json.loads(ws.body())["reason"]), (400, "BadRequest"))
        ws.close()
        self.assertEqual(self.rest("GET", "/api/v1/namespaces/default/pods/" + POD)[0], 404)
        self.assertEqual(self.rest("GET", "/api/v1/namespaces/%s/services/nope" % NS),
                         (404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": 'services "nope" not found',
                                "reason": "NotFound", "details": {"name": "nope", "kind": "services"},
                                "code": 404}))

    def test_delete_semantics(self):
        path = "/api/v1/namespaces/%s/pods/%s" % (NS, POD)
        code, obj = self.rest("DELETE", path, body={"preconditions": {"uid": "not-the-uid"}})
        self.assertEqual((code, obj["reason"], obj["code"]), (409, "Conflict", 409))
        self.assertEqual(self.rest("GET", path)[1]["metadata"]["uid"], self.pod["uid"])
        code, obj = self.rest("DELETE", path, body={"preconditions": {"uid": self.pod["uid"]},
                                                    "gracePeriodSeconds": 5})
        self.assertEqual((code, obj["kind"], obj["metadata"]["uid"]), (200, "Pod", self.pod["uid"]))
        self.assertIn("deletionTimestamp", obj["metadata"])
        self.assertEqual(obj["metadata"]["deletionGracePeriodSeconds"], 5)
        code, obj = self.rest("DELETE", path)
        self.assertEqual((code, obj["reason"], obj["details"]), (404, "NotFound",
                                                                 {"name": POD, "kind": "pods"}))
        uid = self.sa.add_service(POD + "-svc", NS)
        spath = "/api/v1/namespaces/%s/services/%s-svc" % (NS, POD)
        self.assertEqual(self.rest("DELETE", spath)[1]["metadata"]["uid"], uid)
        self.assertEqual(self.rest("DELETE", spath)[0], 404)
        dels = [r for r in self.sa.requests() if r["method"] == "DELETE"]
        self.assertEqual(json.loads(dels[0]["body"]), {"preconditions": {"uid": "not-the-uid"}})
        self.assertEqual([d["status"] for d in dels], [409, 200, 404, 200, 404])
        self.assertTrue(all(dict(d["headers"])["Authorization"] == "<redacted>" for d in dels))

    def test_kubeconfig_points_at_the_standin(self):
        path = self.sa.kubeconfig(os.path.join(self.sa.dir, "kc"), token=TOKEN, client_cert=True)
        with open(path) as f:
            text = f.read()
        fields = dict(ln.strip().split(": ", 1) for ln in text.splitlines() if ": " in ln)
        self.assertEqual(fields["server"], self.sa.url)
        self.assertEqual(fields["token"], TOKEN)
        self.assertEqual(fields["current-context"], "standin")
        self.assertEqual(fields["namespace"], NS)
        with open(self.sa.ca, "rb") as f:
            self.assertEqual(base64.b64decode(fields["certificate-authority-data"]), f.read())
        with open(self.sa.client_key, "rb") as f:
            self.assertEqual(base64.b64decode(fields["client-key-data"]), f.read())

    # ---- TLS and the records
    def test_alpn_offers_h2_and_http2_is_refused(self):
        ctx = self.sa.ssl_context(alpn=("h2", "http/1.1"))
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.sa.port), timeout=5),
                            server_hostname="127.0.0.1")
        self.assertEqual(s.selected_alpn_protocol(), "h2")
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        got = b""
        while True:
            try:
                d = s.recv(4096)
            except (OSError, ssl.SSLError):
                break
            if not d:
                break
            got += d
        s.close()
        frames, i = [], 0
        while i + 9 <= len(got):
            ln = int.from_bytes(got[i:i + 3], "big")
            frames.append((got[i + 3], got[i + 9:i + 9 + ln]))
            i += 9 + ln
        goaway = [p for t, p in frames if t == 7]
        self.assertEqual(len(goaway), 1)
        self.assertEqual(int.from_bytes(goaway[0][4:8], "big"), 0xd)   # HTTP_1_1_REQUIRED
        s = self.sa.ssl_context(alpn=("http/1.1",)).wrap_socket(
            socket.create_connection(("127.0.0.1", self.sa.port), timeout=5),
            server_hostname="localhost")
        self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
        s.close()
        self.assertGreaterEqual(self.sa.state()["h2_rejected"], 1)

    def test_saw_finds_secrets_in_urls_argv_and_headers_but_not_stdin(self):
        secret = "sk-live-" + os.urandom(6).hex()
        self.exec_(["sh", "-c", "cat > /dev/null"], stdin_data=secret.encode() * 3)
        self.assertEqual(self.sa.saw(secret), [])
        self.exec_(["echo", "--key=" + secret])
        ws = WS(self.sa, exec_path(["true"]), extra=["X-Debug: " + secret])
        ws.run()
        ws.close()
        places = self.sa.saw(secret)
        self.assertTrue(any("argv[1]" in p for p in places), places)
        self.assertTrue(any(": query" in p for p in places), places)
        self.assertTrue(any("header X-Debug" in p for p in places), places)
        self.assertEqual(self.sa.saw(TOKEN), [])   # Authorization values are never kept


if __name__ == "__main__":
    unittest.main()
