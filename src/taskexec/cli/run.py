"""``taskexec run DAG``: trigger a run and follow it until it ends.

The run belongs to the scheduler, not to this command: Ctrl-C or ``kill -9`` here
loses nothing, the run goes on. If no scheduler is active, on the embedded default
``run`` starts ``taskexec standalone`` in the background (server, scheduler and local
workers, left running for the next run); elsewhere it says how to start one. With the
Celery executor it checks, within seconds, that a Celery worker answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from taskexec import schemas
from taskexec.cli import common, parsing, runs
from taskexec.cli.common import CommandError
from taskexec.config import Settings, redacted_url
from taskexec.db import engine as db_engine
from taskexec.services import dag_runs, scheduling
from taskexec.wire.states import FINISHED, DagRunState

# How long ``run`` waits for a scheduler it started to take the lease.
STANDALONE_START_SECONDS = 30.0
# How long a Celery worker has to answer the ping.
CELERY_PING_SECONDS = 5.0
FOLLOW_POLL_SECONDS = 0.25
LOG_FILE = "standalone.log"


def start_standalone(settings: Settings, *, workers: int | None = None) -> int:
    """Start ``taskexec standalone`` in the background (its own session: it outlives this
    command) on the port of ``TASKEXEC_API_URL``; returns its pid once its scheduler is
    active."""
    url = urllib.parse.urlsplit(settings.api_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if workers:
        env["TASKEXEC_LOCAL_WORKERS"] = str(workers)
    with (settings.data_dir / LOG_FILE).open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskexec", "standalone", "--port", str(url.port or 8080)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + STANDALONE_START_SECONDS
    while common.read(settings, scheduling.current_lease) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise CommandError(
                f"taskexec standalone did not start; see {settings.data_dir / LOG_FILE}"
            )
        time.sleep(0.2)
    return proc.pid


def ensure_scheduler(settings: Settings, console: Console, *, workers: int | None) -> None:
    """Make sure a scheduler is active (and, with Celery, a worker answers)."""
    lease = common.read(settings, scheduling.current_lease)
    if lease is None:
        if not settings.is_embedded:
            raise CommandError(
                "no scheduler is active: start `taskexec scheduler` (or `taskexec serve`, "
                "which runs one) where it can reach this database"
            )
        pid = start_standalone(settings, workers=workers)
        console.print(
            f"started taskexec standalone in the background (pid {pid}, {settings.api_url}); "
            f"it keeps running for the next runs: `taskexec standalone --stop` ends it",
            soft_wrap=True,
        )
        return
    if lease.executor == "celery":
        from taskexec.executors import celery

        common.check_broker(settings)
        if not celery.live_workers(settings, timeout=CELERY_PING_SECONDS):
            raise CommandError(
                f"no Celery worker answers at {redacted_url(settings.celery_broker_url)}: start "
                f"`taskexec celery-worker` (queue {settings.celery_queue})"
            )


async def follow(
    settings: Settings, run: schemas.NewDagRun, on_change: Callable[[schemas.DagRunSummary], None]
) -> schemas.DagRunSummary:
    """Poll the run until it ends; ``on_change`` sees every poll."""
    async with db_engine.open_database(settings) as db:
        while True:
            now = await db.read(dag_runs.get_dag_run, dag_id=run.dag_id, run_id=run.run_id)
            on_change(now)
            if now.state in (DagRunState.SUCCESS, DagRunState.FAILED):
                return now
            await asyncio.sleep(FOLLOW_POLL_SECONDS)


def follow_with_progress(
    settings: Settings, run: schemas.NewDagRun, console: Console
) -> schemas.DagRunSummary:
    """``follow`` with a progress bar: task instances done, and the count in each state."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(run.dag_id, total=len(run.task_instances), states="")

        def show(now: schemas.DagRunSummary) -> None:
            counts = now.task_instance_states
            done = sum(n for state, n in counts.items() if state in FINISHED)
            states = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            progress.update(bar, completed=done, states=f"{now.state}: {states}")

        return asyncio.run(follow(settings, run, show))


def states_table(final: schemas.DagRunSummary) -> Table:
    """The run's task instances by final state."""
    table = Table(title="task instances by state")
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, count in sorted(final.task_instance_states.items()):
        style = "green" if state == "success" else "red" if "failed" in state else ""
        table.add_row(state, str(count), style=style)
    return table


def print_final(console: Console, final: schemas.DagRunSummary) -> None:
    """The run's id and state, then its table."""
    # The run id is a line of its own, never wrapped, not the table's title: a title
    # wraps at the narrow table's width, and a run id broken over lines cannot be copied.
    console.print(f"run {final.run_id}: {final.state}", soft_wrap=True, markup=False)
    console.print(states_table(final))


def cmd_run(args: argparse.Namespace, settings: Settings) -> None:
    """Trigger a dag and follow the run; exit 0 only if it succeeded."""
    console = Console()
    run = runs.trigger(settings, args.dag_id, conf=args.conf, logical_date=args.logical_date)
    count = len(run.task_instances)
    print(f"triggered {args.dag_id} run {run.run_id}: {count} task instances", flush=True)
    ensure_scheduler(settings, console, workers=args.workers)
    try:
        final = follow_with_progress(settings, run, console)
    except KeyboardInterrupt:
        raise CommandError(
            f"stopped following; the run goes on: `taskexec runs list --dag {run.dag_id}`"
        ) from None
    print_final(console, final)
    if final.state != DagRunState.SUCCESS:
        failed = sum(n for state, n in final.task_instance_states.items() if "failed" in state)
        raise CommandError(f"run {run.run_id} failed: {failed} task instance(s) failed")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run``."""
    run = parsing.command(
        sub,
        "run",
        "trigger a dag and follow the run until it ends",
        "Trigger a run of a dag from the dags folder and follow it with a progress bar "
        "until it ends; exit 0 only if it succeeded. The run belongs to the scheduler: "
        "Ctrl-C here stops following, not the run. On the embedded SQLite database, with "
        "no scheduler active, it starts `taskexec standalone` in the background (stop it "
        "with `taskexec standalone --stop`).",
        [
            "taskexec run example_rendered_fields",
            'taskexec run etl --conf \'{"source": "s3://other"}\' --workers 4',
        ],
    )
    run.add_argument("dag_id", help="a dag in the dags folder (`taskexec dags list`)")
    run.add_argument(
        "--workers",
        type=parsing.positive,
        default=None,
        help="local worker processes, if run starts taskexec standalone "
        "(default: TASKEXEC_LOCAL_WORKERS, else one per CPU)",
    )
    run.add_argument("--conf", default=None, help="run conf as a JSON object")
    run.add_argument(
        "--logical-date",
        default=None,
        help="ISO date or datetime, UTC unless it says (default: none, as a manual run)",
    )
    run.set_defaults(func=cmd_run)
