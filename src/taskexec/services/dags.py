"""Dags, as seen in the runs table (the server holds no dag definitions)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec import schemas
from taskexec.db import models
from taskexec.services import dag_runs

dr = models.dag_run


async def list_dags(
    conn: AsyncConnection, *, limit: int, offset: int
) -> schemas.Page[schemas.DagSummary]:
    """Every dag with at least one run, by dag id, with its run count."""
    total = await conn.scalar(sa.select(sa.func.count(sa.distinct(dr.c.dag_id))))
    rows = await conn.execute(
        sa.select(
            dr.c.dag_id,
            sa.func.count().label("run_count"),
            sa.func.max(dr.c.run_after).label("latest_run_after"),
        )
        .group_by(dr.c.dag_id)
        .order_by(dr.c.dag_id)
        .limit(limit)
        .offset(offset)
    )
    items = [schemas.DagSummary.model_validate(row._mapping) for row in rows]
    return schemas.Page(items=items, total=total or 0, limit=limit, offset=offset)


async def list_dags_and_runs(
    conn: AsyncConnection,
    *,
    dags_limit: int,
    dag_id: str | None,
    limit: int,
    offset: int,
    state: str | None = None,
) -> tuple[schemas.Page[schemas.DagSummary], schemas.Page[schemas.DagRunSummary]]:
    """The dags, and the runs of every dag (or of ``dag_id``, or in ``state``), read in
    one transaction: what the web page's runs page shows side by side."""
    dags = await list_dags(conn, limit=dags_limit, offset=0)
    runs = await dag_runs.list_runs(conn, dag_id=dag_id, limit=limit, offset=offset, state=state)
    return dags, runs
