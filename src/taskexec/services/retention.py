"""Retention of rendered fields: keep them for the newest N runs of each dag.

Airflow deletes old rendered fields inside every worker's write transaction, which on
MySQL deadlocks with concurrent upserts and, with many mapped task instances, runs into
statement timeouts. Here pruning is its own job (the server's background task or
``taskexec db prune``): per dag, it deletes at most ``batch_size`` rows per transaction,
in primary-key order, through ``Database.write``. A worker's write never waits on more
than one short batch, and a deadlock or lock timeout is retried by the transaction owner
like any other, then logged and left for the next round; a worker never sees it.

Several server processes each run a pruner. They do not harm each other: each batch is
small and locks its rows in the same (primary-key) order, a row another pruner already
deleted is simply not deleted twice, and a conflict is retried.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec import errors
from taskexec.db import engine as db_engine
from taskexec.db import errors as db_errors
from taskexec.db import models
from taskexec.services import dag_runs

log = logging.getLogger(__name__)

dr = models.dag_run
rtif = models.rendered_task_instance_fields

_PK = (rtif.c.dag_id, rtif.c.task_id, rtif.c.run_id, rtif.c.map_index)

Key = tuple[str, str, str, int]


@dataclasses.dataclass(frozen=True)
class Cutoff:
    """The oldest run that is kept: the N-th newest in ``dag_runs.RUN_ORDER``."""

    run_after: dt.datetime
    id: int


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


# --- the statements (services: keyword-only conn, no commit) -----------------------


async def count_runs_per_dag(*, conn: AsyncConnection) -> dict[str, int]:
    """Every dag that has runs, with its number of runs."""
    rows = await conn.execute(
        sa.select(dr.c.dag_id, sa.func.count()).group_by(dr.c.dag_id).order_by(dr.c.dag_id)
    )
    return {dag_id: count for dag_id, count in rows}


async def find_cutoff(*, conn: AsyncConnection, dag_id: str, retain: int) -> Cutoff | None:
    """The dag's N-th newest run, or None when the dag has fewer than N runs."""
    row = (
        await conn.execute(
            sa.select(dr.c.run_after, dr.c.id)
            .where(dr.c.dag_id == dag_id)
            .order_by(*dag_runs.RUN_ORDER)
            .limit(1)
            .offset(retain - 1)
        )
    ).first()
    return Cutoff(row.run_after, row.id) if row is not None else None


def _old_rows(dag_id: str, cutoff: Cutoff) -> sa.Select[tuple[str, str, str, int]]:
    # Joined to dag_run through the rtif (dag_id, run_id) index, restricted to one dag:
    # the cost is that dag's old runs, never the whole table.
    older = sa.or_(
        dr.c.run_after < cutoff.run_after,
        sa.and_(dr.c.run_after == cutoff.run_after, dr.c.id < cutoff.id),
    )
    return (
        sa.select(*_PK)
        .join(dr, sa.and_(dr.c.dag_id == rtif.c.dag_id, dr.c.run_id == rtif.c.run_id))
        .where(rtif.c.dag_id == dag_id, older)
    )


async def count_prunable(*, conn: AsyncConnection, dag_id: str, cutoff: Cutoff) -> int:
    """How many rendered-fields rows of the dag belong to runs older than ``cutoff``."""
    count = await conn.scalar(
        sa.select(sa.func.count()).select_from(_old_rows(dag_id, cutoff).subquery())
    )
    return count or 0


async def prune_batch(
    *, conn: AsyncConnection, dag_id: str, cutoff: Cutoff, limit: int
) -> tuple[int, int]:
    """Delete up to ``limit`` rendered-fields rows of runs older than ``cutoff``, in
    primary-key order; returns (rows selected, rows deleted)."""
    # Selecting and then deleting by primary key is safe here: a run older than the
    # cutoff never becomes newer again (new runs only push it further back), so a row
    # chosen as old is still old when deleted, even if a worker rewrote it meanwhile.
    # The upserts of new runs touch other rows. Taking the keys in primary-key order
    # makes every pruner lock rows in the same order, so pruners cannot deadlock
    # each other.
    keys: list[Key] = [
        (row.dag_id, row.task_id, row.run_id, row.map_index)
        for row in await conn.execute(_old_rows(dag_id, cutoff).order_by(*_PK).limit(limit))
    ]
    if not keys:
        return 0, 0
    result = await conn.execute(
        sa.delete(rtif)
        .where(
            rtif.c.dag_id == dag_id,
            sa.tuple_(rtif.c.task_id, rtif.c.run_id, rtif.c.map_index).in_(
                [key[1:] for key in keys]
            ),
        )
        .execution_options(preserve_rowcount=True)
    )
    return len(keys), result.rowcount


# --- one prune: many short transactions through the transaction owner ---------------

_RETENTION_WORK = ("count_runs_per_dag", "find_cutoff", "count_prunable", "prune_batch")


def _retries(db: db_engine.Database) -> int:
    return sum(n for key, n in db.retries.items() if key.split(":")[0] in _RETENTION_WORK)


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
        runs = await db.read(count_runs_per_dag)
        for dag_id, count in runs.items():
            if should_stop is not None and should_stop():
                break
            dag = DagPruned(dag_id=dag_id, runs=count, runs_kept=min(count, retain))
            result.dags.append(dag)
            if count <= retain:
                continue
            before = _retries(db)
            try:
                await _prune_dag(db, dag, retain, batch_size, dry_run, should_stop)
            finally:
                dag.retries = _retries(db) - before
    except errors.DatabaseUnavailableError as exc:
        # Retried a bounded number of times already: log it and leave the rest for the
        # next round. Workers never see this.
        result.stopped = f"database trouble persisted: {db_errors.describe(exc.__cause__ or exc)}"
        log.warning("pruning rendered fields stopped early: %s", result.stopped)
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
    cutoff = await db.read(find_cutoff, dag_id=dag.dag_id, retain=retain)
    if cutoff is None:
        return
    if dry_run:
        dag.rows = await db.read(count_prunable, dag_id=dag.dag_id, cutoff=cutoff)
        dag.batches = -(-dag.rows // batch_size)
        return
    while should_stop is None or not should_stop():
        selected, deleted = await db.write(
            prune_batch, dag_id=dag.dag_id, cutoff=cutoff, limit=batch_size
        )
        if selected == 0:
            break
        dag.batches += 1
        dag.rows += deleted
        # A short batch was the last one; stopping here also bounds the loop should
        # workers keep writing rows for old runs.
        if selected < batch_size:
            break
