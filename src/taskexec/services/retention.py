"""Retention of rendered fields: keep them for the newest N runs of each dag.

Airflow deletes old rendered fields inside every worker's write transaction, which on
MySQL deadlocks with concurrent upserts and, with many mapped task instances, runs into
statement timeouts. Here pruning is its own job (the server's background task or
``taskexec db prune``): per dag, it deletes at most ``batch_size`` rows per transaction,
chosen in primary-key order, through ``Database.write``. A worker's write never waits on more
than one short batch, and a deadlock or lock timeout is retried by the transaction owner
like any other, then logged and left for the next round; a worker never sees it.

The server's background pruner runs a round in one process at a time (an advisory
lock, see ``api/pruner``). Should two prunes still overlap (``taskexec db prune`` by
hand beside the server), they are harmless to each other: batches are small, a row
already deleted is not deleted twice, and a deadlock is retried.
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


async def list_dags_with_fields(*, conn: AsyncConnection) -> list[str]:
    """The dags that have rendered fields stored: the only ones pruning can touch."""
    # From the rendered-fields table (its primary key starts with dag_id), which
    # retention keeps small, rather than from dag_run, which grows without end.
    return list(await conn.scalars(sa.select(rtif.c.dag_id).distinct().order_by(rtif.c.dag_id)))


async def count_runs(*, conn: AsyncConnection, dag_id: str) -> int:
    """How many runs the dag has."""
    count = await conn.scalar(sa.select(sa.func.count()).where(dr.c.dag_id == dag_id))
    return count or 0


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


async def select_old_keys(
    *, conn: AsyncConnection, dag_id: str, cutoff: Cutoff, limit: int
) -> list[Key]:
    """Up to ``limit`` keys of rendered-fields rows of runs older than ``cutoff``, in
    primary-key order."""
    rows = await conn.execute(_old_rows(dag_id, cutoff).order_by(*_PK).limit(limit))
    return [(row.dag_id, row.task_id, row.run_id, row.map_index) for row in rows]


async def prune_batch(*, conn: AsyncConnection, keys: list[Key]) -> int:
    """Delete the rendered-fields rows with these primary keys; returns rows deleted."""
    # The keys were selected in an earlier, read-only transaction. That is safe here: a
    # run older than the cutoff never becomes newer again (new runs only push it further
    # back), so a row chosen as old is still old when deleted, even if a worker rewrote
    # it meanwhile. The upserts of new runs touch other rows. Selecting outside the write
    # transaction means a round with nothing to delete takes no write lock at all.
    # The whole primary key in the IN list lets MySQL/MariaDB use the primary key for
    # each row, instead of a range over all the dag's rows.
    result = await conn.execute(
        sa.delete(rtif).where(sa.tuple_(*_PK).in_(keys)).execution_options(preserve_rowcount=True)
    )
    return result.rowcount


# --- one prune: many short transactions through the transaction owner ---------------

_RETENTION_WORK = (
    "list_dags_with_fields",
    "count_runs",
    "find_cutoff",
    "count_prunable",
    "select_old_keys",
    "prune_batch",
)


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
        for dag_id in await db.read(list_dags_with_fields):
            if should_stop is not None and should_stop():
                break
            count = await db.read(count_runs, dag_id=dag_id)
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
        keys = await db.read(select_old_keys, dag_id=dag.dag_id, cutoff=cutoff, limit=batch_size)
        if not keys:
            break
        dag.batches += 1
        dag.rows += await db.write(prune_batch, keys=keys)
        # A short batch was the last one; stopping here also bounds the loop should
        # workers keep writing rows for old runs.
        if len(keys) < batch_size:
            break
