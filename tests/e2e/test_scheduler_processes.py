"""Any process may die: ``kill -9`` of ``taskexec run`` loses nothing, and of the active
scheduler, another takes over within two intervals without ever running a task instance
twice at once. Real processes (``taskexec serve``, ``taskexec scheduler``), every
backend."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import models
from taskexec.race import bench

from conftest import TEST_SECRET
from helpers import report

pytestmark = pytest.mark.fault

INTERVAL = 0.5

DAG = """
import time
from taskexec.sdk import Dag, PythonTask, chain

def nap():
    time.sleep(0.3)

with Dag("{dag_id}"):
    {body}
"""


def _env(settings: Settings, dags: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKEXEC_")}
    env.update(
        TASKEXEC_DATABASE_URL=settings.effective_database_url,
        TASKEXEC_DATA_DIR=str(settings.data_dir),
        TASKEXEC_JWT_SECRET=TEST_SECRET,
        TASKEXEC_DAGS_FOLDER=str(dags),
        TASKEXEC_API_URL=f"http://127.0.0.1:{port}",
        TASKEXEC_SCHEDULER_INTERVAL_SECONDS=str(INTERVAL),
        TASKEXEC_LOCAL_WORKERS="2",
        TASKEXEC_HEARTBEAT_INTERVAL_SECONDS="1",
        COLUMNS="120",
        **extra,
    )
    return env


def _dags(tmp_path: Path, dag_id: str, body: str) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir(exist_ok=True)
    (folder / f"{dag_id}.py").write_text(textwrap.dedent(DAG.format(dag_id=dag_id, body=body)))
    return folder


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskexec", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _run_state(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        state: str | None = conn.execute(sa.select(models.dag_run.c.state)).scalar()
    return state


def _holder(engine: sa.Engine) -> str | None:
    """The active scheduler: the lease's holder while it has not expired."""
    lease = models.scheduler_lease
    with engine.connect() as conn:
        row = conn.execute(sa.select(lease.c.holder, lease.c.expires_at)).first()
    if row is None or row.expires_at <= dt.datetime.now(dt.UTC):
        return None
    holder: str = row.holder
    return holder


def test_kill_9_of_taskexec_run_loses_nothing(
    settings: Settings, sync_engine: sa.Engine, tmp_path: Path
) -> None:
    dags = _dags(
        tmp_path, "chained", 'chain(*[PythonTask(f"t{n}", python_callable=nap) for n in range(6)])'
    )
    port = bench.free_port()
    env = _env(settings, dags, port)
    with _process(["serve", "--port", str(port)], env, tmp_path / "serve.log"):
        _wait_for(lambda: _serving(port), 30, "the server")
        with _process(["run", "chained"], env, tmp_path / "run.log") as run:
            _wait_for(lambda: _run_state(sync_engine) == "running", 30, "the run to start")
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=10)
        _wait_for(lambda: _run_state(sync_engine) == "success", 60, "the run to succeed")
    with sync_engine.connect() as conn:
        states = conn.execute(sa.select(models.task_instance.c.state)).scalars().all()
    assert states == ["success"] * 6


def _overlapping_tries(engine: sa.Engine) -> list[tuple[str, int]]:
    """Task instances that ever had two tries running at the same time."""
    with engine.connect() as conn:
        rows = [
            *conn.execute(sa.select(models.task_instance)).all(),
            *conn.execute(sa.select(models.task_instance_history)).all(),
        ]
    by_key: dict[tuple[str, int], list[tuple[Any, Any]]] = {}
    for r in rows:
        if r.start_date is not None:
            by_key.setdefault((r.task_id, r.map_index), []).append((r.start_date, r.end_date))
    overlapping = []
    for key, spans in by_key.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            if end is None or start < end:
                overlapping.append(key)
    return overlapping


def test_kill_9_of_the_active_scheduler(
    settings: Settings, sync_engine: sa.Engine, tmp_path: Path, backend: str
) -> None:
    body = 'PythonTask("work", python_callable=nap, retries=2, retry_delay=0).expand(range(40))'
    dags = _dags(tmp_path, "wide", body)
    port = bench.free_port()
    # Its workers live on: they finish the try they run (and then exit, their input
    # closed). A worker that dies too is reaped by the heartbeat timeout, short here.
    env = _env(
        settings,
        dags,
        port,
        TASKEXEC_SCHEDULER_IN_SERVER="false",
        TASKEXEC_TASK_HEARTBEAT_TIMEOUT_SECONDS="5",
    )
    with (
        _process(["serve", "--port", str(port)], env, tmp_path / "serve.log"),
        _process(["scheduler"], env, tmp_path / "scheduler-a.log") as a,
        _process(["scheduler"], env, tmp_path / "scheduler-b.log") as b,
    ):
        _wait_for(lambda: _serving(port) and _holder(sync_engine) is not None, 30, "a leader")
        trigger = subprocess.run(
            [sys.executable, "-m", "taskexec", "trigger", "wide"], env=env, capture_output=True
        )
        assert trigger.returncode == 0, trigger.stderr
        _wait_for(lambda: _run_state(sync_engine) == "running", 30, "the run to start")
        time.sleep(1.0)  # tries running and queued on the leader's workers
        active = _holder(sync_engine)
        assert active is not None
        victim = a if f":{a.pid}:" in active else b
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _wait_for(lambda: _holder(sync_engine) not in (None, active), 10, "a new leader")
        takeover = time.monotonic() - killed_at
        _wait_for(lambda: _run_state(sync_engine) == "success", 90, "the run to succeed")
    report(
        f"[{backend}] active scheduler killed: another took over in {takeover * 1000:.0f} ms "
        f"(interval {INTERVAL * 1000:.0f} ms)"
    )
    assert takeover <= 2 * INTERVAL + 0.25
    assert _overlapping_tries(sync_engine) == []
