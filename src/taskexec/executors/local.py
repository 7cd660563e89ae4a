"""The local executor: N worker processes on this machine, under the scheduler.

Each process is ``python -m taskexec.executors.worker``, started with the scheduler's
settings in its environment. The executor writes it one try at a time on its stdin,
and reads its reports from a pipe of its own. The pool takes up to twice as many tries
as it has processes: the extra ones wait in one line, and the moment a process reports
a try done it gets the next, with a token minted then, without waiting for the
scheduler's next iteration. A process that dies takes only its own pipes with it: the
try it was running is retried or failed (or handed out again if it never started), and
a replacement process is started, once per process. The scheduler process imports no
worker code: the two sides meet only through pipes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import selectors
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import IO

from taskexec import config
from taskexec.executors import base
from taskexec.wire import protocol, schemas

WORKER_MODULE = "taskexec.executors.worker"
# Tries handed to the pool per live process: one running, and one waiting in line.
PER_PROCESS = 2
# How long shutdown waits for the processes to finish their try and exit.
STOP_GRACE_SECONDS = 60.0


@dataclasses.dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    stdin: IO[bytes]
    reports: int  # the read end of its report pipe
    # Tries sent to it and not reported back, oldest first.
    held: list[uuid.UUID] = dataclasses.field(default_factory=list)
    partial: bytes = b""

    def alive(self) -> bool:
        return self.popen.poll() is None


class ProcessPool:
    """``count`` worker processes."""

    def __init__(
        self, settings: config.Settings, count: int, mint: Callable[[uuid.UUID], str]
    ) -> None:
        self._env = {**os.environ, **config.as_environment(settings)}
        self._count = count
        self._mint = mint
        self._replacements_left = count
        self._hostname = socket.gethostname()
        self._processes: list[_Process] = []
        self._waiting: collections.deque[uuid.UUID] = collections.deque()

    def start(self) -> None:
        """Start the processes."""
        for _ in range(self._count):
            self._spawn()

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        popen = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            env={**self._env, protocol.WORKER_REPORT_FD_ENV: str(write_end)},
            pass_fds=(write_end,),
        )
        os.close(write_end)
        assert popen.stdin is not None
        self._processes.append(_Process(popen, popen.stdin, read_end))

    def free(self) -> int:
        """Room for more tries: ``PER_PROCESS`` per live process, less those in hand."""
        live = sum(1 for p in self._processes if p.alive())
        return live * PER_PROCESS - self.in_flight()

    def in_flight(self) -> int:
        """Tries handed to the pool and not reported back yet."""
        return len(self._waiting) + sum(len(p.held) for p in self._processes)

    def alive(self) -> bool:
        """Whether any process is still running."""
        return any(p.alive() for p in self._processes)

    def send(self, ti_id: uuid.UUID) -> None:
        """Take one try: an idle process starts it now, or it waits for the first that
        reports."""
        self._waiting.append(ti_id)
        self._feed()

    def _feed(self) -> None:
        for process in self._processes:
            if not self._waiting:
                return
            if process.held or not process.alive():
                continue
            ti_id = self._waiting.popleft()
            # Minted now, not when the try was queued: a try may wait in line a while.
            line = json.dumps({"ti_id": str(ti_id), "token": self._mint(ti_id)}) + "\n"
            try:
                process.stdin.write(line.encode())
                process.stdin.flush()
            except OSError:
                self._waiting.appendleft(ti_id)  # it just died: _bury will see
                continue
            process.held.append(ti_id)

    async def finished(self, wait: float) -> list[base.Report]:
        """The tries reported back, and those of processes that died, since the last
        call; waits up to ``wait`` seconds for the first."""
        await asyncio.to_thread(self._wait, wait)
        reports: list[base.Report] = []
        for process in list(self._processes):
            reports += self._receive(process)
            if not process.alive():
                reports += self._bury(process)
        self._feed()
        return reports

    def _wait(self, wait: float) -> None:
        # A report, or a process ending (its report pipe closes), ends the wait.
        with selectors.DefaultSelector() as selector:
            for process in self._processes:
                selector.register(process.reports, selectors.EVENT_READ)
            if self._processes:
                selector.select(wait)
            else:
                time.sleep(wait)

    def _receive(self, process: _Process) -> list[base.Report]:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(process.reports, 65536):
                process.partial += chunk
        *lines, process.partial = process.partial.split(b"\n")
        reports = []
        for line in lines:
            finished: schemas.TryReport = json.loads(line)
            report = base.report_of(finished)
            if report.ti_id in process.held:
                process.held.remove(report.ti_id)
            reports.append(report)
        return reports

    def _bury(self, process: _Process) -> list[base.Report]:
        self._processes.remove(process)
        with contextlib.suppress(OSError):
            process.stdin.close()
        os.close(process.reports)
        error = f"worker process {process.popen.pid} died (exit code {process.popen.returncode})"
        at = (self._hostname, process.popen.pid)
        lost = [base.Report(ti_id, error=error, worker=at, lost=True) for ti_id in process.held]
        if self._replacements_left > 0:
            self._replacements_left -= 1
            self._spawn()
        return lost

    def stop(self) -> None:
        """Close every process's input (it exits after its try); kill any that does
        not exit within the grace period."""
        for process in self._processes:
            with contextlib.suppress(OSError):
                process.stdin.close()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in self._processes:
            try:
                process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            os.close(process.reports)
        self._processes.clear()


def start(settings: config.Settings, mint: Callable[[uuid.UUID], str]) -> ProcessPool:
    """A started pool of ``TASKEXEC_LOCAL_WORKERS`` processes (default: one per CPU);
    ``mint`` makes each try's token when a process takes it."""
    pool = ProcessPool(settings, settings.local_workers or os.cpu_count() or 1, mint)
    pool.start()
    return pool
