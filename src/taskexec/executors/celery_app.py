"""The Celery app both sides of the Celery executor share: the broker (Redis or
RabbitMQ), the result backend that carries each try's report back, and the task's
name. It registers no task: the executor side only sends by name, and the worker side
(``executors.celery_worker``) adds the task that runs a try."""

from __future__ import annotations

import functools

from celery import Celery

TASK_NAME = "taskexec.execute_task_instance"


def _result_backend(broker_url: str) -> str:
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
    return app
