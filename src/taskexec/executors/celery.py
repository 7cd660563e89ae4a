"""The Celery executor: task-instance ids go through a broker (Redis or RabbitMQ) to
``taskexec celery-worker`` processes on any number of machines, which run the same
runner as the local executor."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from taskexec.config import Settings, get_settings
from taskexec.db import engine as db_engine
from taskexec.executors import base
from taskexec.sdk.dag import Dag, load_dags
from taskexec.sdk.runner import RunnerConfig, run_task_instance
from taskexec.security import TokenSigner

log = logging.getLogger(__name__)

TASK_NAME = "taskexec.execute_task_instance"


def _result_backend(broker_url: str) -> str:
    # Results carry each try's outcome and RTIF write stats back to the executor.
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


@functools.cache
def _dags(folder: str) -> dict[str, Dag]:
    from pathlib import Path

    return load_dags(Path(folder))


def execute_task_instance(ti_id: str, token: str, duplicate_writes: bool = False) -> dict[str, Any]:
    """The Celery task: run one try with the worker's settings."""
    settings = get_settings()
    config = RunnerConfig.from_settings(settings, duplicate_rtif_writes=duplicate_writes)
    result = run_task_instance(
        uuid.UUID(ti_id), token, _dags(str(settings.effective_dags_folder)), config
    )
    return {
        "outcome": result.outcome,
        "writes": [[w.status, w.seconds, w.duplicate] for w in result.write_stats],
    }


def start_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    """Run a Celery worker in this process (``taskexec celery-worker``)."""
    app = get_app(settings.celery_broker_url)
    argv = ["worker", "--loglevel=INFO", "--pool=prefork", f"--queues={settings.celery_queue}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)


def run_celery(
    settings: Settings,
    dag_id: str,
    run_id: str,
    *,
    duplicate_writes: bool = False,
    on_tick: Callable[[Counter[str]], bool] | None = None,
    timeout: float = 3600.0,
) -> base.RunReport:
    """Enqueue every queued try of the run (and each retry as it is queued) until the
    run is finished; workers elsewhere do the work."""
    started = time.perf_counter()
    app = get_app(settings.celery_broker_url)
    signer = TokenSigner(settings)
    sent: dict[uuid.UUID, AsyncResult] = {}
    engine = db_engine.make_sync_engine(settings.effective_database_url, settings)
    try:

        def tick(counts: Counter[str]) -> bool:
            for ti_id in base.queued_ids(engine, dag_id, run_id):
                if ti_id not in sent:
                    sent[ti_id] = app.send_task(
                        TASK_NAME,
                        args=[str(ti_id), signer.mint(ti_id), duplicate_writes],
                        queue=settings.celery_queue,
                    )
            if on_tick is not None:
                on_tick(counts)
            return True

        counts = base.watch_run(engine, dag_id, run_id, on_tick=tick, timeout=timeout)
    finally:
        engine.dispose()
    writes = base.WriteSummary()
    for result in sent.values():
        try:
            outcome: dict[str, Any] = result.get(timeout=30)
        except Exception as exc:
            log.warning("no result for a task instance: %s", exc)
            continue
        for status, seconds, duplicate in outcome["writes"]:
            writes.add(status, seconds, duplicate)
    return base.RunReport(counts, writes, time.perf_counter() - started)
