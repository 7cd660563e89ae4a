"""What the scheduler reads and the transitions it owns.

The scheduler's lease (which scheduler is the active one), what it reads (the active
runs, a per-run digest of their tries' states counted by the database, the tries of the
runs whose digest changed, the scheduled tries to hand out), and the task-instance
transitions only the scheduler makes:
no status or up_for_retry → scheduled, no status → skipped or upstream_failed, scheduled
→ queued (handed to an executor) and queued → scheduled (handed out too long ago, or by
a scheduler that is gone). Each is one conditional UPDATE over a batch of ids
(``WHERE id IN (...) AND state = :expected``), so a try that a worker, a cancel or a
clear changed meanwhile is simply not moved.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec import schemas
from taskexec.db import models, types, upsert
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.states import DagRunState, TaskInstanceState

dr = models.dag_run
ti = models.task_instance
lease = models.scheduler_lease

LEASE_NAME = "scheduler"
_Id = TypeVar("_Id", uuid.UUID, int)
# Ids per statement: well under every database's limit on bound parameters.
BATCH = 500


@dataclasses.dataclass(frozen=True)
class Lease:
    """Who holds the scheduler lease, with which executor, until when."""

    holder: str
    executor: str
    expires_at: dt.datetime


async def take_lease(conn: AsyncConnection, *, holder: str, executor: str, ttl: float) -> bool:
    """Take or renew the scheduler lease: True when ``holder`` has it for ``ttl`` more
    seconds. It is taken only if it is free, expired, or already ``holder``'s."""
    now = types.utcnow()
    expires = now + dt.timedelta(seconds=ttl)
    renewed = await conn.execute(
        sa.update(lease)
        .where(
            lease.c.name == LEASE_NAME, sa.or_(lease.c.holder == holder, lease.c.expires_at < now)
        )
        .values(
            holder=holder,
            executor=executor,
            expires_at=expires,
            acquired_at=sa.case((lease.c.holder == holder, lease.c.acquired_at), else_=now),
        )
        .execution_options(preserve_rowcount=True)
    )
    if renewed.rowcount:
        return True
    values = {
        "name": LEASE_NAME,
        "holder": holder,
        "executor": executor,
        "acquired_at": now,
        "expires_at": expires,
    }
    stmt = upsert.insert_ignore(conn.dialect.name, lease, values)
    created = await conn.execute(stmt.execution_options(preserve_rowcount=True))
    return bool(created.rowcount)


async def release_lease(conn: AsyncConnection, *, holder: str) -> None:
    """Give the lease up at once (a clean shutdown), so another takes over now."""
    await conn.execute(
        sa.update(lease)
        .where(lease.c.name == LEASE_NAME, lease.c.holder == holder)
        .values(expires_at=types.utcnow() - dt.timedelta(seconds=1))
    )


async def current_lease(conn: AsyncConnection) -> Lease | None:
    """The lease if some scheduler holds it now, else None."""
    row = (
        await conn.execute(
            sa.select(lease.c.holder, lease.c.executor, lease.c.expires_at).where(
                lease.c.name == LEASE_NAME, lease.c.expires_at >= types.utcnow()
            )
        )
    ).first()
    return Lease(row.holder, row.executor, row.expires_at) if row is not None else None


async def active_runs(
    conn: AsyncConnection, *, specs: dict[int, wire_schemas.DagSpec | None]
) -> list[schemas.ActiveRun]:
    """The queued and running dag runs, oldest first. ``specs`` holds the runs' parsed
    specs by run pk (a run's spec never changes): only the runs it lacks are read and
    parsed, and added to it."""
    rows = (
        await conn.execute(
            sa.select(
                dr.c.id,
                dr.c.dag_id,
                dr.c.run_id,
                dr.c.state,
                dr.c.run_after,
                dr.c.start_date,
                dr.c.clear_number,
            )
            .where(dr.c.state.in_((DagRunState.QUEUED, DagRunState.RUNNING)))
            .order_by(dr.c.run_after, dr.c.id)
        )
    ).all()
    missing = [row.id for row in rows if row.id not in specs]
    for batch in _batches(missing):
        for pk, spec in await conn.execute(sa.select(dr.c.id, dr.c.spec).where(dr.c.id.in_(batch))):
            specs[pk] = wire_schemas.DagSpec.model_validate(spec) if spec is not None else None
    return [
        schemas.ActiveRun(
            pk=row.id,
            dag_id=row.dag_id,
            run_id=row.run_id,
            state=row.state,
            run_after=row.run_after,
            start_date=row.start_date,
            clear_number=row.clear_number,
            spec=specs.get(row.id),
        )
        for row in rows
    ]


_TRY_COLUMNS = [c.name for c in dataclasses.fields(schemas.TryRow)]
_OF_RUNNING_RUN = sa.and_(
    dr.c.dag_id == ti.c.dag_id, dr.c.run_id == ti.c.run_id, dr.c.state == DagRunState.RUNNING
)


async def run_digests(conn: AsyncConnection) -> dict[int, frozenset[tuple[Any, ...]]]:
    """Per running run (by pk): how many of its tries are in each state, and their try
    numbers summed. Counted by the database, so it costs the scheduler little whatever
    the number of tries: a run whose digest did not change needs no new plan."""
    rows = await conn.execute(
        sa.select(dr.c.id, ti.c.state, sa.func.count(), sa.func.sum(ti.c.try_number))
        .select_from(ti)
        .join(dr, _OF_RUNNING_RUN)
        .group_by(dr.c.id, ti.c.state)
    )
    digests: dict[int, set[tuple[Any, ...]]] = {}
    for pk, state, count, tries in rows:
        digests.setdefault(pk, set()).add((state, count, int(tries)))
    return {pk: frozenset(digest) for pk, digest in digests.items()}


async def tries_of_runs(conn: AsyncConnection, pks: Sequence[int]) -> list[schemas.TryRow]:
    """The current try of every task instance of the running runs ``pks``."""
    found: list[schemas.TryRow] = []
    for batch in _batches(pks):
        rows = await conn.execute(
            sa.select(*(ti.c[name] for name in _TRY_COLUMNS))
            .join(dr, _OF_RUNNING_RUN)
            .where(dr.c.id.in_(batch))
        )
        found += [schemas.TryRow(**row._mapping) for row in rows]
    return found


async def active_tasks(conn: AsyncConnection) -> dict[str, int]:
    """Queued and running tries of running runs, per dag (for ``max_active_tasks``)."""
    rows = await conn.execute(
        sa.select(ti.c.dag_id, sa.func.count())
        .join(dr, _OF_RUNNING_RUN)
        .where(ti.c.state.in_((TaskInstanceState.QUEUED, TaskInstanceState.RUNNING)))
        .group_by(ti.c.dag_id)
    )
    return {dag_id: count for dag_id, count in rows}


async def scheduled_tries(
    conn: AsyncConnection, *, limit: int, skip_dags: Sequence[str] = ()
) -> list[schemas.TryRow]:
    """Up to ``limit`` scheduled tries of running runs, in the order they are handed
    out: oldest run first, then by task. ``skip_dags``: dags at their max_active_tasks."""
    query = (
        sa.select(*(ti.c[name] for name in _TRY_COLUMNS))
        .join(dr, _OF_RUNNING_RUN)
        .where(ti.c.state == TaskInstanceState.SCHEDULED)
        .order_by(dr.c.run_after, dr.c.id, ti.c.task_id, ti.c.map_index)
        .limit(limit)
    )
    if skip_dags:
        query = query.where(ti.c.dag_id.not_in(skip_dags))
    return [schemas.TryRow(**row._mapping) for row in await conn.execute(query)]


def _batches(ids: Sequence[_Id]) -> list[Sequence[_Id]]:
    return [ids[n : n + BATCH] for n in range(0, len(ids), BATCH)]


def _in_state(state: str | None) -> sa.ColumnElement[bool]:
    return ti.c.state.is_(None) if state is None else ti.c.state == state


async def _move(
    conn: AsyncConnection,
    ids: Sequence[uuid.UUID],
    *,
    from_state: str | None,
    values: dict[str, Any],
    where: Sequence[sa.ColumnElement[bool]] = (),
) -> int:
    moved = 0
    for batch in _batches(ids):
        result = await conn.execute(
            sa.update(ti)
            .where(ti.c.id.in_(batch), _in_state(from_state), *where)
            .values(**values)
            .execution_options(preserve_rowcount=True)
        )
        moved += result.rowcount
    return moved


async def schedule(
    conn: AsyncConnection,
    *,
    ready: Sequence[uuid.UUID] = (),
    retries_due: Sequence[uuid.UUID] = (),
) -> int:
    """Tries whose upstreams let them run (no status → scheduled), and retries whose
    delay has passed (up_for_retry → scheduled); returns how many moved."""
    scheduled = {"state": TaskInstanceState.SCHEDULED}
    moved = await _move(conn, ready, from_state=None, values=scheduled)
    due = [ti.c.next_retry_at <= types.utcnow()]
    return moved + await _move(
        conn,
        retries_due,
        from_state=TaskInstanceState.UP_FOR_RETRY,
        values={**scheduled, "next_retry_at": None},
        where=due,
    )


async def skip(
    conn: AsyncConnection,
    ids: Sequence[uuid.UUID],
    *,
    state: TaskInstanceState,
    from_states: Sequence[str | None] = (None,),
) -> int:
    """Tries that will not run: skipped or upstream_failed (their trigger rule says so),
    or skipped because their run ended (cancelled, timed out) before they started."""
    now = types.utcnow()
    moved = 0
    for from_state in from_states:
        values = {"state": state, "start_date": now, "end_date": now, "next_retry_at": None}
        moved += await _move(conn, ids, from_state=from_state, values=values)
    return moved


async def queue(conn: AsyncConnection, ids: Sequence[uuid.UUID], *, holder: str) -> list[uuid.UUID]:
    """scheduled → queued: the tries ``holder`` hands to its executor now. Returns the
    ids this call moved (a try changed meanwhile is left out, and not handed out)."""
    stamp = types.utcnow()
    values = {"state": TaskInstanceState.QUEUED, "queued_at": stamp, "queued_by": holder}
    await _move(conn, ids, from_state=TaskInstanceState.SCHEDULED, values=values)
    # The rows this statement moved carry its holder and its timestamp (read back in the
    # same transaction; MariaDB has no UPDATE ... RETURNING).
    moved: list[uuid.UUID] = []
    for batch in _batches(ids):
        moved += await conn.scalars(
            sa.select(ti.c.id).where(
                ti.c.id.in_(batch), ti.c.queued_by == holder, ti.c.queued_at == stamp
            )
        )
    return moved


async def requeue(
    conn: AsyncConnection,
    ids: Sequence[uuid.UUID],
    *,
    queued_before: dt.datetime | None = None,
    not_by: str | None = None,
    by: str | None = None,
) -> int:
    """queued → scheduled, to be handed out again: tries queued before ``queued_before``
    (no worker took them in time), by another scheduler than ``not_by`` (one that is
    gone), or by ``by`` (this scheduler, whose queue write it could not confirm, so
    never handed them out). A worker that started one meanwhile has moved it to
    running: it stays."""
    where = []
    if by is not None:
        where.append(ti.c.queued_by == by)
    if queued_before is not None:
        where.append(ti.c.queued_at < queued_before)
    if not_by is not None:
        where.append(sa.or_(ti.c.queued_by.is_(None), ti.c.queued_by != not_by))
    values = {"state": TaskInstanceState.SCHEDULED, "queued_at": None, "queued_by": None}
    return await _move(conn, ids, from_state=TaskInstanceState.QUEUED, values=values, where=where)


async def apply_verdicts(
    conn: AsyncConnection,
    *,
    ready: Sequence[uuid.UUID],
    retries_due: Sequence[uuid.UUID],
    skipped: Sequence[uuid.UUID],
    upstream_failed: Sequence[uuid.UUID],
) -> int:
    """One iteration's trigger-rule verdicts and due retries for a run, in one
    transaction; returns how many tries moved."""
    moved = await schedule(conn, ready=ready, retries_due=retries_due)
    moved += await skip(conn, skipped, state=TaskInstanceState.SKIPPED)
    moved += await skip(conn, upstream_failed, state=TaskInstanceState.UPSTREAM_FAILED)
    return moved
