"""A try the server ends while it runs (cancelled, cleared, timed out) is stopped by the
runner: the task is interrupted and the runner reports nothing more."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.sdk import BashTask, Dag
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


@pytest.mark.parametrize("how", ["cancel", "clear"])
def test_a_try_the_server_ends_is_stopped(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, tmp_path: Path, how: str
) -> None:
    run = seed(settings)
    ti = run.task_instances[0]
    with Dag("test_dag") as dag:
        BashTask("task_0", bash_command="sleep 60")

    async def end_the_try() -> None:
        async with db_engine.open_database(settings) as db:
            if how == "cancel":
                await db.write(run_actions.cancel_run, dag_id="test_dag", run_id=run.run_id)
            else:
                await db.write(
                    run_actions.clear_task_instances, dag_id="test_dag", run_id=run.run_id
                )

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
