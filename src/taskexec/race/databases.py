"""Where the race and the benchmark find their databases (``db.scratch`` makes a fresh one
per case), and the task instances a case writes to."""

from __future__ import annotations

import os

from taskexec import schemas
from taskexec.config import Settings
from taskexec.db import engine as db_engine
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


async def create_task_instances(settings: Settings, dag_id: str, count: int) -> schemas.NewDagRun:
    """A new run of ``dag_id`` with ``count`` queued task instances ``task_0``.., created
    through the transaction owner and the one service that creates runs."""
    tasks = dag_runs.bare_tasks(count)
    async with db_engine.open_database(settings) as db:
        return await db.write(dag_runs.create_dag_run, dag_id=dag_id, tasks=tasks)
