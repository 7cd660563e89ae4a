"""Cancelling runs and clearing task instances through /api/v1, on every backend."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import models

from helpers import auth, end_run, history_rows, seed, ti_row

RUNNER = {"hostname": "worker-1", "pid": 4242}
API = "/api/v1/dags/test_dag/runs"


def _ti(ti_id: object, action: str) -> str:
    return f"/execution/task-instances/{ti_id}/{action}"


def _run_state(engine: sa.Engine, run_id: str) -> str:
    with engine.connect() as conn:
        state: str = conn.execute(
            sa.select(models.dag_run.c.state).where(models.dag_run.c.run_id == run_id)
        ).scalar_one()
    return state


def test_cancel_stops_the_running_and_skips_the_rest(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    run = seed(settings, tasks=3)
    first = run.task_instances[0]
    assert client.patch(_ti(first.id, "run"), json=RUNNER, headers=auth(first.token)).is_success

    resp = client.patch(f"{API}/{run.run_id}", json={"state": "failed"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "dag_id": "test_dag",
        "run_id": run.run_id,
        "changed": True,
        "tries_failed": 1,
        "tries_skipped": 2,
    }
    assert _run_state(sync_engine, run.run_id) == "failed"
    states = {t.task_id: ti_row(sync_engine, id=t.id)["state"] for t in run.task_instances}  # type: ignore[index]
    assert states == {"task_0": "failed", "task_1": "skipped", "task_2": "skipped"}
    # The running try is told to stop by its next call...
    beat = client.put(_ti(first.id, "heartbeat"), json=RUNNER, headers=auth(first.token))
    assert beat.status_code == 409 and beat.json()["detail"]["reason"] == "not_running"
    # ...and a repeat of the cancel is harmless.
    again = client.patch(f"{API}/{run.run_id}", json={"state": "failed"})
    assert again.status_code == 200 and again.json()["changed"] is False


def test_a_succeeded_run_cannot_be_cancelled(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    run = seed(settings)
    end_run(settings, sync_engine, run.run_id, "success")
    resp = client.patch(f"{API}/{run.run_id}", json={"state": "failed"})
    assert resp.status_code == 409 and resp.json()["detail"]["reason"] == "invalid_state"


def test_clear_gives_new_tries_and_queues_the_run(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    run = seed(settings, tasks=2, max_tries=1)
    for ti in run.task_instances:
        client.patch(_ti(ti.id, "run"), json=RUNNER, headers=auth(ti.token))
        client.patch(_ti(ti.id, "state"), json={"state": "success"}, headers=auth(ti.token))
    done = run.task_instances[0]

    resp = client.post(f"{API}/{run.run_id}/clear", json={"task_ids": ["task_0"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["cleared"] == 1
    new = ti_row(sync_engine, task_id="task_0")
    assert new is not None and str(new["id"]) == body["task_instance_ids"][0]
    # A new try with no status. A bare run has no dag spec to give the task its retries
    # back from (a triggered run does: max_tries = this try + the task's retries).
    assert (new["state"], new["try_number"], new["max_tries"]) == (None, 2, 1)
    assert [h["state"] for h in history_rows(sync_engine, done.id)] == ["success"]
    assert _run_state(sync_engine, run.run_id) == "queued"
    untouched = ti_row(sync_engine, task_id="task_1")
    assert untouched is not None and untouched["state"] == "success"
    # The cleared try's own calls are stale now.
    stale = client.put(_ti(done.id, "rtif"), json={"x": 1}, headers=auth(done.token))
    assert stale.status_code == 410


def test_clear_without_task_ids_clears_every_started_task_instance(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    run = seed(settings, tasks=3)
    started = run.task_instances[0]
    client.patch(_ti(started.id, "run"), json=RUNNER, headers=auth(started.token))
    resp = client.post(f"{API}/{run.run_id}/clear", json={})
    # queued tries are cleared too: a worker about to start one gets 410 instead.
    assert resp.status_code == 200 and resp.json()["cleared"] == 3


def test_bad_requests(client: httpx.Client, settings: Settings) -> None:
    run = seed(settings)
    text = client.patch(
        f"{API}/{run.run_id}",
        content=b'{"state": "failed"}',
        headers={"Content-Type": "text/plain"},
    )
    assert text.status_code == 415
    assert text.json()["detail"]["reason"] == "unsupported_media_type"
    other = client.patch(f"{API}/{run.run_id}", json={"state": "success"})
    assert other.status_code == 422
    missing_run = client.patch(f"{API}/nope", json={"state": "failed"})
    assert missing_run.json()["detail"]["reason"] == "dag_run_not_found"
    missing_dag = client.post("/api/v1/dags/nope/runs/x/clear", json={})
    assert missing_dag.json()["detail"]["reason"] == "dag_not_found"
