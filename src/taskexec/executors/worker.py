"""The worker side of every executor: what runs inside a worker process.

It builds the runner's configuration from settings, loads the dags and runs one try
at a time through the SDK's runner. A worker needs the Execution API's URL and the
dags folder, never the database: it imports no server code.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sys
import uuid
from pathlib import Path

from taskexec import logs
from taskexec.config import Settings
from taskexec.sdk.client import RetryPolicy
from taskexec.sdk.dag import Dag, load_dags
from taskexec.sdk.runner import RunnerConfig, run_task_instance
from taskexec.wire import protocol, schemas

log = logging.getLogger(__name__)


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


def run_try(settings: Settings, ti_id: str, token: str) -> schemas.TryReport:
    """Run one try with this worker's settings; report how it went (never raises)."""
    outcome, error = None, None
    try:
        dags = dags_in(settings.effective_dags_folder)
        outcome = run_task_instance(uuid.UUID(ti_id), token, dags, runner_config(settings)).outcome
    except Exception as exc:
        log.exception("task instance %s could not be run", ti_id)
        error = f"{type(exc).__name__}: {exc}"
    return schemas.TryReport(
        ti_id=ti_id, outcome=outcome, error=error, hostname=socket.gethostname(), pid=os.getpid()
    )


def main() -> None:
    """A local worker process (``python -m taskexec.executors.worker``): run each try the
    executor writes to stdin, one ``{"ti_id", "token"}`` a line, and report each on the
    report pipe. End of input ends the process. The dags are loaded first: a worker that
    cannot load them fails before it takes a try."""
    settings = Settings()
    logs.configure("WARNING", settings.log_format)
    dags_in(settings.effective_dags_folder)
    with os.fdopen(int(os.environ[protocol.WORKER_REPORT_FD_ENV]), "w", buffering=1) as reports:
        for line in sys.stdin:
            item = json.loads(line)
            finished = run_try(settings, item["ti_id"], item["token"])
            reports.write(json.dumps(finished) + "\n")


if __name__ == "__main__":
    main()
