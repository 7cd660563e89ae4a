"""Engines and the transaction owner.

``make_engine`` does the per-dialect setup (SQLite pragmas and ``BEGIN IMMEDIATE``,
MySQL isolation, pools). ``Database`` owns transactions: every entry point runs its
work through ``Database.write`` or ``Database.read``, which begin, commit and, for
retryable database trouble only, retry the whole transaction.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from taskexec import errors
from taskexec.config import Settings
from taskexec.db import errors as db_errors

log = logging.getLogger(__name__)

T = TypeVar("T")

# Execution option read by the SQLite "begin" hook: read-only transactions use a
# deferred BEGIN so they do not queue behind writers.
READ_ONLY_OPTION = "taskexec_read_only"

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "psycopg", "mysql": "aiomysql"}
_SYNC_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg", "mysql": "pymysql"}


def _backend(url: URL) -> str:
    name = url.get_backend_name()
    return "mysql" if name == "mariadb" else name


def _with_driver(url: str | URL, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = _backend(parsed)
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


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_file(url: URL) -> Path | None:
    if url.database and url.database != ":memory:":
        return Path(url.database)
    return None


def _engine_kwargs(url: URL, settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    backend = _backend(url)
    if backend == "sqlite":
        path = _sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # The Python driver's own timeout must not undercut busy_timeout.
        kwargs["connect_args"] = {"timeout": settings.sqlite_busy_timeout_ms / 1000}
        kwargs["pool_size"] = settings.db_pool_size
        kwargs["max_overflow"] = settings.db_max_overflow
        kwargs["pool_timeout"] = settings.db_pool_timeout_seconds
    else:
        kwargs["pool_size"] = settings.db_pool_size
        kwargs["max_overflow"] = settings.db_max_overflow
        kwargs["pool_timeout"] = settings.db_pool_timeout_seconds
        kwargs["pool_recycle"] = 1800
    if backend == "mysql":
        # READ COMMITTED avoids InnoDB gap locks, the usual source of upsert deadlocks.
        kwargs["isolation_level"] = "READ COMMITTED"
    return kwargs


def _install_sqlite_hooks(sync_engine: sa.Engine, settings: Settings) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to our "begin" hook instead of the driver's
        # implicit BEGIN, which is DEFERRED and would let two writers both read
        # and then fail to upgrade their locks (SQLITE_BUSY without waiting).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
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
    engine = create_async_engine(parsed, **_engine_kwargs(parsed, settings))
    if _backend(parsed) == "sqlite":
        _install_sqlite_hooks(engine.sync_engine, settings)
    if settings.db_pool_pre_ping:
        _install_idle_pre_ping(engine.sync_engine, settings.db_pool_pre_ping_idle_seconds)
    return engine


def make_sync_engine(url: str | URL, settings: Settings) -> sa.Engine:
    """A sync engine with the same setup, for migrations and admin commands."""
    parsed = sync_url(url)
    kwargs = _engine_kwargs(parsed, settings)
    for key in ("pool_size", "max_overflow", "pool_timeout", "pool_recycle"):
        kwargs.pop(key, None)
    kwargs["poolclass"] = sa.pool.NullPool
    engine = sa.create_engine(parsed, **kwargs)
    if _backend(parsed) == "sqlite":
        _install_sqlite_hooks(engine, settings)
    return engine


P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

# A service function: the connection of the transaction first, then its own arguments.
Work = Callable[Concatenate[AsyncConnection, P], Awaitable[T]]

_RETRY_NAME = "__taskexec_retry_name__"


def retry_name(name: str) -> Callable[[F], F]:
    """Declare the name under which the transaction owner counts a service function's
    retries (``Database.retries``); undeclared functions count under their own name."""

    def declare(fn: F) -> F:
        setattr(fn, _RETRY_NAME, name)
        return fn

    return declare


class Database:
    """The transaction owner for every entry point: routes, the CLI, executors, loops.

    ``write``/``read`` call ``fn(conn, *args, **kwargs)`` inside one transaction and
    commit before returning, so a caller that got a result knows the write is durable.
    Deadlocks, serialization failures, SQLite busy/locked and lost connections are
    retried here, a bounded number of times with jitter, and nowhere else. A value the
    database refuses becomes ``errors.InvalidValueError`` (422).
    """

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self.settings = settings
        self._read_engine = engine.execution_options(**{READ_ONLY_OPTION: True})
        # Test hook: awaited inside a write transaction just before it commits.
        self.before_commit: Callable[[str], Awaitable[None]] | None = None
        # SQLite admits one writer at a time. Queueing this process's writers here,
        # in FIFO order, is far cheaper than letting them poll SQLite's busy handler
        # (which sleeps up to 100 ms a turn). Other processes still meet busy_timeout.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        # Retries so far, by "<declared name>:<kind>" (e.g. "retention:deadlock"), so
        # that callers, tests and operators can see what the retry loop absorbed.
        # Touched only when retrying, so it costs nothing on the happy path.
        self.retries: collections.Counter[str] = collections.Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """A transaction owner on the configured database."""
        return cls(make_engine(settings.effective_database_url, settings), settings)

    @property
    def dialect(self) -> str:
        """The backend name: sqlite, postgresql or mysql."""
        return _backend(self._engine.url)

    def retries_of(self, name: str) -> int:
        """How many transactions declared under ``name`` were retried so far."""
        return sum(n for key, n in self.retries.items() if key.rpartition(":")[0] == name)

    async def write(self, fn: Work[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in a write transaction and commit it."""
        if self._write_lock is None:
            return await self._run(self._engine, True, fn, *args, **kwargs)
        async with self._write_lock:
            return await self._run(self._engine, True, fn, *args, **kwargs)

    async def read(self, fn: Work[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in a read-only transaction."""
        return await self._run(self._read_engine, False, fn, *args, **kwargs)

    async def _run(
        self, engine: AsyncEngine, write: bool, fn: Work[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        attempts = self.settings.db_retry_attempts
        name = str(getattr(fn, _RETRY_NAME, None) or getattr(fn, "__name__", "?"))
        for attempt in range(1, attempts + 1):
            try:
                async with engine.begin() as conn:
                    result = await fn(conn, *args, **kwargs)
                    if write and self.before_commit is not None:
                        await self.before_commit(getattr(fn, "__name__", "write"))
                return result
            except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
                kind = db_errors.classify(exc)
                if kind is db_errors.Kind.BAD_DATA:
                    log.info("database refused a value: %s", db_errors.describe(exc))
                    raise errors.InvalidValueError() from exc
                if kind is not db_errors.Kind.RETRYABLE:
                    raise
                if attempt == attempts:
                    log.warning(
                        "database trouble persisted after %d attempts: %s",
                        attempts,
                        db_errors.describe(exc),
                    )
                    raise errors.DatabaseUnavailableError() from exc
                delay = self.settings.db_retry_base_delay_seconds * (2 ** (attempt - 1))
                self.retries[f"{name}:{db_errors.retry_kind(exc)}"] += 1
                log.info(
                    "retrying transaction %s (attempt %d): %s",
                    name,
                    attempt,
                    db_errors.describe(exc),
                )
                await asyncio.sleep(random.uniform(0, delay) + delay / 2)
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def try_lock(self, name: str) -> AsyncIterator[bool]:
        """Hold the database-wide advisory lock ``name`` for the block if it is free;
        yields whether this process got it. Never waits for it.

        PostgreSQL ``pg_try_advisory_lock``, MySQL/MariaDB ``GET_LOCK(name, 0)``: both
        belong to the session, so a process that dies releases it with its connection.
        SQLite has no such lock and always yields True (its writers queue anyway).
        """
        if self.dialect == "sqlite":
            yield True
            return
        async with self._engine.connect() as conn:
            if self.dialect == "postgresql":
                params: dict[str, Any] = {"key": zlib.crc32(name.encode())}
                take = sa.text("SELECT pg_try_advisory_lock(:key)")
                release = sa.text("SELECT pg_advisory_unlock(:key)")
            else:
                params = {"key": name}
                take = sa.text("SELECT GET_LOCK(:key, 0)")
                release = sa.text("SELECT RELEASE_LOCK(:key)")
            got = bool(await conn.scalar(take, params))
            # The lock outlives the transaction: end it rather than sit idle in one.
            await conn.commit()
            try:
                yield got
            finally:
                if got:
                    await conn.execute(release, params)
                    await conn.commit()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """A transaction owner on the configured database for the block, disposed after:
    what a short-lived entry point (a CLI command, an executor) runs its work through."""
    db = Database.from_settings(settings)
    try:
        yield db
    finally:
        await db.dispose()
