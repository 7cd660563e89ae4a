"""The server's background pruner: retention of rendered fields, once per interval.

It runs outside every request, so pruning never happens inside a worker's write
transaction (see ``services/retention``). Every server process runs a pruner, but a
round only goes ahead in the process that takes the database's advisory lock
``PRUNE_LOCK``; the others skip that round, so the dags are pruned once per interval,
not once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.services import retention

log = logging.getLogger(__name__)

# The advisory lock that makes one server process prune at a time.
PRUNE_LOCK = "taskexec.prune_rendered_fields"

# How long shutdown waits for a batch in flight to commit before cancelling it.
STOP_GRACE_SECONDS = 5.0


class Pruner:
    """Prunes rendered fields every ``prune_interval_seconds`` (with jitter) until stopped."""

    def __init__(self, db: db_engine.Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.rounds = 0
        self.skipped_rounds = 0  # another process held the lock
        self.failed_rounds = 0
        self.rows_deleted = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task on the running event loop."""
        self._task = asyncio.create_task(self._loop(), name="taskexec-pruner")

    async def stop(self) -> None:
        """Let a batch in flight finish, then end the task (cancelling it if it hangs)."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def prune_once(self) -> retention.PruneResult | None:
        """One round; an error is logged and left to the next round, never raised."""
        try:
            async with self.db.try_lock(PRUNE_LOCK) as leader:
                if not leader:
                    self.skipped_rounds += 1
                    return None
                result = await retention.prune_rendered_fields(
                    self.db,
                    retain=self.settings.rendered_fields_retain_runs,
                    batch_size=self.settings.prune_batch_size,
                    should_stop=self._stop.is_set,
                )
        except Exception:
            # One bad round must not end the loop: the next one may well succeed.
            self.failed_rounds += 1
            log.exception("pruning rendered fields failed; trying again next round")
            return None
        self.rounds += 1
        self.rows_deleted += result.rows
        if result.rows:
            log.info(
                "pruned %d rendered-fields rows in %d batches (%d dags, keeping %d runs each)",
                result.rows,
                sum(d.batches for d in result.dags),
                sum(1 for d in result.dags if d.rows),
                result.retain,
            )
        return result

    async def _loop(self) -> None:
        interval = self.settings.prune_interval_seconds
        while not self._stop.is_set():
            # Jitter, so that the pruners of several server processes drift apart
            # instead of all starting their rounds at the same moment.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval * random.uniform(0.8, 1.2))
            if not self._stop.is_set():
                await self.prune_once()


def start(db: db_engine.Database, settings: Settings) -> Pruner | None:
    """Start the background pruner, unless retention or the background task is off."""
    if settings.prune_interval_seconds <= 0 or settings.rendered_fields_retain_runs <= 0:
        return None
    pruner = Pruner(db, settings)
    pruner.start()
    return pruner
