"""PostgreSQL's rendered-fields writes straight through the driver (psycopg), for
``Database.write_direct`` (``db.direct``): the statements of ``rendered_fields``, as the
driver's text with their fixed parameters, built once."""

from __future__ import annotations

import functools
import typing
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.compiler import SQLCompiler

from taskexec.db import connect, direct, types
from taskexec.services import rendered_fields
from taskexec.wire.states import TaskInstanceState


@functools.cache
def _for_driver(
    statement: sa.ClauseElement, variables: tuple[str, ...], binary: tuple[str, ...] = ()
) -> tuple[str, dict[str, Any]]:
    """A statement of ``rendered_fields`` as the driver's text (psycopg), and its fixed
    parameters (the writable states): all but ``variables``; those in ``binary`` are
    sent in binary (psycopg's ``%(name)b``)."""
    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
    compiled = typing.cast(SQLCompiler, statement.compile(dialect=dialect))
    expanded = compiled.construct_expanded_state(dict.fromkeys(variables))
    fixed = {
        name: value.value if isinstance(value, TaskInstanceState) else value
        for name, value in expanded.parameters.items()
        if name not in variables
    }
    sql = expanded.statement
    for name in binary:
        sql = sql.replace(f"%({name})s", f"%({name})b")
    return sql, fixed


async def upsert_rendered_fields(
    statements: direct.Statements, *, write: rendered_fields.Write
) -> bool:
    """``rendered_fields.upsert_rendered_fields``'s statement straight through the
    driver; whether it stored the write (if not, ``rendered_fields.outcomes`` says
    why)."""
    sql, fixed = _for_driver(
        rendered_fields.upsert_statement("postgresql"),
        ("ti_id", "rendered_fields", "field_meta", "updated_at"),
    )
    params = {
        **fixed,
        "ti_id": write.ti_id,
        "rendered_fields": connect.json_text(write.fields),
        "field_meta": connect.json_text(write.meta),
        "updated_at": types.utcnow(),
    }
    return (await statements.execute(sql, params)).rowcount == 1


async def upsert_rendered_fields_batch(
    statements: direct.Statements, *, writes: Sequence[rendered_fields.Write]
) -> set[tuple[Any, ...]]:
    """``rendered_fields.upsert_rendered_fields_batch``'s statement straight through
    the driver, its arrays sent in binary (their text form the driver escapes value by
    value, in Python); returns the keys of the task instances it stored. When they are
    fewer than the writes, ``rendered_fields.outcomes`` says why."""
    assert len({w.ti_id for w in writes}) == len(writes), "one write per try in a batch"
    arrays = rendered_fields.arrays(writes)
    sql, fixed = _for_driver(
        rendered_fields.array_batch_statement(), ("updated_at", *arrays), tuple(arrays)
    )
    params = {**fixed, **arrays, "updated_at": types.utcnow()}
    return {tuple(row) for row in (await statements.execute(sql, params)).rows}
