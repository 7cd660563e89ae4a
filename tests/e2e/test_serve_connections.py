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

from helpers import only, report, serve_env, wait_healthy

pytestmark = pytest.mark.fault

HEADER_TIMEOUT = 1.0
CAP = 200


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
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(CAP // 2)]
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(CAP // 4)]
        for s in slow:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        sockets += idle + slow
        opened = time.monotonic()
        # Past the cap: closed at once.
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(CAP)]
        sockets += extra
        refused = sum(_closed_by_server(s, 0.5) for s in extra)
        assert refused >= CAP // 4, refused
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
        f"[serve] {CAP // 2} idle + {CAP // 4} half-sent-header connections all closed "
        f"{took:.2f} s after opening (headers deadline {HEADER_TIMEOUT:g} s); "
        f"{refused} of {CAP} connections past the cap of {CAP} refused at once"
    )
