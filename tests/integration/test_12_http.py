"""The health and metrics listener under hostile clients (issue 10 item 5): an endless
header is cut, a slowloris client is disconnected within SNAPWORKER_HTTP_TIMEOUT_S, one
connection over SNAPWORKER_HTTP_MAX_CONNECTIONS is closed at once, and /healthz still
answers afterwards."""
import socket
import time
import urllib.request

from harness import SLOW, SWTestCase, wait_for

FAST = True


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon")


def closed_by_peer(sock, within_s):
    """True when the server closes 'sock' (EOF or reset) within 'within_s' seconds."""
    sock.settimeout(0.2)
    deadline = time.time() + within_s
    while time.time() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


class HttpLimits(SWTestCase):
    SERVICES = ("redis",)

    def start(self, **extra):
        self.port = free_port()
        w = self.start_worker(SNAPWORKER_HTTP_ADDR=f"127.0.0.1:{self.port}", **extra)
        wait_for(lambda: self.healthz_status() == 200, 15, what="/healthz 200")
        return w

    def healthz_status(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status
        except Exception:
            return None

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def test_an_endless_header_is_cut_and_the_worker_stays_small(self):
        w = self.start()
        before = rss_anon_kib(w.proc.pid)
        s = self.connect()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        chunk = b"a" * 65536
        sent, cut = 0, False
        deadline = time.time() + 30 * SLOW
        while sent < 64 * 1024 * 1024 and time.time() < deadline:
            try:
                s.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
        if not cut:
            cut = closed_by_peer(s, 5 * SLOW)
        s.close()
        grown = rss_anon_kib(w.proc.pid) - before
        self.assertTrue(cut, f"the server read {sent} header bytes without closing")
        self.assertLess(grown, 8 * 1024, f"RssAnon grew by {grown} KiB")
        self.assertEqual(self.healthz_status(), 200)
        self.assertTrue(w.alive())

    def test_a_slowloris_client_is_disconnected_within_the_timeout(self):
        self.start(SNAPWORKER_HTTP_TIMEOUT_S=2)
        s = self.connect()
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        t0 = time.time()
        closed = False
        # one header byte every 0.5 s: never idle long enough for an idle timeout
        while time.time() - t0 < 10 * SLOW:
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_peer(s, 0.5):
                closed = True
                break
        took = time.time() - t0
        s.close()
        self.assertTrue(closed, "slowloris connection still open after 10 s")
        self.assertLess(took, 2 + 1.5 * SLOW)
        self.assertEqual(self.healthz_status(), 200)

    def test_one_connection_over_the_cap_is_closed_and_healthz_answers_afterwards(self):
        w = self.start(SNAPWORKER_HTTP_MAX_CONNECTIONS=4, SNAPWORKER_HTTP_TIMEOUT_S=30)
        held = [self.connect() for _ in range(4)]
        time.sleep(0.3)
        extra = self.connect()
        self.assertTrue(closed_by_peer(extra, 3 * SLOW), "the connection over the cap was served")
        extra.close()
        for s in held:  # the held ones are still open
            s.settimeout(0.1)
            with self.assertRaises(socket.timeout):
                s.recv(1)
        for s in held:
            s.close()
        wait_for(lambda: self.healthz_status() == 200, 5, what="/healthz after the cap")
        # many more connections than the cap, one after another: the count never leaks
        for _ in range(20):
            self.assertEqual(self.healthz_status(), 200)
        self.assertIn("http_connection_refused", w.text())
