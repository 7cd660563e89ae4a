"""The local executor end to end on every backend: a dag mapped over 200 items, 8
worker processes, a live API server; every try succeeds and every RTIF row is right."""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import models
from taskexec.race import proxy
from taskexec.sdk.dag import load_dags
from taskexec.security import TokenSigner

from conftest import LiveServer
from helpers import auth, history_rows, only, report, rtif_rows, run_with_scheduler, seed_dag_run

SECRET = "hunter2-very-secret"
ITEMS = 200

DAG_FILE = f'''
from taskexec.sdk import BashTask, Dag, PythonTask, TaskFailedError, mask_secret

mask_secret("{SECRET}")


def double(n, note, context):
    print("item", n, "try", context["try_number"])
    return int(n) * 2


def flaky(context):
    if context["try_number"] == 1:
        raise TaskFailedError("first try fails on purpose")


with Dag("e2e_mapped", params={{"label": "L"}}) as dag:
    PythonTask(
        "work",
        python_callable=double,
        op_kwargs={{"n": "{{{{ item }}}}", "note": "{{{{ params.label }}}}-{{{{ item }}}}"}},
    ).expand(range({ITEMS}))
    BashTask(
        "secretive",
        bash_command="echo postgresql://u:{SECRET}@db/x >/dev/null; echo {{{{ run_id }}}}",
        env={{"API_TOKEN": "{SECRET}", "PLAIN": "value {SECRET} inside"}},
    )
    PythonTask("flaky", python_callable=flaky, retries=1, retry_delay=0)
'''


def test_local_executor_runs_a_mapped_dag(
    live_server: LiveServer,
    settings: Settings,
    sync_engine: sa.Engine,
    tmp_path: Path,
    backend: str,
) -> None:
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    (dags_folder / "e2e_mapped.py").write_text(textwrap.dedent(DAG_FILE))
    run = seed_dag_run(settings, load_dags(dags_folder)["e2e_mapped"])
    assert len(run.task_instances) == ITEMS + 2

    # Every rendered-fields PUT goes through the race's proxy, which sends it twice.
    started = time.perf_counter()
    with proxy.recording_proxy(live_server.base_url, duplicate=True) as (url, writes):
        scheduling = _local(settings, url, dags_folder, workers=8)
        final = run_with_scheduler(scheduling, run)
    report(
        f"[{backend}] scheduler + local executor, 8 processes: {len(run.task_instances)} task "
        f"instances {final.task_instance_states}, run {final.state}, RTIF writes {writes.sent} "
        f"(duplicates in flight {writes.duplicates}), non-2xx {writes.non_2xx} "
        f"{dict(writes.statuses)}, retried {writes.retries}, "
        f"p50 {writes.percentile(50) * 1000:.1f} ms, p99 {writes.percentile(99) * 1000:.1f} ms, "
        f"{time.perf_counter() - started:.1f}s"
    )
    assert final.task_instance_states == {"success": ITEMS + 2}
    assert final.state == "success"
    assert writes.non_2xx == 0
    assert writes.sent == 2 * (ITEMS + 3)  # every PUT twice; flaky wrote on both tries

    stored = {(r["task_id"], r["map_index"]): r for r in rtif_rows(sync_engine)}
    assert len(stored) == ITEMS + 2
    for i in range(ITEMS):
        fields = stored[("work", i)]["rendered_fields"]
        assert fields["op_kwargs"] == {"n": str(i), "note": f"L-{i}"}
    flaky = stored[("flaky", -1)]
    assert flaky["try_number"] == 2
    with sync_engine.connect() as conn:
        history = conn.execute(sa.select(models.task_instance_history)).all()
    assert [(h.task_id, h.try_number, h.state) for h in history] == [("flaky", 1, "up_for_retry")]

    everything = repr([r["rendered_fields"] for r in stored.values()])
    assert SECRET not in everything
    secretive = stored[("secretive", -1)]["rendered_fields"]
    assert secretive["env"]["API_TOKEN"] == "***"
    assert secretive["env"]["PLAIN"] == "value *** inside"
    assert "u:***@db" in secretive["bash_command"]


@pytest.mark.sqlite
def test_unreachable_api_fails_the_tries_instead_of_hanging(
    settings: Settings, tmp_path: Path
) -> None:
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    (dags_folder / "tiny.py").write_text(
        "from taskexec.sdk import BashTask, Dag\n"
        "with Dag('tiny'):\n"
        "    BashTask('a', bash_command='true')\n"
        "    BashTask('b', bash_command='true')\n"
    )
    nowhere = settings.model_copy(
        update={
            "api_url": "http://127.0.0.1:9",  # nothing listens on the discard port
            "dags_folder": dags_folder,
            "execution_api_retries": 1,
        }
    )
    run = seed_dag_run(nowhere, load_dags(dags_folder)["tiny"])
    final = run_with_scheduler(_local(nowhere, nowhere.api_url, dags_folder, workers=1), run)
    assert final.task_instance_states == {"failed": 2}
    assert final.state == "failed"


SLOW_DAG = """
import time

from taskexec.sdk import Dag, PythonTask, TaskFailedError


def slow(context):
    time.sleep(3)
    if context["try_number"] == 1:
        raise TaskFailedError("the first try fails, after the kill")


def quick():
    return 1


with Dag("slow"):
    PythonTask("a_slow", python_callable=slow, retries=1, retry_delay=0)
    for n in range(4):
        PythonTask(f"b_{n}", python_callable=quick)
"""


def _worker_processes() -> list[int]:
    """The pids of this process's children that are local executor workers."""
    # Each thread's children are listed under it (the executor starts from a thread).
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            children += (task / "children").read_text().split()
    worker = b"taskexec.executors.worker"
    return [int(pid) for pid in children if worker in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _local(settings: Settings, api_url: str, dags_folder: Path, *, workers: int) -> Settings:
    """Settings for a scheduler with ``workers`` local processes, quick to react."""
    return settings.model_copy(
        update={
            "api_url": api_url,
            "dags_folder": dags_folder,
            "executor": "local",
            "local_workers": workers,
            "scheduler_interval_seconds": 0.2,
        }
    )


def _kill_when_slow_runs(
    engine: sa.Engine, *, the_busy_one: bool, killed: list[object]
) -> threading.Thread:
    """SIGKILL a worker process while the first try of ``a_slow`` runs: the process
    running it, or the other one once it is idle (every ``b_*`` done). ``killed`` gets
    the id of the try that was running."""

    def kill() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = {r["task_id"]: r for r in _ti_rows(engine)}
            slow = rows["a_slow"]
            others_done = all(r["state"] == "success" for t, r in rows.items() if t != "a_slow")
            if slow["state"] == "running" and (the_busy_one or others_done):
                victims = [p for p in _worker_processes() if (p == slow["pid"]) == the_busy_one]
                os.kill(victims[0], signal.SIGKILL)
                killed.append(slow["id"])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    return killer


@only("sqlite")
@pytest.mark.parametrize("the_busy_one", [False, True], ids=["idle", "busy"])
def test_a_worker_process_killed_mid_run_does_not_stop_the_run(
    live_server: LiveServer,
    settings: Settings,
    sync_engine: sa.Engine,
    tmp_path: Path,
    the_busy_one: bool,
) -> None:
    """kill -9 of a worker process: the run still finishes, and a replacement process
    starts. Killing the idle one, the other carries on (``a_slow``'s retry runs after
    the kill). Killing the busy one, the try it was running is ended at once (the
    executor sees its process die) and retried, and the killed try's late writes get
    410."""
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    (dags_folder / "slow.py").write_text(SLOW_DAG)
    run = seed_dag_run(settings, load_dags(dags_folder)["slow"])
    killed: list[object] = []
    killer = _kill_when_slow_runs(sync_engine, the_busy_one=the_busy_one, killed=killed)
    final = run_with_scheduler(_local(settings, live_server.base_url, dags_folder, workers=2), run)
    killer.join(timeout=5)
    states = {r["task_id"]: (r["state"], r["try_number"]) for r in _ti_rows(sync_engine)}
    expected = {"a_slow": ("success", 2)}
    expected.update({f"b_{n}": ("success", 1) for n in range(4)})
    assert states == expected
    assert final.state == "success"
    old = history_rows(sync_engine, killed[0])
    # Try 1 went up_for_retry either way: the executor ended it when its process died,
    # or it failed on its own (the dag's task fails its first try).
    assert [(h["try_number"], h["state"]) for h in old] == [(1, "up_for_retry")]
    if the_busy_one:
        token = TokenSigner(settings).mint(killed[0])  # type: ignore[arg-type]
        with live_server.client() as client:
            late = client.put(
                f"/execution/task-instances/{killed[0]}/rtif", json={"late": 1}, headers=auth(token)
            )
        assert late.status_code == 410, late.text


def _ti_rows(engine: sa.Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(models.task_instance))]
