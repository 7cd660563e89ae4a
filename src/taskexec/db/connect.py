"""Connections: each backend's driver, URL and engine setup.

``make_engine`` is the server's async engine: SQLite pragmas and ``BEGIN IMMEDIATE``,
MySQL's isolation level, pools, and the timeouts that bound every wait (connect,
statement, lock wait, SQLite busy). ``make_sync_engine`` is the same setup for
migrations and admin commands, without the statement bounds. ``db.engine.Database``
owns the transactions run on them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskexec.config import Settings
from taskexec.wire import jsontree

# Execution option read by the SQLite "begin" hook: read-only transactions use a
# deferred BEGIN so they do not queue behind writers.
READ_ONLY_OPTION = "taskexec_read_only"

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "psycopg", "mysql": "aiomysql"}
_SYNC_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg", "mysql": "pymysql"}


def backend_of(url: URL) -> str:
    name = url.get_backend_name()
    return "mysql" if name == "mariadb" else name


def _with_driver(url: str | URL, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = backend_of(parsed)
    if backend not in drivers:
        raise ValueError(f"unsupported database {backend!r}: use sqlite, postgresql or mysql")
    parsed = parsed.set(drivername=f"{backend}+{drivers[backend]}")
    if backend == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def async_url(url: str | URL) -> URL:
    """The URL with the async driver this project uses for its backend."""
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str | URL) -> URL:
    """The URL with the sync driver (Alembic and the CLI's admin commands use it)."""
    return _with_driver(url, _SYNC_DRIVERS)


def json_text(value: Any) -> str:
    """A JSON column's bind value as its text (a body kept as its JSON text goes as is)."""
    if type(value) is jsontree.SerializedJson:
        return value  # serialized already
    return jsontree.dumps(value)


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL (None for an in-memory database)."""
    if url.database and url.database != ":memory:":
        return Path(url.database)
    return None


def driver_connect_args(url: URL, settings: Settings) -> dict[str, Any]:
    """The server engine's driver arguments (timeouts, PostgreSQL's statement and lock
    bounds), for a connection made straight through the driver (``db.direct``)."""
    args: dict[str, Any] = _engine_kwargs(url, settings, bounded=True)["connect_args"]
    return args


def _engine_kwargs(url: URL, settings: Settings, *, bounded: bool) -> dict[str, Any]:
    """Engine arguments for ``url``. ``bounded``: the server's engine, whose statements
    and lock waits the database itself ends after the transaction timeout (migrations
    and admin commands, on the sync engine, are not bounded so)."""
    kwargs: dict[str, Any] = {
        "json_serializer": json_text,
        "json_deserializer": jsontree.loads,
    }
    backend = backend_of(url)
    limit = settings.transaction_timeout_seconds
    connect_timeout = max(2, math.ceil(settings.db_connect_timeout_seconds))
    if backend == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # The Python driver's own timeout must not undercut busy_timeout.
        kwargs["connect_args"] = {"timeout": _sqlite_busy_ms(settings, bounded) / 1000}
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": connect_timeout}
        if bounded:
            ms = int(limit * 1000)
            options = f"-c statement_timeout={ms} -c lock_timeout={ms}"
            # A transaction left open by a client that froze or vanished is ended.
            options += f" -c idle_in_transaction_session_timeout={ms * 4}"
            given = url.query.get("options")
            kwargs["connect_args"]["options"] = f"{given} {options}" if given else options
    else:
        kwargs["connect_args"] = {"connect_timeout": connect_timeout}
        if bounded:
            # MariaDB alone knows max_statement_time: the /*M! */ part is MariaDB's.
            seconds = math.ceil(limit)
            kwargs["connect_args"]["init_command"] = (
                f"SET SESSION innodb_lock_wait_timeout={seconds}"
                f" /*M! , max_statement_time={limit:.3f} */"
            )
    kwargs["pool_size"] = settings.db_pool_size
    kwargs["max_overflow"] = settings.db_max_overflow
    kwargs["pool_timeout"] = min(settings.db_pool_timeout_seconds, limit)
    if backend != "sqlite":
        kwargs["pool_recycle"] = 1800
    if backend == "mysql":
        # READ COMMITTED avoids InnoDB gap locks, the usual source of upsert deadlocks.
        kwargs["isolation_level"] = "READ COMMITTED"
    return kwargs


def _sqlite_busy_ms(settings: Settings, bounded: bool) -> int:
    busy = settings.sqlite_busy_timeout_ms
    return min(busy, int(settings.transaction_timeout_seconds * 1000)) if bounded else busy


def _install_sqlite_hooks(sync_engine: sa.Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to our "begin" hook instead of the driver's
        # implicit BEGIN, which is DEFERRED and would let two writers both read
        # and then fail to upgrade their locks (SQLITE_BUSY without waiting).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _install_idle_pre_ping(sync_engine: sa.Engine, idle_seconds: float) -> None:
    """Ping a pooled connection on checkout if it sat idle for over ``idle_seconds``.

    SQLAlchemy's own ``pool_pre_ping`` pings on every checkout: one extra round trip
    per request. Raising DisconnectionError makes the pool drop the connection and try
    a fresh one, as the built-in pre-ping does.
    """

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return  # a new connection, or one back from work a moment ago
        try:
            alive = sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.DisconnectionError() from exc
        if not alive:
            raise sa.exc.DisconnectionError()


def make_engine(url: str | URL, settings: Settings) -> AsyncEngine:
    """An async engine for ``url`` with this project's per-dialect setup."""
    parsed = async_url(url)
    engine = create_async_engine(parsed, **_engine_kwargs(parsed, settings, bounded=True))
    if backend_of(parsed) == "sqlite":
        _install_sqlite_hooks(engine.sync_engine, _sqlite_busy_ms(settings, True))
    if settings.db_pool_pre_ping:
        _install_idle_pre_ping(engine.sync_engine, settings.db_pool_pre_ping_idle_seconds)
    return engine


def make_sync_engine(url: str | URL, settings: Settings) -> sa.Engine:
    """A sync engine with the same setup, for migrations and admin commands."""
    parsed = sync_url(url)
    kwargs = _engine_kwargs(parsed, settings, bounded=False)
    for key in ("pool_size", "max_overflow", "pool_timeout", "pool_recycle"):
        kwargs.pop(key, None)
    kwargs["poolclass"] = sa.pool.NullPool
    engine = sa.create_engine(parsed, **kwargs)
    if backend_of(parsed) == "sqlite":
        _install_sqlite_hooks(engine, _sqlite_busy_ms(settings, False))
    return engine
