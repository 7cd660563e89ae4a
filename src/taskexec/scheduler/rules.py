"""The scheduler's decisions, as pure functions of a run's task instances: which may run
(trigger rules), which are skipped or upstream_failed, which retries are due, which
tries timed out, and the run's final state. Airflow's rules, kept free of I/O so they
can be tested on their own; ``scheduler.loop`` applies them through services.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

from taskexec.schemas import ActiveRun, TryRow
from taskexec.wire import schemas
from taskexec.wire.states import FAILED_STATES, FINISHED, DagRunState, TaskInstanceState

Verdict = Literal["run", "wait", "skipped", "upstream_failed"]

_SUCCESS = TaskInstanceState.SUCCESS
_SKIPPED = TaskInstanceState.SKIPPED
_FAILED = TaskInstanceState.FAILED
_UPSTREAM_FAILED = TaskInstanceState.UPSTREAM_FAILED


@dataclasses.dataclass(frozen=True)
class Upstream:
    """The states of a task instance's upstream task instances, counted (a mapped
    upstream task counts once per map index)."""

    success: int = 0
    skipped: int = 0
    failed: int = 0
    upstream_failed: int = 0
    total: int = 0

    @property
    def done(self) -> int:
        """Upstreams in a finished state."""
        return self.success + self.skipped + self.failed + self.upstream_failed

    @classmethod
    def of(cls, states: Iterable[str | None]) -> Upstream:
        """Count ``states``."""
        counts: dict[str | None, int] = defaultdict(int)
        total = 0
        for state in states:
            counts[state] += 1
            total += 1
        return cls(
            success=counts[_SUCCESS],
            skipped=counts[_SKIPPED],
            failed=counts[_FAILED],
            upstream_failed=counts[_UPSTREAM_FAILED],
            total=total,
        )


def _flag(rule: str, up: Upstream) -> Verdict | None:
    """The state the rule already settles, whatever the unfinished upstreams do."""
    all_done = up.done >= up.total
    failed = up.failed + up.upstream_failed
    if rule in ("all_success", "none_failed", "none_failed_min_one_success") and failed:
        return "upstream_failed"
    if rule == "one_success":
        if all_done and up.done == up.skipped:
            return "skipped"
        return "upstream_failed" if all_done and up.success <= 0 else None
    skip = {
        "all_success": up.skipped > 0,
        "all_failed": up.success + up.skipped > 0,
        "one_failed": all_done and not failed,
        "one_done": all_done and not (up.failed or up.success),
        "none_failed_min_one_success": up.skipped == up.total,
        "none_skipped": up.skipped > 0,
        "all_skipped": up.success + failed > 0,
    }
    return "skipped" if skip.get(rule, False) else None


def _met(rule: str, up: Upstream) -> bool:
    """Whether the rule lets the task instance run now."""
    failed = up.failed + up.upstream_failed
    met = {
        "all_success": up.success >= up.total,
        "all_failed": failed >= up.total,
        "all_done": up.done >= up.total,
        "all_skipped": up.skipped >= up.total,
        "one_success": up.success > 0,
        "one_failed": failed > 0,
        "one_done": up.success + up.failed > 0,
        "none_failed": up.success + up.skipped >= up.total,
        "none_failed_min_one_success": up.success + up.skipped >= up.total,
        "none_skipped": up.done >= up.total and not up.skipped,
        "always": True,
    }
    return met[rule]


def trigger(rule: str, up: Upstream) -> Verdict:
    """What a task instance with no status becomes, given its trigger rule and its
    upstreams: run (scheduled), wait, or skipped / upstream_failed at once. As Airflow:
    a rule is settled as soon as it can be (``all_success`` is upstream_failed at the
    first failed upstream), and a task with no upstream always runs."""
    if up.total == 0 or rule == "always":
        return "run"
    return _flag(rule, up) or ("run" if _met(rule, up) else "wait")


@dataclasses.dataclass(frozen=True)
class Ending:
    """A running try the scheduler ends: its worker went silent, or it ran too long.
    The guard (``heartbeat_before`` or ``started_before``) goes into the same UPDATE,
    so a try that heartbeated or ended meanwhile is left alone."""

    row: TryRow
    retry: bool  # tries left: up_for_retry, else failed
    reason: str
    heartbeat_before: dt.datetime | None = None
    started_before: dt.datetime | None = None


@dataclasses.dataclass
class Plan:
    """What one scheduler iteration does to one running run."""

    ready: list[uuid.UUID] = dataclasses.field(default_factory=list)
    skipped: list[uuid.UUID] = dataclasses.field(default_factory=list)
    upstream_failed: list[uuid.UUID] = dataclasses.field(default_factory=list)
    retries_due: list[uuid.UUID] = dataclasses.field(default_factory=list)
    endings: list[Ending] = dataclasses.field(default_factory=list)
    final_state: DagRunState | None = None
    run_timed_out: bool = False


def _decide_waiting(spec: schemas.DagSpec, tries: Sequence[TryRow], plan: Plan) -> None:
    """Trigger rules for every try with no status, until nothing changes: a cascade of
    upstream_failed or skipped is settled in one iteration."""
    state = {t.id: t.state for t in tries}
    by_task: dict[str, list[TryRow]] = defaultdict(list)
    for t in tries:
        by_task[t.task_id].append(t)
    waiting = [t for t in tries if t.state is None and t.task_id in spec.tasks]
    changed = True
    while changed:
        changed = False
        for t in waiting:
            if state[t.id] is not None:
                continue
            task = spec.tasks[t.task_id]
            up = Upstream.of(state[u.id] for name in task.upstream for u in by_task.get(name, ()))
            verdict = trigger(task.trigger_rule, up)
            if verdict == "run":
                state[t.id] = TaskInstanceState.SCHEDULED
                plan.ready.append(t.id)
            elif verdict != "wait":
                state[t.id] = verdict
                (plan.skipped if verdict == "skipped" else plan.upstream_failed).append(t.id)
                changed = True


def _final_state(spec: schemas.DagSpec | None, tries: Sequence[TryRow]) -> DagRunState | None:
    """success or failed once every task instance has finished, decided by the leaves
    (tasks nothing depends on): failed if any leaf failed or is upstream_failed."""
    if any(t.state not in FINISHED for t in tries):
        return None
    if spec is None:
        leaves = {t.task_id for t in tries}
    else:
        has_downstream = {up for task in spec.tasks.values() for up in task.upstream}
        leaves = set(spec.tasks) - has_downstream
    if any(t.state in FAILED_STATES for t in tries if t.task_id in leaves):
        return DagRunState.FAILED
    return DagRunState.SUCCESS


def _timeouts(
    spec: schemas.DagSpec | None,
    tries: Sequence[TryRow],
    plan: Plan,
    now: dt.datetime,
    heartbeat_timeout: float,
) -> None:
    silent_since = now - dt.timedelta(seconds=heartbeat_timeout)
    for t in tries:
        if t.state != TaskInstanceState.RUNNING or t.start_date is None:
            continue
        retry = t.try_number <= t.max_tries
        task = spec.tasks.get(t.task_id) if spec is not None else None
        limit = task.execution_timeout if task is not None else None
        if limit is not None and t.start_date + dt.timedelta(seconds=limit) < now:
            started_before = now - dt.timedelta(seconds=limit)
            ending = Ending(t, retry, "execution_timeout", started_before=started_before)
            plan.endings.append(ending)
        elif (t.last_heartbeat_at or t.start_date) < silent_since:
            plan.endings.append(Ending(t, retry, "no heartbeat", heartbeat_before=silent_since))


def plan_run(
    run: ActiveRun, tries: Sequence[TryRow], *, now: dt.datetime, heartbeat_timeout: float
) -> Plan:
    """What to do now for one running run."""
    plan = Plan()
    spec = run.spec
    if (
        spec is not None
        and spec.dagrun_timeout is not None
        and run.start_date is not None
        and run.start_date + dt.timedelta(seconds=spec.dagrun_timeout) < now
    ):
        plan.run_timed_out = True
        return plan
    _timeouts(spec, tries, plan, now, heartbeat_timeout)
    if spec is not None:
        _decide_waiting(spec, tries, plan)
        plan.retries_due = [
            t.id
            for t in tries
            if t.state == TaskInstanceState.UP_FOR_RETRY
            and (t.next_retry_at is None or t.next_retry_at <= now)
        ]
    plan.final_state = _final_state(spec, tries)
    return plan
