"""The scheduler end to end, on every backend: a scheduler with the local executor in this
process, a live API server, real worker processes. Dependency order under 8 workers,
every trigger rule and failure propagation, retries at the right time, a 1,000-task
fan-out and fan-in, a worker that goes silent, and cancel and clear on a running run."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import models
from taskexec.scheduler import loop
from taskexec.sdk.dag import load_dags
from taskexec.services import tries

from conftest import LiveServer
from helpers import history_rows, report, run_with_scheduler, seed_dag_run

INTERVAL = 0.2


def _settings(settings: Settings, live: LiveServer, dags: Path, workers: int) -> Settings:
    return settings.model_copy(
        update={
            "api_url": live.base_url,
            "dags_folder": dags,
            "executor": "local",
            "local_workers": workers,
            "scheduler_interval_seconds": INTERVAL,
            "heartbeat_interval_seconds": 0.5,
        }
    )


def _dag_folder(tmp_path: Path, name: str, source: str) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


def _tries(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every try, current and archived."""
    with engine.connect() as conn:
        current = conn.execute(sa.select(models.task_instance)).all()
        old = conn.execute(sa.select(models.task_instance_history)).all()
    return [dict(r._mapping) for r in [*current, *old]]


def _current(engine: sa.Engine) -> dict[tuple[str, int], dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(models.task_instance)).all()
    return {(r.task_id, r.map_index): dict(r._mapping) for r in rows}


ORDER_DAG = """
from taskexec.sdk import Dag, PythonTask, chain

def nap(n=0):
    import time
    time.sleep(0.05)

with Dag("order") as dag:
    root = PythonTask("root", python_callable=nap)
    fan = PythonTask("fan", python_callable=nap, op_args=["{{ item }}"]).expand(range(16))
    left = PythonTask("left", python_callable=nap)
    right = PythonTask("right", python_callable=nap)
    join = PythonTask("join", python_callable=nap)
    root >> fan >> [left, right] >> join
    chain(*[PythonTask(f"c{n}", python_callable=nap) for n in range(4)], join)
"""


def test_no_task_starts_before_its_upstreams_end_under_8_workers(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, tmp_path: Path
) -> None:
    dags = _dag_folder(tmp_path, "order", ORDER_DAG)
    dag = load_dags(dags)["order"]
    run = seed_dag_run(settings, dag)
    final = run_with_scheduler(_settings(settings, live_server, dags, 8), run)
    assert final.state == "success", final
    rows = _current(sync_engine)
    assert {r["state"] for r in rows.values()} == {"success"}
    spec = dag.spec()
    for (task_id, map_index), row in rows.items():
        for up in spec.tasks[task_id].upstream:
            ends = [r["end_date"] for (t, _), r in rows.items() if t == up]
            assert row["start_date"] >= max(ends), (task_id, map_index, up)
    starts = sorted(r["start_date"] for r in rows.values())
    # Several ran at once: the 16 mapped ones were not serialized.
    overlaps = sum(
        1
        for a in rows.values()
        for b in rows.values()
        if a is not b and a["start_date"] < b["start_date"] < a["end_date"]
    )
    assert overlaps > 0, starts


RULES_DAG = """
from taskexec.sdk import Dag, PythonTask, TaskFailedError

def ok():
    return 1

def bad():
    raise TaskFailedError("fails on purpose")

with Dag("rules") as dag:
    good = PythonTask("ok", python_callable=ok)
    broken = PythonTask("bad", python_callable=bad)
    def t(name, rule, *ups):
        task = PythonTask(name, python_callable=ok, trigger_rule=rule)
        for up in ups:
            up >> task
        return task
    after_bad = t("all_success_after_bad", "all_success", broken)
    t("chain_after", "all_success", after_bad)
    t("all_failed", "all_failed", broken)
    t("all_done", "all_done", good, broken)
    t("one_success", "one_success", good, broken)
    t("one_failed", "one_failed", good, broken)
    t("none_failed", "none_failed", good, broken)
    t("always", "always", broken)
    skip = t("one_failed_on_ok", "one_failed", good)
    t("all_success_after_skip", "all_success", skip)
    t("none_failed_after_skip", "none_failed", skip, good)
"""

RULE_OUTCOMES = {
    "ok": "success",
    "bad": "failed",
    "all_success_after_bad": "upstream_failed",
    "chain_after": "upstream_failed",
    "all_failed": "success",
    "all_done": "success",
    "one_success": "success",
    "one_failed": "success",
    "none_failed": "upstream_failed",
    "always": "success",
    "one_failed_on_ok": "skipped",
    "all_success_after_skip": "skipped",
    "none_failed_after_skip": "success",
}


def test_trigger_rules_and_failure_propagation(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, tmp_path: Path
) -> None:
    dags = _dag_folder(tmp_path, "rules", RULES_DAG)
    run = seed_dag_run(settings, load_dags(dags)["rules"])
    final = run_with_scheduler(_settings(settings, live_server, dags, 4), run)
    states = {task_id: row["state"] for (task_id, _), row in _current(sync_engine).items()}
    assert states == RULE_OUTCOMES
    # chain_after, a leaf, is upstream_failed: the run failed.
    assert final.state == "failed"
    never_ran = {t for t, s in RULE_OUTCOMES.items() if s in ("upstream_failed", "skipped")}
    assert all(
        r["hostname"] is None for (t, _), r in _current(sync_engine).items() if t in never_ran
    )


RETRY_DAG = """
import datetime as dt
from taskexec.sdk import Dag, PythonTask, TaskFailedError

def flaky(context):
    if context["try_number"] < 4:
        raise TaskFailedError(f"try {context['try_number']} fails")

with Dag("retries") as dag:
    PythonTask(
        "flaky",
        python_callable=flaky,
        retries=3,
        retry_delay=dt.timedelta(seconds=1),
        retry_exponential_backoff=True,
        max_retry_delay=dt.timedelta(seconds=3),
    )
"""


def test_retries_start_when_their_delay_has_passed(
    live_server: LiveServer,
    settings: Settings,
    sync_engine: sa.Engine,
    tmp_path: Path,
    backend: str,
) -> None:
    dags = _dag_folder(tmp_path, "retries", RETRY_DAG)
    dag = load_dags(dags)["retries"]
    run = seed_dag_run(settings, dag)
    final = run_with_scheduler(_settings(settings, live_server, dags, 2), run)
    assert final.state == "success"
    by_try = {r["try_number"]: r for r in _tries(sync_engine)}
    assert sorted(by_try) == [1, 2, 3, 4]
    assert by_try[4]["state"] == "success"
    spec = dag.spec().tasks["flaky"]
    lateness = []
    for n in (1, 2, 3):
        delay = tries.retry_delay(
            spec,
            dag_id="retries",
            task_id="flaky",
            logical_date=_logical(sync_engine),
            try_number=n,
        )
        due = by_try[n]["end_date"] + dt.timedelta(seconds=delay)
        late = (by_try[n + 1]["start_date"] - due).total_seconds()
        lateness.append(late)
        assert 1 <= delay <= 3  # backoff, capped by max_retry_delay
        # Not before its time; and started within one loop interval (plus the worker's
        # own start-up) after it.
        assert 0 <= late <= INTERVAL + 0.5, (n, delay, late)
    report(f"[{backend}] retries started {[f'{x * 1000:.0f} ms' for x in lateness]} after due")


def _logical(engine: sa.Engine) -> dt.datetime:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(models.dag_run.c.logical_date, models.dag_run.c.run_after)
        ).one()
    moment: dt.datetime = row.logical_date or row.run_after
    return moment


FAN_DAG = """
from taskexec.sdk import Dag, PythonTask

def noop(n=None):
    return None

with Dag("fan") as dag:
    PythonTask("start", python_callable=noop) >> PythonTask(
        "work", python_callable=noop, op_args=["{{ item }}"]
    ).expand(range(1000)) >> PythonTask("end", python_callable=noop)
"""


def test_a_1000_task_fan_out_and_fan_in_finishes(
    live_server: LiveServer,
    settings: Settings,
    sync_engine: sa.Engine,
    tmp_path: Path,
    backend: str,
) -> None:
    dags = _dag_folder(tmp_path, "fan", FAN_DAG)
    run = seed_dag_run(settings, load_dags(dags)["fan"])
    started = time.perf_counter()
    final = run_with_scheduler(_settings(settings, live_server, dags, 4), run, max_seconds=600)
    seconds = time.perf_counter() - started
    report(f"[{backend}] fan-out/in of 1,002 task instances, 4 workers: {seconds:.1f}s")
    assert final.state == "success"
    assert final.task_instance_states == {"success": 1002}
    rows = _current(sync_engine)
    last_work = max(r["end_date"] for (t, _), r in rows.items() if t == "work")
    assert rows[("end", -1)]["start_date"] >= last_work


CANCEL_DAG = """
import time
from taskexec.sdk import Dag, PythonTask

def long(context):
    if context["try_number"] == 1:
        time.sleep(60)

def quick():
    return 1

with Dag("cancel") as dag:
    PythonTask("long", python_callable=long, retries=2, retry_delay=0) >> PythonTask(
        "after", python_callable=quick
    )
    PythonTask("other", python_callable=quick)
"""


@contextlib.contextmanager
def _scheduler(settings: Settings) -> Iterator[None]:
    """A scheduler running in a thread of its own for the block."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with db_engine.open_database(settings) as db:
            scheduler = loop.Scheduler(db, settings)
            box["scheduler"], box["loop"] = scheduler, asyncio.get_running_loop()
            ready.set()
            await scheduler.run()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        box["loop"].call_soon_threadsafe(box["scheduler"].stop)
        thread.join(timeout=90)


def _wait_for(check: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _log(root: Path, task_id: str, try_number: int) -> str:
    """The text of a try's log, or "" while it does not exist yet."""
    found = list(root.rglob(f"task_id={task_id}/map_index=-1/attempt={try_number}.log"))
    return found[0].read_text() if found else ""


def _run_state(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        state: str = conn.execute(sa.select(models.dag_run.c.state)).scalar_one()
    return state


def test_cancel_and_clear_a_running_run(
    live_server: LiveServer,
    settings: Settings,
    sync_engine: sa.Engine,
    tmp_path: Path,
    client: httpx.Client,
) -> None:
    dags = _dag_folder(tmp_path, "cancel", CANCEL_DAG)
    run = seed_dag_run(settings, load_dags(dags)["cancel"])
    api = f"/api/v1/dags/cancel/runs/{run.run_id}"
    with _scheduler(_settings(settings, live_server, dags, 2)):
        # "other" must have finished first: cancelling would fail it too, and then the
        # cleared run could only fail.
        def states() -> dict[str, str]:
            return {t: r["state"] for (t, _), r in _current(sync_engine).items()}

        _wait_for(lambda: (states()["long"], states()["other"]) == ("running", "success"))
        started = time.monotonic()
        cancelled = client.patch(api, json={"state": "failed"})
        assert cancelled.status_code == 200, cancelled.text
        assert (states()["long"], states()["after"]) == ("failed", "skipped")
        assert _run_state(sync_engine) == "failed"
        # The worker is told by its next heartbeat (every 0.5 s) and stops the task.
        _wait_for(lambda: "stopped:" in _log(tmp_path, "long", 1), 20)
        assert time.monotonic() - started < 20  # not the task's 60 s

        cleared = client.post(f"{api}/clear", json={"task_ids": ["long"], "downstream": True})
        assert cleared.status_code == 200 and cleared.json()["cleared"] == 2
        _wait_for(lambda: _run_state(sync_engine) == "success")
    rows = _current(sync_engine)
    assert (rows[("long", -1)]["state"], rows[("long", -1)]["try_number"]) == ("success", 2)
    assert rows[("after", -1)]["state"] == "success"
    assert rows[("other", -1)]["try_number"] == 1  # not cleared


SILENT_DAG = """
import time
from taskexec.sdk import Dag, PythonTask

def work(context):
    time.sleep(3 if context["try_number"] == 1 else 0)

with Dag("silent") as dag:
    PythonTask("work", python_callable=work, retries=1, retry_delay=0)
"""


def test_a_silent_worker_is_failed_by_heartbeat_and_its_late_calls_get_410(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, tmp_path: Path
) -> None:
    """A worker frozen mid-task (SIGSTOP: alive, but no heartbeats) is presumed dead after
    the heartbeat timeout: its try goes up_for_retry, the next try runs elsewhere and
    succeeds. Woken up, the frozen worker's calls for its old try get 410: it stops."""
    dags = _dag_folder(tmp_path, "silent", SILENT_DAG)
    seed_dag_run(settings, load_dags(dags)["silent"])
    quick = _settings(settings, live_server, dags, 2).model_copy(
        update={"task_heartbeat_timeout_seconds": 2.0}
    )
    with _scheduler(quick):
        _wait_for(lambda: _current(sync_engine)[("work", -1)]["state"] == "running")
        first = _current(sync_engine)[("work", -1)]
        os.kill(first["pid"], signal.SIGSTOP)
        try:
            _wait_for(lambda: _run_state(sync_engine) == "success", 30)
        finally:
            os.kill(first["pid"], signal.SIGCONT)
        old = history_rows(sync_engine, first["id"])
        assert [(h["try_number"], h["state"]) for h in old] == [(1, "up_for_retry")]
        # Woken, it writes its log (if it had not yet) and stops at its next call.
        _wait_for(lambda: "newer try replaced" in _log(tmp_path, "work", 1), 20)
    rows = _current(sync_engine)
    assert (rows[("work", -1)]["state"], rows[("work", -1)]["try_number"]) == ("success", 2)
