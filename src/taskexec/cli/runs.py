"""``taskexec runs create | list | cancel``, ``trigger``, ``tasks clear`` and ``logs``.

Every run is created by ``services.dag_runs.create_dag_run`` through the transaction
owner; cancelling and clearing are ``services.run_actions``. Running a run is the
scheduler's job (``taskexec run`` triggers one and follows it: ``cli.run``).
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from taskexec import schemas
from taskexec.cli import common
from taskexec.cli.common import CommandError, ensure_schema
from taskexec.config import Settings
from taskexec.sdk.dag import Dag, load_dag_files
from taskexec.security import TokenSigner
from taskexec.services import dag_runs, run_actions
from taskexec.wire import protocol
from taskexec.wire.states import DagRunState


def cmd_runs_create(args: argparse.Namespace, settings: Settings) -> None:
    """Create a bare dag run (no dag file, no scheduling) with queued task instances, for
    external workers and load generators; print ids and tokens as JSON."""
    ensure_schema(settings)
    conf = common.parse_conf(args.conf)
    if args.tasks < 1:
        raise CommandError("--tasks must be at least 1")
    tasks = dag_runs.bare_tasks(args.tasks, args.map, args.max_tries)
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
    """``dag_id`` from the dags folder; a dag file that could not be loaded is named."""
    folder = settings.effective_dags_folder
    dags, problems = load_dag_files(folder)
    if dag_id not in dags:
        known = ", ".join(sorted(dags)) or "none"
        message = f"no dag {dag_id!r} in {folder} (found: {known})"
        if problems:
            message += "; not loaded: " + "; ".join(f"{f}: {why}" for f, why in problems.items())
        raise CommandError(message)
    return dags[dag_id]


def trigger(
    settings: Settings, dag_id: str, *, conf: str | None = None, logical_date: str | None = None
) -> schemas.NewDagRun:
    """Create a run of ``dag_id`` from the dags folder, with the dag's spec: the
    scheduler runs its task instances as their dependencies allow."""
    ensure_schema(settings)
    parsed_conf, parsed_date = common.parse_conf(conf), common.parse_date(logical_date)
    dag = find_dag(settings, dag_id)
    return common.write(
        settings,
        dag_runs.create_dag_run,
        dag_id=dag_id,
        tasks=dag.task_instance_keys(),
        spec=dag.spec(),
        conf=parsed_conf,
        logical_date=parsed_date,
    )


def cmd_trigger(args: argparse.Namespace, settings: Settings) -> None:
    """Create a dag run; the scheduler runs it."""
    run = trigger(settings, args.dag_id, conf=args.conf, logical_date=args.logical_date)
    print(
        json.dumps(
            {"dag_id": run.dag_id, "run_id": run.run_id, "task_instances": len(run.task_instances)}
        )
    )


def runs_table(runs: list[schemas.DagRunSummary], title: str) -> Table:
    """Runs as a table: state, start and end, task instances by state."""
    table = Table(title=title)
    for column in ("dag", "run", "state", "started", "ended", "task instances"):
        table.add_column(column, overflow="fold")
    for run in runs:
        states = " ".join(f"{k}={v}" for k, v in sorted(run.task_instance_states.items()))
        table.add_row(
            run.dag_id,
            run.run_id,
            run.state,
            f"{run.start_date:%Y-%m-%d %H:%M:%S}" if run.start_date else "",
            f"{run.end_date:%Y-%m-%d %H:%M:%S}" if run.end_date else "",
            states,
        )
    return table


def cmd_runs_list(args: argparse.Namespace, settings: Settings) -> None:
    """The newest runs (of one dag, in one state), with their task instances' states."""
    ensure_schema(settings)
    if args.dag:
        page = common.read(
            settings,
            dag_runs.list_dag_runs,
            dag_id=args.dag,
            state=args.state,
            limit=args.limit,
            offset=0,
        )
    else:
        page = common.read(
            settings, dag_runs.list_runs, dag_id=None, state=args.state, limit=args.limit, offset=0
        )
    title = f"{len(page.items)} of {page.total} runs"
    Console(soft_wrap=True).print(runs_table(page.items, title))


def cmd_runs_cancel(args: argparse.Namespace, settings: Settings) -> None:
    """Mark a run failed: running tries are told to stop, the others are skipped."""
    ensure_schema(settings)
    done = common.write(settings, run_actions.cancel_run, dag_id=args.dag_id, run_id=args.run_id)
    print(done.model_dump_json())


def cmd_tasks_clear(args: argparse.Namespace, settings: Settings) -> None:
    """Give task instances of a run new tries, so the scheduler runs them again."""
    ensure_schema(settings)
    done = common.write(
        settings,
        run_actions.clear_task_instances,
        dag_id=args.dag_id,
        run_id=args.run_id,
        task_ids=args.task_ids,
        downstream=args.downstream,
    )
    print(json.dumps({"dag_id": done.dag_id, "run_id": done.run_id, "cleared": done.cleared}))


def cmd_logs(args: argparse.Namespace, settings: Settings) -> None:
    """Print the log of a task instance's latest try (or of --try N)."""
    first = protocol.log_path(
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


def _register_runs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runs = sub.add_parser("runs", help="dag runs").add_subparsers(dest="runs_cmd", required=True)
    create = runs.add_parser("create", help="create a bare run with queued task instances")
    create.add_argument("--dag-id", required=True)
    create.add_argument("--tasks", type=int, required=True, help="number of tasks")
    create.add_argument("--map", type=int, default=None, help="map each task over M indexes")
    create.add_argument("--run-id", default=None)
    create.add_argument("--conf", default=None, help="run conf as a JSON object")
    create.add_argument("--max-tries", type=int, default=0)
    create.set_defaults(func=cmd_runs_create)
    listing = runs.add_parser("list", help="the newest runs and their states")
    listing.add_argument("--dag", default=None, help="only this dag's runs")
    listing.add_argument("--state", choices=[s.value for s in DagRunState], default=None)
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=cmd_runs_list)
    cancel = runs.add_parser("cancel", help="mark a run failed; running tries stop")
    cancel.add_argument("dag_id")
    cancel.add_argument("run_id")
    cancel.set_defaults(func=cmd_runs_cancel)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``runs create | list | cancel``, ``trigger``, ``tasks clear`` and ``logs``."""
    _register_runs(sub)
    trig = sub.add_parser("trigger", help="create a dag run; the scheduler runs it")
    trig.add_argument("dag_id")
    trig.add_argument("--conf", default=None, help="run conf as a JSON object")
    trig.add_argument("--logical-date", default=None, help="ISO date or datetime")
    trig.set_defaults(func=cmd_trigger)

    tasks = sub.add_parser("tasks", help="task instances").add_subparsers(
        dest="tasks_cmd", required=True
    )
    clear = tasks.add_parser("clear", help="run task instances of a run again (new tries)")
    clear.add_argument("dag_id")
    clear.add_argument("run_id")
    clear.add_argument("task_ids", nargs="*", help="tasks to clear (default: all)")
    clear.add_argument("--downstream", action="store_true", help="also every task below them")
    clear.set_defaults(func=cmd_tasks_clear)

    logs = sub.add_parser("logs", help="print a task instance's log")
    logs.add_argument("dag_id")
    logs.add_argument("run_id")
    logs.add_argument("task_id")
    logs.add_argument("--map-index", type=int, default=-1)
    logs.add_argument("--try", dest="try_number", type=int, default=None)
    logs.set_defaults(func=cmd_logs)
