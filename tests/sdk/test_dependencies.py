"""Dependencies in the SDK: >>, <<, lists, chain, trigger rules, cycles, the dag spec."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from taskexec.sdk import BashTask, Dag, chain
from taskexec.sdk.dag import DagCycleError, load_dag_files


def _dag(*task_ids: str) -> tuple[Dag, dict[str, BashTask]]:
    with Dag("deps") as dag:
        tasks = {t: BashTask(t, bash_command="true") for t in task_ids}
    return dag, tasks


def _upstreams(dag: Dag) -> dict[str, list[str]]:
    return {task_id: spec.upstream for task_id, spec in dag.spec().tasks.items()}


def test_shift_operators_and_lists() -> None:
    dag, t = _dag("a", "b", "c", "d", "e")
    result = t["a"] >> [t["b"], t["c"]] >> t["d"]
    assert result is t["d"]
    t["e"] << t["d"]
    assert _upstreams(dag) == {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"]}
    assert t["a"].downstream_task_ids == {"b", "c"}


def test_list_on_the_left() -> None:
    dag, t = _dag("a", "b", "c")
    [t["a"], t["b"]] << t["c"]
    assert _upstreams(dag) == {"a": ["c"], "b": ["c"], "c": []}


def test_chain_tasks_and_lists_pairwise() -> None:
    dag, t = _dag("a", "b", "c", "d", "e", "f")
    chain(t["a"], [t["b"], t["c"]], [t["d"], t["e"]], t["f"])
    assert _upstreams(dag) == {
        "a": [],
        "b": ["a"],
        "c": ["a"],
        "d": ["b"],
        "e": ["c"],
        "f": ["d", "e"],
    }


def test_chain_refuses_lists_of_different_lengths() -> None:
    _, t = _dag("a", "b", "c")
    with pytest.raises(ValueError, match="different lengths"):
        chain([t["a"], t["b"]], [t["c"]])


def test_unknown_trigger_rule_is_refused() -> None:
    with Dag("rules"), pytest.raises(ValueError, match="unknown trigger rule 'sometimes'"):
        BashTask("a", bash_command="true", trigger_rule="sometimes")


def test_a_cycle_is_named_task_by_task() -> None:
    dag, t = _dag("a", "b", "c")
    t["a"] >> t["b"] >> t["c"] >> t["a"]
    with pytest.raises(DagCycleError) as info:
        dag.check_acyclic()
    assert str(info.value) == "dag 'deps' has a cycle: a >> b >> c >> a"


def test_a_dag_file_with_a_cycle_is_refused_and_the_others_load(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "from taskexec.sdk import BashTask, Dag\n"
        "with Dag('loop'):\n"
        "    x = BashTask('x', bash_command='true')\n"
        "    y = BashTask('y', bash_command='true')\n"
        "    x >> y >> x\n"
    )
    (tmp_path / "good.py").write_text(
        "from taskexec.sdk import BashTask, Dag\n"
        "with Dag('fine'):\n"
        "    BashTask('t', bash_command='true')\n"
    )
    dags, problems = load_dag_files(tmp_path)
    assert list(dags) == ["fine"]
    assert problems == {"bad.py": "dag 'loop' has a cycle: x >> y >> x"}


def test_spec_carries_policies_and_limits() -> None:
    with Dag(
        "policies", dagrun_timeout=dt.timedelta(minutes=5), max_active_tasks=3, max_active_runs=1
    ) as dag:
        a = BashTask(
            "a",
            bash_command="true",
            retries=2,
            retry_delay=dt.timedelta(seconds=10),
            retry_exponential_backoff=True,
            max_retry_delay=60,
            execution_timeout=dt.timedelta(seconds=30),
        )
        b = BashTask("b", bash_command="echo {{ item }}", trigger_rule="all_done").expand(range(4))
        a >> b
    spec = dag.spec()
    assert (spec.dagrun_timeout, spec.max_active_tasks, spec.max_active_runs) == (300.0, 3, 1)
    assert spec.tasks["a"].model_dump() == {
        "upstream": [],
        "trigger_rule": "all_success",
        "retries": 2,
        "retry_delay": 10.0,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": 60.0,
        "execution_timeout": 30.0,
        "map_count": None,
    }
    assert spec.tasks["b"].upstream == ["a"]
    assert spec.tasks["b"].trigger_rule == "all_done"
    assert spec.tasks["b"].map_count == 4
    assert spec.tasks["b"].retry_delay == 300.0  # Airflow's default
