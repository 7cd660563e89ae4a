"""The one dialect-aware upsert builder.

Every idempotent write in taskexec is a single ``INSERT ... ON CONFLICT DO UPDATE``
(PostgreSQL, SQLite) or ``INSERT ... ON DUPLICATE KEY UPDATE`` (MySQL, MariaDB): the
database resolves concurrent writers on its own key, so there is no read-then-write
window and no IntegrityError to catch.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def upsert_from_select(
    dialect: str,
    table: sa.Table,
    columns: Sequence[str],
    select: sa.Select[tuple[object, ...]],
    *,
    key: Sequence[str],
    update: Sequence[str],
) -> Insert:
    """``INSERT INTO table (columns) SELECT ... ON CONFLICT (key) DO UPDATE SET update``.

    The updated columns take the values the INSERT would have written (``excluded`` /
    ``VALUES()``), so the row ends with exactly one writer's values, never a mix.
    """
    if dialect == "postgresql":
        pg_stmt = postgresql.insert(table).from_select(list(columns), select)
        return pg_stmt.on_conflict_do_update(
            index_elements=list(key), set_={c: pg_stmt.excluded[c] for c in update}
        )
    if dialect == "sqlite":
        lite_stmt = sqlite.insert(table).from_select(list(columns), select)
        return lite_stmt.on_conflict_do_update(
            index_elements=list(key), set_={c: lite_stmt.excluded[c] for c in update}
        )
    if dialect == "mysql":
        my_stmt = mysql.insert(table).from_select(list(columns), select)
        return my_stmt.on_duplicate_key_update({c: my_stmt.inserted[c] for c in update})
    raise ValueError(f"no upsert for dialect {dialect!r}")


def insert_ignore(dialect: str, table: sa.Table, values: dict[str, object]) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` (``INSERT IGNORE`` on MySQL): the row is
    written unless one with the same key exists; the row count says which."""
    if dialect == "postgresql":
        return postgresql.insert(table).values(values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).values(values).on_conflict_do_nothing()
    if dialect == "mysql":
        return mysql.insert(table).values(values).prefix_with("IGNORE")
    raise ValueError(f"no insert-ignore for dialect {dialect!r}")
