"""SQLite's writers in one queue, across every process of a server, kept by the kernel.

SQLite admits one writer at a time. A writer that finds the database locked waits in
SQLite's busy handler, which sleeps and looks again (1, 2, 5, ... up to 100 ms a turn),
so two server processes writing at once take turns at the handler's pace, not at the
pace of their commits. Here each writer first takes an exclusive ``flock`` on a file
beside the database (``<database>-write.lock``): the kernel wakes the next writer the
moment the previous one lets go, and releases a dead process's hold (``kill -9``
included). Within a process an ``asyncio.Lock`` queues writers in order, so one thread
per process waits on the file.

The queue only orders writers; SQLite's own locking still guarantees correctness. When
the file cannot be opened or locked, writers go straight to SQLite and its busy handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)


def lock_file(database: Path) -> Path:
    """The file whose lock orders the writers of ``database``."""
    return database.with_name(database.name + "-write.lock")


class WriteQueue:
    """Writers of one SQLite database, one at a time, in order of arrival. Like the
    ``asyncio.Lock`` inside it, a queue serves one event loop."""

    def __init__(self, database: Path | None) -> None:
        self._lock = asyncio.Lock()
        self._fd: int | None = None
        # Turns asked of the waiting thread (started on the first wait): the loop and
        # the future to settle; None stops it.
        self._asked: queue.SimpleQueue[_Ask | None] = queue.SimpleQueue()
        self._waiter: threading.Thread | None = None
        if database is None:  # an in-memory database: one process only
            return
        try:
            self._fd = os.open(lock_file(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("no write queue across processes (%s): SQLite's busy handler only", exc)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the database's write turn for the block."""
        await self._lock.acquire()
        held = False
        if self._fd is not None:
            # Given up on (cancelled), the wait keeps this process's turn until the file
            # lock comes, then gives both back: never two holders in one process.
            held = self._take_now() or await self._wait_for_file()
        try:
            yield
        finally:
            self._give_back(held)

    def close(self) -> None:
        """Release the file (the queue is not used after this). A thread still waiting
        for the file lock is a daemon: it never holds up the process's exit."""
        self._asked.put(None)
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _take_now(self) -> bool:
        """The file lock if it is free (no thread hop when nobody else writes)."""
        return self._flock(fcntl.LOCK_EX | fcntl.LOCK_NB, quiet=True)

    async def _wait_for_file(self) -> bool:
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[bool] = loop.create_future()
        if self._waiter is None:
            self._waiter = threading.Thread(
                target=self._wait, name="sqlite-write-queue", daemon=True
            )
            self._waiter.start()
        self._asked.put(_Ask(loop, taken))
        try:
            return await asyncio.shield(taken)
        except asyncio.CancelledError:
            taken.add_done_callback(self._give_back_when_taken)
            raise

    def _wait(self) -> None:
        """The waiting thread: takes the file lock for each turn asked, in order."""
        while (ask := self._asked.get()) is not None:
            held = self._flock(fcntl.LOCK_EX, quiet=False)
            try:
                ask.loop.call_soon_threadsafe(_settle, ask.taken, held)
            except RuntimeError:  # that event loop is closed: nobody takes this turn,
                # and the other processes must not wait for it.
                if held:
                    self._flock(fcntl.LOCK_UN, quiet=True)

    def _flock(self, operation: int, *, quiet: bool) -> bool:
        fd = self._fd
        if fd is None:
            return False
        try:
            fcntl.flock(fd, operation)
        except OSError as exc:
            if not quiet:
                log.warning("the write queue's file lock failed (%s): SQLite's busy handler", exc)
            return False
        return True

    def _give_back(self, held: bool) -> None:
        if held:
            self._flock(fcntl.LOCK_UN, quiet=True)
        self._lock.release()

    def _give_back_when_taken(self, taken: asyncio.Future[bool]) -> None:
        self._give_back(not taken.cancelled() and taken.result())


@dataclasses.dataclass(frozen=True)
class _Ask:
    loop: asyncio.AbstractEventLoop
    taken: asyncio.Future[bool]


def _settle(taken: asyncio.Future[bool], held: bool) -> None:
    taken.set_result(held)
