"""The Celery executor end to end against the real Redis and RabbitMQ on 127.0.0.1:
a ``taskexec celery-worker`` subprocess runs the tries; the executor enqueues them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from taskexec import schemas
from taskexec.config import Settings
from taskexec.race import proxy
from taskexec.sdk.dag import load_dags

from conftest import TEST_SECRET, LiveServer
from helpers import only, report, rtif_rows, run_with_scheduler, seed_dag_run

ITEMS = 24

DAG_FILE = f"""
from taskexec.sdk import Dag, PythonTask, TaskFailedError


def work(n, context):
    if n == "3" and context["try_number"] == 1:
        raise TaskFailedError("retry me")


with Dag("celery_e2e") as dag:
    PythonTask(
        "work", python_callable=work, op_args=["{{{{ item }}}}"], retries=1, retry_delay=0
    ).expand(
        range({ITEMS})
    )
"""

BROKERS = {
    "redis": ("redis://127.0.0.1:6379/0", 6379),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
}


def _reachable(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run_with_a_worker(
    settings: Settings, env: dict[str, str], run: schemas.NewDagRun, log: Path
) -> schemas.DagRunSummary:
    """A scheduler with the Celery executor in this process, and a ``taskexec
    celery-worker`` subprocess started with ``env``, until the run ends."""
    with log.open("w") as worker_log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskexec", "celery-worker", "--concurrency", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=worker_log,
        )
    try:
        return run_with_scheduler(settings, run, max_seconds=180)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@only("postgresql")
@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_celery_executor(
    live_server: LiveServer,
    settings: Settings,
    sync_engine: sa.Engine,
    tmp_path: Path,
    broker: str,
) -> None:
    url, port = BROKERS[broker]
    if not _reachable(port):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{broker} is not reachable on 127.0.0.1:{port}")
        pytest.skip(f"{broker} is not reachable on 127.0.0.1:{port}")
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    (dags_folder / "celery_e2e.py").write_text(textwrap.dedent(DAG_FILE))
    queue = f"taskexec-test-{uuid.uuid4().hex[:8]}"
    run = seed_dag_run(settings, load_dags(dags_folder)["celery_e2e"])
    assert len(run.task_instances) == ITEMS
    # The workers reach the server through the race's proxy, which counts their writes.
    with proxy.recording_proxy(live_server.base_url) as (proxy_url, writes):
        worker_settings = settings.model_copy(
            update={
                "api_url": proxy_url,
                "dags_folder": dags_folder,
                "celery_broker_url": url,
                "celery_queue": queue,
                "executor": "celery",
                "scheduler_interval_seconds": 0.2,
            }
        )
        env = {
            **os.environ,
            "TASKEXEC_API_URL": proxy_url,
            "TASKEXEC_DAGS_FOLDER": str(dags_folder),
            "TASKEXEC_CELERY_BROKER_URL": url,
            "TASKEXEC_CELERY_QUEUE": queue,
            "TASKEXEC_JWT_SECRET": TEST_SECRET,
            "TASKEXEC_DATA_DIR": str(tmp_path / "worker"),
        }
        started = time.perf_counter()
        final = _run_with_a_worker(worker_settings, env, run, tmp_path / "worker.log")
    report(
        f"[celery/{broker}] scheduler + Celery: {ITEMS} task instances "
        f"{final.task_instance_states}, run {final.state}, RTIF writes {writes.sent}, "
        f"non-2xx {writes.non_2xx}, {time.perf_counter() - started:.1f}s"
    )
    log = (tmp_path / "worker.log").read_text()[-3000:]
    assert final.task_instance_states == {"success": ITEMS}, log
    assert final.state == "success"
    assert writes.non_2xx == 0
    assert writes.sent == ITEMS + 1  # item 3 wrote on both tries
    stored = {r["map_index"]: r for r in rtif_rows(sync_engine)}
    assert sorted(stored) == list(range(ITEMS))
    assert stored[3]["try_number"] == 2
    assert stored[5]["rendered_fields"] == {
        "op_args": ["5"],
        "op_kwargs": {},
        "templates_dict": None,
    }


def test_an_unreachable_broker_is_a_one_line_error_within_seconds() -> None:
    from taskexec.executors import celery

    with socket_on_a_closed_port() as port:
        bad = Settings(celery_broker_url=f"redis://127.0.0.1:{port}/0")
        started = time.monotonic()
        with pytest.raises(celery.BrokerUnreachableError) as caught:
            celery.check_broker(bad, timeout=2.0)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    report(f"[celery] unreachable broker refused in {elapsed:.1f} s: {message}")
    assert "\n" not in message and f"127.0.0.1:{port}" in message
    assert elapsed < 10


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_no_live_worker_is_found_within_the_ping_timeout(broker: str) -> None:
    from taskexec.executors import celery

    url, port = BROKERS[broker]
    if not _reachable(port):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{broker} is not reachable on 127.0.0.1:{port}")
        pytest.skip(f"{broker} is not reachable on 127.0.0.1:{port}")
    on_broker = Settings(celery_broker_url=url)
    celery.check_broker(on_broker)
    started = time.monotonic()
    workers = celery.live_workers(on_broker, timeout=2.0)
    elapsed = time.monotonic() - started
    assert workers == []  # no `taskexec celery-worker` runs during this test
    assert elapsed < 10, elapsed


@contextlib.contextmanager
def socket_on_a_closed_port() -> Iterator[int]:
    """A port nothing listens on (bound, never listened, so connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
