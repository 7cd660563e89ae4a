"""The executor side of the Celery executor: the scheduler sends each queued try (with
its token) to ``TASKEXEC_CELERY_QUEUE``; ``taskexec celery-worker`` processes anywhere
(``executors.celery_worker``) run them and report back through the result backend."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from celery.result import AsyncResult

from taskexec.config import Settings
from taskexec.executors import base, celery_app
from taskexec.wire import schemas

log = logging.getLogger(__name__)


class BrokerUnreachableError(Exception):
    """The Celery broker does not answer."""


# Tries on the broker at once. Workers take them as they free up; the executor only
# needs enough queued that no worker waits, and polls each one's result.
MAX_IN_FLIGHT = 256


class CeleryQueue:
    """The broker queue, seen as workers that take up to ``MAX_IN_FLIGHT`` tries."""

    def __init__(self, settings: Settings, mint: Callable[[uuid.UUID], str]) -> None:
        self._app = celery_app.get_app(settings.celery_broker_url)
        self._queue = settings.celery_queue
        self._mint = mint
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

    def stop(self) -> None:
        """Nothing to stop: the tries on the broker stay for the workers."""

    def send(self, ti_id: uuid.UUID) -> None:
        """Publish one try with its token."""
        self._pending[ti_id] = self._app.send_task(
            celery_app.TASK_NAME, args=[str(ti_id), self._mint(ti_id)], queue=self._queue
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
    finished: schemas.TryReport = result.result
    return base.report_of(finished)


def check_broker(settings: Settings, *, timeout: float = 5.0) -> None:
    """Raise ``BrokerUnreachableError`` (one line) unless the broker answers."""
    app = celery_app.get_app(settings.celery_broker_url)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        raise BrokerUnreachableError(
            f"cannot reach the Celery broker at {settings.celery_broker_url}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def live_workers(settings: Settings, *, timeout: float = 5.0) -> list[str]:
    """The Celery workers that answer a ping within ``timeout`` seconds."""
    app = celery_app.get_app(settings.celery_broker_url)
    replies = app.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


def start(settings: Settings, mint: Callable[[uuid.UUID], str]) -> CeleryQueue:
    """The Celery queue, once the broker answers; ``mint`` makes each try's token."""
    check_broker(settings)
    return CeleryQueue(settings, mint)
