"""A dev-server stand-in for test_50_jobs.py, run by the worker as SNAPWORKER_WEBAPP_CMD:
    /usr/bin/python3 jobs_devserver.py PORT [--delay S] [--fail-after S]
--delay: sleep S seconds before listening (a slow `next dev`);
--fail-after: exit 3 after S seconds without ever listening (a crashing one)."""
import http.server
import sys
import time


def main(argv):
    port = int(argv[1])
    delay = float(argv[argv.index("--delay") + 1]) if "--delay" in argv else 0.0
    if "--fail-after" in argv:
        time.sleep(float(argv[argv.index("--fail-after") + 1]))
        print("stand-in dev server failing on purpose", flush=True)
        return 3
    time.sleep(delay)
    srv = http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
    print(f"stand-in dev server on {port}", flush=True)
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
