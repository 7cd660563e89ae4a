"""``db.engine.one_statement``: on PostgreSQL a write that is one statement runs in
autocommit (each statement its own transaction, no BEGIN or COMMIT round trip); every
other write, and every write elsewhere or with the setting off, runs in a transaction.
Either way a returned write is committed."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.services import rendered_fields

from helpers import rtif_rows, seed


async def _two_transaction_ids(conn: AsyncConnection) -> tuple[int, int]:
    first = await conn.scalar(sa.text("SELECT txid_current()"))
    second = await conn.scalar(sa.text("SELECT txid_current()"))
    assert first is not None and second is not None
    return int(first), int(second)


one_statement_work = db_engine.one_statement(_two_transaction_ids)


async def transaction_work(conn: AsyncConnection) -> tuple[int, int]:
    return await _two_transaction_ids(conn)


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit-on", "autocommit-off"])
def test_one_statement_writes_run_in_autocommit_on_postgresql(
    settings: Settings, backend: str, autocommit: bool
) -> None:
    if backend != "postgresql":
        pytest.skip("only PostgreSQL runs one-statement writes in autocommit")
    settings = settings.model_copy(update={"db_one_statement_autocommit": autocommit})

    async def go() -> tuple[tuple[int, int], tuple[int, int]]:
        async with db_engine.open_database(settings) as db:
            return await db.write(one_statement_work), await db.write(transaction_work)

    declared, undeclared = asyncio.run(go())
    # Each statement its own transaction only where declared, with the setting on.
    assert (declared[0] != declared[1]) is autocommit
    assert undeclared[0] == undeclared[1]


def test_a_one_statement_write_is_committed_when_it_returns(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    run = seed(settings, tasks=2)
    first, second = (t.id for t in run.task_instances)

    async def go() -> None:
        async with db_engine.open_database(settings) as db:
            await db.write(rendered_fields.upsert_rendered_fields, ti_id=first, fields={"a": 1})
            writes = [rendered_fields.Write(second, {"b": 2})]
            assert await db.write(rendered_fields.upsert_rendered_fields_batch, writes=writes) == [
                None
            ]

    asyncio.run(go())
    # Read on another connection, after the writer's engine is gone.
    stored = {row["task_id"]: row["rendered_fields"] for row in rtif_rows(sync_engine)}
    assert sorted(stored.values(), key=str) == [{"a": 1}, {"b": 2}]
