"""The dashboard (/ui) in a real headless browser (Debian chromium + chromium-driver, driven by
python3-selenium): it lists a running job with its progress, shows a dead job's error, requeues
a dead job with the token and refuses without it, and shows an error message holding <script>
as text (nothing runs). Saves docs/dashboard.png. Every wait is explicit, with a deadline."""
import json
import os
import socket
import time
import urllib.request

from harness import ROOT, SLOW, SWTestCase, new_uuid, wait_for

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

TOKEN = "ui-t0ken-" + new_uuid()[:8]
XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Dashboard(SWTestCase):
    SERVICES = ("redis",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1280,1000"):
            opts.add_argument(a)
        cls.driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
        cls.driver.set_page_load_timeout(20 * SLOW)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        super().tearDownClass()

    def wait(self, cond, timeout=15, what="condition"):
        def safe(d):
            try:
                return cond(d)
            except (StaleElementReferenceException, WebDriverException):
                return False
        return WebDriverWait(self.driver, timeout * SLOW, poll_frequency=0.1).until(safe, message=what)

    def text_of(self, table_id):
        return self.driver.find_element(By.ID, table_id).text

    def start_ui_worker(self, **extra):
        # The browser opens sockets of its own; a port found free can be taken before the
        # worker binds it (the worker then exits naming the address): take another.
        for _ in range(3):
            self.port = free_port()
            w = self.start_worker(SNAPWORKER_HTTP_ADDR=f"127.0.0.1:{self.port}",
                                  SNAPWORKER_CONCURRENCY=2, **extra)
            wait_for(lambda: self.healthz_ok() or not w.alive(), 15, what="/healthz")
            if w.alive():
                return
        self.fail("the worker could not bind a free port three times")

    def click(self, find, what="element"):
        """Click what find() returns, finding it again when the page redrew it meanwhile
        (the dashboard re-renders its tables on every poll)."""
        def attempt(d):
            try:
                find().click()
                return True
            except StaleElementReferenceException:
                return False
        self.wait(attempt, what=f"click on {what}")

    def healthz_ok(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError as e:
            print("healthz:", repr(e), getattr(e, "read", lambda: b"")()[:200], flush=True)
            return False

    def fake_dead(self, message):
        """A dead entry as the worker writes it, for a runnable noop job."""
        p = self.payload("noop")
        return self.r.xadd(self.key("dead"), {
            "job": json.dumps(p), "job_id": p["id"], "source_id": "0-1",
            "error": json.dumps({"code": "internal", "message": message, "retryable": False}),
            "attempts": "1", "worker": "elsewhere:1:abcd", "ts": str(int(time.time() * 1000))}), p["id"]

    def test_running_progress_dead_error_requeue_with_token_and_script_as_text(self):
        self.start_ui_worker(SNAPWORKER_HTTP_TOKEN=TOKEN)
        # a running job (sleeps 20 s) with a progress event as long jobs emit them
        running = self.payload("noop", {"sleep_ms": 20000})
        self.xadd(running)
        self.wait_status(running["id"], "running")
        self.r.xadd(self.key("events"), {"job_id": running["id"], "type": "noop", "status": "progress",
                                         "attempt": "1", "data": json.dumps({"bytes": 123456, "entries": 42}),
                                         "worker": "w", "ts": str(int(time.time() * 1000))})
        # a real dead job, and a dead entry whose message holds markup
        real_dead = self.payload("noop", {"fail": "permanent"})
        self.xadd(real_dead)
        self.wait_status(real_dead["id"], "dead")
        xss_dead_id, xss_job = self.fake_dead(XSS)

        d = self.driver
        d.get(f"http://127.0.0.1:{self.port}/ui/")
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1",
                  what="first load")
        self.wait(lambda d: running["id"] in self.text_of("running"), what="the running job listed")
        self.wait(lambda d: "123456 bytes, 42 entries" in self.text_of("running"), what="its progress")
        self.wait(lambda d: "noop asked to fail permanently" in self.text_of("dead"), what="the dead error")
        self.assertIn(real_dead["id"], self.text_of("dead"))
        # markup in an error message is text: shown verbatim, nothing executed or inserted
        self.wait(lambda d: XSS in self.text_of("dead"), what="<script> shown as text")
        self.assertIsNone(d.execute_script("return window.pwned || null"))
        self.assertEqual(d.find_elements(By.CSS_SELECTOR, "#dead img, #dead script, #failures script"), [])
        self.wait(lambda d: len(self.text_of("queues")) > 0 and self.queue in self.text_of("queues"),
                  what="queue figures")
        # the screenshot in docs/ (taken while the page shows all of the above)
        shot = os.path.join(ROOT, "docs", "dashboard.png")
        self.assertTrue(d.save_screenshot(shot))
        self.assertGreater(os.path.getsize(shot), 10000)

        def requeue_button():
            row = d.find_element(By.CSS_SELECTOR, f'#dead tr[data-dead-id="{xss_dead_id}"]')
            return row.find_element(By.XPATH, ".//button[text()='requeue']")

        # without the token: refused, the entry stays
        self.wait(lambda d: requeue_button().is_enabled(), what="requeue enabled")
        self.click(requeue_button, "requeue")
        self.wait(lambda d: "refused" in d.find_element(By.ID, "msg").text, what="refusal shown")
        self.assertIn("bearer token", d.find_element(By.ID, "msg").text)
        self.assertEqual(len(self.r.xrange(self.key("dead"), xss_dead_id, xss_dead_id)), 1)
        # a wrong token: refused too
        d.find_element(By.ID, "token").send_keys("wrong")
        d.find_element(By.ID, "token-save").click()
        self.click(requeue_button, "requeue")
        self.wait(lambda d: "refused" in d.find_element(By.ID, "msg").text, what="refusal shown")
        self.assertEqual(len(self.r.xrange(self.key("dead"), xss_dead_id, xss_dead_id)), 1)
        # with the token: requeued, leaves the dead list, and the job runs
        tok = d.find_element(By.ID, "token")
        tok.clear()
        tok.send_keys(TOKEN)
        d.find_element(By.ID, "token-save").click()
        self.wait(lambda d: "token set" in d.find_element(By.ID, "mode").text, what="token mode")
        self.click(requeue_button, "requeue")
        self.wait(lambda d: "requeued" in d.find_element(By.ID, "msg").text, what="requeued message")
        self.assertEqual(self.r.xrange(self.key("dead"), xss_dead_id, xss_dead_id), [])
        self.wait_status(xss_job, "succeeded")
        self.wait(lambda d: xss_dead_id not in self.text_of("dead"), what="gone from the dead list")
        # the job page shows its events
        d.get(f"http://127.0.0.1:{self.port}/ui/#/job/{real_dead['id']}")
        self.wait(lambda d: "dead" in self.text_of("job-events") and "started" in self.text_of("job-events"),
                  what="job page events")
        self.assertIn("noop asked to fail permanently", self.text_of("job-fields"))
        self.assertIsNone(d.execute_script("return window.pwned || null"))

    def test_read_only_without_a_token_on_the_worker(self):
        self.start_ui_worker()
        dead_id, _ = self.fake_dead("plain failure")
        d = self.driver
        d.get(f"http://127.0.0.1:{self.port}/ui/")
        self.wait(lambda d: "plain failure" in self.text_of("dead"), what="dead entry")
        self.assertIn("read-only", d.find_element(By.ID, "mode").text)
        buttons = d.find_elements(By.CSS_SELECTOR, "#dead button")
        self.assertTrue(buttons and all(not b.is_enabled() for b in buttons))
        # the API refuses too, whatever the page does
        res = d.execute_async_script(
            "const done = arguments[0];"
            "fetch('/api/dead/purge', {method: 'POST', headers: {'Content-Type': 'application/json',"
            " 'Authorization': 'Bearer x'}, body: '{}'}).then(r => done(r.status));")
        self.assertEqual(res, 403)
        self.assertEqual(self.r.xlen(self.key("dead")), 1)
