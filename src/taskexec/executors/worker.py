"""The worker side of every executor: what runs inside a worker process.

It builds the runner's configuration from settings, loads the dags and runs one try
at a time through the SDK's runner. A worker needs the Execution API's URL and the
dags folder, never the database: it imports no server code.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing.queues
import uuid
from pathlib import Path

from taskexec.config import Settings
from taskexec.sdk.client import RetryPolicy
from taskexec.sdk.dag import Dag, load_dags
from taskexec.sdk.runner import RunnerConfig, run_task_instance

log = logging.getLogger(__name__)

# What a local worker process sends back per try: (try id, outcome, error). The outcome
# is None when the runner itself failed (the API refused or stayed unreachable through
# every retry); the error then says why, and the executor ends the try.
Finished = tuple[str, str | None, str | None]


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


def run_try(settings: Settings, ti_id: str, token: str) -> str:
    """Run one try with this worker's settings; returns its outcome."""
    dags = dags_in(settings.effective_dags_folder)
    return run_task_instance(uuid.UUID(ti_id), token, dags, runner_config(settings)).outcome


def process_main(
    settings: Settings,
    inbox: multiprocessing.queues.Queue[tuple[str, str] | None],
    outbox: multiprocessing.queues.Queue[Finished],
) -> None:
    """A local worker process: run the tries the executor puts in ``inbox`` (``None``
    ends the process) and report each in ``outbox``."""
    logging.basicConfig(level=logging.WARNING)
    while (item := inbox.get()) is not None:
        ti_id, token = item
        try:
            outbox.put((ti_id, run_try(settings, ti_id, token), None))
        except Exception as exc:
            log.exception("task instance %s could not be run", ti_id)
            outbox.put((ti_id, None, f"{type(exc).__name__}: {exc}"))
