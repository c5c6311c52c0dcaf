"""Helpers of test_50_jobs.py: build a workspace, describe a tree, write hostile archives,
stop and start the module's PostgreSQL, and small HTTP stand-ins for the dev server."""
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import time

PGBIN = "/usr/lib/postgresql/15/bin"

UNICODE_NAMES = ["résumé.txt", "数据-文件.md", "emoji-🎉.json", "Ωmega dir"]


def build_workspace(session_dir, big_bytes=20 * 1024 * 1024):
    """outputs/ with nested folders, 0-byte and big files, unicode names, modes 0600/0755,
    in-tree symlinks (file and folder, like node_modules/.bin), and an empty attachments/."""
    out = os.path.join(session_dir, "outputs")
    deep = os.path.join(out, "a", "b", "c", "d")
    os.makedirs(deep)
    os.makedirs(os.path.join(session_dir, "attachments"))
    files = {
        "a/b/c/d/leaf.txt": b"deep leaf\n",
        "empty.bin": b"",
        "a/secret.key": b"private\n",
        "a/run.sh": b"#!/bin/sh\necho hi\n",
        "web/node_modules/next/dist/bin/next": b"#!/usr/bin/env node\n",
        "web/app/page.tsx": b"export default function P() { return null }\n",
    }
    for name in UNICODE_NAMES[:3]:
        files[name] = ("unicode " + name).encode()
    files["Ωmega dir/ünïcode inside.txt"] = "still unicode".encode()
    for rel, data in files.items():
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    with open(os.path.join(out, "big.bin"), "wb") as f:
        f.write(os.urandom(big_bytes))
    os.chmod(os.path.join(out, "a/secret.key"), 0o600)
    os.chmod(os.path.join(out, "a/run.sh"), 0o755)
    os.chmod(os.path.join(out, "web/node_modules/next/dist/bin/next"), 0o755)
    binp = os.path.join(out, "web/node_modules/.bin")
    os.makedirs(binp)
    os.symlink("../next/dist/bin/next", os.path.join(binp, "next"))
    os.symlink("a/b/c", os.path.join(out, "link-to-dir"))
    os.symlink("empty.bin", os.path.join(out, "link-to-file"))
    # fixed whole-second mtimes, deepest first so folders keep theirs
    t = 1_600_000_000
    for root, dirs, names in os.walk(out, topdown=False):
        for n in names + dirs:
            p = os.path.join(root, n)
            t += 7
            os.utime(p, (t, t), follow_symlinks=False)
        os.utime(root, (t + 1, t + 1))


def describe(root):
    """{relative path: (kind, mode, size, sha256 | link target, mtime s)} of a tree."""
    out = {}
    for dirpath, dirs, names in os.walk(root):
        for n in sorted(dirs + names):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", None, None, os.readlink(p), None)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None, None, int(st.st_mtime))
            else:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, h.hexdigest(),
                            int(st.st_mtime))
    return out


def _add(tf, name, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = kw.pop("mode", 0o644)
    ti.mtime = 1_600_000_000
    for k, v in kw.items():
        setattr(ti, k, v)
    tf.addfile(ti, io.BytesIO(data) if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else None)


def hostile_archive(kind, outside):
    """tar.gz bytes of one hostile or broken kind; 'outside' is an absolute folder that
    must stay empty."""
    if kind == "corrupt":
        return b"\x1f\x8b\x08\x00" + os.urandom(2000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "outputs/", type=tarfile.DIRTYPE, mode=0o755)
        _add(tf, "outputs/ok.txt", b"fine")
        if kind == "dotdot":
            _add(tf, "outputs/../../escaped.txt", b"escaped")
        elif kind == "absolute":
            _add(tf, os.path.join(outside, "abs.txt"), b"absolute")
        elif kind == "symlink_then_file":
            _add(tf, "outputs/evil", type=tarfile.SYMTYPE, linkname=outside)
            _add(tf, "outputs/evil/through.txt", b"through the link")
        elif kind == "hardlink_out":
            _add(tf, "outputs/h", type=tarfile.LNKTYPE, linkname="/etc/passwd")
        elif kind == "device":
            _add(tf, "outputs/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        elif kind == "fifo":
            _add(tf, "outputs/fifo", type=tarfile.FIFOTYPE)
        elif kind == "setuid":
            _add(tf, "outputs/suid", b"x", mode=0o4755)
        elif kind == "entry_bomb":
            for i in range(300):
                _add(tf, f"outputs/many/{i}.txt", b"")
        else:
            raise ValueError(kind)
    return buf.getvalue()


def write_object(store_root, key, data, sidecar=True):
    p = os.path.join(store_root, key)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    if sidecar:
        with open(p + ".sha256", "w") as f:
            f.write(hashlib.sha256(data).hexdigest())


# ---- PostgreSQL stop/start with the same data dir and port as scripts/services ------------

def _as_postgres():
    return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []


def pg_stop(services_dir):
    subprocess.run(_as_postgres() + [f"{PGBIN}/pg_ctl", "-D", f"{services_dir}/pg/data", "-m",
                                     "fast", "-w", "stop"], check=True, capture_output=True)


def pg_start(services_dir, port):
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {services_dir}/pg -c fsync=off "
            f"-c max_connections=200")
    subprocess.run(_as_postgres() + [f"{PGBIN}/pg_ctl", "-D", f"{services_dir}/pg/data", "-l",
                                     f"{services_dir}/pg/log", "-o", opts, "-w", "start"],
                   check=True, capture_output=True)
    with open(f"{services_dir}/pg/data/postmaster.pid") as f:
        pid = f.readline().strip()
    with open(f"{services_dir}/postgres.pid", "w") as f:
        f.write(pid + "\n")


def wait_gone(pid, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False
