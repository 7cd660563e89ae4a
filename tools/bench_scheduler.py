"""Scheduler benchmark: prints figures, asserts nothing.

1. Task-to-task latency: a chain of N no-op tasks on the local executor; the wall time of
   the run and the p50/p99 gap from one task's end to the next one's start.
2. Throughput: R runs of T independent no-op tasks each, created up front, scheduled and
   run to success; task instances per second and the scheduler loop's p50/p99/max.

Each part runs on a fresh database (a scratch PostgreSQL/MariaDB database, or a new
SQLite file), with an in-process API server and one scheduler in this process:

    python tools/bench_scheduler.py --backend postgresql --admin-url postgresql+psycopg://postgres@127.0.0.1/test
    python tools/bench_scheduler.py --backend sqlite --runs 100 --tasks 100
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from taskexec.cli import run as run_command
from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import models, scratch
from taskexec.race.stats import percentile
from taskexec.scheduler import loop
from taskexec.sdk.dag import Dag, load_dags
from taskexec.server.app import create_app
from taskexec.server.background import background_server
from taskexec.services import dag_runs

DAGS = """
from taskexec.sdk import Dag, PythonTask, chain

def noop():
    return None

with Dag("bench_chain", max_active_tasks=64):
    chain(*[PythonTask(f"t{{n:03d}}", python_callable=noop) for n in range({chain})])

with Dag("bench_wide", max_active_runs={runs}, max_active_tasks=10000):
    for n in range({tasks}):
        PythonTask(f"w{{n:03d}}", python_callable=noop)
"""


async def _run(settings: Settings, dag: Dag, runs: int) -> tuple[float, list[float]]:
    """Create ``runs`` runs of ``dag``, then schedule them all to the end; returns the wall
    time from the scheduler's start and the scheduler's loop durations."""
    async with db_engine.open_database(settings) as db:
        created = [
            await db.write(
                dag_runs.create_dag_run,
                dag_id=dag.dag_id,
                tasks=dag.task_instance_keys(),
                spec=dag.spec(),
            )
            for _ in range(runs)
        ]
        scheduler = loop.Scheduler(db, settings)
        started = time.perf_counter()
        scheduler.start()
        try:
            for run in created:
                final = await run_command.follow(settings, run, lambda _s: None)
                if final.state != "success":
                    raise SystemExit(f"run {run.run_id} ended {final.state}")
            return time.perf_counter() - started, list(scheduler.stats.durations)
        finally:
            await scheduler.aclose()


def _gaps(url: str) -> list[float]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    models.task_instance.c.task_id,
                    models.task_instance.c.start_date,
                    models.task_instance.c.end_date,
                )
                .where(models.task_instance.c.dag_id == "bench_chain")
                .order_by(models.task_instance.c.task_id)
            ).all()
    finally:
        engine.dispose()
    return [(b.start_date - a.end_date).total_seconds() for a, b in itertools.pairwise(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "mysql"], default="sqlite")
    parser.add_argument("--admin-url", default="", help="server URL (not for sqlite)")
    parser.add_argument("--chain", type=int, default=50)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=0, help="local worker processes (0: CPUs)")
    parser.add_argument("--interval", type=float, default=1.0, help="scheduler interval, s")
    parser.add_argument(
        "--part", choices=["chain", "throughput", "both"], default="both", help="what to measure"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dags = Path(tmp) / "dags"
        dags.mkdir()
        source = DAGS.format(chain=args.chain, runs=args.runs, tasks=args.tasks)
        (dags / "bench.py").write_text(source)
        loaded = load_dags(dags)
        parts = ("chain", "throughput") if args.part == "both" else (args.part,)
        for part in parts:
            with scratch.fresh_database(args.backend, args.admin_url, workdir=Path(tmp)) as url:
                settings = Settings(
                    database_url=url,
                    data_dir=Path(tmp),
                    dags_folder=dags,
                    scheduler_in_server=False,
                    executor="local",
                    local_workers=args.workers,
                    scheduler_interval_seconds=args.interval,
                    rendered_fields_retain_runs=0,
                )
                with background_server(create_app(settings)) as base_url:
                    settings = settings.model_copy(update={"api_url": base_url})
                    if part == "chain":
                        wall, _ = asyncio.run(_run(settings, loaded["bench_chain"], 1))
                        gaps = _gaps(url)
                        print(
                            f"[{args.backend}] chain of {args.chain}: {wall:.2f} s; "
                            f"end→start gap p50 {percentile(gaps, 50) * 1000:.0f} ms, "
                            f"p99 {percentile(gaps, 99) * 1000:.0f} ms, "
                            f"max {max(gaps) * 1000:.0f} ms"
                        )
                    else:
                        wall, loops = asyncio.run(_run(settings, loaded["bench_wide"], args.runs))
                        n = args.runs * args.tasks
                        print(
                            f"[{args.backend}] {n} task instances in {args.runs} runs: "
                            f"{wall:.1f} s, {n / wall:.1f} TIs/s; scheduler loop "
                            f"p50 {percentile(loops, 50) * 1000:.0f} ms, "
                            f"p99 {percentile(loops, 99) * 1000:.0f} ms, "
                            f"max {max(loops) * 1000:.0f} ms ({len(loops)} iterations)"
                        )


if __name__ == "__main__":
    main()
