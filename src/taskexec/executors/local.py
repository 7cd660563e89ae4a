"""The local executor: N worker processes, each claiming queued tries and running them."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.executors import base
from taskexec.sdk.dag import load_dags
from taskexec.sdk.runner import RunnerConfig, run_task_instance
from taskexec.security import TokenSigner

log = logging.getLogger(__name__)


def worker_main(
    settings: Settings, dag_id: str, run_id: str, stats_path: Path, duplicate_writes: bool
) -> None:
    """One worker process: claim, run, repeat until the run has nothing left to do."""
    logging.basicConfig(level=logging.WARNING)
    dags = load_dags(settings.effective_dags_folder)
    signer = TokenSigner(settings)
    config = RunnerConfig.from_settings(settings, duplicate_rtif_writes=duplicate_writes)
    engine = db_engine.make_sync_engine(settings.effective_database_url, settings)
    hostname, pid = socket.gethostname(), os.getpid()
    try:
        while True:
            ti_id = base.claim_next(engine, dag_id, run_id, hostname, pid)
            if ti_id is None:
                if not base.is_active(base.state_counts(engine, dag_id, run_id)):
                    return
                time.sleep(0.05)  # others are running; a retry may be queued soon
                continue
            try:
                result = run_task_instance(ti_id, signer.mint(ti_id), dags, config)
            except Exception:
                # The API refused or stayed unreachable through every retry: fail the
                # try this worker claimed (so the run can finish) and keep going.
                log.exception("task instance %s could not be run", ti_id)
                base.fail_claim(engine, ti_id, hostname, pid)
                continue
            base.record_result(stats_path, ti_id, result)
    finally:
        engine.dispose()


def run_local(
    settings: Settings,
    dag_id: str,
    run_id: str,
    *,
    workers: int | None = None,
    duplicate_writes: bool = False,
    on_tick: Callable[[Counter[str]], bool] | None = None,
) -> base.RunReport:
    """Execute every task instance of the run on ``workers`` processes (default: CPUs)."""
    started = time.perf_counter()
    count = workers or os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="taskexec-stats-") as tmp:
        paths = [Path(tmp) / f"worker-{n}.jsonl" for n in range(count)]
        procs = [
            ctx.Process(
                target=worker_main,
                args=(settings, dag_id, run_id, path, duplicate_writes),
                name=f"taskexec-worker-{n}",
            )
            for n, path in enumerate(paths)
        ]
        for proc in procs:
            proc.start()
        engine = db_engine.make_sync_engine(settings.effective_database_url, settings)
        try:

            def tick(counts: Counter[str]) -> bool:
                if on_tick is not None:
                    on_tick(counts)
                return any(p.is_alive() for p in procs)

            counts = base.watch_run(engine, dag_id, run_id, on_tick=tick)
            for proc in procs:
                proc.join(timeout=60)
            counts = base.state_counts(engine, dag_id, run_id)
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            engine.dispose()
        writes = base.summarize_writes(paths)
    return base.RunReport(counts, writes, time.perf_counter() - started)
