"""What people do to a run: cancel it, or clear task instances so they run again.

Both follow Airflow. Cancelling a run (marking it failed) ends its running tries as
failed and skips the ones that had not started. Clearing gives each chosen task
instance a new try (a new id: the old try's late calls get 410) with no status, so
the scheduler runs it again, with its retries back, and puts the run back in queued.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec import errors, schemas
from taskexec.db import models
from taskexec.services import dag_runs, scheduling, task_instances, tries
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.states import DagRunState, TaskInstanceState

dr = models.dag_run
ti = models.task_instance

_NOT_STARTED = (
    None,
    TaskInstanceState.SCHEDULED,
    TaskInstanceState.QUEUED,
    TaskInstanceState.UP_FOR_RETRY,
)


async def _run_row(conn: AsyncConnection, dag_id: str, run_id: str) -> sa.Row[Any, Any, Any]:
    row = (
        await conn.execute(
            sa.select(dr.c.id, dr.c.state, dr.c.spec)
            .where(dr.c.dag_id == dag_id, dr.c.run_id == run_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        await dag_runs.require_dag_run(conn, dag_id=dag_id, run_id=run_id)
        raise AssertionError("unreachable")
    return row


async def cancel_run(conn: AsyncConnection, *, dag_id: str, run_id: str) -> schemas.RunCancelled:
    """Mark the run failed: running tries end as failed, the others are skipped. A run
    already failed is left as it is (a repeat); a run that succeeded cannot be."""
    run = await _run_row(conn, dag_id, run_id)
    if run.state == DagRunState.SUCCESS:
        raise errors.InvalidStateError(
            "The run already succeeded; clear its task instances to run them again.",
            current_state=run.state,
        )
    ended = await dag_runs.end_run(conn, pk=run.id, state=DagRunState.FAILED)
    failed = await task_instances.fail_running(conn, dag_id=dag_id, run_id=run_id)
    ids = list(
        await conn.scalars(sa.select(ti.c.id).where(ti.c.dag_id == dag_id, ti.c.run_id == run_id))
    )
    skipped = await scheduling.skip(
        conn, ids, state=TaskInstanceState.SKIPPED, from_states=_NOT_STARTED
    )
    return schemas.RunCancelled(
        dag_id=dag_id, run_id=run_id, changed=ended, tries_failed=failed, tries_skipped=skipped
    )


def _downstream_closure(spec: wire_schemas.DagSpec | None, task_ids: set[str]) -> set[str]:
    if spec is None:
        return set(task_ids)
    below: dict[str, set[str]] = {name: set() for name in spec.tasks}
    for name, task in spec.tasks.items():
        for up in task.upstream:
            below.setdefault(up, set()).add(name)
    found, todo = set(task_ids), list(task_ids)
    while todo:
        for child in below.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


async def clear_task_instances(
    conn: AsyncConnection,
    *,
    dag_id: str,
    run_id: str,
    task_ids: Sequence[str] = (),
    downstream: bool = False,
) -> schemas.TaskInstancesCleared:
    """Give the chosen task instances (all, without ``task_ids``; with ``downstream``,
    also every task below them) a new try with no status, and queue the run again."""
    run = await _run_row(conn, dag_id, run_id)
    spec = wire_schemas.DagSpec.model_validate(run.spec) if run.spec is not None else None
    chosen = _downstream_closure(spec, set(task_ids)) if downstream else set(task_ids)
    where = [ti.c.dag_id == dag_id, ti.c.run_id == run_id, ti.c.state.is_not(None)]
    if task_ids:
        where.append(ti.c.task_id.in_(sorted(chosen)))
    # Locked: a worker finishing one of these tries waits for the clear, then finds its
    # try archived (410).
    rows = (
        await conn.execute(
            sa.select(ti.c.id, ti.c.task_id, ti.c.try_number).where(*where).with_for_update()
        )
    ).all()
    cleared: list[uuid.UUID] = []
    for row in rows:
        retries = spec.tasks[row.task_id].retries if spec and row.task_id in spec.tasks else 0
        await tries.archive(conn, row.id)
        new_id = await tries.renew(conn, row.id, state=None, max_tries=row.try_number + retries)
        cleared.append(new_id)
    if cleared:
        await dag_runs.requeue_run(conn, pk=run.id, was_running=run.state == DagRunState.RUNNING)
    return schemas.TaskInstancesCleared(
        dag_id=dag_id, run_id=run_id, cleared=len(cleared), task_instance_ids=cleared
    )
