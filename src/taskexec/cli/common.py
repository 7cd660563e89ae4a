"""What the command groups share: the user-facing error, the schema check, parsing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from typing import Any, ParamSpec, TypeVar

from taskexec.config import Settings, redacted_url
from taskexec.db import engine as db_engine
from taskexec.db import migrate

P = ParamSpec("P")
T = TypeVar("T")


class CommandError(Exception):
    """A CLI failure with a one-line message for the user: something in the environment
    (a database, a broker, a file) is not as the command needs it (exit status 1)."""

    status = 1


class UsageError(CommandError):
    """An option or argument the command cannot use (exit status 2, as argparse's own)."""

    status = 2


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


def driver_reason(exc: BaseException) -> str:
    """The first line of what the database driver said (refused, timed out, access
    denied): for the operator's terminal, never for an API client."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def wait_for_database(settings: Settings, *, max_delay: float = 30.0) -> None:
    """``ensure_schema``, waiting for a database that cannot be reached yet (a server
    started before its database): one line per attempt, never a traceback; a wrong URL,
    a missing database or an outdated schema still fails at once."""
    url = redacted_url(settings.effective_database_url)
    delay = 1.0
    while True:
        try:
            ensure_schema(settings)
            return
        except Exception as exc:
            # A missing database is not waited for: nobody is about to create it.
            if not migrate.unreachable(exc) or migrate.missing_database(settings):
                raise
            reason = driver_reason(exc)
        print(
            f"taskexec: the database is not reachable at {url} ({reason}); "
            f"trying again in {delay:g} s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


def check_broker(settings: Settings) -> None:
    """Raise a one-line ``CommandError`` unless the Celery broker answers."""
    from taskexec.executors import celery

    try:
        celery.check_broker(settings)
    except celery.BrokerUnreachableError as exc:
        url = settings.celery_broker_url
        reason = str(exc).replace(url, redacted_url(url)).strip().splitlines()[0]
        raise CommandError(f"{reason} (start it, or fix TASKEXEC_CELERY_BROKER_URL)") from exc


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
        raise UsageError(f"--conf is not valid JSON: {exc}") from exc
    if not isinstance(conf, dict):
        raise UsageError("--conf must be a JSON object, such as '{\"key\": 1}'")
    return conf


def parse_date(raw: str | None) -> dt.datetime | None:
    """``--logical-date``: an ISO date or datetime (UTC when no offset is given)."""
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise UsageError(f"--logical-date is not an ISO date (2026-01-31): {exc}") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
