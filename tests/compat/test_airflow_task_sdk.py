"""Airflow's own task SDK client (``apache-airflow-task-sdk`` from PyPI, in a virtualenv
of its own so that its dependencies never mix with taskexec's) drives whole tries
against taskexec: start (its TIRunContext parses), heartbeat, set_rtif, succeed; a
retry, after which the old try gets 410; a failure; another task instance's id with a
token (403). On every database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from taskexec.config import Settings

from conftest import LiveServer
from helpers import rtif_rows, seed_run, ti_row

pytestmark = pytest.mark.compat

SCRIPT = Path(__file__).with_name("airflow_client_script.py")


def test_airflow_task_sdk_client_runs_whole_tries(
    sdk_python: Path, live_server: LiveServer, settings: Settings, sync_engine: sa.Engine,
    tmp_path: Path,
) -> None:  # fmt: skip
    made = seed_run(settings, tasks=3, max_tries=1)
    tis = [{"id": str(t.id), "token": t.token} for t in made.task_instances]
    (tmp_path / "tis.json").write_text(json.dumps(tis))
    proc = subprocess.run(
        [
            str(sdk_python),
            str(SCRIPT),
            f"{live_server.base_url}/execution/",
            str(tmp_path / "tis.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["context"]["dag_id"] == made.dag_id and out["context"]["max_tries"] == 1
    assert out["context"]["should_retry"] is True
    assert out["heartbeat"] == {"ok": True, "result": "NoneType"}
    assert out["set_rtif"] == {"ok": True, "result": "OKResponse"}
    assert out["succeed"]["ok"]
    assert out["start_again"] == {"status": 409, "reason": "invalid_state"}
    assert out["rtif_after_end"] == {"status": 409, "reason": "try_ended"}
    assert out["retry"]["ok"]
    assert out["stale_heartbeat"] == {"status": 410, "reason": "stale_try"}
    assert out["stale_rtif"] == {"status": 410, "reason": "stale_try"}
    assert out["fail"]["ok"]
    assert out["other_ti"] == {"status": 403, "reason": "token_subject_mismatch"}
    ok, retried, failed = made.task_instances
    assert ti_row(sync_engine, id=ok.id)["state"] == "success"  # type: ignore[index]
    assert ti_row(sync_engine, id=failed.id)["state"] == "failed"  # type: ignore[index]
    assert ti_row(sync_engine, task_id=retried.task_id)["try_number"] == 2  # type: ignore[index]
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"sql": "SELECT 1"}]
