"""bench/swbench.py — small helpers shared by bench/scale, bench/soak, bench/drills and
bench/charts (imported, not run): throwaway servers through scripts/services, the machine
line every table carries, /proc readers, and the JSON results under build/bench/ that
bench/charts turns into docs/img/*.png.

Owns nothing else: each bench keeps its own logic. Runs under /usr/bin/python3 (Debian's
python3-redis)."""
import datetime
import json
import os
import platform
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SNAPWORKER_BIN", os.path.join(ROOT, "snapworker"))
RESULTS = os.path.join(ROOT, "build", "bench")
PGBIN = "/usr/lib/postgresql/15/bin"


def machine():
    """{"nproc", "cpu", "kernel", "date", "load"}: the line under every table."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "load": round(os.getloadavg()[0], 2)}


def machine_line(m=None):
    m = m or machine()
    return (f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}; run {m['date']}, "
            f"load average at start {m['load']}")


def start_services(d, *names, **env):
    """scripts/services start D NAMES; returns its KEY=VALUE lines as a dict."""
    out = subprocess.run([os.path.join(ROOT, "scripts/services"), "start", d, *names],
                         check=True, capture_output=True, text=True,
                         env=dict(os.environ, **{k: str(v) for k, v in env.items()})).stdout
    return dict(line.split("=", 1) for line in out.split() if "=" in line)


def stop_services(d):
    subprocess.run([os.path.join(ROOT, "scripts/services"), "stop", d], check=False)


def proc_status(pid, field):
    """A kB field of /proc/PID/status (VmRSS, RssAnon, VmHWM), 0 when absent."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])


def slope(xs, ys):
    """Least-squares slope of ys over xs (0 with fewer than 2 points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def job_process_runs(logpath):
    """The `job_process` log lines of job runs (op=run) in a worker's log, as dicts of their
    fields: job, type, pid, spawn_us, spare, ms, peak_rss_kb (worker/jobproc.c)."""
    runs = []
    with open(logpath, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "msg=job_process" not in line:
                continue
            kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
            if kv.get("op") == "run":
                runs.append(kv)
    return runs


def save(name, data):
    """Write build/bench/NAME.json (with the machine) for bench/charts; returns the path."""
    os.makedirs(RESULTS, exist_ok=True)
    data = dict(data)
    data.setdefault("machine", machine())
    path = os.path.join(RESULTS, name + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def build_workspace(session_dir, files=40, size=2048, big_bytes=0, web=True):
    """outputs/ with FILES small files of SIZE bytes in a few folders, an optional big random
    file, and (web) outputs/web/package.json plus node_modules/ so a restore starts the dev
    server without npm install; an empty attachments/."""
    out = os.path.join(session_dir, "outputs")
    os.makedirs(os.path.join(session_dir, "attachments"), exist_ok=True)
    for i in range(files):
        p = os.path.join(out, f"src/d{i % 5}/f{i}.txt")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write((f"file {i} " * (size // 8 + 1)).encode()[:size])
    if big_bytes:
        with open(os.path.join(out, "big.bin"), "wb") as f:
            f.write(os.urandom(big_bytes))
    if web:
        os.makedirs(os.path.join(out, "web", "node_modules"), exist_ok=True)
        with open(os.path.join(out, "web", "package.json"), "w") as f:
            f.write("{}\n")


def psql(pg_port, sql, db="snapworker"):
    p = subprocess.run([f"{PGBIN}/psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres",
                        "-d", db, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"psql: {p.stderr.strip()}")
    return p.stdout.strip()


def migrate(env):
    p = subprocess.run([BIN, "migrate"], env=dict(os.environ, **env), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("snapworker migrate: " + p.stderr)
