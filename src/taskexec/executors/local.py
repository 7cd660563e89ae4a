"""The local executor: N worker processes on this machine.

Each process has its own pipe: the executor sends it a try (and one more to wait behind
it, so a process that finishes one starts the next without waiting for the executor)
and the process reports each back on the same pipe. A process that dies takes only its
own pipe with it: its tries are handed out again if they never started (or ended as
failed if it was running one), and a replacement process is started, once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import socket
import time
import uuid
from multiprocessing.process import BaseProcess

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.executors import base, worker
from taskexec.security import TokenSigner

# Tries held by one process at a time: one running, one waiting.
PER_PROCESS = 2
# How long shutdown waits for the processes to finish their try and exit.
STOP_GRACE_SECONDS = 60.0


@dataclasses.dataclass
class _Process:
    proc: BaseProcess
    conn: multiprocessing.connection.Connection
    # Tries sent to it and not reported back, oldest first.
    held: list[uuid.UUID] = dataclasses.field(default_factory=list)


class ProcessPool:
    """``count`` worker processes (spawned: no state leaks in from this process)."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._settings = settings
        self._count = count
        self._replacements_left = count
        self._hostname = socket.gethostname()
        self._processes: list[_Process] = []

    def start(self) -> None:
        """Start the processes."""
        for _ in range(self._count):
            self._spawn()

    def _spawn(self) -> None:
        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(target=worker.process_main, args=(self._settings, theirs))
        proc.start()
        theirs.close()
        self._processes.append(_Process(proc, ours))

    def free(self) -> int:
        """Room for more tries on the live processes."""
        return sum(PER_PROCESS - len(p.held) for p in self._processes if p.proc.is_alive())

    def in_flight(self) -> int:
        """Tries sent and not reported back yet."""
        return sum(len(p.held) for p in self._processes)

    def alive(self) -> bool:
        """Whether any process is still running."""
        return any(p.proc.is_alive() for p in self._processes)

    def send(self, ti_id: uuid.UUID, token: str) -> None:
        """Send one try to the live process that holds the fewest."""
        target = min(
            (p for p in self._processes if p.proc.is_alive() and len(p.held) < PER_PROCESS),
            key=lambda p: len(p.held),
        )
        target.conn.send((str(ti_id), token))
        target.held.append(ti_id)

    async def finished(self, wait: float) -> list[base.Report]:
        """The tries reported back, and those of processes that died, since the last
        call; waits up to ``wait`` seconds for the first."""
        waitables = [p.conn for p in self._processes] + [p.proc.sentinel for p in self._processes]
        await asyncio.to_thread(multiprocessing.connection.wait, waitables, wait)
        reports: list[base.Report] = []
        for process in list(self._processes):
            reports += self._receive(process)
            if not process.proc.is_alive():
                reports += self._bury(process)
        return reports

    def _receive(self, process: _Process) -> list[base.Report]:
        reports = []
        try:
            while process.conn.poll():
                finished: worker.Finished = process.conn.recv()
                ti_id = uuid.UUID(finished["ti_id"])
                process.held.remove(ti_id)
                at = (finished["hostname"], finished["pid"])
                reports.append(base.Report(ti_id, error=finished["error"], worker=at))
        except (EOFError, OSError):
            pass  # the process is gone; _bury accounts for what it held
        return reports

    def _bury(self, process: _Process) -> list[base.Report]:
        process.proc.join()
        process.conn.close()
        self._processes.remove(process)
        error = f"worker process {process.proc.pid} died (exit code {process.proc.exitcode})"
        at = (self._hostname, process.proc.pid or 0)
        lost = [base.Report(ti_id, error=error, worker=at, lost=True) for ti_id in process.held]
        if self._replacements_left > 0:
            self._replacements_left -= 1
            self._spawn()
        return lost

    def stop(self) -> None:
        """Ask every process to stop after its try; terminate any that does not."""
        for process in self._processes:
            with contextlib.suppress(OSError):  # a process already gone
                process.conn.send(None)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in self._processes:
            process.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.proc.is_alive():
                process.proc.terminate()
            process.conn.close()


async def run_local(
    settings: Settings,
    dag_id: str,
    run_id: str,
    *,
    workers: int | None = None,
    on_tick: base.OnTick | None = None,
) -> base.RunReport:
    """Execute every try of the run on ``workers`` processes (default: one per CPU)."""
    started = time.perf_counter()
    pool = ProcessPool(settings, workers or os.cpu_count() or 1)
    pool.start()
    try:
        async with db_engine.open_database(settings) as db:
            counts = await base.drive(
                db, pool, TokenSigner(settings), dag_id, run_id, on_tick=on_tick
            )
    finally:
        await asyncio.to_thread(pool.stop)
    return base.RunReport(counts, time.perf_counter() - started)
