"""What the scheduler reads each iteration, on every backend: the active runs with their
specs parsed once, the per-run digest that tells which runs changed, the scheduled tries
to hand out (oldest run first, bounded, skipping full dags), and a run's end guarded
against a clear that came after the plan."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.scheduler import loop
from taskexec.sdk import Dag, PythonTask
from taskexec.services import dag_runs, run_actions, scheduling
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.states import DagRunState

from helpers import seed_dag_run

T = TypeVar("T")


def _dag(dag_id: str, tasks: int) -> Dag:
    with Dag(dag_id) as dag:
        for n in range(tasks):
            PythonTask(f"t{n}", python_callable=print)
    return dag


def _with_db(settings: Settings, go: Callable[[db_engine.Database], Awaitable[T]]) -> T:
    async def main() -> T:
        async with db_engine.open_database(settings) as db:
            return await go(db)

    return asyncio.run(main())


async def _start_all(db: db_engine.Database, specs: dict[int, Any]) -> list[Any]:
    runs = await db.read(scheduling.active_runs, specs=specs)
    await db.write(dag_runs.start_runs, pks=[r.pk for r in runs])
    return runs


def test_specs_are_read_once_and_digests_change_with_states(settings: Settings) -> None:
    first = seed_dag_run(settings, _dag("alpha", 3))
    seed_dag_run(settings, _dag("beta", 2))

    async def go(db: db_engine.Database) -> None:
        specs: dict[int, wire_schemas.DagSpec | None] = {}
        runs = await _start_all(db, specs)
        assert [r.dag_id for r in runs] == ["alpha", "beta"]
        assert set(specs) == {r.pk for r in runs} and all(s is not None for s in specs.values())
        # A run whose spec is known is not read again: the cached one is used as it is.
        marker = wire_schemas.DagSpec(tasks={})
        specs[runs[0].pk] = marker
        again = await db.read(scheduling.active_runs, specs=specs)
        assert again[0].spec is marker and again[0].state == DagRunState.RUNNING

        before = await db.read(scheduling.run_digests)
        assert set(before) == {r.pk for r in runs}
        assert before[runs[0].pk] == frozenset({(None, 3, 3)})
        assert await db.read(scheduling.run_digests) == before  # nothing changed
        ids = [t.id for t in first.task_instances]
        await db.write(scheduling.schedule, ready=ids[:1])
        after = await db.read(scheduling.run_digests)
        assert after[runs[0].pk] == frozenset({(None, 2, 2), ("scheduled", 1, 1)})
        assert after[runs[1].pk] == before[runs[1].pk]
        tries = await db.read(scheduling.tries_of_runs, [runs[0].pk])
        assert sorted(t.task_id for t in tries) == ["t0", "t1", "t2"]

    _with_db(settings, go)


def test_scheduled_tries_oldest_run_first_bounded_and_skipping_full_dags(
    settings: Settings,
) -> None:
    made = [seed_dag_run(settings, _dag(d, 3)) for d in ("alpha", "beta", "alpha")]

    async def go(db: db_engine.Database) -> None:
        await _start_all(db, {})
        every = [t.id for run in made for t in run.task_instances]
        await db.write(scheduling.schedule, ready=every)
        picked = await db.read(scheduling.scheduled_tries, limit=4)
        assert [(t.run_id, t.task_id) for t in picked] == [
            (made[0].run_id, "t0"),
            (made[0].run_id, "t1"),
            (made[0].run_id, "t2"),
            (made[1].run_id, "t0"),
        ]
        others = await db.read(scheduling.scheduled_tries, limit=10, skip_dags=["alpha"])
        assert {t.dag_id for t in others} == {"beta"} and len(others) == 3

        queued = await db.write(scheduling.queue, [t.id for t in picked], holder="me")
        assert len(queued) == 4
        assert await db.read(scheduling.active_tasks) == {"alpha": 3, "beta": 1}
        rest = await db.read(scheduling.scheduled_tries, limit=10)
        assert len(rest) == 5 and not {t.id for t in rest} & set(queued)

    _with_db(settings, go)


def test_a_plan_made_before_a_clear_does_not_end_the_run(settings: Settings) -> None:
    run = seed_dag_run(settings, _dag("alpha", 1))

    async def go(db: db_engine.Database) -> None:
        (planned,) = await _start_all(db, {})
        # Cancelling fails the run; clearing it queues it again with a new clear number.
        await db.write(run_actions.cancel_run, dag_id="alpha", run_id=run.run_id)
        await db.write(run_actions.clear_task_instances, dag_id="alpha", run_id=run.run_id)
        (cleared,) = await db.read(scheduling.active_runs, specs={})
        assert cleared.clear_number == planned.clear_number + 1
        # The plan read before the clear said "failed": it must not end the cleared run.
        assert not await db.write(
            dag_runs.end_run,
            pk=planned.pk,
            state=DagRunState.FAILED,
            clear_number=planned.clear_number,
        )
        (still,) = await db.read(scheduling.active_runs, specs={})
        assert still.state == DagRunState.QUEUED
        assert await db.write(
            dag_runs.end_run,
            pk=planned.pk,
            state=DagRunState.SUCCESS,
            clear_number=cleared.clear_number,
        )

    _with_db(settings, go)


class _Slots:
    """An executor stand-in with ``slots`` free slots, recording what it is sent."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.sent: list[uuid.UUID] = []

    def free(self) -> int:
        return self.slots - len(self.sent)

    def send(self, ti_id: uuid.UUID) -> None:
        self.sent.append(ti_id)


def test_a_full_dag_does_not_keep_slots_from_the_others(settings: Settings) -> None:
    with Dag("alpha", max_active_tasks=2) as alpha:
        for n in range(10):
            PythonTask(f"t{n}", python_callable=print)
    older = seed_dag_run(settings, alpha)
    newer = seed_dag_run(settings, _dag("beta", 4))

    async def go(db: db_engine.Database) -> list[str]:
        specs: dict[int, wire_schemas.DagSpec | None] = {}
        await _start_all(db, specs)
        ids = [t.id for run in (older, newer) for t in run.task_instances]
        await db.write(scheduling.schedule, ready=ids)
        runs = await db.read(scheduling.active_runs, specs=specs)
        scheduler = loop.Scheduler(db, settings)
        slots = _Slots(8)
        scheduler._workers = slots  # type: ignore[assignment]
        await scheduler._dispatch({r.pk: r for r in runs})
        by_id = {t.id: run.dag_id for run in (older, newer) for t in run.task_instances}
        return [by_id[ti_id] for ti_id in slots.sent]

    sent = _with_db(settings, go)
    assert sorted(sent) == ["alpha", "alpha", "beta", "beta", "beta", "beta"]


def test_a_queue_write_given_up_on_is_undone_next_iteration(settings: Settings) -> None:
    run = seed_dag_run(settings, _dag("alpha", 2))

    async def go(db: db_engine.Database) -> list[str | None]:
        specs: dict[int, wire_schemas.DagSpec | None] = {}
        runs = await _start_all(db, specs)
        ids = [t.id for t in run.task_instances]
        await db.write(scheduling.schedule, ready=ids)
        scheduler = loop.Scheduler(db, settings)
        # The write committed, but the scheduler never learnt it (a late commit).
        await db.write(scheduling.queue, ids, holder=scheduler.holder)
        scheduler._unconfirmed.update(ids)
        slots = _Slots(2)
        scheduler._workers = slots  # type: ignore[assignment]
        running = {r.pk: r for r in await db.read(scheduling.active_runs, specs=specs)}
        assert runs
        await scheduler._dispatch(running)
        assert sorted(slots.sent) == sorted(ids)  # handed out now, not after 10 minutes
        return [t.state for t in await db.read(scheduling.tries_of_runs, list(running))]

    assert _with_db(settings, go) == ["queued", "queued"]
