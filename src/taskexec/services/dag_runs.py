"""Dag runs: creating them with their task instances, and listing them."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec import errors, schemas
from taskexec.db import errors as db_errors
from taskexec.db import models, types
from taskexec.wire import protocol
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.states import DagRunState, TaskInstanceState

# Airflow's run-id characters. Ids travel in URL paths (/api/v1, /ui): a "/" or a bare
# "." or ".." could never be addressed there.
_ID = re.compile(r"[A-Za-z0-9_.~:+-]{1,250}")


def _check_id(kind: str, value: str) -> None:
    if not _ID.fullmatch(value) or value in (".", ".."):
        raise errors.InvalidBodyError(
            f"{kind} {value!r} must be 1-250 of the characters A-Z a-z 0-9 _ . ~ : + - "
            "(and not . or ..)."
        )


# One task instance to create: (task_id, map_index, max_tries); map_index -1 is unmapped.
TaskSpec = tuple[str, int, int]


def _task_instance_row(
    dag_id: str, run_id: str, task: TaskSpec, state: str | None
) -> dict[str, Any]:
    task_id, map_index, max_tries = task
    return {
        "id": protocol.uuid7(),
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "map_index": map_index,
        "try_number": 1,
        "max_tries": max_tries,
        "state": state,
    }


def bare_tasks(count: int, map_count: int | None = None, max_tries: int = 0) -> list[TaskSpec]:
    """The task instances of a bare run: ``task_0``.. ``task_{count-1}``, each mapped over
    ``map_count`` indexes (unmapped without it)."""
    indexes = range(map_count) if map_count is not None else [-1]
    return [(f"task_{n}", m, max_tries) for n in range(count) for m in indexes]


async def create_dag_run(
    conn: AsyncConnection,
    *,
    dag_id: str,
    tasks: Sequence[TaskSpec],
    spec: wire_schemas.DagSpec | None = None,
    run_id: str | None = None,
    conf: dict[str, Any] | None = None,
    logical_date: dt.datetime | None = None,
) -> schemas.NewDagRun:
    """Create a dag run (``run_id`` defaults to a new manual id) and one task instance
    per ``(task_id, map_index, max_tries)``. The one way runs are created.

    With the dag's ``spec`` the scheduler runs it: its task instances start with no
    status and are scheduled as their upstreams allow. Without one (a bare run, for
    external workers and load generators) they are queued at once, with no dependencies.
    """
    run_id = run_id or new_run_id()
    _check_id("dag id", dag_id)
    _check_id("run id", run_id)
    for task_id in {task_id for task_id, _, _ in tasks}:
        _check_id("task id", task_id)
    now = types.utcnow()
    try:
        await conn.execute(
            sa.insert(models.dag_run).values(
                dag_id=dag_id,
                run_id=run_id,
                logical_date=logical_date,
                run_after=logical_date or now,
                state=DagRunState.QUEUED,
                conf=conf or {},
                created_at=now,
                spec=spec.model_dump() if spec is not None else None,
            )
        )
    except sa.exc.IntegrityError as exc:
        # Not retried: a second run with the same id is a real conflict.
        if db_errors.classify(exc) is db_errors.Kind.UNIQUE_VIOLATION:
            raise errors.RunExistsError() from exc
        raise
    state = TaskInstanceState.QUEUED if spec is None else None
    rows = [_task_instance_row(dag_id, run_id, task, state) for task in tasks]
    if rows:
        await conn.execute(sa.insert(models.task_instance), rows)
    return schemas.NewDagRun(
        dag_id=dag_id,
        run_id=run_id,
        task_instances=[schemas.NewTaskInstance.model_validate(row) for row in rows],
    )


def new_run_id(now: dt.datetime | None = None) -> str:
    """A unique manual run id: ``manual__<iso time>__<8 hex>``."""
    moment = (now or types.utcnow()).isoformat(timespec="microseconds")
    return f"manual__{moment}__{uuid.uuid4().hex[:8]}"


# Newest first: by run_after, ties broken by creation order (the autoincrement id).
# Retention keeps the first N runs of a dag in this same order.
RUN_ORDER = (models.dag_run.c.run_after.desc(), models.dag_run.c.id.desc())


async def _require_dag(conn: AsyncConnection, dag_id: str) -> None:
    dr = models.dag_run
    if await conn.scalar(sa.select(dr.c.id).where(dr.c.dag_id == dag_id).limit(1)) is None:
        raise errors.DagNotFoundError()


async def list_dag_runs(
    conn: AsyncConnection, *, dag_id: str, state: str | None, limit: int, offset: int
) -> schemas.Page[schemas.DagRunSummary]:
    """The dag's runs, newest first, optionally only those in ``state``."""
    await _require_dag(conn, dag_id)
    dr = models.dag_run
    where = [dr.c.dag_id == dag_id]
    if state is not None:
        where.append(dr.c.state == state)
    return await _runs_page(conn, where, limit, offset)


async def list_runs(
    conn: AsyncConnection,
    *,
    dag_id: str | None,
    limit: int,
    offset: int,
    state: str | None = None,
) -> schemas.Page[schemas.DagRunSummary]:
    """Runs of every dag, or of ``dag_id`` only, newest first, optionally only those in
    ``state``; an unknown dag has none."""
    dr = models.dag_run
    where = [] if dag_id is None else [dr.c.dag_id == dag_id]
    if state is not None:
        where.append(dr.c.state == state)
    return await _runs_page(conn, where, limit, offset)


# Airflow's name for a task instance with no state yet.
NO_STATUS = "no_status"

_SUMMARY = ("dag_id", "run_id", "state", "logical_date", "run_after", "created_at")


async def _state_counts(conn: AsyncConnection, runs: list[schemas.DagRunSummary]) -> None:
    ti = models.task_instance
    keys = [(r.dag_id, r.run_id) for r in runs]
    if not keys:
        return
    rows = await conn.execute(
        sa.select(ti.c.dag_id, ti.c.run_id, ti.c.state, sa.func.count())
        .where(sa.tuple_(ti.c.dag_id, ti.c.run_id).in_(keys))
        .group_by(ti.c.dag_id, ti.c.run_id, ti.c.state)
    )
    by_key = {(r.dag_id, r.run_id): r for r in runs}
    for dag_id, run_id, state, count in rows:
        by_key[(dag_id, run_id)].task_instance_states[state or NO_STATUS] = count


async def _runs_page(
    conn: AsyncConnection, where: list[sa.ColumnElement[bool]], limit: int, offset: int
) -> schemas.Page[schemas.DagRunSummary]:
    dr = models.dag_run
    total = await conn.scalar(sa.select(sa.func.count()).select_from(dr).where(*where))
    rows = await conn.execute(
        sa.select(*(dr.c[name] for name in _SUMMARY), dr.c.start_date, dr.c.end_date)
        .where(*where)
        .order_by(*RUN_ORDER)
        .limit(limit)
        .offset(offset)
    )
    items = [schemas.DagRunSummary.model_validate(row._mapping) for row in rows]
    await _state_counts(conn, items)
    return schemas.Page(items=items, total=total or 0, limit=limit, offset=offset)


async def get_dag_run(conn: AsyncConnection, *, dag_id: str, run_id: str) -> schemas.DagRunSummary:
    """One run, with the count of its task instances in each state."""
    dr = models.dag_run
    page = await _runs_page(conn, [dr.c.dag_id == dag_id, dr.c.run_id == run_id], 1, 0)
    if not page.items:
        await require_dag_run(conn, dag_id=dag_id, run_id=run_id)
    return page.items[0]


async def require_dag_run(conn: AsyncConnection, *, dag_id: str, run_id: str) -> None:
    """Raise a 404 with a reason that says which part is unknown: the dag or the run."""
    dr = models.dag_run
    found = await conn.scalar(
        sa.select(dr.c.id).where(dr.c.dag_id == dag_id, dr.c.run_id == run_id)
    )
    if found is None:
        await _require_dag(conn, dag_id)
        raise errors.DagRunNotFoundError()


async def start_runs(conn: AsyncConnection, *, pks: Sequence[int]) -> int:
    """queued → running (the scheduler, within max_active_runs); returns how many."""
    if not pks:
        return 0
    result = await conn.execute(
        sa.update(models.dag_run)
        .where(models.dag_run.c.id.in_(pks), models.dag_run.c.state == DagRunState.QUEUED)
        .values(state=DagRunState.RUNNING, start_date=types.utcnow(), end_date=None)
        .execution_options(preserve_rowcount=True)
    )
    return result.rowcount


async def end_run(
    conn: AsyncConnection, *, pk: int, state: DagRunState, clear_number: int | None = None
) -> bool:
    """running (or queued) → success or failed, with the end date; False if the run had
    already left those states. ``clear_number``: the scheduler's plan was made before a
    clear if the run's count moved on since, and then the run is not ended."""
    active = (DagRunState.QUEUED, DagRunState.RUNNING)
    where = [models.dag_run.c.id == pk, models.dag_run.c.state.in_(active)]
    if clear_number is not None:
        where.append(models.dag_run.c.clear_number == clear_number)
    result = await conn.execute(
        sa.update(models.dag_run)
        .where(*where)
        .values(state=state, end_date=types.utcnow())
        .execution_options(preserve_rowcount=True)
    )
    return bool(result.rowcount)


async def requeue_run(conn: AsyncConnection, *, pk: int, was_running: bool) -> None:
    """Any state → queued after a clear, counting the clear (``clear_number``, which
    keeps a plan made before it from ending the run). A run still running keeps its
    start date; an ended one starts afresh."""
    dr = models.dag_run
    await conn.execute(
        sa.update(dr)
        .where(dr.c.id == pk)
        .values(
            state=DagRunState.QUEUED,
            end_date=None,
            clear_number=dr.c.clear_number + 1,
            start_date=dr.c.start_date if was_running else None,
        )
    )
