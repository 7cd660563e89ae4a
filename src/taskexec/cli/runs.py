"""``taskexec runs create``, ``trigger``, ``run`` and ``logs``: creating dag runs,
executing them with an executor, and reading a try's log.

Every run is created by ``services.dag_runs.create_dag_run`` through the transaction
owner; executing one is the executors' job (``taskexec.executors``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import Iterator

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from taskexec import schemas
from taskexec.cli import common
from taskexec.cli.common import CommandError, ensure_schema
from taskexec.config import Settings
from taskexec.executors import base
from taskexec.sdk.dag import Dag, load_dags
from taskexec.sdk.runner import log_path
from taskexec.security import TokenSigner
from taskexec.services import dag_runs

FINISHED = ("success", "failed")


def cmd_runs_create(args: argparse.Namespace, settings: Settings) -> None:
    """Create a dag run with queued task instances; print ids and tokens as JSON."""
    ensure_schema(settings)
    conf = common.parse_conf(args.conf)
    if args.tasks < 1:
        raise CommandError("--tasks must be at least 1")
    indexes = range(args.map) if args.map is not None else [-1]
    tasks = [(f"task_{n}", m, args.max_tries) for n in range(args.tasks) for m in indexes]
    run = common.write(
        settings,
        dag_runs.create_dag_run,
        dag_id=args.dag_id,
        tasks=tasks,
        run_id=args.run_id,
        conf=conf,
    )
    created = schemas.CreatedDagRun.with_tokens(run, TokenSigner(settings).mint)
    print(created.model_dump_json(indent=2))


def find_dag(settings: Settings, dag_id: str) -> Dag:
    """``dag_id`` from the dags folder."""
    dags = load_dags(settings.effective_dags_folder)
    if dag_id not in dags:
        known = ", ".join(sorted(dags)) or "none"
        raise CommandError(
            f"no dag {dag_id!r} in {settings.effective_dags_folder} (found: {known})"
        )
    return dags[dag_id]


def trigger(
    settings: Settings, dag_id: str, *, conf: str | None = None, logical_date: str | None = None
) -> schemas.NewDagRun:
    """Create a run of ``dag_id`` from the dags folder, its task instances queued."""
    ensure_schema(settings)
    parsed_conf, parsed_date = common.parse_conf(conf), common.parse_date(logical_date)
    dag = find_dag(settings, dag_id)
    return common.write(
        settings,
        dag_runs.create_dag_run,
        dag_id=dag_id,
        tasks=dag.task_instance_keys(),
        conf=parsed_conf,
        logical_date=parsed_date,
    )


def cmd_trigger(args: argparse.Namespace, settings: Settings) -> None:
    """Create a dag run and queue all its task instances."""
    run = trigger(settings, args.dag_id, conf=args.conf, logical_date=args.logical_date)
    print(
        json.dumps(
            {"dag_id": run.dag_id, "run_id": run.run_id, "task_instances": len(run.task_instances)}
        )
    )


@contextlib.contextmanager
def api_server(settings: Settings) -> Iterator[Settings]:
    """Settings whose ``api_url`` answers: the configured server if it is up; on the
    embedded default, otherwise, one started in this process for the duration."""
    try:
        if httpx.get(f"{settings.api_url}/health", timeout=2.0).status_code == 200:
            yield settings
            return
    except httpx.TransportError:
        pass
    if not settings.is_embedded:
        raise CommandError(
            f"no API server answers at {settings.api_url}: start `taskexec serve` "
            "or set TASKEXEC_API_URL"
        )
    from taskexec.server.app import create_app
    from taskexec.server.background import background_server

    with background_server(create_app(settings)) as base_url:
        yield settings.model_copy(update={"api_url": base_url})


def execute_run(
    settings: Settings,
    run: schemas.NewDagRun,
    *,
    executor: str = "local",
    workers: int | None = None,
    console: Console | None = None,
) -> base.RunReport:
    """Run every task instance of ``run`` with ``executor``, with a progress bar."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console or Console(), transient=False) as progress:
        bar = progress.add_task(run.dag_id, total=len(run.task_instances), states="")

        def tick(counts: Counter[str]) -> bool:
            done = sum(counts[s] for s in FINISHED)
            states = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            progress.update(bar, completed=done, states=states)
            return True

        report = asyncio.run(_execute(settings, run, executor, workers, tick))
        tick(report.counts)
    return report


async def _execute(
    settings: Settings,
    run: schemas.NewDagRun,
    executor: str,
    workers: int | None,
    tick: base.OnTick,
) -> base.RunReport:
    if executor == "local":
        from taskexec.executors import local

        return await local.run_local(
            settings, run.dag_id, run.run_id, workers=workers, on_tick=tick
        )
    if executor == "celery":
        from taskexec.executors import celery

        return await celery.run_celery(settings, run.dag_id, run.run_id, on_tick=tick)
    raise CommandError(f"unknown executor {executor!r}: use local or celery")


def states_table(report: base.RunReport, title: str = "task instances by state") -> Table:
    """A table of the run's final states."""
    table = Table(title=title)
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, count in sorted(report.counts.items()):
        style = "green" if state == "success" else "red" if state == "failed" else ""
        table.add_row(state, str(count), style=style)
    return table


def cmd_run(args: argparse.Namespace, settings: Settings) -> None:
    """Trigger a dag and execute it with an executor; exit 1 if anything failed for good."""
    run = trigger(settings, args.dag_id, conf=args.conf, logical_date=args.logical_date)
    count = len(run.task_instances)
    print(f"triggered {args.dag_id} run {run.run_id}: {count} task instances", flush=True)
    with api_server(settings) as worker_settings:
        report = execute_run(worker_settings, run, executor=args.executor, workers=args.workers)
    Console().print(states_table(report, f"run {run.run_id}"))
    if report.counts.get("failed"):
        raise CommandError(f"{report.counts['failed']} task instance(s) failed")


def cmd_logs(args: argparse.Namespace, settings: Settings) -> None:
    """Print the log of a task instance's latest try (or of --try N)."""
    first = log_path(
        settings.effective_logs_dir, args.dag_id, args.run_id, args.task_id, args.map_index, 1
    )
    folder = first.parent
    tries = sorted(int(p.stem.removeprefix("attempt=")) for p in folder.glob("attempt=*.log"))
    if not tries:
        raise CommandError(f"no logs in {folder}")
    chosen = args.try_number or tries[-1]
    if chosen not in tries:
        raise CommandError(f"no log for try {chosen}; tries with logs: {tries}")
    sys.stdout.write(folder.joinpath(f"attempt={chosen}.log").read_text())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``runs create``, ``trigger``, ``run`` and ``logs``."""
    runs = sub.add_parser("runs", help="dag runs").add_subparsers(dest="runs_cmd", required=True)
    create = runs.add_parser("create", help="create a run with queued task instances")
    create.add_argument("--dag-id", required=True)
    create.add_argument("--tasks", type=int, required=True, help="number of tasks")
    create.add_argument("--map", type=int, default=None, help="map each task over M indexes")
    create.add_argument("--run-id", default=None)
    create.add_argument("--conf", default=None, help="run conf as a JSON object")
    create.add_argument("--max-tries", type=int, default=0)
    create.set_defaults(func=cmd_runs_create)

    trig = sub.add_parser("trigger", help="create a dag run and queue its task instances")
    trig.add_argument("dag_id")
    trig.add_argument("--conf", default=None, help="run conf as a JSON object")
    trig.add_argument("--logical-date", default=None, help="ISO date or datetime")
    trig.set_defaults(func=cmd_trigger)

    run = sub.add_parser("run", help="trigger a dag and execute it")
    run.add_argument("dag_id")
    run.add_argument("--executor", choices=["local", "celery"], default="local")
    run.add_argument("--workers", type=int, default=None, help="local processes (default: CPUs)")
    run.add_argument("--conf", default=None, help="run conf as a JSON object")
    run.add_argument("--logical-date", default=None, help="ISO date or datetime")
    run.set_defaults(func=cmd_run)

    logs = sub.add_parser("logs", help="print a task instance's log")
    logs.add_argument("dag_id")
    logs.add_argument("run_id")
    logs.add_argument("task_id")
    logs.add_argument("--map-index", type=int, default=-1)
    logs.add_argument("--try", dest="try_number", type=int, default=None)
    logs.set_defaults(func=cmd_logs)
