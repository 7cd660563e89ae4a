"""The executor side shared by every executor: hand a run's queued tries to workers
and watch the run until nothing is queued or running.

Everything it reads or writes goes through the transaction owner and the task-instance
services: the queued tries come from ``task_instances.list_queued``, progress from
``task_instances.count_states``, and a try the executor gives up on is ended by
``task_instances.finish``, the one owner of ending a try. The workers' ``PATCH /run``
(``task_instances.start``) is what moves a try from queued to running.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from taskexec import errors
from taskexec.db import engine as db_engine
from taskexec.security import TokenSigner
from taskexec.services import task_instances
from taskexec.wire import schemas
from taskexec.wire.states import TaskInstanceState

log = logging.getLogger(__name__)

ACTIVE = (TaskInstanceState.QUEUED, TaskInstanceState.RUNNING)

# Sees the state counts after each poll; returns False to stop watching early.
OnTick = Callable[[Counter[str]], bool]


@dataclasses.dataclass
class RunReport:
    """How an executed run ended."""

    counts: Counter[str]
    seconds: float


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

    def send(self, ti_id: uuid.UUID, token: str) -> None:
        """Hand one try, with its token, to a worker."""

    async def finished(self, wait: float) -> list[Report]:
        """The tries reported back since the last call; waits up to ``wait`` seconds."""


def is_active(counts: Counter[str]) -> bool:
    """True while some task instance is queued or running."""
    return any(counts[state] for state in ACTIVE)


async def give_up(db: db_engine.Database, report: Report) -> None:
    """End, as failed, a try whose worker could not run it or died with it, so that the
    run still finishes. Only a try still queued, or running on that very worker, is
    ended: a try another worker runs is left alone."""
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
        )
    except (errors.InvalidStateError, errors.NotFoundError, errors.StaleTryError) as exc:
        log.info("task instance %s was not failed: %s", report.ti_id, exc.message)


async def _send_queued(
    db: db_engine.Database,
    workers: Workers,
    signer: TokenSigner,
    key: tuple[str, str],
    sent: set[uuid.UUID],
) -> None:
    free = workers.free()
    if free <= 0:
        return
    # Tries already sent but not started yet are still queued: ask for enough to
    # find ``free`` new ones behind them.
    dag_id, run_id = key
    limit = free + workers.in_flight()
    queued = await db.read(task_instances.list_queued, dag_id=dag_id, run_id=run_id, limit=limit)
    for ti_id in [t for t in queued if t not in sent][:free]:
        sent.add(ti_id)
        workers.send(ti_id, signer.mint(ti_id))


async def _settle(db: db_engine.Database, reports: list[Report], sent: set[uuid.UUID]) -> None:
    while reports:
        report = reports[0]
        if report.error is not None:
            await give_up(db, report)
        if report.lost:
            sent.discard(report.ti_id)
        reports.pop(0)


async def drive(
    db: db_engine.Database,
    workers: Workers,
    signer: TokenSigner,
    dag_id: str,
    run_id: str,
    *,
    on_tick: OnTick | None = None,
    poll: float = 0.1,
    max_seconds: float = 3600.0,
) -> Counter[str]:
    """Send the run's queued tries (retries too, as they are queued) to ``workers``
    until no try is queued or running; returns the final state counts. Database
    trouble that outlasts the transaction owner's retries is waited out, up to
    ``max_seconds`` in all."""
    deadline = time.monotonic() + max_seconds
    sent: set[uuid.UUID] = set()
    reports: list[Report] = []
    counts: Counter[str] = Counter()
    while time.monotonic() < deadline:
        try:
            await _settle(db, reports, sent)
            counts = await state_counts(db, dag_id, run_id)
            if on_tick is not None and not on_tick(counts):
                break
            if not is_active(counts) or not workers.alive():
                break
            await _send_queued(db, workers, signer, (dag_id, run_id), sent)
        except errors.DatabaseUnavailableError:
            log.warning("the database is unavailable; trying again")
        # Wakes as soon as a worker reports back, so a retry is sent without delay.
        reports += await workers.finished(poll)
    return counts


async def state_counts(db: db_engine.Database, dag_id: str, run_id: str) -> Counter[str]:
    """How many task instances of the run are in each state."""
    return Counter(await db.read(task_instances.count_states, dag_id=dag_id, run_id=run_id))
