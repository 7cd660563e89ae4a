"""A try the server ends while it runs (cancelled, cleared, timed out) is stopped by the
runner: the task is interrupted and the runner reports nothing more."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.sdk import BashTask, Dag, rendering
from taskexec.sdk.client import RetryPolicy
from taskexec.sdk.runner import RunnerConfig, run_task_instance
from taskexec.services import run_actions

from conftest import LiveServer
from helpers import seed, ti_row


def _when_running(engine: sa.Engine, task_id: str, action: object) -> threading.Thread:
    def wait_then_act() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = ti_row(engine, task_id=task_id)
            if row is not None and row["state"] == "running":
                asyncio.run(action())  # type: ignore[operator]
                return
            time.sleep(0.05)

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


async def _end_the_try(settings: Settings, run_id: str, how: str) -> None:
    async with db_engine.open_database(settings) as db:
        if how == "cancel":
            await db.write(run_actions.cancel_run, dag_id="test_dag", run_id=run_id)
        else:
            await db.write(run_actions.clear_task_instances, dag_id="test_dag", run_id=run_id)


@pytest.mark.parametrize("how", ["cancel", "clear"])
def test_a_try_the_server_ends_is_stopped(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, tmp_path: Path, how: str
) -> None:
    run = seed(settings)
    ti = run.task_instances[0]
    with Dag("test_dag") as dag:
        BashTask("task_0", bash_command="sleep 60")

    async def end_the_try() -> None:
        await _end_the_try(settings, run.run_id, how)

    config = RunnerConfig(
        api_url=live_server.base_url,
        logs_dir=tmp_path,
        heartbeat_interval=0.2,
        retry=RetryPolicy(attempts=1),
    )
    acting = _when_running(sync_engine, "task_0", end_the_try)
    started = time.monotonic()
    result = run_task_instance(ti.id, ti.token, {"test_dag": dag}, config)
    elapsed = time.monotonic() - started
    acting.join(timeout=5)
    # Cancelled: the try was failed (409 on the next heartbeat); cleared: it was
    # replaced by a new try (410).
    assert result.outcome == ("stopped" if how == "cancel" else "stale"), result
    assert elapsed < 15, elapsed  # not the task's 60 s
    log = next(tmp_path.rglob("attempt=1.log")).read_text()
    assert ("stopped:" if how == "cancel" else "newer try replaced") in log
    if how == "cancel":
        row = ti_row(sync_engine, id=ti.id)
        assert row is not None and row["state"] == "failed"


@pytest.mark.parametrize("how", ["cancel", "clear"])
def test_a_try_ended_before_its_fields_are_stored_is_stopped(
    live_server: LiveServer,
    settings: Settings,
    sync_engine: sa.Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """The run cancelled (or the try cleared) after the try started but before it stored
    its rendered fields: that write's 409 (410) stops the try as a heartbeat's would. It
    is not the task failing, and the runner reports nothing more."""
    run = seed(settings)
    ti = run.task_instances[0]
    with Dag("test_dag") as dag:
        BashTask("task_0", bash_command="echo never")
    render = rendering.render_task

    def end_then_render(task: Any, context: Any) -> Any:
        asyncio.run(_end_the_try(settings, run.run_id, how))
        return render(task, context)

    monkeypatch.setattr(rendering, "render_task", end_then_render)
    config = RunnerConfig(
        api_url=live_server.base_url, logs_dir=tmp_path, retry=RetryPolicy(attempts=1)
    )
    result = run_task_instance(ti.id, ti.token, {"test_dag": dag}, config)
    assert result.outcome == ("stopped" if how == "cancel" else "stale"), result
    log = next(tmp_path.rglob("attempt=1.log")).read_text()
    assert "never" not in log.replace("echo never", "")
    # Cancelled: the try stays failed, as the cancel left it (the runner reported no
    # outcome of its own); cleared: a new try took its place.
    row = ti_row(sync_engine, task_id="task_0")
    assert row is not None
    assert (row["id"], row["state"]) == (ti.id, "failed") if how == "cancel" else row["id"] != ti.id
