"""``taskexec serve`` under ``kill -9``: a worker that dies is replaced (one worker or
several), workers do not outlive the supervisor (the port is free again at once), and a
server started before its database waits for it with one line per attempt."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskexec.config import Settings
from taskexec.race import bench

from helpers import auth, only, report, rtif_rows, seed, serve_env

pytestmark = pytest.mark.fault


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).is_success
    except httpx.TransportError:
        return False


def _wait(check: object, seconds: float) -> float:
    """Seconds until ``check()`` holds; fails after ``seconds``."""
    assert callable(check)
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def _workers(supervisor: int) -> set[int]:
    """The supervisor's server workers (not multiprocessing's resource tracker)."""
    found = set()
    for pid in subprocess.run(
        ["pgrep", "-P", str(supervisor)], capture_output=True, text=True, check=False
    ).stdout.split():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"spawn_main" in cmdline.read():
                    found.add(int(pid))
        except FileNotFoundError:
            continue  # gone between pgrep and here (the worker just killed)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@contextmanager
def _serve(
    settings: Settings, port: int, workers: int, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "taskexec", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=serve_env(settings, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(lambda: _healthy(port), 60)
        yield proc
    finally:
        with_group = [proc.pid, *_workers(proc.pid)]
        for pid in with_group:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)


def _sockets(port: int, state: str) -> set[str]:
    """The sockets on local ``port`` in a TCP ``state`` (01 established, 0A listening),
    as /proc/<pid>/fd names them."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                    found.add(f"socket:[{fields[9]}]")
    return found


def _connections_held(pids: set[int], port: int) -> dict[int, int]:
    """How many established connections to ``port`` each process holds."""
    established = _sockets(port, "01")
    held = {}
    for pid in pids:
        held[pid] = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                held[pid] += os.readlink(fd) in established
    return held


def _burst_of_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections opened at once (all waiting to be accepted), then each
    served one request and kept open."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    for client in clients:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    for client in clients:
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
    return clients


@only("sqlite")
@pytest.mark.parametrize("reuse_port", [True, False], ids=["own-sockets", "shared-socket"])
def test_a_burst_of_connections_is_spread_over_the_workers(
    settings: Settings, reuse_port: bool
) -> None:
    """Each worker listens on a socket of its own (SO_REUSEPORT): the kernel spreads
    32 connections that arrive at once over both workers. On one shared socket (the
    setting off) the first worker to wake may take them all: reported, not asserted."""
    port = bench.free_port()
    env = {"TASKEXEC_HTTP_REUSE_PORT": "true" if reuse_port else "false"}
    with _serve(settings, port, 2, **env) as proc:
        workers = _workers(proc.pid)
        assert len(workers) == 2
        # Both workers serving (/health answers as soon as one does): with sockets of
        # their own, two listen; on the shared one, each has its startup done.
        if reuse_port:
            _wait(lambda: len(_sockets(port, "0A")) == 2, 60)
        else:
            time.sleep(3)
        clients = _burst_of_connections(port, 32)
        try:
            held = sorted(_connections_held(workers, port).values())
        finally:
            for client in clients:
                client.close()
    report(
        f"[serve --workers 2, {'own sockets' if reuse_port else 'one shared socket'}] "
        f"32 connections at once, held per worker: {held}"
    )
    assert sum(held) == 32
    if reuse_port:
        # Binomial(32, 1/2): fewer than 4 on one worker has a chance of about 3e-6.
        assert held[0] >= 4


@only("sqlite")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_worker_is_replaced(settings: Settings, workers: int) -> None:
    port = bench.free_port()
    with _serve(settings, port, workers) as proc:
        _wait(lambda: len(_workers(proc.pid)) == workers, 30)
        victim = min(_workers(proc.pid))
        os.kill(victim, signal.SIGKILL)
        replaced = _wait(
            lambda: victim not in _workers(proc.pid) and len(_workers(proc.pid)) == workers, 10
        )
        serving = _wait(lambda: _healthy(port), 10) + replaced
        report(
            f"[serve --workers {workers}] kill -9 of a worker: replaced in {replaced:.2f} s, "
            f"serving again in {serving:.2f} s"
        )


@only("sqlite")
@pytest.mark.parametrize("stop", ["kill-9-worker", "stop-server"])
def test_a_workers_masking_process_ends_with_it(settings: Settings, stop: str) -> None:
    """A body of 64 KiB or more is masked in a process the worker starts; that process
    ends with the worker, however the worker ends (it once outlived a stopped server,
    waiting for work forever)."""
    ti = seed(settings).task_instances[0]
    port = bench.free_port()
    with _serve(settings, port, 1) as proc:
        _wait(lambda: len(_workers(proc.pid)) == 1, 30)
        (worker,) = _workers(proc.pid)
        resp = httpx.put(
            f"http://127.0.0.1:{port}/execution/task-instances/{ti.id}/rtif",
            content=json.dumps({"a": "x" * (80 * 1024)}),
            headers={**auth(ti.token), "content-type": "application/json"},
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        masking = _workers(worker)
        assert len(masking) == 1
        if stop == "kill-9-worker":
            os.kill(worker, signal.SIGKILL)
        else:
            proc.terminate()
        gone = _wait(lambda: not any(_alive(pid) for pid in masking), 15)
    report(f"[serve] {stop}: its masking process gone in {gone:.2f} s")


@only("sqlite")
def test_workers_die_with_the_supervisor(settings: Settings) -> None:
    port = bench.free_port()
    with _serve(settings, port, 2) as proc:
        _wait(lambda: len(_workers(proc.pid)) == 2, 30)
        workers = _workers(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        gone = _wait(lambda: not any(_alive(pid) for pid in workers), 15)
        # The port is free: a new server takes it.
        with _serve(settings, port, 1):
            assert _healthy(port)
    report(f"[serve --workers 2] kill -9 of the supervisor: workers gone in {gone:.2f} s")


def _mapped(pid: int, marker: str) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return marker in maps.read()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@only("sqlite")
def test_the_supervisor_keeps_none_of_the_server(settings: Settings) -> None:
    """``serve`` gets ready with the whole CLI and SQLAlchemy loaded, then becomes the
    light supervisor (same pid): SQLAlchemy is mapped in each worker, not in it."""
    with _serve(settings, bench.free_port(), 2) as proc:
        _wait(lambda: len(_workers(proc.pid)) == 2, 30)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as cmdline:
            assert b"taskexec.server.supervisor" in cmdline.read()
        marker = "/sqlalchemy/"
        assert not _mapped(proc.pid, marker)
        workers = sorted(_workers(proc.pid))
        assert all(_mapped(pid, marker) for pid in workers)
        sizes = ", ".join(f"{_rss_mib(pid):.0f}" for pid in workers)
        report(
            f"[serve --workers 2] RSS: supervisor {_rss_mib(proc.pid):.0f} MiB, "
            f"workers {sizes} MiB (idle)"
        )


def _console_script() -> str:
    # The installed command: unlike `python -m`, it does not put the working
    # directory first on sys.path.
    return str(Path(sys.executable).with_name("taskexec"))


@only("sqlite")
def test_the_supervisor_imports_nothing_from_the_working_directory(
    settings: Settings, tmp_path: Path
) -> None:
    """A module file in the directory `serve` runs in (here one named like a module the
    supervisor imports) is not imported by the supervisor or its workers."""
    marker = tmp_path / "imported"
    (tmp_path / "uvicorn.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    port = bench.free_port()
    proc = subprocess.Popen(
        [_console_script(), "serve", "--port", str(port), "--workers", "2"],
        env=serve_env(settings),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(lambda: _healthy(port), 60)
        assert not marker.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@only("sqlite")
def test_ctrl_c_right_after_the_exec_stops_the_server_quietly(settings: Settings) -> None:
    """SIGINT as soon as the process has become the supervisor (its interpreter still
    starting): held back until the supervisor's handlers are set, then a clean stop."""
    proc = subprocess.Popen(
        [_console_script(), "serve", "--port", str(bench.free_port())],
        env=serve_env(settings),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def became_supervisor() -> bool:
        with open(f"/proc/{proc.pid}/cmdline", "rb") as cmdline:
            return b"taskexec.server.supervisor" in cmdline.read()

    try:
        _wait(became_supervisor, 60)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert "Traceback" not in stderr
    assert proc.returncode == 0, stderr


@only("sqlite")
@pytest.mark.parametrize("freeze", ["true", "false"])
def test_a_server_process_freezes_its_start_up_objects(settings: Settings, freeze: str) -> None:
    """A worker's app factory leaves the modules' objects out of the garbage
    collector's sight (``gc.freeze``), unless TASKEXEC_GC_FREEZE=false."""
    script = (
        "import gc\n"
        "from taskexec.server.app import create_server_app\n"
        "create_server_app()\n"
        "print(gc.get_freeze_count())\n"
    )
    env = {**serve_env(settings), "TASKEXEC_GC_FREEZE": freeze}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    frozen = int(out.stdout.split()[-1])
    if freeze == "true":
        assert frozen > 50_000
    else:
        assert frozen == 0


@only("sqlite")
def test_serve_waits_for_an_unreachable_database(settings: Settings) -> None:
    closed = bench.free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed}/test"
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskexec", "serve", "--port", str(bench.free_port())],
        env=serve_env(settings, TASKEXEC_DATABASE_URL=url),
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    still_waiting = proc.poll() is None
    proc.kill()
    _, stderr = proc.communicate(timeout=10)
    assert still_waiting
    waits = [line for line in stderr.splitlines() if "the database is not reachable" in line]
    assert len(waits) >= 2 and "Traceback" not in stderr, stderr


@only("postgresql")
def test_workers_killed_under_write_load_lose_no_acknowledged_write(
    settings: Settings, sync_engine: Any
) -> None:
    tis = seed(settings, tasks=4).task_instances
    acked = dict.fromkeys((ti.id for ti in tis), -1)
    failures = {"transport": 0, "status": 0}
    stop = threading.Event()
    port = bench.free_port()

    def write(ti: Any) -> None:
        n = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while not stop.is_set():
                n += 1
                try:
                    resp = client.put(
                        f"/execution/task-instances/{ti.id}/rtif",
                        json={"n": n},
                        headers=auth(ti.token),
                    )
                except httpx.TransportError:
                    failures["transport"] += 1  # in flight on a killed worker, or no server
                    time.sleep(0.05)
                    continue
                if resp.status_code == 201:
                    acked[ti.id] = n
                else:
                    failures["status"] += 1

    with _serve(settings, port, 2) as proc:
        _wait(lambda: len(_workers(proc.pid)) == 2, 30)
        writers = [threading.Thread(target=write, args=(ti,)) for ti in tis]
        for writer in writers:
            writer.start()
        # Both original workers, one after the other: whichever holds the writers'
        # connections is killed under them.
        for victim in sorted(_workers(proc.pid)):
            time.sleep(1.5)
            os.kill(victim, signal.SIGKILL)
        time.sleep(2)
        # Then the supervisor: its workers finish what they hold and exit.
        workers = _workers(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        _wait(lambda: not any(_alive(pid) for pid in workers), 15)
        stop.set()
        for writer in writers:
            writer.join(30)
    stored = {str(r["task_id"]): r["rendered_fields"]["n"] for r in rtif_rows(sync_engine)}
    lost = [ti for ti in tis if acked[ti.id] > stored.get(ti.task_id, -1)]
    report(
        f"[postgresql, serve --workers 2] kill -9 of both workers in turn, then of the "
        f"supervisor, under 4 writers: "
        f"{sum(max(n, 0) for n in acked.values())} writes acknowledged, lost {len(lost)}, "
        f"requests cut by the kill {failures['transport']}, non-2xx {failures['status']}"
    )
    assert not lost and all(n > 0 for n in acked.values())
