"""Schema migrations through Alembic, on a sync engine (the CLI and ``serve`` use these)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from taskexec.config import Settings
from taskexec.db import connect, models
from taskexec.db import errors as db_errors

SCRIPT_LOCATION = "taskexec:migrations"


class RevisionError(ValueError):
    """Alembic cannot go to the revision asked for (unknown, or too many steps away)."""


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations, bound to ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def sync_engine(settings: Settings, url: str | None = None) -> Iterator[sa.Engine]:
    """A short-lived sync engine on ``url`` (default: the configured database) for
    schema work, disposed on exit."""
    engine = connect.make_sync_engine(url or settings.effective_database_url, settings)
    try:
        yield engine
    finally:
        engine.dispose()


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached now (refused, reset, gone,
    starting up): trouble worth waiting out, unlike a wrong URL or schema."""
    return (
        isinstance(exc, sa.exc.DBAPIError) and db_errors.classify(exc) is db_errors.Kind.RETRYABLE
    )


def missing_database(settings: Settings) -> str | None:
    """The configured database's name if its server answers and has no database by that
    name, else None (it exists, SQLite, or the server cannot be asked). The server's own
    catalogue is asked, through its maintenance database: a connection the server refuses
    carries no SQLSTATE from libpq, so the refusal itself cannot tell a missing database
    from a server that is starting up."""
    url = connect.sync_url(settings.effective_database_url)
    backend = connect.backend_of(url)
    if backend == "sqlite" or not url.database:
        return None
    if backend == "postgresql":
        server = url.set(database="postgres")
        query = "SELECT 1 FROM pg_database WHERE datname = :name"
    else:
        server = url.set(database="information_schema")
        query = "SELECT 1 FROM information_schema.schemata WHERE schema_name = :name"
    engine = connect.make_sync_engine(server, settings)
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text(query), {"name": url.database}).first()
    except sa.exc.DBAPIError:
        return None
    finally:
        engine.dispose()
    return None if found else url.database


def heads() -> tuple[str, ...]:
    """The head revisions of the packaged migrations (there should be exactly one)."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


@contextlib.contextmanager
def _migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction for a migration. On SQLite, foreign keys are off
    meanwhile: batch migrations copy a table and drop the old one, and with foreign keys
    on, the drop would cascade into every row that refers to it. They are checked once
    the migration is done, before it commits."""
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        # The pragma is ignored inside a transaction: set it before one begins.
        if sqlite:
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                yield conn
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("the migration left rows whose foreign keys do not match")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


@contextlib.contextmanager
def _revision_errors() -> Iterator[None]:
    # Alembic's CommandError is its user-facing error: here, a revision it cannot reach.
    try:
        yield
    except CommandError as exc:
        raise RevisionError(str(exc)) from exc


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision``."""
    with _migrating(engine) as conn, _revision_errors():
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    """Take the schema down to ``revision`` (``base`` drops everything)."""
    with _migrating(engine) as conn, _revision_errors():
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(engine: sa.Engine) -> bool:
    """True when the database is at the single head revision."""
    return current_revision(engine) in heads() and len(heads()) == 1


def diff(engine: sa.Engine) -> list[Any]:
    """The differences between the models and the database schema (empty when equal)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, models.Base.metadata))
