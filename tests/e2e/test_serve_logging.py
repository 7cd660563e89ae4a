"""``taskexec serve --workers 2`` logs the same way in every worker process: with
``TASKEXEC_LOG_FORMAT=json`` each line on stderr is one JSON object, INFO lines of the
workers are there (not only the parent's), and a request's lines carry its
correlation id."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx

from taskexec.config import Settings
from taskexec.race import bench

from helpers import only, serve_env, wait_healthy


@only("sqlite")
def test_every_worker_logs_json_with_correlation_ids(settings: Settings) -> None:
    port = bench.free_port()
    env = serve_env(settings, TASKEXEC_LOG_FORMAT="json")
    command = [sys.executable, "-m", "taskexec", "serve", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen([*command, "--access-log"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(port)
        for n in range(6):  # likely to reach both workers
            httpx.get(
                f"http://127.0.0.1:{port}/execution/health",
                headers={"correlation-id": f"cid-{n}"},
                timeout=5,
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    lines = [line for line in stderr.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON
    started = {e["pid"] for e in entries if e["message"].startswith("Started server process")}
    assert len(started) == 2, lines  # both workers' INFO lines
    requests = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert requests and {e["correlation_id"] for e in requests} >= {"cid-0"}, requests
