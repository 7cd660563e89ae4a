"""The executor side of the Celery executor: send the run's queued tries (each with its
token) to ``TASKEXEC_CELERY_QUEUE`` and watch the run until it is done; workers
elsewhere (``executors/celery_app``) run them."""

from __future__ import annotations

import asyncio
import time
import uuid

from celery.result import AsyncResult

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.executors import base, celery_app
from taskexec.security import TokenSigner

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

    async def finished(self, wait: float) -> list[tuple[uuid.UUID, str | None]]:
        """The tries whose result came back, with the error of those whose worker could
        not run them."""
        await asyncio.sleep(wait)
        # In this thread, like ``send``: the broker connection is not thread-safe.
        done = self._collect()
        for ti_id, _ in done:
            del self._pending[ti_id]
        return done

    def _collect(self) -> list[tuple[uuid.UUID, str | None]]:
        done: list[tuple[uuid.UUID, str | None]] = []
        for ti_id, result in self._pending.items():
            if result.ready():
                failed = result.failed()
                done.append((ti_id, f"{result.result!r}" if failed else None))
        return done


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
