"""``taskexec demo``: the main job on the embedded default, until the worker side exists.

It starts a real server process on SQLite, creates an example run with a few task
instances, and for each one does what a worker does around rendered fields: mark it
running, PUT its rendered fields (twice at once, as a retry after a timeout would),
read them back, and mark it successful.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import time
from typing import Any

import httpx

from taskexec import cli, schemas
from taskexec.config import Settings

DAG_ID = "example_rendered_fields"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Poll ``/health`` until the server answers, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise cli.CommandError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise cli.CommandError(f"the server did not answer within {timeout:.0f}s")


def example_fields(ti: schemas.CreatedTaskInstance, run_id: str) -> dict[str, Any]:
    """Rendered fields as a BashTask would report them."""
    suffix = "" if ti.map_index < 0 else f" --shard {ti.map_index}"
    return {
        "bash_command": f"python etl.py --task {ti.task_id} --run {run_id}{suffix}",
        "env": {"RUN_ID": run_id, "TRY": str(ti.try_number)},
    }


def exercise(client: httpx.Client, ti: schemas.CreatedTaskInstance, run_id: str) -> dict[str, Any]:
    """Run → PUT rendered fields twice concurrently → GET → success, for one TI."""
    headers = {"Authorization": f"Bearer {ti.token}"}
    base = f"/execution/task-instances/{ti.id}"
    run = client.patch(
        f"{base}/run", headers=headers, json={"hostname": socket.gethostname(), "pid": os.getpid()}
    )
    fields = example_fields(ti, run_id)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        puts = list(
            pool.map(lambda _: client.put(f"{base}/rtif", headers=headers, json=fields), range(2))
        )
    got = client.get(f"{base}/rtif", headers=headers)
    done = client.patch(f"{base}/state", headers=headers, json={"state": "success"})
    stored = got.json().get("rendered_fields") if got.status_code == 200 else None
    return {
        "ti": f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id,
        "run": run.status_code,
        "puts": [p.status_code for p in puts],
        "get": got.status_code,
        "state": done.status_code,
        "round_trip": stored == fields,
        "bash_command": (stored or {}).get("bash_command", ""),
    }


def run(settings: Settings, *, port: int = 0) -> None:
    """Start the server, exercise an example run, print what came back, stop."""
    cli.ensure_schema(settings)
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    print(f"database: {settings.effective_database_url}")
    print(f"starting server on {base_url} (API docs at {base_url}/docs)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskexec", "serve", "--port", str(port), "--log-level", "warning"]
    )
    try:
        wait_healthy(base_url, proc)
        created = asyncio.run(cli.create_run(settings, dag_id=DAG_ID, tasks=3, map_count=2))
        print(f"created run {created.run_id} with {len(created.task_instances)} task instances")
        with httpx.Client(base_url=base_url, timeout=10.0) as client:
            results = [exercise(client, ti, created.run_id) for ti in created.task_instances]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    header = ("task instance", "/run", "PUT x2", "GET", "/state")
    print("\n{:<14} {:>4} {:>8} {:>4} {:>6}  ok  bash_command".format(*header))
    for r in results:
        ok = "yes" if r["round_trip"] else "NO"
        puts = ",".join(map(str, r["puts"]))
        print(
            f"{r['ti']:<14} {r['run']:>4} {puts:>8} {r['get']:>4} {r['state']:>6}  {ok:<3} "
            f"{r['bash_command']}"
        )
    bad = [r for r in results if not r["round_trip"] or any(p != 201 for p in r["puts"])]
    if bad:
        raise cli.CommandError(f"{len(bad)} task instance(s) did not round-trip")
    print("\nall rendered fields stored once and read back intact")
