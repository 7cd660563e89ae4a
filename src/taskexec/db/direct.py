"""One PostgreSQL connection per server process for group commit's statements, run
straight through the driver (psycopg, autocommit), past SQLAlchemy's execution layers.

A batch is one statement. Through SQLAlchemy, checking a connection out of the pool,
executing and checking it back in cost about four times the driver's own work for that
statement (a batch of 8, measured: 320 against 75 µs of CPU); group commit runs one
batch at a time per process, so one connection kept open is all it needs (it comes on
top of the pool's ``TASKEXEC_DB_POOL_SIZE`` and overflow).

``Database.write_direct`` owns it, as it owns every transaction: the same deadline,
retries and error classes (a driver error comes out as SQLAlchemy's ``DBAPIError``, so
``db.errors`` classifies it as any other). The connection is opened on first use,
tested before use after sitting idle (as the pool's pre-ping), and dropped after any
error, so a lost connection never serves the next batch. A statement cut off at its
deadline is left to the driver, which cancels it on the server in the background and
then closes its connection; the next batch does not wait for that, on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL


@dataclasses.dataclass(frozen=True)
class Result:
    """What a statement did: rows written, and the rows it returned (``RETURNING``)."""

    rowcount: int
    rows: Sequence[tuple[Any, ...]]


class Statements:
    """What a direct write gets: one statement at a time on the process's connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        # A statement whose caller was cancelled (the deadline), still being cancelled.
        self.abandoned: asyncio.Future[Result] | None = None

    async def execute(self, sql: str, params: Mapping[str, Any]) -> Result:
        """Run ``sql``, prepared once per connection."""
        # In a task of its own: cancelled, the driver sends the server a cancel request
        # and waits for it (seconds, on a database that hangs) while the caller goes.
        running = asyncio.ensure_future(self._execute(sql, params))
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            running.cancel()
            self.abandoned = running
            raise

    async def _execute(self, sql: str, params: Mapping[str, Any]) -> Result:
        cursor = await self._conn.execute(sql, params, prepare=True)
        rows = await cursor.fetchall() if cursor.description else []
        return Result(cursor.rowcount, rows)


class DirectConnection:
    """The connection, opened on first use with the engine's connect arguments
    (timeouts, ``statement_timeout``), in autocommit; one user at a time."""

    def __init__(
        self, url: URL, connect_args: Mapping[str, Any], ping_after: float | None = None
    ) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_args = dict(connect_args)
        # As the pool's idle pre-ping (db.connect): a connection idle for longer is
        # tested before use, and replaced if the database dropped it meanwhile.
        self._ping_after = ping_after
        self._used_at = 0.0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Future[Any]] = set()  # dropped, being closed

    @contextlib.asynccontextmanager
    async def statements(self) -> AsyncIterator[Statements]:
        """The connection for one write; a driver error leaves as ``DBAPIError``."""
        async with self._lock:
            statements: Statements | None = None
            try:
                statements = Statements(await self._connection())
                yield statements
            except psycopg.Error as exc:
                lost = self._drop()
                raise sa.exc.DBAPIError.instance(
                    None, None, exc, psycopg.Error, connection_invalidated=lost
                ) from exc
            except BaseException:
                # Cancelled (the deadline), or a bug: in an unknown state.
                self._drop(after=statements.abandoned if statements else None)
                raise

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        idle = time.monotonic() - self._used_at
        self._used_at = time.monotonic()
        if self._conn is not None and self._ping_after is not None and idle > self._ping_after:
            try:
                await self._conn.execute("SELECT 1")
            except psycopg.Error:
                self._drop()
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, **self._connect_args
            )
        return self._conn

    def _drop(self, after: asyncio.Future[Any] | None = None) -> bool:
        """Forget the connection, closed in the background (once ``after``, a statement
        being cancelled, has ended); whether it was lost already."""
        conn, self._conn = self._conn, None
        if conn is None:
            return True
        lost = conn.closed or conn.broken
        if not conn.closed:
            closing = asyncio.ensure_future(_close(conn, after))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        return lost

    async def close(self) -> None:
        """Close the connection now (the server process is stopping); not waiting for
        a statement in flight, nor for one being cancelled."""
        conn, self._conn = self._conn, None
        for closing in list(self._closing):
            closing.cancel()
        if conn is not None:
            await conn.close()


async def _close(conn: psycopg.AsyncConnection[Any], after: asyncio.Future[Any] | None) -> None:
    if after is not None:
        # Its outcome is of no use any more (the cancellation, or an error).
        with contextlib.suppress(BaseException):
            await after
    with contextlib.suppress(psycopg.Error):
        await conn.close()
