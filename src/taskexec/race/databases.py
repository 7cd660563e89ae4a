"""Throwaway databases: a fresh, migrated database per race or bench case (and per test),
and the task instances a case writes to."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from taskexec import schemas
from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import migrate
from taskexec.services import dag_runs

# Where each backend's admin URL comes from when no option gives it.
URL_ENV = {
    "postgresql": ("TASKEXEC_RACE_POSTGRES_URL", "TASKEXEC_TEST_POSTGRES_URL"),
    "mysql": ("TASKEXEC_RACE_MYSQL_URL", "TASKEXEC_TEST_MYSQL_URL"),
}
BACKENDS = ("sqlite", "postgresql", "mysql")


def admin_url(backend: str, given: str | None = None) -> str | None:
    """The admin URL for ``backend``: ``given``, else the first env var that is set."""
    if backend == "sqlite":
        return "sqlite://"
    if given:
        return given
    for name in URL_ENV[backend]:
        if os.environ.get(name):
            return os.environ[name]
    return None


def admin_engine(url: str) -> sa.Engine:
    """An autocommit engine for CREATE/DROP DATABASE."""
    return sa.create_engine(
        db_engine.sync_url(url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )


def server_version(url: str) -> str:
    """The database server's version string."""
    backend = db_engine.sync_url(url).get_backend_name()
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
    engine = db_engine.make_sync_engine(url, Settings())
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


async def create_task_instances(settings: Settings, dag_id: str, count: int) -> schemas.NewDagRun:
    """A new run of ``dag_id`` with ``count`` queued task instances ``task_0``.., created
    through the transaction owner and the one service that creates runs."""
    tasks = [(f"task_{n}", -1, 0) for n in range(count)]
    async with db_engine.open_database(settings) as db:
        return await db.write(dag_runs.create_dag_run, dag_id=dag_id, tasks=tasks)
