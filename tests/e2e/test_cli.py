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


def _as_make_demo_runs_it(env: dict[str, str]) -> tuple[list[str], Path, dict[str, str]]:
    """The command, directory and environment of ``make demo``: the virtualenv's script by
    its path from the virtualenv's parent, that bin/ not on PATH, stdout not a terminal
    (Rich's 80 columns). Without a script beside the interpreter: ``python -m``."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    path = env.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in path if p and Path(p).resolve() != bin_dir.resolve())
    if not (bin_dir / "taskexec").is_file():
        return [sys.executable, "-m", "taskexec"], Path.cwd(), env
    return [f"{bin_dir.parent.name}/bin/taskexec"], bin_dir.parent.parent, env


@pytest.mark.sqlite
def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKEXEC_")}
    env["TASKEXEC_DATA_DIR"] = str(tmp_path / "home")
    command, cwd, env = _as_make_demo_runs_it(env)
    proc = subprocess.run(
        [*command, "demo", "--workers", "2"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"task instances success\s+│\s+204\b", proc.stdout), proc.stdout
    assert re.search(r"RTIF non-2xx answers \(expected 0\)\s+│\s+0\b", proc.stdout)
    _check_demo_hints(proc.stdout, cwd, env)


def _check_demo_hints(stdout: str, cwd: Path, env: dict[str, str]) -> None:
    """The run id is whole on its line, and the hinted commands run as printed."""
    lines = stdout.splitlines()
    triggered = [line for line in lines if line.startswith("triggered example_rendered_fields")]
    found = re.fullmatch(
        r"triggered example_rendered_fields run (\S+): 204 task instances", triggered[0]
    )
    assert found, triggered
    run_id = found.group(1)
    serve = [line.strip() for line in lines if line.startswith("  ") and line.endswith(" serve")]
    logs = [line.strip() for line in lines if " logs example_rendered_fields " in line]
    assert len(serve) == 1 and len(logs) == 1, stdout
    assert any(line.endswith(f"/runs/{run_id}") for line in lines), stdout
    assert f" {run_id} transform " in logs[0]

    def shell(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )

    help_proc = shell(f"{serve[0]} --help")
    assert help_proc.returncode == 0 and "--port" in help_proc.stdout, help_proc.stderr
    logs_proc = shell(logs[0])
    assert logs_proc.returncode == 0, logs_proc.stderr
    assert "transforming shard 0" in logs_proc.stdout, logs_proc.stdout
