"""The worker side of every executor: what runs inside a worker process.

It builds the runner's configuration from settings, loads the dags and runs one try
at a time through the SDK's runner. A worker needs the Execution API's URL and the
dags folder, never the database: it imports no server code.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing.connection
import os
import socket
import uuid
from pathlib import Path
from typing import TypedDict

from taskexec.config import Settings
from taskexec.sdk.client import RetryPolicy
from taskexec.sdk.dag import Dag, load_dags
from taskexec.sdk.runner import RunnerConfig, run_task_instance

log = logging.getLogger(__name__)


class Finished(TypedDict):
    """What a worker reports per try (plain JSON, so Celery can carry it too)."""

    ti_id: str
    # None when the runner itself failed (the API refused the try or stayed unreachable
    # through every retry); ``error`` then says why, and the executor ends the try if
    # it is still queued or running on this worker.
    outcome: str | None
    error: str | None
    hostname: str
    pid: int


def runner_config(settings: Settings) -> RunnerConfig:
    """The runner's configuration from ``TASKEXEC_*`` settings."""
    return RunnerConfig(
        api_url=settings.api_url,
        logs_dir=settings.effective_logs_dir,
        timeout=settings.execution_api_timeout_seconds,
        retry=RetryPolicy(
            attempts=settings.execution_api_retries,
            wait_min=settings.execution_api_retry_wait_min_seconds,
            wait_max=settings.execution_api_retry_wait_max_seconds,
        ),
        max_templated_field_length=settings.max_templated_field_length,
        heartbeat_interval=settings.heartbeat_interval_seconds,
        sensitive_words=tuple(settings.extra_sensitive_words),
    )


@functools.cache
def dags_in(folder: Path) -> dict[str, Dag]:
    """The dags of ``folder``, loaded once per worker process."""
    return load_dags(folder)


def run_try(settings: Settings, ti_id: str, token: str) -> Finished:
    """Run one try with this worker's settings; report how it went (never raises)."""
    outcome, error = None, None
    try:
        dags = dags_in(settings.effective_dags_folder)
        outcome = run_task_instance(uuid.UUID(ti_id), token, dags, runner_config(settings)).outcome
    except Exception as exc:
        log.exception("task instance %s could not be run", ti_id)
        error = f"{type(exc).__name__}: {exc}"
    return Finished(
        ti_id=ti_id, outcome=outcome, error=error, hostname=socket.gethostname(), pid=os.getpid()
    )


def process_main(settings: Settings, conn: multiprocessing.connection.Connection) -> None:
    """A local worker process: run each try the executor sends on ``conn`` (``None``
    ends the process) and report it back on the same pipe. The dags are loaded first,
    as a worker that cannot load them should fail before it takes any try."""
    logging.basicConfig(level=logging.WARNING)
    dags_in(settings.effective_dags_folder)
    while (item := conn.recv()) is not None:
        ti_id, token = item
        conn.send(run_try(settings, ti_id, token))
