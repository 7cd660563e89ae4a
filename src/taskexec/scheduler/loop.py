"""The scheduler loop: one active scheduler, elected by a lease in the database, owns
orchestration.

Every iteration the active scheduler renews its lease, starts queued runs (within
``max_active_runs``), applies ``scheduler.rules`` to each running run (trigger rules,
retries that are due, dead workers, timeouts, the run's final state) through services,
and hands scheduled tries to its executor (within ``max_active_tasks`` and the
executor's free slots). It wakes at least once per ``scheduler_interval_seconds``, and
as soon as a worker reports a try done. Any number of schedulers may run (``taskexec
scheduler``, or inside ``taskexec serve``): the others wait, and take the lease within
two intervals of the active one dying.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from taskexec import config, errors, logs, schemas
from taskexec.db import engine as db_engine
from taskexec.db import errors as db_errors
from taskexec.executors import base
from taskexec.scheduler import rules
from taskexec.security import TokenSigner
from taskexec.services import dag_runs, run_actions, scheduling, task_instances
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.states import DagRunState, TaskInstanceState

log = logging.getLogger(__name__)

# Iteration durations kept for ``Scheduler.stats`` (the benchmark reads them).
KEEP_DURATIONS = 10_000
# Pages of scheduled tries read per iteration when dags fill up along the way.
DISPATCH_PAGES = 10


def new_holder_id() -> str:
    """This scheduler's name in the lease: host, process and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def start_executor(settings: config.Settings, signer: TokenSigner) -> base.Workers:
    """The executor the settings name, started. A try's token lives as long as a token
    does plus as long as a try may wait to be taken (after that it is handed out again,
    with a new token)."""
    lifetime = settings.jwt_expiration_seconds + int(settings.task_queued_timeout_seconds)

    def mint(ti_id: uuid.UUID) -> str:
        return signer.mint(ti_id, lifetime=lifetime)

    if settings.executor == "celery":
        from taskexec.executors import celery

        return celery.start(settings, mint)
    from taskexec.executors import local

    return local.start(settings, mint)


@dataclasses.dataclass
class Stats:
    """What this scheduler did so far."""

    iterations: int = 0
    led_iterations: int = 0
    tries_queued: int = 0
    durations: deque[float] = dataclasses.field(
        default_factory=lambda: deque(maxlen=KEEP_DURATIONS)
    )


class Scheduler:
    """One scheduler process's loop; active only while it holds the lease."""

    def __init__(self, db: db_engine.Database, settings: config.Settings) -> None:
        self.db = db
        self.settings = settings
        self.holder = new_holder_id()
        self.signer = TokenSigner(settings)
        self.stats = Stats()
        self.leader = False
        self._workers: base.Workers | None = None
        self._reports: list[base.Report] = []
        self._stop = asyncio.Event()
        self._requeue_others = False
        self._task: asyncio.Task[None] | None = None
        self._renewed_at = 0.0
        # Parsed specs of the active runs, and each running run's digest at its last plan.
        self._specs: dict[int, wire_schemas.DagSpec | None] = {}
        self._digests: dict[int, frozenset[tuple[Any, ...]]] = {}
        self._all_planned_at = 0.0
        self._outage = logs.Outage(log, "scheduler iterations")
        # Tries of a queue write that ended in an error: it may have committed anyway.
        self._unconfirmed: set[uuid.UUID] = set()

    @property
    def interval(self) -> float:
        """The longest wait between two iterations."""
        return self.settings.scheduler_interval_seconds

    async def run(self) -> None:
        """Iterate until ``stop``; a failed iteration is logged and the next one tries
        again (database trouble included): the loop itself never ends on an error."""
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    await self.iterate()
                    self._outage.succeeded()
                except errors.DatabaseUnavailableError as exc:
                    self._outage.failed(f"the database is unavailable ({exc.message})")
                except Exception as exc:
                    if not self._outage.failures:  # the first of a series, with its traceback
                        log.exception("scheduler iteration failed; trying again")
                    self._outage.failed(db_errors.summary(exc))
                self.stats.durations.append(time.perf_counter() - started)
                await self._wait()
        finally:
            await self._step_down()

    async def _wait(self) -> None:
        if self.leader and self._workers is not None:
            # Returns early when a worker reports a try done: the next one can start.
            self._reports += await self._workers.finished(self.interval)
            return
        # A follower checks the lease twice per interval: it takes over within two.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.interval / 2)

    def stop(self) -> None:
        """Ask the loop to end after this iteration."""
        self._stop.set()

    def start(self) -> None:
        """Run the loop as a task on the running event loop (inside the server)."""
        self._task = asyncio.create_task(self.run(), name="taskexec-scheduler")

    async def aclose(self) -> None:
        """Stop the task ``start`` started: the lease is released and the executor's
        workers finish their tries."""
        self.stop()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def iterate(self) -> None:
        """One iteration: renew the lease, and if this scheduler is the active one,
        schedule."""
        self.stats.iterations += 1
        leader = await self._renew_lease()
        if leader and not self.leader:
            log.info("scheduler %s is now the active one", self.holder)
            self._workers = await asyncio.to_thread(start_executor, self.settings, self.signer)
            self.leader, self._requeue_others = True, True
            self._digests, self._all_planned_at = {}, 0.0  # plan every run at first
        elif not leader and self.leader:
            log.warning("scheduler %s lost the lease; another one is active", self.holder)
            await self._step_down(release=False)
        if not leader:
            return
        self.stats.led_iterations += 1
        await self._settle_reports()
        await self._schedule()

    async def _renew_lease(self) -> bool:
        """Whether this scheduler holds the lease. It is renewed (a write) at most every
        half interval: iterations woken by workers come much more often than that, and
        the lease lasts 1.5 intervals."""
        now = time.monotonic()
        if self.leader and now - self._renewed_at < self.interval / 2:
            return True
        leader = await self.db.write(
            scheduling.take_lease,
            holder=self.holder,
            executor=self.settings.executor,
            ttl=1.5 * self.interval,
        )
        if leader:
            self._renewed_at = now
        return leader

    async def _step_down(self, *, release: bool = True) -> None:
        was_leader, self.leader = self.leader, False
        workers, self._workers = self._workers, None
        if workers is not None:
            await asyncio.to_thread(workers.stop)
        if was_leader and release:
            with contextlib.suppress(Exception):
                await self.db.write(scheduling.release_lease, holder=self.holder)

    async def _settle_reports(self) -> None:
        while self._reports:
            report = self._reports[0]
            if report.error is not None:
                await base.give_up(self.db, report)
            self._reports.pop(0)

    async def _schedule(self) -> None:
        """Plan the runs whose tries changed since their last plan (by the database's
        digest of their states), and every running run once per interval (retries that
        came due, silent workers, timeouts); then hand out scheduled tries. A wake-up by
        a worker's report so costs what changed, not what is active."""
        now = dt.datetime.now(dt.UTC)
        runs = await self.db.read(scheduling.active_runs, specs=self._specs)
        for gone in self._specs.keys() - {r.pk for r in runs}:
            del self._specs[gone]
        await self._start_runs(runs)
        running = {r.pk: r for r in runs if r.state == DagRunState.RUNNING}
        digests = await self.db.read(scheduling.run_digests)
        every = time.monotonic() - self._all_planned_at >= self.interval
        stale = [pk for pk in running if every or digests.get(pk) != self._digests.get(pk)]
        tries = await self.db.read(scheduling.tries_of_runs, stale) if stale else []
        by_run: dict[tuple[str, str], list[schemas.TryRow]] = {}
        for t in tries:
            by_run.setdefault((t.dag_id, t.run_id), []).append(t)
        if every:
            self._all_planned_at = time.monotonic()
            await self._requeue(running, tries, now)
        self._digests = {pk: d for pk, d in self._digests.items() if pk in running}
        for pk in stale:
            run = running[pk]
            plan = rules.plan_run(
                run,
                by_run.get((run.dag_id, run.run_id), []),
                now=now,
                heartbeat_timeout=self.settings.task_heartbeat_timeout_seconds,
            )
            await self._apply(run, plan)
            if pk in digests:
                self._digests[pk] = digests[pk]
        await self._dispatch(running)

    async def _start_runs(self, runs: Sequence[schemas.ActiveRun]) -> None:
        """queued → running, oldest first, within each dag's max_active_runs."""
        active = Counter(r.dag_id for r in runs if r.state == DagRunState.RUNNING)
        starting = []
        for run in runs:
            if run.state != DagRunState.QUEUED:
                continue
            limit = run.spec.max_active_runs if run.spec is not None else None
            if limit is None or active[run.dag_id] < limit:
                starting.append(run)
                active[run.dag_id] += 1
        if starting:
            await self.db.write(dag_runs.start_runs, pks=[r.pk for r in starting])
            for run in starting:
                run.state = DagRunState.RUNNING

    async def _requeue(
        self,
        running: dict[int, schemas.ActiveRun],
        tries: Sequence[schemas.TryRow],
        now: dt.datetime,
    ) -> None:
        """Hand out again the tries no worker started in time, and (once, on taking
        over) those a scheduler that is gone had handed out."""
        with_spec = {(r.dag_id, r.run_id) for r in running.values() if r.spec is not None}
        queued = [
            t.id
            for t in tries
            if t.state == TaskInstanceState.QUEUED and (t.dag_id, t.run_id) in with_spec
        ]
        if not queued:
            self._requeue_others = False
            return
        cutoff = now - dt.timedelta(seconds=self.settings.task_queued_timeout_seconds)
        await self.db.write(scheduling.requeue, queued, queued_before=cutoff)
        if self._requeue_others:
            await self.db.write(scheduling.requeue, queued, not_by=self.holder)
            self._requeue_others = False

    async def _apply(self, run: schemas.ActiveRun, plan: rules.Plan) -> None:
        """Carry out one run's plan."""
        if plan.run_timed_out:
            log.warning("dag run %s %s timed out", run.dag_id, run.run_id)
            await self.db.write(run_actions.cancel_run, dag_id=run.dag_id, run_id=run.run_id)
            return
        await self._end_tries(plan)
        if plan.ready or plan.retries_due or plan.skipped or plan.upstream_failed:
            await self.db.write(
                scheduling.apply_verdicts,
                ready=plan.ready,
                retries_due=plan.retries_due,
                skipped=plan.skipped,
                upstream_failed=plan.upstream_failed,
            )
        if plan.final_state is not None and await self.db.write(
            dag_runs.end_run, pk=run.pk, state=plan.final_state, clear_number=run.clear_number
        ):
            log.info("dag run %s %s: %s", run.dag_id, run.run_id, plan.final_state)

    async def _end_tries(self, plan: rules.Plan) -> None:
        """Fail (or retry) the tries whose worker went silent or that ran too long."""
        for ending in plan.endings:
            row = ending.row
            payload: wire_schemas.TITerminalStatePayload | wire_schemas.TIRetryStatePayload = (
                wire_schemas.TIRetryStatePayload(state="up_for_retry")
                if ending.retry
                else wire_schemas.TITerminalStatePayload(state="failed")
            )
            log.warning(
                "%s %s[%s] try %d: %s; now %s",
                row.dag_id,
                row.task_id,
                row.map_index,
                row.try_number,
                ending.reason,
                payload.state,
            )
            with contextlib.suppress(errors.InvalidStateError, errors.NotFoundError):
                await self.db.write(
                    task_instances.finish,
                    ti_id=row.id,
                    payload=payload,
                    heartbeat_before=ending.heartbeat_before,
                    started_before=ending.started_before,
                )

    async def _dispatch(self, running: dict[int, schemas.ActiveRun]) -> None:
        """Hand scheduled tries to the executor: oldest run first, within each dag's
        max_active_tasks and the executor's free slots. A page of candidates is read at
        a time; a dag that fills up is left out of the next page, so one dag's backlog
        never keeps slots from the others."""
        workers = self._workers
        if workers is None:
            return
        if self._unconfirmed:
            # A queue write this scheduler gave up on may still have committed: those
            # tries were never handed out, so they are scheduled again.
            await self.db.write(scheduling.requeue, sorted(self._unconfirmed), by=self.holder)
            self._unconfirmed.clear()
        limits = {r.dag_id: r.spec.max_active_tasks for r in running.values() if r.spec}
        with_spec = {(r.dag_id, r.run_id) for r in running.values() if r.spec is not None}
        active = Counter(await self.db.read(scheduling.active_tasks))
        full = {dag for dag, limit in limits.items() if active[dag] >= limit}
        for _ in range(DISPATCH_PAGES):
            free = workers.free()
            if free <= 0:
                return
            page = await self.db.read(
                scheduling.scheduled_tries, limit=free, skip_dags=sorted(full)
            )
            chosen = []
            for t in page:
                if (t.dag_id, t.run_id) not in with_spec or t.dag_id in full:
                    continue
                chosen.append(t.id)
                active[t.dag_id] += 1
                if active[t.dag_id] >= limits[t.dag_id]:
                    full.add(t.dag_id)
            if chosen:
                await self._queue(workers, chosen)
            if len(page) < free or not chosen:
                return  # no more candidates, or none this page could take

    async def _queue(self, workers: base.Workers, chosen: list[uuid.UUID]) -> None:
        try:
            queued = await self.db.write(scheduling.queue, chosen, holder=self.holder)
        except errors.DatabaseUnavailableError:
            self._unconfirmed.update(chosen)
            raise
        for ti_id in queued:
            workers.send(ti_id)
        self.stats.tries_queued += len(queued)
