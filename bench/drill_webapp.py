"""A dev-server stand-in for bench/drills, started by the worker as SNAPWORKER_WEBAPP_CMD:
    /usr/bin/python3 -S bench/drill_webapp.py {port} STARTS_LOG
Appends "start PORT PID CWD" to STARTS_LOG (O_APPEND: one write per line, so concurrent
servers never interleave), then answers every connection with 200 until killed. A port
that is taken is logged as "bindfail PORT PID CWD" and the process exits 1. Imports only
what it must: it is started hundreds of times per drill on 2 shared cores."""
import os
import socket
import sys


def log(path, what, port):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {port} {os.getpid()} {os.getcwd()}\n".encode())
    finally:
        os.close(fd)


def main(argv):
    port, starts = int(argv[1]), argv[2]
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        log(starts, "bindfail", port)
        return 1
    s.listen(16)
    log(starts, "start", port)
    while True:
        c, _ = s.accept()
        try:
            c.recv(4096)
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        c.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
