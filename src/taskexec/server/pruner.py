"""Pruning rendered fields: one prune (``prune_rendered_fields``, which ``taskexec db
prune`` runs too) and the server's background pruner that runs one per interval.

A prune is many short transactions through the transaction owner, one per batch of at
most ``batch_size`` rows, over the statements in ``services/retention``. It runs outside
every request, so pruning never happens inside a worker's write transaction; a deadlock
or lock timeout is retried by the owner like any other, then logged and left for the
next round: a worker never sees it. Every server process runs a pruner, but a round only
goes ahead in the process that takes the database's advisory lock ``PRUNE_LOCK``; the
others skip that round, so the dags are pruned once per interval, not once per process.
Should two prunes still overlap (``taskexec db prune`` by hand beside the server), they
are harmless to each other: batches are small, a row already deleted is not deleted
twice, and a deadlock is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable

from taskexec import errors, logs
from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import errors as db_errors
from taskexec.services import retention

log = logging.getLogger(__name__)

# The advisory lock that makes one server process prune at a time.
PRUNE_LOCK = "taskexec.prune_rendered_fields"

# How long shutdown waits for a batch in flight to commit before cancelling it.
STOP_GRACE_SECONDS = 5.0


@dataclasses.dataclass
class DagPruned:
    """What one prune did to one dag."""

    dag_id: str
    runs: int
    runs_kept: int
    rows: int = 0  # deleted, or that would be deleted on a dry run
    batches: int = 0
    retries: int = 0


@dataclasses.dataclass
class PruneResult:
    """What one prune did, dag by dag."""

    retain: int
    dry_run: bool
    dags: list[DagPruned] = dataclasses.field(default_factory=list)
    # Why the prune stopped before the end (persistent database trouble), if it did.
    stopped: str | None = None

    @property
    def disabled(self) -> bool:
        """True when retention is off (N ≤ 0) and nothing was looked at."""
        return self.retain <= 0

    @property
    def rows(self) -> int:
        """Rows deleted (or that would be, on a dry run) over all dags."""
        return sum(d.rows for d in self.dags)

    @property
    def retries(self) -> int:
        """Transactions the transaction owner retried over all dags."""
        return sum(d.retries for d in self.dags)


async def prune_rendered_fields(
    db: db_engine.Database,
    *,
    retain: int,
    batch_size: int,
    dry_run: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> PruneResult:
    """Delete the rendered fields of all but the newest ``retain`` runs of every dag (or
    only count them, ``dry_run``), one short transaction per batch."""
    result = PruneResult(retain=retain, dry_run=dry_run)
    if retain <= 0:
        return result
    try:
        for dag_id in await db.read(retention.list_dags_with_fields):
            if should_stop is not None and should_stop():
                break
            count = await db.read(retention.count_runs, dag_id=dag_id)
            dag = DagPruned(dag_id=dag_id, runs=count, runs_kept=min(count, retain))
            result.dags.append(dag)
            if count <= retain:
                continue
            before = db.retries_of(retention.RETRY_NAME)
            try:
                await _prune_dag(db, dag, retain, batch_size, dry_run, should_stop)
            finally:
                dag.retries = db.retries_of(retention.RETRY_NAME) - before
    except errors.DatabaseUnavailableError as exc:
        # Retried a bounded number of times already: log it and leave the rest for the
        # next round. Workers never see this.
        result.stopped = f"database trouble persisted: {db_errors.describe(exc.__cause__ or exc)}"
        log.info("pruning rendered fields stopped early: %s", result.stopped)
    return result


async def _prune_dag(
    db: db_engine.Database,
    dag: DagPruned,
    retain: int,
    batch_size: int,
    dry_run: bool,
    should_stop: Callable[[], bool] | None,
) -> None:
    # The cutoff is taken once per dag per prune. Runs created meanwhile only make more
    # runs old, so a stale cutoff prunes less than it could, never too much.
    cutoff = await db.read(retention.find_cutoff, dag_id=dag.dag_id, retain=retain)
    if cutoff is None:
        return
    if dry_run:
        dag.rows = await db.read(retention.count_prunable, dag_id=dag.dag_id, cutoff=cutoff)
        dag.batches = -(-dag.rows // batch_size)
        return
    while should_stop is None or not should_stop():
        keys = await db.read(
            retention.select_old_keys, dag_id=dag.dag_id, cutoff=cutoff, limit=batch_size
        )
        if not keys:
            break
        dag.batches += 1
        dag.rows += await db.write(retention.prune_batch, keys=keys)
        # A short batch was the last one; stopping here also bounds the loop should
        # workers keep writing rows for old runs.
        if len(keys) < batch_size:
            break


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
        self._outage = logs.Outage(log, "pruning rendered fields")

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

    async def prune_once(self) -> PruneResult | None:
        """One round; an error is logged and left to the next round, never raised."""
        try:
            async with self.db.try_lock(PRUNE_LOCK) as leader:
                if not leader:
                    self.skipped_rounds += 1
                    return None
                result = await prune_rendered_fields(
                    self.db,
                    retain=self.settings.rendered_fields_retain_runs,
                    batch_size=self.settings.prune_batch_size,
                    should_stop=self._stop.is_set,
                )
        except Exception as exc:
            # One bad round must not end the loop: the next one may well succeed. An
            # outage is logged when it starts and when it ends, not every round.
            self.failed_rounds += 1
            self._outage.failed(db_errors.summary(exc))
            return None
        if result.stopped:
            self._outage.failed(result.stopped)
        else:
            self._outage.succeeded()
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
