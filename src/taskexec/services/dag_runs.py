"""Dag runs and their task instances (created by the CLI until triggering exists)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec import errors
from taskexec.db import errors as db_errors
from taskexec.db import models, types
from taskexec.db.models import DagRunState, TaskInstanceState


async def create_dag_run(
    *,
    conn: AsyncConnection,
    dag_id: str,
    run_id: str,
    tasks: Sequence[tuple[str, int]],
    conf: dict[str, Any] | None = None,
    logical_date: dt.datetime | None = None,
    max_tries: int | Mapping[str, int] = 0,
) -> list[dict[str, Any]]:
    """Create a dag run and one queued task instance per ``(task_id, map_index)``;
    ``max_tries`` is one number for all tasks or one per task id."""
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
            )
        )
    except sa.exc.IntegrityError as exc:
        # Not retried: a second run with the same id is a real conflict.
        if db_errors.classify(exc) is db_errors.Kind.UNIQUE_VIOLATION:
            raise errors.RunExistsError() from exc
        raise
    rows: list[dict[str, Any]] = [
        {
            "id": types.uuid7(),
            "dag_id": dag_id,
            "task_id": task_id,
            "run_id": run_id,
            "map_index": map_index,
            "try_number": 1,
            "max_tries": max_tries if isinstance(max_tries, int) else max_tries.get(task_id, 0),
            "state": TaskInstanceState.QUEUED,
        }
        for task_id, map_index in tasks
    ]
    if rows:
        await conn.execute(sa.insert(models.task_instance), rows)
    return rows


def new_run_id(now: dt.datetime | None = None) -> str:
    """A unique manual run id: ``manual__<iso time>__<8 hex>``."""
    moment = (now or types.utcnow()).isoformat(timespec="microseconds")
    return f"manual__{moment}__{uuid.uuid4().hex[:8]}"
