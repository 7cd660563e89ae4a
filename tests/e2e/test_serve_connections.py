"""Connection limits of ``taskexec serve``: connections that never send a request, or
send their headers too slowly, are closed at the headers deadline; past the cap new
connections are refused at once; and through all of it an ordinary client is served."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from taskexec.config import Settings
from taskexec.race import bench
from taskexec.server import connections

from helpers import only, report, serve_env, wait_healthy

pytestmark = pytest.mark.fault

HEADER_TIMEOUT = 1.0
CAP = 2100
IDLE, SLOW, EXTRA = 1500, 500, 300


def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@only("sqlite")
def test_idle_and_slow_connections_are_closed_and_the_cap_holds(settings: Settings) -> None:
    # This process holds every client socket: it needs the files too.
    if connections.raise_open_file_limit() < IDLE + SLOW + EXTRA + 500:
        pytest.skip("the open-file limit is too low for 2,300 client sockets")
    port = bench.free_port()
    env = serve_env(
        settings,
        TASKEXEC_HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        TASKEXEC_HTTP_MAX_CONNECTIONS=str(CAP),
    )
    command = [sys.executable, "-m", "taskexec", "serve", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    sockets: list[socket.socket] = []
    try:
        wait_healthy(port)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE)]
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(SLOW)]
        for s in slow:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        sockets += idle + slow
        opened = time.monotonic()
        # Past the cap: closed at once.
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(EXTRA)]
        sockets += extra
        refused = sum(_closed_by_server(s, 0.2) for s in extra)
        assert refused >= EXTRA - (CAP - IDLE - SLOW) - 10, refused
        assert all(_closed_by_server(s, HEADER_TIMEOUT + 3) for s in idle + slow)
        took = time.monotonic() - opened
        # Meanwhile and after, an ordinary client is served.
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).is_success
    finally:
        for s in sockets:
            s.close()
        proc.terminate()
        proc.wait(20)
    report(
        f"[serve] {IDLE} idle + {SLOW} half-sent-header connections all closed "
        f"{took:.2f} s after opening (headers deadline {HEADER_TIMEOUT:g} s); "
        f"{refused} of {EXTRA} more connections refused at once (cap {CAP})"
    )
