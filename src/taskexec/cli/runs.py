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
from taskexec.cli import common, parsing
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
    from taskexec.cli import dags as dag_commands

    folder = settings.effective_dags_folder
    with dag_commands.quiet_dag_loading():
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
    runs = parsing.group(
        sub,
        "runs",
        "create, list and cancel dag runs",
        "Dag runs in the database: create a bare one for external workers, list the "
        "newest, cancel one.",
        ["taskexec runs list", "taskexec runs create --dag-id load --tasks 10"],
    )
    create = parsing.command(
        runs,
        "create",
        "create a bare run with queued task instances",
        "Create a dag run with queued task instances and no dag file behind it (nothing "
        "schedules it): for external workers and load generators. Prints the task "
        "instances' ids and bearer tokens as JSON. A run id that already exists is refused.",
        ["taskexec runs create --dag-id etl --tasks 3 --map 4 --max-tries 2"],
    )
    create.add_argument("--dag-id", required=True, help="the run's dag id (any name)")
    create.add_argument(
        "--tasks", type=parsing.positive, required=True, help="tasks task_0, task_1, …"
    )
    create.add_argument(
        "--map", type=parsing.positive, default=None, help="map each task over indexes 0..M-1"
    )
    create.add_argument("--run-id", default=None, help="the run id (default: a new one)")
    create.add_argument("--conf", default=None, help="run conf as a JSON object")
    create.add_argument(
        "--max-tries",
        type=parsing.int_range(0),
        default=0,
        help="retries each task instance may have",
    )
    create.set_defaults(func=cmd_runs_create)
    listing = parsing.command(
        runs,
        "list",
        "the newest runs and their states",
        "The newest runs, of every dag or of one, with their start and end and their task "
        "instances counted by state.",
        ["taskexec runs list", "taskexec runs list --dag etl --state failed --limit 5"],
    )
    listing.add_argument("--dag", default=None, help="only this dag's runs (default: all dags)")
    listing.add_argument(
        "--state", choices=[s.value for s in DagRunState], default=None, help="only runs in it"
    )
    listing.add_argument("--limit", type=parsing.positive, default=20, help="runs to show")
    listing.set_defaults(func=cmd_runs_list)
    cancel = parsing.command(
        runs,
        "cancel",
        "mark a run failed; running tries stop",
        "Mark a run failed: its running tries are told to stop, the task instances that "
        "have not run are skipped.",
        ["taskexec runs cancel etl manual__2026-01-31T12:00:00+00:00"],
    )
    cancel.add_argument("dag_id", help="the run's dag id")
    cancel.add_argument("run_id", help="the run id (`taskexec runs list` shows them)")
    cancel.set_defaults(func=cmd_runs_cancel)


def _register_trigger(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trig = parsing.command(
        sub,
        "trigger",
        "create a dag run; the scheduler runs it",
        "Create a run of a dag from the dags folder (TASKEXEC_DAGS_FOLDER) and print its id "
        "as JSON; the active scheduler runs it. `taskexec run` does the same and follows "
        "the run to its end.",
        ["taskexec trigger etl", 'taskexec trigger etl --conf \'{"source": "s3://x"}\''],
    )
    trig.add_argument("dag_id", help="a dag in the dags folder (`taskexec dags list`)")
    trig.add_argument("--conf", default=None, help="run conf as a JSON object")
    trig.add_argument(
        "--logical-date",
        default=None,
        help="ISO date or datetime, UTC unless it says (default: none, as a manual run)",
    )
    trig.set_defaults(func=cmd_trigger)


def _register_tasks(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tasks = parsing.group(
        sub,
        "tasks",
        "task instances of a run",
        "The task instances of a dag run: clear them to run them again.",
        ["taskexec tasks clear etl RUN_ID transform --downstream"],
    )
    clear = parsing.command(
        tasks,
        "clear",
        "run task instances of a run again (new tries)",
        "Give task instances of a run new tries, as Airflow's clear does, so that the "
        "scheduler runs them again; the run goes back to running.",
        [
            "taskexec tasks clear etl RUN_ID",
            "taskexec tasks clear etl RUN_ID transform --downstream",
        ],
    )
    clear.add_argument("dag_id", help="the run's dag id")
    clear.add_argument("run_id", help="the run id (`taskexec runs list` shows them)")
    clear.add_argument("task_ids", nargs="*", help="tasks to clear (default: all)")
    clear.add_argument("--downstream", action="store_true", help="also every task below them")
    clear.set_defaults(func=cmd_tasks_clear)


def _register_logs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logs = parsing.command(
        sub,
        "logs",
        "print a task instance's log",
        "Print the log of one try of a task instance (its latest, unless --try says), from "
        "the logs folder (TASKEXEC_LOGS_DIR, default TASKEXEC_DATA_DIR/logs).",
        [
            "taskexec logs etl RUN_ID extract",
            "taskexec logs etl RUN_ID transform --map-index 7 --try 2",
        ],
    )
    logs.add_argument("dag_id", help="the run's dag id")
    logs.add_argument("run_id", help="the run id (`taskexec runs list` shows them)")
    logs.add_argument("task_id", help="the task's id")
    logs.add_argument(
        "--map-index",
        type=parsing.int_range(-1),
        default=-1,
        help="the map index of a mapped task; -1 for a task that is not mapped",
    )
    logs.add_argument(
        "--try",
        dest="try_number",
        type=parsing.positive,
        default=None,
        help="the try number (default: the latest try with a log)",
    )
    logs.set_defaults(func=cmd_logs)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``runs create | list | cancel``, ``trigger``, ``tasks clear`` and ``logs``."""
    _register_runs(sub)
    _register_trigger(sub)
    _register_tasks(sub)
    _register_logs(sub)
