"""gevent's side of net_race (bench/src/bin/net_race.rs), loopback only.

Usage:
    net_race.py echo CONNS SIZE MS RUNS   prints "us v1 v2 ..." (µs per round trip, one per run)
    net_race.py http PROCS                prints "port N", serves hello world until stdin closes

The echo runs server and clients in this one process, as the Rust side
does: a StreamServer echoing, CONNS client greenlets each writing SIZE bytes
and reading them back until the run's deadline. `http` with PROCS > 1 forks
that many processes sharing the port through SO_REUSEPORT.
"""

from gevent import monkey

monkey.patch_all()

import os
import socket
import sys
import time

import gevent
from gevent.server import StreamServer

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!"
BUF = 64 * 1024


def echo_handler(conn, _addr):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(BUF)
    view = memoryview(buf)
    while True:
        n = conn.recv_into(buf)
        if not n:
            return
        conn.sendall(view[:n])


def echo(conns, size, ms, runs):
    server = StreamServer(("127.0.0.1", 0), echo_handler)
    server.start()
    addr = server.address
    figures = []

    def client(deadline):
        s = socket.create_connection(addr)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = b"\x07" * size
        back = bytearray(size)
        view = memoryview(back)
        n = 0
        now = time.perf_counter
        while now() < deadline:
            s.sendall(out)
            got = 0
            while got < size:
                r = s.recv_into(view[got:])
                if not r:
                    raise EOFError("server closed")
                got += r
            n += 1
        s.close()
        return n

    for run in range(runs + 1):
        start = time.perf_counter()
        deadline = start + ms / 1000.0
        clients = [gevent.spawn(client, deadline) for _ in range(conns)]
        gevent.joinall(clients, raise_error=True)
        total = sum(c.value for c in clients)
        elapsed = time.perf_counter() - start
        if run > 0:
            figures.append(elapsed * 1e6 / max(total, 1))
    server.stop()
    print("us " + " ".join(f"{v:.3f}" for v in figures), flush=True)


def http_handler(conn, _addr):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""
    while True:
        try:
            data = conn.recv(4096)
        except ConnectionResetError:
            return  # wrk ends with resets
        if not data:
            return
        pending += data
        count = pending.count(b"\r\n\r\n")
        if count:
            pending = pending[pending.rfind(b"\r\n\r\n") + 4 :]
            conn.sendall(RESPONSE * count)


def http(procs):
    first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    first.bind(("127.0.0.1", 0))
    first.listen(1024)
    port = first.getsockname()[1]
    listeners = [first]
    for _ in range(procs - 1):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1024)
        listeners.append(s)
    children = []
    for listener in listeners[1:]:
        pid = os.fork()
        if pid == 0:
            # A child serves its own listener until its parent is gone.
            for other in listeners:
                if other is not listener:
                    other.close()
            StreamServer(listener, http_handler).start()
            parent = os.getppid()
            while os.getppid() == parent:
                gevent.sleep(0.1)
            os._exit(0)
        children.append(pid)
    for other in listeners[1:]:
        other.close()
    server = StreamServer(first, http_handler)
    server.start()
    print(f"port {port}", flush=True)
    # Serve until the parent closes our stdin.
    gevent.get_hub().threadpool.spawn(sys.stdin.read).get()
    server.stop(timeout=0.1)
    for pid in children:
        try:
            os.kill(pid, 15)
            os.waitpid(pid, 0)
        except OSError:
            pass


def main(argv):
    if len(argv) == 5 and argv[0] == "echo":
        echo(int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]))
    elif len(argv) == 2 and argv[0] == "http":
        http(int(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
