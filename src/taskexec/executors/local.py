"""The local executor: N worker processes on this machine.

The executor hands queued tries to its processes through a queue (one running and one
waiting per process), and learns from a second queue when each is done; the processes run the tries
through the SDK's runner (``executors/worker``) against the Execution API.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.queues
import os
import queue
import time
import uuid

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.executors import base, worker
from taskexec.security import TokenSigner

# How long shutdown waits for the processes to take their stop signal and exit.
STOP_GRACE_SECONDS = 60.0


class ProcessPool:
    """``count`` worker processes (spawned, so no state leaks in from this process)."""

    def __init__(self, settings: Settings, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._inbox: multiprocessing.queues.Queue[tuple[str, str] | None] = ctx.Queue()
        self._outbox: multiprocessing.queues.Queue[worker.Finished] = ctx.Queue()
        self._procs = [
            ctx.Process(
                target=worker.process_main,
                args=(settings, self._inbox, self._outbox),
                name=f"taskexec-worker-{n}",
            )
            for n in range(count)
        ]
        self._in_flight = 0

    def start(self) -> None:
        """Start the processes."""
        for proc in self._procs:
            proc.start()

    def free(self) -> int:
        """Room for more tries: one running and one waiting per live process, so that a
        process that finishes a try starts the next without waiting for the executor."""
        return 2 * sum(p.is_alive() for p in self._procs) - self._in_flight

    def in_flight(self) -> int:
        """Tries sent and not reported back yet."""
        return self._in_flight

    def alive(self) -> bool:
        """Whether any process is still running."""
        return any(p.is_alive() for p in self._procs)

    def send(self, ti_id: uuid.UUID, token: str) -> None:
        """Queue one try for the next idle process."""
        self._inbox.put((str(ti_id), token))
        self._in_flight += 1

    async def finished(self, wait: float) -> list[tuple[uuid.UUID, str | None]]:
        """The tries the processes reported since the last call (waits up to ``wait``)."""
        reports: list[worker.Finished] = []
        try:
            reports.append(await asyncio.to_thread(self._outbox.get, True, wait))
            while True:
                reports.append(self._outbox.get_nowait())
        except queue.Empty:
            pass
        self._in_flight -= len(reports)
        return [(uuid.UUID(ti_id), error) for ti_id, _outcome, error in reports]

    def stop(self) -> None:
        """Ask every process to stop after its try; terminate any that does not."""
        for _ in self._procs:
            self._inbox.put(None)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()


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
