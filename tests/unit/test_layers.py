"""The worker side carries no server code: importing the SDK, and running a task through
the runner, loads neither SQLAlchemy nor FastAPI (``make lint`` checks the imports
statically; this checks what a worker process really loads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SERVER_PACKAGES = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn")

# Runs one try of a bash task end to end against a stand-in Execution API (httpx's
# MockTransport), then reports what the process has imported.
RUN_A_TASK = r"""
import json, pathlib, sys, tempfile, uuid

import httpx

import taskexec.sdk
from taskexec.sdk.client import RetryPolicy
from taskexec.sdk import BashTask, Dag
from taskexec.sdk.runner import RunnerConfig, run_task_instance

RUN_CONTEXT = {
    "dag_run": {"dag_id": "d", "run_id": "r1", "logical_date": None,
                "run_after": "2026-01-01T00:00:00+00:00", "state": "running", "conf": {}},
    "task_id": "t", "map_index": -1, "try_number": 1, "max_tries": 0, "should_retry": False,
}
requests = []

def api(request):
    requests.append([request.method, request.url.path.rsplit("/", 1)[-1]])
    if request.url.path.endswith("/run"):
        return httpx.Response(200, json=RUN_CONTEXT)
    if request.url.path.endswith("/rtif"):
        return httpx.Response(201, json={"message": "ok"})
    return httpx.Response(204)

with Dag("d") as dag:
    BashTask("t", bash_command="echo {{ run_id }}")
config = RunnerConfig(api_url="http://api", logs_dir=pathlib.Path(tempfile.mkdtemp()),
                      retry=RetryPolicy(attempts=1))
http = httpx.Client(base_url="http://api", transport=httpx.MockTransport(api))
result = run_task_instance(uuid.uuid4(), "token", {"d": dag}, config, http=http)
print(json.dumps({
    "outcome": result.outcome,
    "requests": requests,
    "modules": sorted(sys.modules),
}))
"""


def _run(script: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loaded: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return loaded


def _top_level(modules: object) -> set[str]:
    assert isinstance(modules, list)
    return {name.split(".")[0] for name in modules}


def test_running_a_task_through_the_runner_loads_no_server_code() -> None:
    seen = _run(RUN_A_TASK)
    assert seen["outcome"] == "success"
    assert seen["requests"] == [["PATCH", "run"], ["PUT", "rtif"], ["PATCH", "state"]]
    assert not _top_level(seen["modules"]) & set(SERVER_PACKAGES)
    ours = {m for m in seen["modules"] if isinstance(m, str) and m.startswith("taskexec.")}
    assert ours, "the runner ran"
    assert all(m.startswith(("taskexec.sdk", "taskexec.wire")) for m in ours), sorted(ours)


def test_what_executors_run_in_a_worker_loads_no_server_code() -> None:
    seen = _run(
        "import json, sys\n"
        "import taskexec.executors.worker, taskexec.executors.celery_app\n"
        "print(json.dumps({'modules': sorted(sys.modules)}))\n"
    )
    assert not _top_level(seen["modules"]) & set(SERVER_PACKAGES)
    assert "taskexec.db" not in seen["modules"]


MODULES_DAG = """
import json, os, sys

from taskexec.sdk import Dag, PythonTask


def dump():
    with open(os.environ["TASKEXEC_TEST_MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)


with Dag("modules"):
    PythonTask("dump", python_callable=dump)
"""


def test_a_local_worker_process_of_taskexec_run_loads_no_server_code(tmp_path: Path) -> None:
    """The real thing: ``taskexec run`` (the console script, as users start it) has a
    scheduler run the task in a local worker process, and the task records what that
    process has imported."""
    script = Path(sys.executable).with_name("taskexec")
    assert script.exists(), f"the console script is not installed beside {sys.executable}"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "modules.py").write_text(MODULES_DAG)
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKEXEC_")}
    env.update(
        TASKEXEC_DATA_DIR=str(tmp_path / "home"),
        TASKEXEC_DAGS_FOLDER=str(dags),
        TASKEXEC_API_URL="http://127.0.0.1:9",  # nothing there: run starts a server
        TASKEXEC_TEST_MODULES_OUT=str(out),
    )
    try:
        proc = subprocess.run(
            [str(script), "run", "modules", "--workers", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        # `run` started taskexec standalone (server, scheduler, workers) to run it.
        subprocess.run([str(script), "standalone", "--stop"], env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = json.loads(out.read_text())
    assert "taskexec.sdk.runner" in loaded  # it ran in a worker process
    assert not _top_level(loaded) & set(SERVER_PACKAGES)
    assert not [m for m in loaded if m.startswith(("taskexec.db", "taskexec.services"))]
