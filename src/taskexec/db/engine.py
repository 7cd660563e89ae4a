"""The transaction owner.

``Database`` owns transactions: every entry point runs its work through
``Database.write`` or ``Database.read``, which begin, commit and, for retryable
database trouble only, retry the whole transaction, all within a deadline. The engines
it runs on are made by ``db.connect``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import logging
import random
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskexec import errors
from taskexec.config import Settings
from taskexec.db import connect, direct, sqlite_queue
from taskexec.db import errors as db_errors

log = logging.getLogger(__name__)

T = TypeVar("T")

P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

# A service function: the connection of the transaction first, then its own arguments.
Work = Callable[Concatenate[AsyncConnection, P], Awaitable[T]]
# A write that is one statement, straight through the driver (``Database.write_direct``).
DirectWork = Callable[Concatenate[direct.Statements, P], Awaitable[T]]

_RETRY_NAME = "__taskexec_retry_name__"


def retry_name(name: str) -> Callable[[F], F]:
    """Declare the name under which the transaction owner counts a service function's
    retries (``Database.retries``); undeclared functions count under their own name."""

    def declare(fn: F) -> F:
        setattr(fn, _RETRY_NAME, name)
        return fn

    return declare


_ONE_STATEMENT = "__taskexec_one_statement__"


def one_statement(fn: F) -> F:
    """Declare that a service function writes with one statement, and that whatever
    else it runs is a read that needs no transaction with that statement (why nothing
    was written, say). Where a statement on its own is a transaction, committed before
    its answer (PostgreSQL in autocommit), ``Database.write`` runs such a function
    without BEGIN and COMMIT: one round trip instead of three, the same atomic write."""
    setattr(fn, _ONE_STATEMENT, True)
    return fn


def _name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, _RETRY_NAME, None) or getattr(fn, "__name__", "?"))


class Database:
    """The transaction owner for every entry point: routes, the CLI, executors, loops.

    ``write``/``read`` call ``fn(conn, *args, **kwargs)`` inside one transaction and
    commit before returning, so a caller that got a result knows the write is durable.
    Deadlocks, serialization failures, SQLite busy/locked and lost connections are
    retried here, a bounded number of times with jitter, and nowhere else. A value the
    database refuses becomes ``errors.InvalidValueError`` (422). Each transaction, with
    its retries, ends within ``deadline`` seconds, or the caller gets
    ``errors.DatabaseUnavailableError`` (503 with Retry-After) at that moment.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self.settings = settings
        self._read_engine = engine.execution_options(**{connect.READ_ONLY_OPTION: True})
        # Where ``one_statement`` writes run: each statement commits on its own.
        self._autocommit_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql" and settings.db_one_statement_autocommit
            else None
        )
        # PostgreSQL: group commit's batches on a connection of their own (db.direct).
        self._direct = (
            direct.DirectConnection(
                engine.url,
                connect.driver_connect_args(engine.url, settings),
                settings.db_pool_pre_ping_idle_seconds if settings.db_pool_pre_ping else None,
            )
            if self.dialect == "postgresql"
            and settings.rtif_batch_direct
            and settings.db_one_statement_autocommit
            else None
        )
        # Test hook: awaited inside a write transaction just before it commits (before
        # the statement of a write in autocommit, whose statement is its commit).
        self.before_commit: Callable[[str], Awaitable[None]] | None = None
        # SQLite admits one writer at a time: its writers queue, in every process of a
        # server, rather than poll SQLite's busy handler (db.sqlite_queue).
        self._write_queue = (
            sqlite_queue.WriteQueue(
                connect.sqlite_file(engine.url) if settings.sqlite_write_queue else None
            )
            if self.dialect == "sqlite"
            else None
        )
        # Retries so far, by "<declared name>:<kind>" (e.g. "retention:deadlock"), so
        # that callers, tests and operators can see what the retry loop absorbed.
        # Touched only when retrying, so it costs nothing on the happy path.
        self.retries: collections.Counter[str] = collections.Counter()
        # Every transaction, with its retries, ends within this many seconds.
        self.deadline = settings.transaction_timeout_seconds
        # Transactions given up on at the deadline, being cancelled (kept referenced).
        self._abandoned: set[asyncio.Future[Any]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """A transaction owner on the configured database."""
        return cls(connect.make_engine(settings.effective_database_url, settings), settings)

    @property
    def dialect(self) -> str:
        """The backend name: sqlite, postgresql or mysql."""
        return connect.backend_of(self._engine.url)

    def retries_of(self, name: str) -> int:
        """How many transactions declared under ``name`` were retried so far."""
        return sum(n for key, n in self.retries.items() if key.rpartition(":")[0] == name)

    async def write(self, fn: Work[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in a write transaction and commit it."""
        result: T = await self._run(self._engine, True, fn, *args, **kwargs)
        return result

    @property
    def writes_direct(self) -> bool:
        """Whether ``write_direct`` is available (PostgreSQL, unless turned off)."""
        return self._direct is not None

    async def write_direct(self, fn: DirectWork[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(statements, ...)``, a write that is one statement (its own
        transaction, autocommit), on this process's direct connection (``db.direct``),
        with ``write``'s deadline, retries and errors. One caller at a time: the others
        wait their turn (group commit has one batch in the database at a time)."""
        if self._direct is None:
            raise RuntimeError("no direct connection: see writes_direct")
        result: T = await self._run(None, True, fn, *args, **kwargs)
        return result

    async def read(self, fn: Work[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in a read-only transaction."""
        result: T = await self._run(self._read_engine, False, fn, *args, **kwargs)
        return result

    def within(self, seconds: float) -> Database:
        """This transaction owner with a shorter deadline (``/health`` answers within
        one second); it shares the engine, the write queue and the retry counts."""
        bounded = copy.copy(self)
        bounded.deadline = min(seconds, self.deadline)
        return bounded

    async def _run(
        self, engine: AsyncEngine | None, write: bool, fn: Any, /, *args: Any, **kwargs: Any
    ) -> Any:
        """The transaction, within the deadline. Past it the caller gets
        ``DatabaseUnavailableError`` at once, while the transaction is cancelled in the
        background: a driver may take seconds to cancel a statement on a database that
        does not answer, and the caller's answer must not wait for that."""
        work = asyncio.ensure_future(self._attempts(engine, write, fn, *args, **kwargs))
        try:
            done, _ = await asyncio.wait((work,), timeout=self.deadline)
        except asyncio.CancelledError:
            work.cancel()  # the caller is gone (a client that hung up): so is its work
            self._abandoned.add(work)
            work.add_done_callback(self._forget)
            raise
        if done:
            return work.result()
        work.cancel()
        self._abandoned.add(work)
        work.add_done_callback(self._forget)
        name = _name_of(fn)
        self.retries[f"{name}:deadline"] += 1
        log.warning(
            "transaction %s did not finish within %.1f s: answered 503", name, self.deadline
        )
        raise errors.DatabaseUnavailableError(
            f"The database did not answer within {self.deadline:g} seconds; try again."
        )

    def _forget(self, work: asyncio.Future[Any]) -> None:
        self._abandoned.discard(work)
        if not work.cancelled() and work.exception() is not None:
            log.info("a transaction given up on ended with: %s", work.exception())

    async def _attempts(
        self, engine: AsyncEngine | None, write: bool, fn: Any, /, *args: Any, **kwargs: Any
    ) -> Any:
        if write and self._write_queue is not None:
            async with self._write_queue.turn():
                return await self._retrying(engine, write, fn, *args, **kwargs)
        return await self._retrying(engine, write, fn, *args, **kwargs)

    async def _retrying(
        self, engine: AsyncEngine | None, write: bool, fn: Any, /, *args: Any, **kwargs: Any
    ) -> Any:
        attempts = self.settings.db_retry_attempts
        name = _name_of(fn)
        for attempt in range(1, attempts + 1):
            try:
                return await self._once(engine, write, fn, *args, **kwargs)
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

    async def _once(
        self, engine: AsyncEngine | None, write: bool, fn: Any, /, *args: Any, **kwargs: Any
    ) -> Any:
        """One attempt: on the direct connection (``engine`` None), in autocommit (a
        ``one_statement`` write on PostgreSQL), or in a transaction."""
        if engine is None:
            assert self._direct is not None
            async with self._direct.statements() as statements:
                # The statement is its transaction's commit: the hook goes first.
                await self._before_commit(fn)
                return await fn(statements, *args, **kwargs)
        if write and self._autocommit_engine is not None and getattr(fn, _ONE_STATEMENT, False):
            async with self._autocommit_engine.connect() as conn:
                await self._before_commit(fn)
                return await fn(conn, *args, **kwargs)
        async with engine.begin() as conn:
            result = await fn(conn, *args, **kwargs)
            if write:
                await self._before_commit(fn)
        return result

    async def _before_commit(self, fn: Callable[..., Any]) -> None:
        if self.before_commit is not None:
            await self.before_commit(getattr(fn, "__name__", "write"))

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
        """Close every pooled connection, after giving the transactions given up on at
        their deadline a moment to finish cancelling (each returns its connection)."""
        if self._abandoned:
            await asyncio.wait(set(self._abandoned), timeout=self.deadline)
        await self._engine.dispose()
        if self._direct is not None:
            await self._direct.close()
        if self._write_queue is not None:
            self._write_queue.close()


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """A transaction owner on the configured database for the block, disposed after:
    what a short-lived entry point (a CLI command, an executor) runs its work through."""
    db = Database.from_settings(settings)
    try:
        yield db
    finally:
        await db.dispose()
