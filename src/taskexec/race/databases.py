"""Where the race and the benchmark find their databases (``db.scratch`` makes a fresh one
per case), and the task instances a case writes to."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from taskexec import schemas
from taskexec.config import Settings, redacted_url
from taskexec.db import engine as db_engine
from taskexec.db import errors as db_errors
from taskexec.db import scratch
from taskexec.services import dag_runs

# Where each backend's admin URL comes from when no option gives it.
URL_ENV = {
    "postgresql": ("TASKEXEC_RACE_POSTGRES_URL", "TASKEXEC_TEST_POSTGRES_URL"),
    "mysql": ("TASKEXEC_RACE_MYSQL_URL", "TASKEXEC_TEST_MYSQL_URL"),
}
BACKENDS = ("sqlite", "postgresql", "mysql")
# The option that gives each backend's admin URL.
URL_FLAG = {"postgresql": "--postgres-url", "mysql": "--mysql-url"}


class OptionError(ValueError):
    """An option of ``race`` or ``bench`` that cannot be used (the CLI's usage error);
    any other ValueError is a bug and keeps its traceback."""


class MissingURLError(OptionError):
    """A database was asked for, and no option or variable gives its admin URL."""


class UnreachableError(Exception):
    """A database server whose admin URL is given does not answer."""


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


def backend_of(name: str) -> str:
    """``mariadb`` is ``mysql`` here (one dialect, one driver)."""
    return "mysql" if name in ("mariadb", "mysql") else name


def _where(backend: str) -> str:
    first, second = URL_ENV[backend]
    return f"{URL_FLAG[backend]}, or set {first} or {second}"


def admin_urls(requested: Sequence[str] | None, given: Mapping[str, str | None]) -> dict[str, str]:
    """The admin URL of each database to run on, in order: each one ``requested`` (one
    without a URL is a ``MissingURLError`` naming where to give it), or by default SQLite
    and every other backend whose URL is given or set."""
    if requested is None:
        names = [b for b in BACKENDS if admin_url(b, given.get(b))]
    else:
        names = list(dict.fromkeys(backend_of(name) for name in requested))
    urls: dict[str, str] = {}
    for backend in names:
        url = admin_url(backend, given.get(backend))
        if url is None:
            raise MissingURLError(f"--db {backend} needs an admin URL: give {_where(backend)}")
        urls[backend] = url
    return urls


def not_asked_for(urls: Mapping[str, str]) -> list[str]:
    """By default (no --db), a line for each backend left out for want of a URL."""
    return [
        f"{backend}: no admin URL (give {_where(backend)})"
        for backend in URL_FLAG
        if backend not in urls
    ]


def check_reachable(urls: Mapping[str, str]) -> None:
    """Raise ``UnreachableError`` (one line) for the first server that does not answer."""
    for backend, url in urls.items():
        if backend == "sqlite":
            continue
        try:
            scratch.server_version(url)
        except db_errors.DatabaseError as exc:
            text = str(exc.orig or exc).strip()
            reason = text.splitlines()[0] if text else type(exc).__name__
            first, second = URL_ENV[backend]
            raise UnreachableError(
                f"cannot use {backend} at {redacted_url(url)} ({reason}): start it, or fix "
                f"the URL ({URL_FLAG[backend]}, {first} or {second})"
            ) from exc


async def create_task_instances(settings: Settings, dag_id: str, count: int) -> schemas.NewDagRun:
    """A new run of ``dag_id`` with ``count`` queued task instances ``task_0``.., created
    through the transaction owner and the one service that creates runs."""
    tasks = dag_runs.bare_tasks(count)
    async with db_engine.open_database(settings) as db:
        return await db.write(dag_runs.create_dag_run, dag_id=dag_id, tasks=tasks)
