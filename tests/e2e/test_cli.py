"""The ``taskexec`` command, run as users run it: runs create, serve --workers, demo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from taskexec import schemas
from taskexec.config import Settings
from taskexec.race import bench

from conftest import TEST_SECRET
from helpers import auth, check_race, rtif_rows


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "TASKEXEC_DATABASE_URL": settings.effective_database_url,
        "TASKEXEC_DATA_DIR": str(settings.data_dir),
        "TASKEXEC_JWT_SECRET": TEST_SECRET,
    }


def _taskexec(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskexec", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _create_run(settings: Settings, *args: str) -> schemas.CreatedDagRun:
    proc = _taskexec("runs", "create", "--dag-id", "cli_dag", *args, env=_env(settings))
    assert proc.returncode == 0, proc.stderr
    return schemas.CreatedDagRun.model_validate_json(proc.stdout)


def test_runs_create_prints_ids_and_tokens(settings: Settings, sync_engine: sa.Engine) -> None:
    created = _create_run(settings, "--tasks", "2", "--map", "3", "--conf", '{"k": 1}')
    assert len(created.task_instances) == 6
    assert sorted((t.task_id, t.map_index) for t in created.task_instances) == [
        (f"task_{n}", m) for n in range(2) for m in range(3)
    ]
    assert all(t.id.version == 7 and t.token for t in created.task_instances)
    with sync_engine.connect() as conn:
        states = conn.execute(sa.text("SELECT state FROM task_instance")).scalars().all()
        conf = conn.execute(sa.text("SELECT conf FROM dag_run")).scalar_one()
    assert states == ["queued"] * 6
    assert json.loads(conf) if isinstance(conf, str) else conf == {"k": 1}


def test_runs_create_refuses_a_duplicate_run_id(settings: Settings) -> None:
    _create_run(settings, "--tasks", "1", "--run-id", "r1")
    proc = _taskexec(
        "runs",
        "create",
        "--dag-id",
        "cli_dag",
        "--tasks",
        "1",
        "--run-id",
        "r1",
        env=_env(settings),
    )
    assert proc.returncode == 1
    assert "already exists" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """``taskexec serve --workers 2`` as a real subprocess."""
    with bench.serve(settings, workers=2) as (port, _proc):
        yield f"http://127.0.0.1:{port}"


def test_race_against_two_server_processes(
    served: str, settings: Settings, sync_engine: sa.Engine, backend: str
) -> None:
    """The same race, with writers spread over two server processes (on SQLite this is
    where busy_timeout, not the in-process queue, keeps writers waiting)."""
    run = _create_run(settings, "--tasks", "15")
    check_race(served, run, sync_engine, f"{backend}, serve --workers 2", writers=32)


def test_served_app_round_trip(served: str, settings: Settings, sync_engine: sa.Engine) -> None:
    ti = _create_run(settings, "--tasks", "1").task_instances[0]
    with httpx.Client(base_url=served) as client:
        put = client.put(
            f"/execution/task-instances/{ti.id}/rtif", json={"x": [1]}, headers=auth(ti.token)
        )
        got = client.get(f"/execution/task-instances/{ti.id}/rtif", headers=auth(ti.token))
    assert put.status_code == 201 and got.json()["rendered_fields"] == {"x": [1]}
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"x": [1]}]


@pytest.mark.sqlite
def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKEXEC_")}
    env["TASKEXEC_DATA_DIR"] = str(tmp_path / "home")
    env["COLUMNS"] = "120"
    proc = _taskexec("demo", "--workers", "2", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"task instances success\s+│\s+204\b", proc.stdout), proc.stdout
    assert re.search(r"RTIF non-2xx answers \(expected 0\)\s+│\s+0\b", proc.stdout)
    sent = re.search(r"RTIF writes sent\s+│\s+(\d+)", proc.stdout)
    assert sent and int(sent.group(1)) == 2 * 205  # every PUT twice; flaky wrote twice
    assert (tmp_path / "home" / "taskexec.db").exists()
    secret = tmp_path / "home" / "jwt_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.read_text().strip() not in proc.stdout + proc.stderr


SMALL_DAG = """
from taskexec.sdk import BashTask, Dag, PythonTask, TaskFailedError


def boom():
    raise TaskFailedError("always fails")


with Dag("small", params={"who": "world"}):
    BashTask("hello", bash_command="echo hello {{ params.who }} {{ item }}").expand(["a", "b"])

with Dag("broken"):
    PythonTask("boom", python_callable=boom)
"""


@pytest.mark.sqlite
def test_trigger_run_and_logs_commands(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "small.py").write_text(SMALL_DAG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKEXEC_")}
    env.update(
        TASKEXEC_DATA_DIR=str(tmp_path / "home"),
        TASKEXEC_DAGS_FOLDER=str(dags),
        TASKEXEC_API_URL=f"http://127.0.0.1:{bench.free_port()}",  # nothing there: run starts one
        COLUMNS="120",
    )
    try:
        _trigger_run_and_logs(env)
    finally:
        # `run` started taskexec standalone in the background: it outlives the command.
        stopped = _taskexec("standalone", "--stop", env=env)
        assert "stopped taskexec standalone" in stopped.stdout, stopped.stdout + stopped.stderr


def _trigger_run_and_logs(env: dict[str, str]) -> None:
    triggered = _taskexec("trigger", "small", "--conf", '{"who": "conf"}', env=env)
    assert triggered.returncode == 0, triggered.stderr
    assert json.loads(triggered.stdout)["task_instances"] == 2

    ran = _taskexec("run", "small", "--workers", "2", "--conf", '{"who": "there"}', env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "started taskexec standalone in the background" in ran.stdout
    assert re.search(r"success\s+│\s+2\b", ran.stdout), ran.stdout
    run_id = re.search(r"run (manual__\S+): 2 task instances", ran.stdout)
    assert run_id is not None
    logs = _taskexec("logs", "small", run_id.group(1), "hello", "--map-index", "1", env=env)
    assert logs.returncode == 0, logs.stderr
    assert "hello there b" in logs.stdout

    failed = _taskexec("run", "broken", "--workers", "1", env=env)
    assert failed.returncode == 1
    assert "1 task instance(s) failed" in failed.stderr
    unknown = _taskexec("run", "nope", env=env)
    assert unknown.returncode == 1 and "no dag 'nope'" in unknown.stderr
