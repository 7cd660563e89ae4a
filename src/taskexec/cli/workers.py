"""``taskexec celery-worker``: a Celery worker that runs tries with the SDK's runner."""

from __future__ import annotations

import argparse

from taskexec.cli import common, parsing
from taskexec.config import Settings


def cmd_celery_worker(args: argparse.Namespace, settings: Settings) -> None:
    """Run a Celery worker that executes task instances with the same runner, once its
    broker answers (a broker that does not is one line and exit 1, as for ``scheduler``)."""
    from taskexec.executors import celery_worker

    common.check_broker(settings)
    celery_worker.start_worker(settings, concurrency=args.concurrency)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``celery-worker``."""
    worker = parsing.command(
        sub,
        "celery-worker",
        "run a Celery worker",
        "Run a Celery worker that takes tries from the broker (TASKEXEC_CELERY_BROKER_URL, "
        "queue TASKEXEC_CELERY_QUEUE) and runs them with the same runner as the local "
        "executor. It needs TASKEXEC_API_URL and the dags folder, never the database.",
        [
            "TASKEXEC_CELERY_BROKER_URL=redis://127.0.0.1:6379/0 taskexec celery-worker",
            "taskexec celery-worker --concurrency 8",
        ],
    )
    worker.add_argument(
        "--concurrency",
        type=parsing.positive,
        default=None,
        help="worker processes (default: Celery's, one per CPU)",
    )
    worker.set_defaults(func=cmd_celery_worker)
