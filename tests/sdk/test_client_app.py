"""The client and the runner against the real app: in-process (ASGI, through Starlette's
TestClient) and over a live server, on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from taskexec.config import Settings
from taskexec.race import proxy
from taskexec.sdk import BashTask, Dag, PythonTask, TaskFailedError
from taskexec.sdk.client import Client, RetryPolicy, ServerResponseError
from taskexec.sdk.runner import RunnerConfig, run_task_instance
from taskexec.server.app import create_app

from conftest import LiveServer
from helpers import rtif_rows, seed, ti_row

NO_RETRY = RetryPolicy(attempts=1)


@pytest.fixture
def asgi(settings: Settings) -> Iterator[TestClient]:
    """The app in-process; the context manager runs its lifespan."""
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        yield client


def _dags(fail: bool = False) -> dict[str, Dag]:
    def body(context: dict[str, object]) -> None:
        if fail:
            raise TaskFailedError("boom")
        print("ran try", context["try_number"])

    with Dag("test_dag") as dag:
        BashTask("task_0", bash_command="echo {{ run_id }} {{ params.x }}", env={"K": "{{ ds }}"})
        PythonTask("task_1", python_callable=body, op_kwargs={}, retries=0)
    dag.params["x"] = "X"
    return {"test_dag": dag}


def test_operations_in_process(asgi: TestClient, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    with Client("http://testserver", ti.token, retry=NO_RETRY, http=asgi) as client:
        ops = client.task_instances
        assert ops.start(ti.id, hostname="h", pid=1)["try_number"] == 1
        ops.heartbeat(ti.id, hostname="h", pid=1)
        ops.set_rtif(ti.id, {"f": [1, 2]})
        assert ops.get_rtif(ti.id)["rendered_fields"] == {"f": [1, 2]}
        with pytest.raises(ServerResponseError) as info:
            ops.start(ti.id, hostname="other", pid=2)
        assert (info.value.status, info.value.reason) == (409, "invalid_state")
        assert info.value.detail["previous_state"] == "running"
        assert ops.finish(ti.id, "success") == 204
        assert ops.finish(ti.id, "success") == 200


def test_a_write_repeated_while_in_flight_gets_two_201s(
    live_server: LiveServer, settings: Settings
) -> None:
    """The client through the race's recording proxy, which sends each rendered-fields
    PUT twice at once, as a client retrying after a timeout would."""
    ti = seed(settings).task_instances[0]
    with (
        proxy.recording_proxy(live_server.base_url, duplicate=True) as (url, writes),
        Client(url, ti.token, retry=NO_RETRY) as client,
    ):
        client.task_instances.start(ti.id, hostname="h", pid=1)
        client.task_instances.set_rtif(ti.id, {"f": [1, 2]})
        assert client.task_instances.get_rtif(ti.id)["rendered_fields"] == {"f": [1, 2]}
    assert (writes.sent, writes.duplicates, writes.non_2xx) == (2, 1, 0)


def test_runner_in_process(
    asgi: TestClient, settings: Settings, sync_engine: sa.Engine, tmp_path: Path
) -> None:
    run = seed(settings, tasks=2)
    config = RunnerConfig(api_url="http://testserver", logs_dir=tmp_path, retry=NO_RETRY)
    dags = _dags()
    results = [
        run_task_instance(ti.id, ti.token, dags, config, http=asgi) for ti in run.task_instances
    ]
    assert [r.outcome for r in results] == ["success", "success"]
    stored = {r["task_id"]: r["rendered_fields"] for r in rtif_rows(sync_engine)}
    assert stored["task_0"]["bash_command"] == f"echo {run.run_id} X"
    # The renderers travel with the fields (header), stored by the same upsert.
    meta = {r["task_id"]: r["field_meta"] for r in rtif_rows(sync_engine)}
    assert meta["task_0"] == {"bash_command": {"renderer": "bash"}, "env": {"renderer": "json"}}
    log = next(tmp_path.rglob("task_id=task_0/map_index=-1/attempt=1.log")).read_text()
    assert run.run_id in log and "finishing as success" in log


def test_runner_against_live_server_fails_and_logs(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, tmp_path: Path
) -> None:
    ti = seed(settings, tasks=2).task_instances[1]  # task_1: the python task
    config = RunnerConfig(api_url=live_server.base_url, logs_dir=tmp_path, retry=NO_RETRY)
    result = run_task_instance(ti.id, ti.token, _dags(fail=True), config)
    assert result.outcome == "failed"
    row = ti_row(sync_engine, id=ti.id)
    assert row is not None and row["state"] == "failed"
    log = next(tmp_path.rglob("attempt=1.log")).read_text()
    assert "TaskFailedError: boom" in log


def test_template_error_fails_cleanly(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, tmp_path: Path
) -> None:
    ti = seed(settings).task_instances[0]
    with Dag("test_dag") as dag:
        BashTask("task_0", bash_command="echo {{ missing_variable }}")
    config = RunnerConfig(api_url=live_server.base_url, logs_dir=tmp_path, retry=NO_RETRY)
    result = run_task_instance(ti.id, ti.token, {"test_dag": dag}, config)
    assert result.outcome == "failed"
    assert "missing_variable" in result.message
    row = ti_row(sync_engine, id=ti.id)
    assert row is not None and row["state"] == "failed"
    assert rtif_rows(sync_engine) == []
    assert "template error" in next(tmp_path.rglob("attempt=1.log")).read_text()
