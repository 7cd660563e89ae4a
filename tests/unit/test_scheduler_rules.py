"""The scheduler's decisions, without a database: Airflow's trigger rules, failure
propagation, the run's final state, retries due and timeouts, and the retry delay."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from taskexec.scheduler.rules import Upstream, plan_run, trigger
from taskexec.schemas import ActiveRun, TryRow
from taskexec.services.tries import retry_delay
from taskexec.wire import schemas

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
S, F, UF, SK = "success", "failed", "upstream_failed", "skipped"


def up(*states: str | None) -> Upstream:
    return Upstream.of(states)


# (rule, upstream states, verdict): Airflow's TriggerRuleDep with flag_upstream_failed.
CASES = [
    ("all_success", (S, S), "run"),
    ("all_success", (S, None), "wait"),
    ("all_success", (F, None), "upstream_failed"),  # settled at the first failure
    ("all_success", (UF, S), "upstream_failed"),
    ("all_success", (SK, S), "skipped"),
    ("all_failed", (F, UF), "run"),
    ("all_failed", (F, None), "wait"),
    ("all_failed", (F, S), "skipped"),
    ("all_done", (S, F), "run"),
    ("all_done", (SK, UF), "run"),
    ("all_done", (S, "running"), "wait"),
    ("one_success", (S, None), "run"),
    ("one_success", (F, None), "wait"),
    ("one_success", (F, F), "upstream_failed"),
    ("one_success", (SK, SK), "skipped"),
    ("one_failed", (F, None), "run"),
    ("one_failed", (UF, S), "run"),
    ("one_failed", (S, None), "wait"),
    ("one_failed", (S, SK), "skipped"),
    ("none_failed", (S, SK), "run"),
    ("none_failed", (S, None), "wait"),
    ("none_failed", (F, S), "upstream_failed"),
    ("always", (F, None), "run"),
    ("one_done", (F, None), "run"),
    ("one_done", (SK, SK), "skipped"),
    ("none_failed_min_one_success", (SK, SK), "skipped"),
    ("none_failed_min_one_success", (S, SK), "run"),
    ("none_skipped", (S, F), "run"),
    ("none_skipped", (SK, None), "skipped"),
    ("all_skipped", (SK, SK), "run"),
    ("all_skipped", (SK, S), "skipped"),
]


@pytest.mark.parametrize(("rule", "states", "verdict"), CASES)
def test_trigger_rules(rule: str, states: tuple[str | None, ...], verdict: str) -> None:
    assert trigger(rule, up(*states)) == verdict


@pytest.mark.parametrize("rule", sorted(schemas.TRIGGER_RULES))
def test_a_task_without_upstreams_always_runs(rule: str) -> None:
    assert trigger(rule, up()) == "run"


def _try(task_id: str, state: str | None, map_index: int = -1, **kw: object) -> TryRow:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "dag_id": "d",
        "run_id": "r",
        "task_id": task_id,
        "map_index": map_index,
        "state": state,
        "try_number": 1,
        "max_tries": 0,
        "start_date": None,
        "last_heartbeat_at": None,
        "queued_at": None,
        "queued_by": None,
        "next_retry_at": None,
    }
    values.update(kw)
    return TryRow(**values)  # type: ignore[arg-type]


def _run(spec: schemas.DagSpec | None, start: dt.datetime | None = NOW) -> ActiveRun:
    return ActiveRun(
        pk=1, dag_id="d", run_id="r", state="running", run_after=NOW, start_date=start, spec=spec
    )


def _spec(**upstreams: list[str]) -> schemas.DagSpec:
    return schemas.DagSpec(
        tasks={name: schemas.TaskSpec(upstream=ups) for name, ups in upstreams.items()}
    )


def test_a_failure_cascades_down_a_chain_in_one_iteration() -> None:
    spec = _spec(a=[], b=["a"], c=["b"], d=["c"])
    tries = [_try("a", F), _try("b", None), _try("c", None), _try("d", None)]
    plan = plan_run(_run(spec), tries, now=NOW, heartbeat_timeout=300)
    assert plan.upstream_failed == [tries[1].id, tries[2].id, tries[3].id]
    assert plan.ready == [] and plan.final_state is None  # decided from the next read


def test_a_mapped_upstream_counts_every_map_index() -> None:
    spec = schemas.DagSpec(
        tasks={
            "fan": schemas.TaskSpec(map_count=3),
            "join": schemas.TaskSpec(upstream=["fan"]),
        }
    )
    waiting = _try("join", None)
    partly = [_try("fan", S, 0), _try("fan", S, 1), _try("fan", "running", 2), waiting]
    assert plan_run(_run(spec), partly, now=NOW, heartbeat_timeout=300).ready == []
    done = [_try("fan", S, 0), _try("fan", S, 1), _try("fan", S, 2), waiting]
    assert plan_run(_run(spec), done, now=NOW, heartbeat_timeout=300).ready == [waiting.id]


@pytest.mark.parametrize(
    ("states", "final"),
    [
        ((S, S, S), "success"),
        ((S, F, UF), "failed"),  # a failed leaf
        ((F, SK, SK), "success"),  # a failed root under skipped leaves: Airflow says success
        ((S, S, "running"), None),
    ],
)
def test_the_run_ends_by_its_leaves(states: tuple[str, ...], final: str | None) -> None:
    spec = _spec(a=[], b=["a"], c=["a"])
    tries = [_try(name, state) for name, state in zip("abc", states, strict=True)]
    assert plan_run(_run(spec), tries, now=NOW, heartbeat_timeout=300).final_state == final


def test_retries_are_due_after_their_time() -> None:
    spec = _spec(a=[], b=[])
    due = _try("a", "up_for_retry", next_retry_at=NOW - dt.timedelta(seconds=1))
    later = _try("b", "up_for_retry", next_retry_at=NOW + dt.timedelta(seconds=1))
    plan = plan_run(_run(spec), [due, later], now=NOW, heartbeat_timeout=300)
    assert plan.retries_due == [due.id]


def test_silent_workers_and_execution_timeouts_end_their_tries() -> None:
    spec = schemas.DagSpec(
        tasks={"quiet": schemas.TaskSpec(), "slow": schemas.TaskSpec(execution_timeout=60)}
    )
    long_ago = NOW - dt.timedelta(seconds=400)
    quiet = _try("quiet", "running", start_date=long_ago, last_heartbeat_at=long_ago)
    slow = _try("slow", "running", start_date=long_ago, last_heartbeat_at=NOW, max_tries=1)
    plan = plan_run(_run(spec), [quiet, slow], now=NOW, heartbeat_timeout=300)
    endings = {e.row.task_id: e for e in plan.endings}
    assert endings["quiet"].reason == "no heartbeat" and not endings["quiet"].retry
    assert endings["quiet"].heartbeat_before == NOW - dt.timedelta(seconds=300)
    assert endings["slow"].reason == "execution_timeout" and endings["slow"].retry
    assert endings["slow"].started_before == NOW - dt.timedelta(seconds=60)


def test_dagrun_timeout() -> None:
    spec = schemas.DagSpec(tasks={"a": schemas.TaskSpec()}, dagrun_timeout=10)
    started = NOW - dt.timedelta(seconds=11)
    plan = plan_run(_run(spec, started), [_try("a", "running")], now=NOW, heartbeat_timeout=300)
    assert plan.run_timed_out


def test_retry_delay_follows_airflow() -> None:
    task = schemas.TaskSpec(retry_delay=10)
    assert retry_delay(task, dag_id="d", task_id="t", logical_date=None, try_number=3) == 10
    backoff = schemas.TaskSpec(retry_delay=10, retry_exponential_backoff=2.0)
    delays = [
        retry_delay(backoff, dag_id="d", task_id="t", logical_date=NOW, try_number=n)
        for n in (1, 2, 3)
    ]
    # Between delay * 2^(n-1) and twice that, and the same for the same try.
    for n, delay in enumerate(delays, start=1):
        assert 10 * 2 ** (n - 1) <= delay < 2 * 10 * 2 ** (n - 1)
    assert delays[0] == retry_delay(
        backoff, dag_id="d", task_id="t", logical_date=NOW, try_number=1
    )
    capped = schemas.TaskSpec(retry_delay=10, retry_exponential_backoff=2.0, max_retry_delay=15)
    assert retry_delay(capped, dag_id="d", task_id="t", logical_date=NOW, try_number=5) == 15
