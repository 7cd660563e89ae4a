"""Rendered-fields write strategies to compare. Only ``upsert`` is taskexec's: it is the
production function itself, not a copy. The others are Airflow's read-then-write, written
out here on purpose (the only SQL outside ``services`` and ``db``): they are the bug the
race reproduces, and nothing but ``taskexec race`` ever runs them."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec.api import deps
from taskexec.db import models, types
from taskexec.db.engine import Database
from taskexec.services import task_instances
from taskexec.wire import jsontree

ti = models.task_instance
rtif = models.rendered_task_instance_fields


async def _merge_write(
    conn: AsyncConnection,
    *,
    ti_id: uuid.UUID,
    fields: jsontree.JsonFields,
    meta: dict[str, Any] | None,
) -> None:
    """What ``session.merge`` does: SELECT the row, then INSERT or UPDATE it.

    Between the SELECT and the INSERT another transaction may insert the same key;
    then this INSERT fails on the primary key. That is Airflow's bug, up to 3.2.
    """
    key = (
        await conn.execute(
            sa.select(*models.key_columns(ti), ti.c.try_number).where(ti.c.id == ti_id)
        )
    ).first()
    if key is None:
        await task_instances.raise_missing(conn, ti_id=ti_id)
        return
    where = [rtif.c[k] == getattr(key, k) for k in models.TI_KEY]
    values = {
        "rendered_fields": fields,
        "field_meta": meta,
        "try_number": key.try_number,
        "updated_at": types.utcnow(),
    }
    existing = await conn.scalar(sa.select(rtif.c.dag_id).where(*where))
    if existing is None:
        await conn.execute(
            sa.insert(rtif).values(**{k: getattr(key, k) for k in models.TI_KEY}, **values)
        )
    else:
        await conn.execute(sa.update(rtif).where(*where).values(**values))


async def merge(
    db: Database, ti_id: uuid.UUID, fields: jsontree.JsonFields, meta: dict[str, Any] | None
) -> None:
    """Airflow up to 3.2: read-then-write in one transaction."""
    await db.write(_merge_write, ti_id=ti_id, fields=fields, meta=meta)


async def merge_retry(
    db: Database, ti_id: uuid.UUID, fields: jsontree.JsonFields, meta: dict[str, Any] | None
) -> None:
    """Airflow PR #63581: on IntegrityError roll back, re-fetch and write again."""
    try:
        await db.write(_merge_write, ti_id=ti_id, fields=fields, meta=meta)
    except sa.exc.IntegrityError:
        await db.write(_merge_write, ti_id=ti_id, fields=fields, meta=meta)


STRATEGIES: dict[str, deps.RtifWriter] = {
    "merge": merge,
    "merge-retry": merge_retry,
    "upsert": deps.store_rendered_fields,
}
