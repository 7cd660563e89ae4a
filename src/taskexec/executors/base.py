"""What every executor shares: the reports its workers send back, and giving up on a try
a worker could not run.

The scheduler hands queued tries to an executor (``Workers``: local processes or a
Celery queue) and hears back through ``finished``. A try given up on is ended by
``task_instances.finish``, the one owner of ending a try; the workers' ``PATCH /run``
(``task_instances.start``) is what moves a try from queued to running.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Protocol

from taskexec import errors
from taskexec.db import engine as db_engine
from taskexec.services import task_instances
from taskexec.wire import schemas
from taskexec.wire.states import TaskInstanceState

log = logging.getLogger(__name__)

ACTIVE = (TaskInstanceState.QUEUED, TaskInstanceState.RUNNING)


@dataclasses.dataclass(frozen=True)
class Report:
    """What became of one try an executor handed out."""

    ti_id: uuid.UUID
    # Why its worker could not run it (None: it ran, whatever the outcome).
    error: str | None = None
    # The worker it went to, (hostname, pid), when known.
    worker: tuple[str, int] | None = None
    # Its worker process died with it: it may never have started.
    lost: bool = False


class Workers(Protocol):
    """Where an executor sends tries: local processes or a Celery queue."""

    def free(self) -> int:
        """How many more tries the workers can take now."""

    def in_flight(self) -> int:
        """Tries sent and not reported back yet."""

    def alive(self) -> bool:
        """Whether any worker can still run a try."""

    def send(self, ti_id: uuid.UUID) -> None:
        """Hand one try to the workers (the executor mints its token)."""

    def stop(self) -> None:
        """Let the tries in hand finish, then release the workers."""

    async def finished(self, wait: float) -> list[Report]:
        """The tries reported back since the last call; waits up to ``wait`` seconds."""


async def give_up(db: db_engine.Database, report: Report) -> None:
    """End a try whose worker could not run it or died with it: failed, or up_for_retry
    while it has tries left, so that the run goes on. Only a try still queued, or running
    on that very worker, is ended: a try another worker runs is left alone."""
    log.warning("task instance %s could not be run: %s", report.ti_id, report.error)
    if report.lost:
        # Still queued means it never started: it is handed out again instead.
        states: tuple[TaskInstanceState, ...] = (TaskInstanceState.RUNNING,)
    elif report.worker is None:
        states = (TaskInstanceState.QUEUED,)
    else:
        states = ACTIVE
    try:
        await db.write(
            task_instances.finish,
            ti_id=report.ti_id,
            payload=schemas.TITerminalStatePayload(state="failed"),
            from_states=states,
            on_worker=report.worker,
            retry_if_tries_left=True,
        )
    except (errors.InvalidStateError, errors.NotFoundError, errors.StaleTryError) as exc:
        log.info("task instance %s was not failed: %s", report.ti_id, exc.message)


def report_of(finished: schemas.TryReport) -> Report:
    """The executor's view of a worker's report on one try."""
    at = (finished["hostname"], finished["pid"])
    return Report(uuid.UUID(finished["ti_id"]), error=finished["error"], worker=at)
