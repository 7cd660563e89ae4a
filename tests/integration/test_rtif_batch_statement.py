"""The batch statement (group commit) stores exactly what the single-write statement
stores, column text included: a missing field meta as JSON null (not SQL NULL), a
body kept as its JSON text as that text, on every database (PostgreSQL's batch form is
``unnest`` of arrays, the others' a CASE per column)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db.engine import open_database
from taskexec.services import rendered_fields
from taskexec.wire import jsontree

from helpers import seed

_WRITES = [
    ({"a": 1, "s": "x"}, None),
    ({"a": [1, {"b": None}]}, {"a": {"renderer": "bash"}}),
    (jsontree.SerializedJson('{"big": "text kept as sent"}'), None),
]


def _stored(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    """Per run, each task's stored column values, as the database gives them."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT run_id, task_id, rendered_fields, field_meta IS NULL, field_meta "
                "FROM rendered_task_instance_fields ORDER BY run_id, task_id"
            )
        ).all()
    stored: dict[str, list[tuple[object, ...]]] = {}
    for run_id, *values in rows:
        stored.setdefault(run_id, []).append(tuple(values))
    return stored


def test_a_batch_stores_what_single_writes_store(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    single_run, batch_run = (seed(settings, tasks=len(_WRITES)) for _ in range(2))
    single, batched = single_run.task_instances, batch_run.task_instances

    async def write() -> None:
        async with open_database(settings) as db:
            for ti, (fields, meta) in zip(single, _WRITES, strict=True):
                await db.write(
                    rendered_fields.upsert_rendered_fields, ti_id=ti.id, fields=fields, meta=meta
                )
            writes = [
                rendered_fields.Write(ti.id, fields, meta)
                for ti, (fields, meta) in zip(batched, _WRITES, strict=True)
            ]
            outcomes = await db.write(rendered_fields.upsert_rendered_fields_batch, writes=writes)
            assert outcomes == [None] * len(writes)

    asyncio.run(write())
    stored = _stored(sync_engine)
    by_single, by_batch = stored[single_run.run_id], stored[batch_run.run_id]
    assert by_single == by_batch
    assert len(by_single) == len(_WRITES)
    # Every field meta is a JSON value (a missing one JSON null): no SQL NULL.
    assert not any(is_null for _task, _fields, is_null, _meta in by_single)
