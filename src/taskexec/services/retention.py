"""Retention of rendered fields: the statements that find and delete the fields of all
but the newest N runs of each dag.

Airflow deletes old rendered fields inside every worker's write transaction, which on
MySQL deadlocks with concurrent upserts and, with many mapped task instances, runs into
statement timeouts. Here pruning is its own job: the loop in ``server/pruner`` (run by
the server's background pruner and by ``taskexec db prune``) calls these through
``Database``, deleting at most a batch of rows per transaction, in primary-key order. A
worker's write never waits on more than one short batch. Every statement is declared
under the retry name ``retention``, so the loop can count the retries they needed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec.db import engine as db_engine
from taskexec.db import models
from taskexec.services import dag_runs

dr = models.dag_run
rtif = models.rendered_task_instance_fields

# The primary key of a rendered-fields row: the task-instance key.
_KEY = models.key_columns(rtif)
Key = models.TIKey

# The name the transaction owner counts the retries of these statements under.
RETRY_NAME = "retention"
RETENTION = db_engine.retry_name(RETRY_NAME)


@dataclasses.dataclass(frozen=True)
class Cutoff:
    """The oldest run that is kept: the N-th newest in ``dag_runs.RUN_ORDER``."""

    run_after: dt.datetime
    id: int


@RETENTION
async def list_dags_with_fields(conn: AsyncConnection) -> list[str]:
    """The dags that have rendered fields stored: the only ones pruning can touch."""
    # From the rendered-fields table (its primary key starts with dag_id), which
    # retention keeps small, rather than from dag_run, which grows without end.
    return list(await conn.scalars(sa.select(rtif.c.dag_id).distinct().order_by(rtif.c.dag_id)))


@RETENTION
async def count_runs(conn: AsyncConnection, *, dag_id: str) -> int:
    """How many runs the dag has."""
    count = await conn.scalar(sa.select(sa.func.count()).where(dr.c.dag_id == dag_id))
    return count or 0


@RETENTION
async def find_cutoff(conn: AsyncConnection, *, dag_id: str, retain: int) -> Cutoff | None:
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


def _old_rows(dag_id: str, cutoff: Cutoff) -> sa.Select[Key]:
    # Joined to dag_run through the rtif (dag_id, run_id) index, restricted to one dag:
    # the cost is that dag's old runs, never the whole table.
    older = sa.or_(
        dr.c.run_after < cutoff.run_after,
        sa.and_(dr.c.run_after == cutoff.run_after, dr.c.id < cutoff.id),
    )
    return (
        sa.select(*_KEY)
        .join(dr, sa.and_(dr.c.dag_id == rtif.c.dag_id, dr.c.run_id == rtif.c.run_id))
        .where(rtif.c.dag_id == dag_id, older)
    )


@RETENTION
async def count_prunable(conn: AsyncConnection, *, dag_id: str, cutoff: Cutoff) -> int:
    """How many rendered-fields rows of the dag belong to runs older than ``cutoff``."""
    count = await conn.scalar(
        sa.select(sa.func.count()).select_from(_old_rows(dag_id, cutoff).subquery())
    )
    return count or 0


@RETENTION
async def select_old_keys(
    conn: AsyncConnection, *, dag_id: str, cutoff: Cutoff, limit: int
) -> list[Key]:
    """Up to ``limit`` keys of rendered-fields rows of runs older than ``cutoff``, in
    primary-key order."""
    rows = await conn.execute(_old_rows(dag_id, cutoff).order_by(*_KEY).limit(limit))
    return [cast(Key, tuple(row)) for row in rows]


@RETENTION
async def prune_batch(conn: AsyncConnection, *, keys: list[Key]) -> int:
    """Delete the rendered-fields rows with these primary keys; returns rows deleted."""
    # The keys were selected in an earlier, read-only transaction. That is safe here: a
    # run older than the cutoff never becomes newer again (new runs only push it further
    # back), so a row chosen as old is still old when deleted, even if a worker rewrote
    # it meanwhile. The upserts of new runs touch other rows. Selecting outside the write
    # transaction means a round with nothing to delete takes no write lock at all.
    # The whole primary key in the IN list lets MySQL/MariaDB use the primary key for
    # each row, instead of a range over all the dag's rows.
    result = await conn.execute(
        sa.delete(rtif).where(sa.tuple_(*_KEY).in_(keys)).execution_options(preserve_rowcount=True)
    )
    return result.rowcount
