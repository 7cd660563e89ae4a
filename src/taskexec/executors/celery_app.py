"""The worker side of the Celery executor: the Celery app, its one task, and
``taskexec celery-worker``. Workers on any machine take try ids and tokens from the
broker (Redis or RabbitMQ) and run them with the same runner as the local executor;
they need ``TASKEXEC_API_URL`` and the dags folder, never the database."""

from __future__ import annotations

import functools

from celery import Celery

from taskexec.config import Settings, get_settings
from taskexec.executors import worker

TASK_NAME = "taskexec.execute_task_instance"


def _result_backend(broker_url: str) -> str:
    # Results carry each try's report back to the executor.
    return "rpc://" if broker_url.startswith(("amqp", "pyamqp")) else broker_url


@functools.cache
def get_app(broker_url: str) -> Celery:
    """The Celery app for ``broker_url`` (one per URL and process)."""
    app = Celery("taskexec", broker=broker_url, backend=_result_backend(broker_url))
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A worker that dies mid-task leaves the message for another worker; a second
        # delivery is harmless: /run refuses to start a try twice.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )
    app.task(name=TASK_NAME)(execute_task_instance)
    return app


def execute_task_instance(ti_id: str, token: str, *_older: object) -> worker.Finished:
    """The Celery task: run one try with this worker's settings; report how it went.
    (Messages from an older executor carry a third argument, ignored.)"""
    return worker.run_try(get_settings(), ti_id, token)


def start_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    """Run a Celery worker in this process (``taskexec celery-worker``)."""
    app = get_app(settings.celery_broker_url)
    argv = ["worker", "--loglevel=INFO", "--pool=prefork", f"--queues={settings.celery_queue}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)
