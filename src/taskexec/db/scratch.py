"""Throwaway databases for tests, the race and the benchmark: created, migrated, then
dropped. Administration only (CREATE and DROP DATABASE); the data in them is written
through services like any other."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from taskexec.config import Settings
from taskexec.db import connect, migrate


def admin_engine(url: str) -> sa.Engine:
    """An autocommit engine for CREATE/DROP DATABASE."""
    return sa.create_engine(
        connect.sync_url(url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )


def server_version(url: str) -> str:
    """The database server's version string."""
    backend = connect.sync_url(url).get_backend_name()
    if backend == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version()")).scalar())
    finally:
        engine.dispose()


@contextlib.contextmanager
def fresh_database(
    backend: str, admin: str, *, template: str | None = None, workdir: Path | None = None
) -> Iterator[str]:
    """Create and migrate a new database; yield its URL; drop it afterwards.

    PostgreSQL clones ``template`` (``CREATE DATABASE … TEMPLATE``) when one is given.
    """
    if backend == "sqlite":
        with contextlib.ExitStack() as stack:
            folder = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = f"sqlite:///{folder / f'taskexec-{uuid.uuid4().hex[:8]}.db'}"
            _migrate(url)
            yield url
        return
    name = f"taskexec_t_{uuid.uuid4().hex[:12]}"
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    engine = admin_engine(admin)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                clone = f' TEMPLATE "{template}"' if template else ""
                conn.execute(sa.text(f'CREATE DATABASE "{name}"{clone}'))
            else:
                conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        if not template:
            _migrate(url)
        yield url
    finally:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        engine.dispose()


def _migrate(url: str) -> None:
    engine = connect.make_sync_engine(url, Settings())
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
