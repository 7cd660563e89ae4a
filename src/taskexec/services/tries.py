"""A task instance's next try: archiving the current one, and when a retry may run.

Every new try gets a new id (UUID7), so the old try's late writes get 410; the old try
keeps its id in ``task_instance_history``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec.db import models, types
from taskexec.wire import protocol
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.states import TaskInstanceState

ti = models.task_instance
tih = models.task_instance_history
dr = models.dag_run

# Airflow's cap on a retry delay: one day.
MAX_RETRY_DELAY_SECONDS = 24 * 60 * 60

_HISTORY_COLUMNS = [c.name for c in tih.columns]


def retry_delay(
    task: wire_schemas.TaskSpec,
    *,
    dag_id: str,
    task_id: str,
    logical_date: dt.datetime | None,
    try_number: int,
) -> float:
    """Seconds from the end of try ``try_number`` to its retry, by Airflow's rule.

    With exponential backoff the delay is between ``retry_delay * factor ** (try - 1)`` and
    twice that, chosen by a hash of the task instance and try (the same try always gets
    the same delay), at most a day, and at most ``max_retry_delay``.
    """
    delay = task.retry_delay
    factor = task.retry_exponential_backoff
    if factor <= 1.0:
        return delay
    try:
        min_backoff = max(1, math.ceil(delay * factor ** (try_number - 1)))
    except OverflowError:
        min_backoff = MAX_RETRY_DELAY_SECONDS
    digest = hashlib.sha1(
        f"{dag_id}#{task_id}#{logical_date}#{try_number}".encode(), usedforsecurity=False
    ).hexdigest()
    backoff = float(min(min_backoff + int(digest, 16) % min_backoff, MAX_RETRY_DELAY_SECONDS))
    if task.max_retry_delay:
        backoff = min(backoff, task.max_retry_delay)
    return backoff


async def _retry_at(conn: AsyncConnection, ti_id: uuid.UUID) -> dt.datetime | None:
    """When the retry of try ``ti_id`` may run; None for a bare run (no spec), whose
    retries are queued for their external worker at once."""
    row = (
        await conn.execute(
            sa.select(ti.c.task_id, ti.c.try_number, ti.c.end_date, dr.c.spec, dr.c.dag_id)
            .add_columns(dr.c.logical_date, dr.c.run_after)
            .join(dr, sa.and_(dr.c.dag_id == ti.c.dag_id, dr.c.run_id == ti.c.run_id))
            .where(ti.c.id == ti_id)
        )
    ).one()
    if row.spec is None:
        return None
    task = wire_schemas.DagSpec.model_validate(row.spec).tasks.get(row.task_id)
    if task is None:
        return row.end_date or types.utcnow()
    seconds = retry_delay(
        task,
        dag_id=row.dag_id,
        task_id=row.task_id,
        logical_date=row.logical_date or row.run_after,
        try_number=row.try_number,
    )
    return (row.end_date or types.utcnow()) + dt.timedelta(seconds=seconds)


async def archive(conn: AsyncConnection, ti_id: uuid.UUID) -> None:
    """Copy try ``ti_id`` into the history, keeping its id. The caller holds the row's
    lock (its conditional UPDATE of this try came first)."""
    await conn.execute(
        sa.insert(tih).from_select(
            _HISTORY_COLUMNS,
            sa.select(*(ti.c[name] for name in _HISTORY_COLUMNS)).where(ti.c.id == ti_id),
        )
    )


async def renew(
    conn: AsyncConnection,
    ti_id: uuid.UUID,
    *,
    state: TaskInstanceState | None,
    next_retry_at: dt.datetime | None = None,
    max_tries: int | None = None,
) -> uuid.UUID:
    """Replace the archived try ``ti_id`` with the next one, under a new id, in
    ``state``; ``max_tries``, if given, is the new try's (a clear gives the task its
    retries again, as Airflow does). Returns the new try's id."""
    new_id = protocol.uuid7()
    values = {} if max_tries is None else {"max_tries": max_tries}
    await conn.execute(
        sa.update(ti)
        .where(ti.c.id == ti_id)
        .values(
            id=new_id,
            try_number=ti.c.try_number + 1,
            **values,
            state=state,
            hostname=None,
            pid=None,
            start_date=None,
            end_date=None,
            last_heartbeat_at=None,
            queued_at=None,
            queued_by=None,
            next_retry_at=next_retry_at,
        )
    )
    return new_id


async def retry(conn: AsyncConnection, ti_id: uuid.UUID) -> uuid.UUID:
    """The try ``ti_id`` went up_for_retry: archive it and create the next try, which
    waits (up_for_retry) until its retry delay has passed, or is queued at once in a
    bare run."""
    retry_at = await _retry_at(conn, ti_id)
    await archive(conn, ti_id)
    if retry_at is None:
        return await renew(conn, ti_id, state=TaskInstanceState.QUEUED)
    return await renew(conn, ti_id, state=TaskInstanceState.UP_FOR_RETRY, next_retry_at=retry_at)
