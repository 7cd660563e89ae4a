"""Rendered task-instance fields (RTIF): the race-free write and the read."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from taskexec import errors, schemas
from taskexec.db import connect, engine, models, types, upsert
from taskexec.services import dag_runs, task_instances
from taskexec.wire import jsontree, protocol
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.states import TaskInstanceState

ti = models.task_instance
rtif = models.rendered_task_instance_fields
tih = models.task_instance_history

_WRITTEN = ("rendered_fields", "field_meta", "try_number", "updated_at")
# A try writes its fields while it has not ended: handed out (a bare run's tries are
# written to while queued) or running.
_WRITABLE = (TaskInstanceState.QUEUED, TaskInstanceState.RUNNING)


def _upsert_from_task_instances(dialect: str, where: sa.ColumnElement[bool]) -> Insert:
    """``INSERT INTO rendered_task_instance_fields (...)
    SELECT ti.dag_id, ti.task_id, ti.run_id, ti.map_index, :fields, :meta, ti.try_number,
           :now FROM task_instance ti WHERE <where>
    ON CONFLICT (key) DO UPDATE ...`` (or ``ON DUPLICATE KEY UPDATE``)."""
    select = sa.select(
        *models.key_columns(ti),
        sa.bindparam("rendered_fields", type_=rtif.c.rendered_fields.type),
        sa.bindparam("field_meta", type_=rtif.c.field_meta.type),
        ti.c.try_number,
        sa.bindparam("updated_at", type_=types.UtcDateTime()),
    ).where(where)
    stmt = upsert.upsert_from_select(
        dialect, rtif, [*models.TI_KEY, *_WRITTEN], select, key=models.TI_KEY, update=_WRITTEN
    )
    # SQLAlchemy keeps the driver's row count only for UPDATE/DELETE unless asked;
    # the count is how we learn, in the same round trip, whether the TI exists.
    return stmt.execution_options(preserve_rowcount=True)


@functools.cache
def upsert_statement(dialect: str) -> Insert:
    """The one statement that writes a task instance's RTIF, built once per dialect.

    Taking the key from ``task_instance`` in the same statement makes the existence
    check and the write one round trip: zero rows means no such task instance, or a try
    that has ended (its fields stay as they were).
    """
    return _upsert_from_task_instances(
        dialect,
        sa.and_(
            ti.c.id == sa.bindparam("ti_id", type_=sa.Uuid()),
            ti.c.state.in_(_WRITABLE),
        ),
    )


@engine.one_statement
async def upsert_rendered_fields(
    conn: AsyncConnection,
    *,
    ti_id: uuid.UUID,
    fields: jsontree.JsonFields,
    meta: dict[str, Any] | None = None,
) -> None:
    """Store ``fields`` (and each field's renderer and truncation, ``meta``) for the task
    instance, replacing what an earlier write stored."""
    result = await conn.execute(
        upsert_statement(conn.dialect.name),
        {
            "ti_id": ti_id,
            "rendered_fields": fields,
            "field_meta": meta,
            "updated_at": types.utcnow(),
        },
    )
    if result.rowcount == 0:
        await task_instances.raise_not_writable(conn, ti_id=ti_id)


@dataclasses.dataclass(frozen=True)
class Write:
    """One request's rendered fields for one try (``PUT /rtif``)."""

    ti_id: uuid.UUID
    fields: jsontree.JsonFields
    meta: dict[str, Any] | None = None


@functools.lru_cache(maxsize=256)
def batch_statement(dialect: str, size: int) -> Insert:
    """The one statement that writes the fields of ``size`` different tries on SQLite
    and MySQL/MariaDB (PostgreSQL's is ``array_batch_statement``): the single-write
    upsert with ``ti.id IN (:id_0, ...)`` and each row's fields picked by its id,
    ``CASE WHEN ti.id = :id_n THEN :fields_n ...``. Built once per size."""
    ids = [sa.bindparam(f"id_{n}", type_=sa.Uuid()) for n in range(size)]

    def picked(column: str) -> sa.ColumnElement[Any]:
        typ = rtif.c[column].type
        return sa.case(
            *((ti.c.id == ids[n], sa.bindparam(f"{column}_{n}", type_=typ)) for n in range(size)),
            else_=sa.null(),
        )

    select = sa.select(
        *models.key_columns(ti),
        picked("rendered_fields"),
        picked("field_meta"),
        ti.c.try_number,
        sa.bindparam("updated_at", type_=types.UtcDateTime()),
    ).where(ti.c.id.in_(ids), ti.c.state.in_(_WRITABLE))
    stmt = upsert.upsert_from_select(
        dialect, rtif, [*models.TI_KEY, *_WRITTEN], select, key=models.TI_KEY, update=_WRITTEN
    )
    return stmt.execution_options(preserve_rowcount=True)


@functools.cache
def array_batch_statement() -> Insert:
    """PostgreSQL's batch statement: the single-write upsert joined to ``unnest`` of
    three arrays (ids, fields, metas as JSON text, each cast to JSON as a single write's
    value is), which returns the keys of the task instances it stored. One text for
    every batch size, so the driver converts and prepares it once (the CASE form grows
    with the batch, past psycopg's statement cache)."""
    ids = sa.bindparam("ids", type_=postgresql.ARRAY(sa.Uuid()))
    rows = (
        sa.func.unnest(
            ids,
            sa.bindparam("rendered_fields", type_=postgresql.ARRAY(sa.Text())),
            sa.bindparam("field_meta", type_=postgresql.ARRAY(sa.Text())),
        )
        .table_valued("id", "rendered_fields", "field_meta")
        .render_derived(name="w")
    )
    select = (
        sa.select(
            *models.key_columns(ti),
            sa.cast(rows.c.rendered_fields, postgresql.JSON()),
            sa.cast(rows.c.field_meta, postgresql.JSON()),
            ti.c.try_number,
            sa.bindparam("updated_at", type_=types.UtcDateTime()),
        )
        .select_from(ti.join(rows, ti.c.id == rows.c.id))
        # Also by the ids themselves: the plan looks each up by the primary key rather
        # than hash every queued and running try (a prepared statement's generic plan
        # cannot tell how few the array holds).
        .where(ti.c.id == sa.any_(ids), ti.c.state.in_(_WRITABLE))
    )
    stmt = upsert.upsert_from_select(
        "postgresql", rtif, [*models.TI_KEY, *_WRITTEN], select, key=models.TI_KEY, update=_WRITTEN
    )
    # The keys it wrote: which writes were stored when not all were (``outcomes``).
    return stmt.returning(*models.key_columns(rtif))


def arrays(writes: Sequence[Write]) -> dict[str, list[Any]]:
    """``array_batch_statement``'s three arrays: ids, and each value's JSON text as the
    single write sends it (``connect.json_text``; None as JSON null, as the JSON column
    stores it from the other statements)."""
    return {
        "ids": [w.ti_id for w in writes],
        "rendered_fields": [connect.json_text(w.fields) for w in writes],
        "field_meta": [connect.json_text(w.meta) for w in writes],
    }


@engine.one_statement
async def upsert_rendered_fields_batch(
    conn: AsyncConnection, *, writes: Sequence[Write]
) -> list[errors.TaskExecError | None]:
    """Store many writes, one per try, with one statement (group commit); returns, per
    write, None when it was stored or the error it gets alone (404, 409, 410).

    On PostgreSQL the statement returns the keys of the task instances it stored (it
    may be its own transaction, ``engine.one_statement``). Elsewhere its row count says
    when every
    write was stored, the usual case; when it does not (a try that has ended, an
    earlier try's id, or MySQL, whose count of an update is 2), a read in the same
    transaction finds the rows it wrote, by their ``updated_at`` (locked by it until
    the commit). Why the others were not stored is read afterwards.
    """
    assert len({w.ti_id for w in writes}) == len(writes), "one write per try in a batch"
    now = types.utcnow()
    params: dict[str, Any] = {"updated_at": now}
    ids = [w.ti_id for w in writes]
    if conn.dialect.name == "postgresql":
        params.update(arrays(writes))
        keys = {tuple(row) for row in await conn.execute(array_batch_statement(), params)}
        if len(keys) == len(writes):
            return [None] * len(writes)
        return await outcomes(conn, writes=writes, stored_keys=keys)
    for n, write in enumerate(writes):
        params[f"id_{n}"] = write.ti_id
        params[f"rendered_fields_{n}"] = write.fields
        params[f"field_meta_{n}"] = write.meta
    result = await conn.execute(batch_statement(conn.dialect.name, len(writes)), params)
    if result.rowcount == len(writes) and conn.dialect.name != "mysql":
        return [None] * len(writes)
    written = set(
        await conn.scalars(
            sa.select(ti.c.id)
            .join(rtif, models.same_task_instance(rtif, ti))
            .where(ti.c.id.in_(ids), rtif.c.updated_at == now)
        )
    )
    return await _answers(conn, writes, written)


async def outcomes(
    conn: AsyncConnection, *, writes: Sequence[Write], stored_keys: set[tuple[Any, ...]]
) -> list[errors.TaskExecError | None]:
    """Per write of a PostgreSQL batch statement that stored the task instances keyed
    ``stored_keys`` (the keys it returned): None, or the error it gets alone (404, 409,
    410). Reads only: it may run after the statement's own transaction, as the key of
    a try's id never changes, whether the try is current or an earlier one by now."""
    ids = [w.ti_id for w in writes]
    current = sa.select(ti.c.id, *models.key_columns(ti)).where(ti.c.id.in_(ids))
    earlier = sa.select(tih.c.id, *models.key_columns(tih)).where(tih.c.id.in_(ids))
    keyed = await conn.execute(current.union_all(earlier))
    stored = {row[0] for row in keyed if tuple(row[1:]) in stored_keys}
    return await _answers(conn, writes, stored)


async def _answers(
    conn: AsyncConnection, writes: Sequence[Write], stored: set[uuid.UUID]
) -> list[errors.TaskExecError | None]:
    answers: list[errors.TaskExecError | None] = []
    for write in writes:
        if write.ti_id in stored:
            answers.append(None)
            continue
        try:
            await task_instances.raise_not_writable(conn, ti_id=write.ti_id)
        except errors.TaskExecError as exc:
            answers.append(exc)
        else:
            raise AssertionError("raise_not_writable returned")
    return answers


async def get_rendered_fields(
    conn: AsyncConnection, *, ti_id: uuid.UUID
) -> wire_schemas.RenderedFieldsResponse:
    """The stored fields of the task instance, with the try that wrote them."""
    result = await conn.execute(
        sa.select(
            *models.key_columns(rtif),
            rtif.c.try_number,
            rtif.c.updated_at,
            rtif.c.rendered_fields,
        )
        .join(ti, models.same_task_instance(ti, rtif))
        .where(ti.c.id == ti_id)
    )
    row = result.first()
    if row is None:
        exists = await conn.scalar(sa.select(ti.c.id).where(ti.c.id == ti_id))
        if exists is not None:
            raise errors.NotFoundError("No rendered fields are stored for this task instance.")
        await task_instances.raise_missing(conn, ti_id=ti_id)
    assert row is not None
    return wire_schemas.RenderedFieldsResponse(task_instance_id=ti_id, **row._mapping)


async def get_rendered_fields_view(
    conn: AsyncConnection, *, dag_id: str, run_id: str, task_id: str, map_index: int
) -> schemas.RenderedFieldsView:
    """The stored fields of one task instance, each with its renderer and truncation,
    and the map indexes of the same task (to move between mapped instances)."""
    map_indexes = list(
        await conn.scalars(
            sa.select(ti.c.map_index)
            .where(ti.c.dag_id == dag_id, ti.c.run_id == run_id, ti.c.task_id == task_id)
            .order_by(ti.c.map_index)
        )
    )
    if map_index not in map_indexes:
        await dag_runs.require_dag_run(conn, dag_id=dag_id, run_id=run_id)
        raise errors.TaskInstanceKeyNotFoundError()
    row = (
        await conn.execute(
            sa.select(
                rtif.c.rendered_fields, rtif.c.field_meta, rtif.c.try_number, rtif.c.updated_at
            ).where(
                rtif.c.dag_id == dag_id,
                rtif.c.run_id == run_id,
                rtif.c.task_id == task_id,
                rtif.c.map_index == map_index,
            )
        )
    ).first()
    if row is None:
        raise errors.RenderedFieldsNotFoundError()
    meta: dict[str, Any] = row.field_meta or {}
    fields = []
    for name, value in row.rendered_fields.items():
        field_meta = meta.get(name) or {}
        truncated_at = field_meta.get("truncated_at")
        fields.append(
            schemas.RenderedField(
                name=name,
                value=value,
                renderer=field_meta.get("renderer"),
                # Also recognised by the notice, for rows from workers that send no meta.
                truncated=truncated_at is not None or protocol.is_truncated(value),
                truncated_at=truncated_at,
            )
        )
    return schemas.RenderedFieldsView(
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        try_number=row.try_number,
        updated_at=row.updated_at,
        fields=fields,
        map_indexes=map_indexes,
    )


async def upsert_rendered_fields_of_run(
    conn: AsyncConnection, *, dag_id: str, run_id: str, fields: dict[str, Any]
) -> int:
    """Store the same ``fields`` for every task instance of a run in one statement (the
    benchmark fills large tables with it); returns the rows written."""
    stmt = _upsert_from_task_instances(
        conn.dialect.name,
        sa.and_(
            ti.c.dag_id == sa.bindparam("dag_id", type_=ti.c.dag_id.type),
            ti.c.run_id == sa.bindparam("run_id", type_=ti.c.run_id.type),
        ),
    )
    params = {"rendered_fields": fields, "field_meta": None, "updated_at": types.utcnow()}
    result = await conn.execute(stmt, {"dag_id": dag_id, "run_id": run_id, **params})
    return result.rowcount


async def count_rows(conn: AsyncConnection) -> int:
    """How many rendered-fields rows are stored, over all dags."""
    return await conn.scalar(sa.select(sa.func.count()).select_from(rtif)) or 0
