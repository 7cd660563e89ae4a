"""The worker side of the Celery executor: the task that runs a try, and
``taskexec celery-worker``. Workers on any machine take try ids and tokens from the
broker and run them with the same runner as the local executor; they need
``TASKEXEC_API_URL`` and the dags folder, never the database."""

from __future__ import annotations

from taskexec.config import Settings, get_settings
from taskexec.executors import celery_app, worker
from taskexec.wire import schemas


def execute_task_instance(ti_id: str, token: str, *_older: object) -> schemas.TryReport:
    """The Celery task: run one try with this worker's settings; report how it went.
    (Messages from an older executor carry a third argument, ignored.)"""
    return worker.run_try(get_settings(), ti_id, token)


def start_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    """Run a Celery worker in this process (``taskexec celery-worker``)."""
    app = celery_app.get_app(settings.celery_broker_url)
    app.task(name=celery_app.TASK_NAME)(execute_task_instance)
    argv = ["worker", "--loglevel=INFO", "--pool=prefork", f"--queues={settings.celery_queue}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)
