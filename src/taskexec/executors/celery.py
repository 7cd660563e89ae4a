"""The executor side of the Celery executor: send the run's queued tries (each with its
token) to ``TASKEXEC_CELERY_QUEUE`` and watch the run until it is done; workers
elsewhere (``executors/celery_app``) run them."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from celery.result import AsyncResult

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.executors import base, celery_app, worker
from taskexec.security import TokenSigner

log = logging.getLogger(__name__)

# Tries on the broker at once. Workers take them as they free up; the executor only
# needs enough queued that no worker waits, and polls each one's result.
MAX_IN_FLIGHT = 256


class CeleryQueue:
    """The broker queue, seen as workers that take up to ``MAX_IN_FLIGHT`` tries."""

    def __init__(self, settings: Settings) -> None:
        self._app = celery_app.get_app(settings.celery_broker_url)
        self._queue = settings.celery_queue
        self._pending: dict[uuid.UUID, AsyncResult] = {}

    def free(self) -> int:
        """Room on the broker."""
        return MAX_IN_FLIGHT - len(self._pending)

    def in_flight(self) -> int:
        """Tries sent whose result has not come back."""
        return len(self._pending)

    def alive(self) -> bool:
        """The broker's workers cannot be counted from here: always True."""
        return True

    def send(self, ti_id: uuid.UUID, token: str) -> None:
        """Publish one try."""
        self._pending[ti_id] = self._app.send_task(
            celery_app.TASK_NAME, args=[str(ti_id), token], queue=self._queue
        )

    async def finished(self, wait: float) -> list[base.Report]:
        """The tries whose report came back (polled every ``wait`` seconds)."""
        await asyncio.sleep(wait)
        # In this thread, like ``send``: the broker connection is not thread-safe.
        reports = []
        for ti_id, result in list(self._pending.items()):
            try:
                if not result.ready():
                    continue
                report = _report(ti_id, result)
            except Exception as exc:
                # The result backend itself failed (a reconnect, say): next poll.
                log.warning("cannot read the result of task instance %s: %s", ti_id, exc)
                continue
            del self._pending[ti_id]
            reports.append(report)
        return reports


def _report(ti_id: uuid.UUID, result: AsyncResult) -> base.Report:
    if result.failed():
        # The task raised instead of reporting (its worker process died, say): where
        # the try went is unknown, so only a try still queued is given up on.
        return base.Report(ti_id, error=f"the Celery task failed: {result.result!r}")
    finished: worker.Finished = result.result
    at = (finished["hostname"], finished["pid"])
    return base.Report(ti_id, error=finished["error"], worker=at)


async def run_celery(
    settings: Settings,
    dag_id: str,
    run_id: str,
    *,
    on_tick: base.OnTick | None = None,
    max_seconds: float = 3600.0,
) -> base.RunReport:
    """Execute every try of the run on Celery workers (``taskexec celery-worker``)."""
    started = time.perf_counter()
    async with db_engine.open_database(settings) as db:
        counts = await base.drive(
            db,
            CeleryQueue(settings),
            TokenSigner(settings),
            dag_id,
            run_id,
            on_tick=on_tick,
            poll=0.25,
            max_seconds=max_seconds,
        )
    return base.RunReport(counts, time.perf_counter() - started)
