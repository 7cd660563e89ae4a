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
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)


def lock_file(database: Path) -> Path:
    """The file whose lock orders the writers of ``database``."""
    return database.with_name(database.name + "-write.lock")


class WriteQueue:
    """Writers of one SQLite database, one at a time, in order of arrival."""

    def __init__(self, database: Path | None) -> None:
        self._lock = asyncio.Lock()
        self._fd: int | None = None
        self._waiter: ThreadPoolExecutor | None = None
        if database is None:  # an in-memory database: one process only
            return
        try:
            self._fd = os.open(lock_file(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("no write queue across processes (%s): SQLite's busy handler only", exc)
            return
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write-queue")

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the database's write turn for the block."""
        await self._lock.acquire()
        if self._waiter is not None and self._take_now():
            held = True
        elif self._waiter is not None:
            taken = asyncio.get_running_loop().run_in_executor(self._waiter, self._take)
            try:
                held = await asyncio.shield(taken)
            except asyncio.CancelledError:
                # The file lock may still come: this process keeps its turn until it
                # does, then gives both back (never two holders in one process).
                taken.add_done_callback(self._give_back_when_taken)
                raise
        else:
            held = False
        try:
            yield
        finally:
            self._give_back(held)

    def close(self) -> None:
        """Release the file (the queue is not used after this)."""
        if self._waiter is not None:
            self._waiter.shutdown(wait=False)
            self._waiter = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _take_now(self) -> bool:
        """The file lock if it is free (no thread hop when nobody else writes)."""
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _take(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.warning("the write queue's file lock failed (%s): SQLite's busy handler", exc)
            return False
        return True

    def _give_back(self, held: bool) -> None:
        if held and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()

    def _give_back_when_taken(self, taken: asyncio.Future[bool]) -> None:
        held = not taken.cancelled() and taken.exception() is None and taken.result()
        self._give_back(held)
