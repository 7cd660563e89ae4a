"""What the command groups share: the user-facing error, the schema check, parsing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from typing import Any, ParamSpec, TypeVar

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import errors as db_errors
from taskexec.db import migrate

P = ParamSpec("P")
T = TypeVar("T")


class CommandError(Exception):
    """A CLI failure with a message for the user (exit status 1)."""


def ensure_schema(settings: Settings) -> None:
    """Embedded default: migrate to head. Elsewhere: refuse an outdated schema."""
    with migrate.sync_engine(settings) as engine:
        if settings.is_embedded:
            migrate.upgrade(engine)
        elif not migrate.is_current(engine):
            current = migrate.current_revision(engine) or "empty"
            raise CommandError(
                f"The database schema is at revision {current}, not {migrate.heads()[0]}. "
                "Run `taskexec db upgrade` first."
            )


def wait_for_database(settings: Settings, *, max_delay: float = 30.0) -> None:
    """``ensure_schema``, waiting for a database that cannot be reached yet (a server
    started before its database): one line per attempt, never a traceback; a wrong URL
    or schema still fails at once."""
    delay = 1.0
    while True:
        try:
            ensure_schema(settings)
            return
        except Exception as exc:
            if not migrate.unreachable(exc):
                raise
            reason = db_errors.summary(exc)
        print(
            f"taskexec: the database is not reachable ({reason}); trying again in {delay:g} s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


def write(settings: Settings, fn: db_engine.Work[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one service in its own write transaction, for a command: the CLI's way
    through ``Database`` to the services."""

    async def go() -> T:
        async with db_engine.open_database(settings) as db:
            return await db.write(fn, *args, **kwargs)

    return asyncio.run(go())


def read(settings: Settings, fn: db_engine.Work[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one service in its own read-only transaction, for a command."""

    async def go() -> T:
        async with db_engine.open_database(settings) as db:
            return await db.read(fn, *args, **kwargs)

    return asyncio.run(go())


def parse_conf(raw: str | None) -> dict[str, Any] | None:
    """``--conf``: a JSON object, or None when not given."""
    if not raw:
        return None
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--conf is not valid JSON: {exc}") from exc
    if not isinstance(conf, dict):
        raise CommandError("--conf must be a JSON object")
    return conf


def parse_date(raw: str | None) -> dt.datetime | None:
    """``--logical-date``: an ISO date or datetime (UTC when no offset is given)."""
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise CommandError(f"--logical-date is not an ISO date: {exc}") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
