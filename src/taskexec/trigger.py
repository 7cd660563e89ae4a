"""Triggering: a dag run with one queued task instance per task (and per mapped item).

There is no dependency scheduler: the task instances of a run are independent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.sdk.dag import Dag
from taskexec.services import dag_runs


async def create_run(
    settings: Settings,
    *,
    dag_id: str,
    tasks: Sequence[tuple[str, int]],
    run_id: str | None = None,
    conf: dict[str, Any] | None = None,
    logical_date: dt.datetime | None = None,
    max_tries: int | Mapping[str, int] = 0,
) -> tuple[str, list[dict[str, Any]]]:
    """Create a dag run with one queued task instance per ``(task_id, map_index)`` in its
    own transaction; returns the run id and the task-instance rows."""
    run_id = run_id or dag_runs.new_run_id()
    db = db_engine.Database(
        db_engine.make_engine(settings.effective_database_url, settings), settings
    )
    try:
        rows = await db.write(
            dag_runs.create_dag_run,
            dag_id=dag_id,
            run_id=run_id,
            tasks=tasks,
            conf=conf,
            logical_date=logical_date,
            max_tries=max_tries,
        )
    finally:
        await db.dispose()
    return run_id, rows


async def trigger_dag(
    settings: Settings,
    dag: Dag,
    *,
    conf: dict[str, Any] | None = None,
    logical_date: dt.datetime | None = None,
    run_id: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Create a run of ``dag``; returns its run id and the task-instance rows."""
    keys = dag.task_instance_keys()
    return await create_run(
        settings,
        dag_id=dag.dag_id,
        tasks=[(task_id, map_index) for task_id, map_index, _ in keys],
        run_id=run_id,
        conf=conf,
        logical_date=logical_date,
        max_tries={task_id: retries for task_id, _, retries in keys},
    )
