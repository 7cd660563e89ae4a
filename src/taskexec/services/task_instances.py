"""Task-instance state transitions: start (/run), heartbeat and finish (/state).

Each transition is one conditional UPDATE (``WHERE id = :id AND state = :expected``):
the row lock it takes serializes concurrent requests, and its row count says whether
this request made the change. Only when it did not do we read the row, to tell an
idempotent repeat (2xx) from a real conflict (409), a stale try (410) or an unknown
id (404). Nothing is decided from a read that precedes the write.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec import errors, schemas
from taskexec.db import models, types
from taskexec.services import dag_runs, tries
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.states import TaskInstanceState

ti = models.task_instance
tih = models.task_instance_history
dr = models.dag_run


class Outcome(enum.Enum):
    """How a state request ended: this request moved the row, or it was already there."""

    CHANGED = "changed"
    ALREADY = "already"


async def raise_missing(conn: AsyncConnection, *, ti_id: uuid.UUID) -> None:
    """Raise 410 for an earlier try's id, else 404."""
    stale = await conn.scalar(sa.select(tih.c.id).where(tih.c.id == ti_id))
    if stale is not None:
        raise errors.StaleTryError()
    raise errors.NotFoundError()


async def raise_not_writable(conn: AsyncConnection, *, ti_id: uuid.UUID) -> None:
    """Why a write of this try matched nothing: 409 for a try that has ended, 410 for an
    earlier try's id, else 404."""
    row = (await conn.execute(sa.select(ti.c.state).where(ti.c.id == ti_id))).first()
    if row is not None:
        raise errors.TryEndedError(current_state=row.state)
    await raise_missing(conn, ti_id=ti_id)


async def _current(conn: AsyncConnection, ti_id: uuid.UUID) -> sa.Row[Any, Any, Any] | None:
    result = await conn.execute(
        sa.select(ti.c.state, ti.c.hostname, ti.c.pid).where(ti.c.id == ti_id)
    )
    return result.first()


async def _run_context(
    conn: AsyncConnection, ti_id: uuid.UUID
) -> wire_schemas.TIRunContextResponse:
    result = await conn.execute(
        sa.select(
            ti.c.task_id,
            ti.c.map_index,
            ti.c.try_number,
            ti.c.max_tries,
            ti.c.start_date.label("ti_start_date"),
            dr.c.dag_id,
            dr.c.run_id,
            dr.c.logical_date,
            dr.c.run_after,
            dr.c.start_date,
            dr.c.end_date,
            dr.c.state,
            dr.c.conf,
            dr.c.clear_number,
        )
        .join(dr, sa.and_(dr.c.dag_id == ti.c.dag_id, dr.c.run_id == ti.c.run_id))
        .where(ti.c.id == ti_id)
    )
    row = result.one()
    return wire_schemas.TIRunContextResponse(
        dag_run=wire_schemas.DagRunInfo(
            dag_id=row.dag_id,
            run_id=row.run_id,
            logical_date=row.logical_date,
            run_after=row.run_after,
            start_date=row.start_date,
            end_date=row.end_date,
            state=row.state,
            conf=row.conf or {},
            clear_number=row.clear_number,
        ),
        task_id=row.task_id,
        map_index=row.map_index,
        try_number=row.try_number,
        max_tries=row.max_tries,
        should_retry=row.try_number <= row.max_tries,
        start_date=row.ti_start_date,
    )


async def start(
    conn: AsyncConnection, *, ti_id: uuid.UUID, payload: wire_schemas.TIEnterRunningPayload
) -> wire_schemas.TIRunContextResponse:
    """queued → running, recording hostname, pid and start date; a repeat by the same
    host and pid is accepted."""
    now = types.utcnow()
    result = await conn.execute(
        sa.update(ti)
        .where(ti.c.id == ti_id, ti.c.state == TaskInstanceState.QUEUED)
        .values(
            state=TaskInstanceState.RUNNING,
            hostname=payload.hostname,
            pid=payload.pid,
            start_date=payload.start_date or now,
            end_date=None,
            last_heartbeat_at=now,
        )
    )
    if result.rowcount == 0:
        row = await _current(conn, ti_id)
        if row is None:
            await raise_missing(conn, ti_id=ti_id)
            raise AssertionError("unreachable")
        same_worker = row.hostname == payload.hostname and row.pid == payload.pid
        if not (row.state == TaskInstanceState.RUNNING and same_worker):
            raise errors.InvalidStateError(
                "TI was not in a state where it could be marked as running",
                previous_state=row.state,
            )
    return await _run_context(conn, ti_id)


async def heartbeat(
    conn: AsyncConnection, *, ti_id: uuid.UUID, payload: wire_schemas.TIHeartbeatPayload
) -> None:
    """Record that the worker running this try is alive."""
    result = await conn.execute(
        sa.update(ti)
        .where(
            ti.c.id == ti_id,
            ti.c.state == TaskInstanceState.RUNNING,
            ti.c.hostname == payload.hostname,
            ti.c.pid == payload.pid,
        )
        .values(last_heartbeat_at=types.utcnow())
    )
    if result.rowcount:
        return
    row = await _current(conn, ti_id)
    if row is None:
        await raise_missing(conn, ti_id=ti_id)
        raise AssertionError("unreachable")
    if row.state != TaskInstanceState.RUNNING:
        raise errors.NotRunningError(
            "TI is no longer in the running state and task should terminate",
            current_state=row.state,
        )
    raise errors.RunningElsewhereError(
        "TI is already running elsewhere",
        current_hostname=row.hostname,
        current_pid=row.pid,
    )


async def finish(
    conn: AsyncConnection,
    *,
    ti_id: uuid.UUID,
    payload: wire_schemas.TITerminalStatePayload | wire_schemas.TIRetryStatePayload,
    from_states: tuple[TaskInstanceState, ...] = (TaskInstanceState.RUNNING,),
    on_worker: tuple[str, int] | None = None,
    heartbeat_before: dt.datetime | None = None,
    started_before: dt.datetime | None = None,
    retry_if_tries_left: bool = False,
) -> Outcome:
    """End a try: running → success, failed or up_for_retry (the worker's /state).

    The scheduler and the executors end tries here too, each with the guard that makes
    its decision and its write one statement: ``from_states`` (an executor giving up on
    a try it handed out may end it from queued), ``on_worker`` (hostname, pid: never a
    try running on another worker), ``heartbeat_before`` (a worker presumed dead) and
    ``started_before`` (an execution timeout). With ``retry_if_tries_left`` a failure
    becomes up_for_retry while the try has tries left, decided in the same statement. A
    request for the state the try is already in succeeds without changing anything.
    up_for_retry archives the try and creates the next one (``services.tries``).
    """
    target = TaskInstanceState(payload.state)
    end_date = payload.end_date or types.utcnow()
    where = [ti.c.id == ti_id, ti.c.state.in_(from_states)]
    if on_worker is not None:
        hostname, pid = on_worker
        running_there = sa.and_(ti.c.hostname == hostname, ti.c.pid == pid)
        where.append(sa.or_(ti.c.state != TaskInstanceState.RUNNING, running_there))
    if heartbeat_before is not None:
        where.append(sa.func.coalesce(ti.c.last_heartbeat_at, ti.c.start_date) < heartbeat_before)
    if started_before is not None:
        where.append(ti.c.start_date < started_before)
    state: TaskInstanceState | sa.Case[Any] = target
    if retry_if_tries_left and target is TaskInstanceState.FAILED:
        state = sa.case(
            (ti.c.try_number <= ti.c.max_tries, TaskInstanceState.UP_FOR_RETRY.value),
            else_=TaskInstanceState.FAILED.value,
        )
    if await _end(conn, where, state, end_date) == 0:
        await _settle_repeat(conn, ti_id, target)
        return Outcome.ALREADY
    if state is not target:
        # Which branch the statement took; the row is this transaction's to read.
        now = await conn.scalar(sa.select(ti.c.state).where(ti.c.id == ti_id))
        target = TaskInstanceState(str(now))
    if target is TaskInstanceState.UP_FOR_RETRY:
        await tries.retry(conn, ti_id)
    return Outcome.CHANGED


async def fail_running(conn: AsyncConnection, *, dag_id: str, run_id: str) -> int:
    """End every running try of a run as failed: its run was cancelled or timed out.
    Their workers' next call gets 409, and the runner stops the task."""
    where = [ti.c.dag_id == dag_id, ti.c.run_id == run_id, ti.c.state == TaskInstanceState.RUNNING]
    return await _end(conn, where, TaskInstanceState.FAILED, types.utcnow())


async def _end(
    conn: AsyncConnection,
    where: list[sa.ColumnElement[bool]],
    state: TaskInstanceState | sa.Case[Any],
    end_date: dt.datetime,
) -> int:
    """The one statement that ends tries (``finish`` and ``fail_running``): how many."""
    result = await conn.execute(
        sa.update(ti)
        .where(*where)
        .values(state=state, end_date=end_date)
        .execution_options(preserve_rowcount=True)
    )
    return result.rowcount


async def _settle_repeat(
    conn: AsyncConnection, ti_id: uuid.UUID, target: TaskInstanceState
) -> None:
    """Return if the try already is in ``target``; raise the right error otherwise."""
    row = await _current(conn, ti_id)
    if row is not None:
        if row.state == target:
            return
        raise errors.InvalidStateError(
            "TI was not in the running state so it cannot be updated",
            previous_state=row.state,
        )
    old = (await conn.execute(sa.select(tih.c.state).where(tih.c.id == ti_id))).first()
    if old is None:
        raise errors.NotFoundError()
    if old.state != target:
        raise errors.StaleTryError()


async def list_task_instances(
    conn: AsyncConnection,
    *,
    dag_id: str,
    run_id: str,
    state: str | None,
    task_id: str | None,
    limit: int,
    offset: int,
) -> schemas.Page[schemas.TaskInstanceSummary]:
    """The run's task instances by task id and map index, optionally filtered."""
    await dag_runs.require_dag_run(conn, dag_id=dag_id, run_id=run_id)
    rtif = models.rendered_task_instance_fields
    where = [ti.c.dag_id == dag_id, ti.c.run_id == run_id]
    if state is not None:
        where.append(ti.c.state == state)
    if task_id is not None:
        where.append(ti.c.task_id == task_id)
    total = await conn.scalar(sa.select(sa.func.count()).select_from(ti).where(*where))
    rows = await conn.execute(
        sa.select(
            ti.c.id,
            ti.c.dag_id,
            ti.c.run_id,
            ti.c.task_id,
            ti.c.map_index,
            ti.c.try_number,
            ti.c.max_tries,
            ti.c.state,
            ti.c.start_date,
            ti.c.end_date,
            rtif.c.try_number.is_not(None).label("has_rendered_fields"),
        )
        .select_from(ti.outerjoin(rtif, models.same_task_instance(rtif, ti)))
        .where(*where)
        .order_by(ti.c.task_id, ti.c.map_index)
        .limit(limit)
        .offset(offset)
    )
    items = [schemas.TaskInstanceSummary.model_validate(row._mapping) for row in rows]
    return schemas.Page(items=items, total=total or 0, limit=limit, offset=offset)


async def run_with_task_instances(
    conn: AsyncConnection, *, dag_id: str, run_id: str, limit: int, offset: int
) -> tuple[schemas.DagRunSummary, schemas.Page[schemas.TaskInstanceSummary]]:
    """A run (state, start, end, counts) and a page of its task instances, in one read."""
    run = await dag_runs.get_dag_run(conn, dag_id=dag_id, run_id=run_id)
    tis = await list_task_instances(
        conn, dag_id=dag_id, run_id=run_id, state=None, task_id=None, limit=limit, offset=offset
    )
    return run, tis


async def get_try_number(
    conn: AsyncConnection, *, dag_id: str, run_id: str, task_id: str, map_index: int
) -> int:
    """The current try number of one task instance (404s name what is unknown)."""
    number = await conn.scalar(
        sa.select(ti.c.try_number).where(
            ti.c.dag_id == dag_id,
            ti.c.run_id == run_id,
            ti.c.task_id == task_id,
            ti.c.map_index == map_index,
        )
    )
    if number is None:
        await dag_runs.require_dag_run(conn, dag_id=dag_id, run_id=run_id)
        raise errors.TaskInstanceKeyNotFoundError()
    return int(number)
