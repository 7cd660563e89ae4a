"""``taskexec celery-worker``: a Celery worker that runs tries with the SDK's runner."""

from __future__ import annotations

import argparse

from taskexec.config import Settings


def cmd_celery_worker(args: argparse.Namespace, settings: Settings) -> None:
    """Run a Celery worker that executes task instances with the same runner."""
    from taskexec.executors import celery_worker

    celery_worker.start_worker(settings, concurrency=args.concurrency)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``celery-worker``."""
    worker = sub.add_parser("celery-worker", help="run a Celery worker")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.set_defaults(func=cmd_celery_worker)
