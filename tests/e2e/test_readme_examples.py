"""The README's code blocks marked ``<!-- runnable -->`` run as pasted.

Each marked block is a complete dag file (the convention is in DEVELOPERS.md): every one
loads on its own, and all of them, in one dags folder, run to success through
``taskexec run`` on the embedded SQLite default, as a new user runs them (``run`` starts
``taskexec standalone`` in the background; the test stops it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from taskexec.cli import serve
from taskexec.config import Settings
from taskexec.db import models
from taskexec.race import bench
from taskexec.sdk import dag as sdk_dag

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- runnable -->"
# The secret the README's first example reads from the environment (or its default).
PASSWORD = "not-a-real-password"


def runnable_blocks(text: str) -> dict[str, str]:
    """``readme_<line>`` → the code of each fenced block right after a marker."""
    lines = text.splitlines()
    blocks: dict[str, str] = {}
    for n, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[n + 1] if n + 1 < len(lines) else ""
        where = f"README.md:{n + 1}"
        assert fence == "```python", f"{where}: {MARKER} must sit right above a ```python fence"
        end = lines.index("```", n + 2)
        blocks[f"readme_{n + 3}"] = "\n".join(lines[n + 2 : end]) + "\n"
    return blocks


def write_dags(folder: Path, blocks: dict[str, str]) -> Path:
    """Each block as ``<name>.py`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, code in blocks.items():
        (folder / f"{name}.py").write_text(code)
    return folder


@pytest.fixture
def blocks() -> dict[str, str]:
    found = runnable_blocks(README.read_text())
    # "Writing and running dags" has two dag examples; a marker lost in an edit fails here.
    assert len(found) >= 2, f"expected the README's dag examples to be marked {MARKER}"
    return found


def test_the_marker_convention_is_checked() -> None:
    text = "intro\n<!-- runnable -->\n```python\nx = 1\n```\n<!-- runnable -->\n```sh\nls\n```\n"
    with pytest.raises(AssertionError, match=r"README.md:6: .* ```python fence"):
        runnable_blocks(text)
    assert runnable_blocks(text.split("<!-- runnable -->\n```sh")[0]) == {"readme_4": "x = 1\n"}


def test_each_runnable_block_is_a_dag_file_that_loads(
    blocks: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loading registers the examples' secrets: keep them out of this process's masker.
    monkeypatch.setattr(sdk_dag, "_secrets", [])
    seen: dict[str, str] = {}
    for name, code in blocks.items():
        dags, problems = sdk_dag.load_dag_files(write_dags(tmp_path / name, {name: code}))
        sys.modules.pop(f"taskexec_dags_{name}", None)
        assert problems == {}, f"{name} does not load: {problems}"
        assert dags, f"{name} defines no dag"
        for dag_id in dags:
            # They share a dags folder below (and in a user's): one id must not hide another.
            assert dag_id not in seen, f"{name} and {seen[dag_id]} both define {dag_id!r}"
            seen[dag_id] = name
    assert sdk_dag.registered_secrets() == (PASSWORD,)


def _env(home: Path, dags: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKEXEC_")}
    env.pop("ETL_PASSWORD", None)
    env.update(
        TASKEXEC_DATA_DIR=str(home),
        TASKEXEC_DAGS_FOLDER=str(dags),
        TASKEXEC_API_URL=f"http://127.0.0.1:{bench.free_port()}",
        TASKEXEC_LOCAL_WORKERS="2",
        COLUMNS="200",
    )
    return env


def _taskexec(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskexec", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    # Not our child (``run`` started it): once it has exited it may linger as a zombie.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    return False


@contextlib.contextmanager
def _stopping_standalone(home: Path, env: dict[str, str]) -> Iterator[None]:
    """On the way out, stop the ``taskexec standalone`` that ``run`` started."""
    try:
        yield
    finally:
        pid_file = home / serve.PID_FILE
        pid = int(pid_file.read_text()) if pid_file.is_file() else None
        _taskexec("standalone", "--stop", env=env, timeout=30)
        deadline = time.monotonic() + 15
        while pid is not None and not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _states_and_fields(home: Path) -> tuple[dict[str, set[str]], list[tuple[str, Any]]]:
    """Per dag, its task instances' states; every task's rendered fields."""
    engine = sa.create_engine(Settings(data_dir=home).effective_database_url)
    ti, rtif = models.task_instance, models.rendered_task_instance_fields
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(ti.c.dag_id, ti.c.state)).all()
            fields = conn.execute(sa.select(rtif.c.task_id, rtif.c.rendered_fields)).all()
    finally:
        engine.dispose()
    states: dict[str, set[str]] = {}
    for dag_id, state in rows:
        states.setdefault(dag_id, set()).add(state)
    return states, [(task_id, value) for task_id, value in fields]


@pytest.mark.sqlite
def test_the_readme_dags_run_to_success(
    blocks: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, dags = tmp_path / "home", write_dags(tmp_path / "dags", blocks)
    monkeypatch.setattr(sdk_dag, "_secrets", [])
    dag_ids = sorted(sdk_dag.load_dags(dags))
    for name in blocks:
        sys.modules.pop(f"taskexec_dags_{name}", None)
    env = _env(home, dags)
    with _stopping_standalone(home, env):
        for dag_id in dag_ids:
            proc = _taskexec("run", dag_id, env=env, timeout=45)
            log = home / "standalone.log"
            standalone = log.read_text()[-3000:] if log.is_file() else ""
            assert proc.returncode == 0, proc.stdout + proc.stderr + standalone
    states, fields = _states_and_fields(home)
    assert states == {dag_id: {"success"} for dag_id in dag_ids}
    # The first example's secret reaches the worker's environment, never the stored fields.
    assert [value["env"]["DB_PASSWORD"] for task, value in fields if task == "extract"] == ["***"]
    assert not [task for task, value in fields if PASSWORD in json.dumps(value)]
