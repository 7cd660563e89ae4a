"""The ``taskexec`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from taskexec import errors, schemas, trigger
from taskexec.config import Settings, get_settings
from taskexec.db import engine as db_engine
from taskexec.db import migrate
from taskexec.security import TokenSigner
from taskexec.services import retention

log = logging.getLogger("taskexec")


class CommandError(Exception):
    """A CLI failure with a message for the user (exit status 1)."""


@contextlib.contextmanager
def sync_engine(settings: Settings, url: str | None = None) -> Iterator[sa.Engine]:
    """A short-lived sync engine for admin work, disposed on exit."""
    engine = db_engine.make_sync_engine(url or settings.effective_database_url, settings)
    try:
        yield engine
    finally:
        engine.dispose()


def ensure_schema(settings: Settings) -> None:
    """Embedded default: migrate to head. Elsewhere: refuse an outdated schema."""
    with sync_engine(settings) as engine:
        if settings.is_embedded:
            migrate.upgrade(engine)
        elif not migrate.is_current(engine):
            current = migrate.current_revision(engine) or "empty"
            raise CommandError(
                f"The database schema is at revision {current}, not {migrate.heads()[0]}. "
                "Run `taskexec db upgrade` first."
            )


# --- db ---------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> None:
    """Apply all migrations."""
    with sync_engine(settings) as engine:
        migrate.upgrade(engine, args.revision)
        print(f"database at revision {migrate.current_revision(engine)}")


def cmd_db_downgrade(args: argparse.Namespace, settings: Settings) -> None:
    """Revert migrations down to a revision."""
    with sync_engine(settings) as engine:
        migrate.downgrade(engine, args.revision)
        print(f"database at revision {migrate.current_revision(engine) or 'base'}")


def cmd_db_check(args: argparse.Namespace, settings: Settings) -> None:
    """Fail when the models and the migrations differ, or the database is not at head."""
    problems: list[str] = []
    heads = migrate.heads()
    if len(heads) != 1:
        problems.append(f"migrations have {len(heads)} heads: {', '.join(heads)}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        sync_engine(settings, f"sqlite:///{Path(tmp) / 'check.db'}") as scratch,
    ):
        migrate.upgrade(scratch)
        diffs = migrate.diff(scratch)
    if diffs:
        problems.append("the migrations do not produce the models' schema:")
        problems.extend(f"  {d}" for d in diffs)
    with sync_engine(settings) as engine:
        current = migrate.current_revision(engine)
        if current not in heads:
            problems.append(
                f"the database is at revision {current or 'empty'}, not {heads[0]}: "
                "run `taskexec db upgrade`"
            )
        else:
            live = migrate.diff(engine)
            if live:
                problems.append("the database schema differs from the models:")
                problems.extend(f"  {d}" for d in live)
    if problems:
        raise CommandError("\n".join(problems))
    print(f"ok: one head ({heads[0]}), migrations match the models, database at head")


async def _prune(settings: Settings, *, retain: int, dry_run: bool) -> retention.PruneResult:
    # The same service and transaction owner as the server's background pruner.
    db = db_engine.Database(
        db_engine.make_engine(settings.effective_database_url, settings), settings
    )
    try:
        return await retention.prune_rendered_fields(
            db, retain=retain, batch_size=settings.prune_batch_size, dry_run=dry_run
        )
    finally:
        await db.dispose()


def cmd_db_prune(args: argparse.Namespace, settings: Settings) -> None:
    """Delete the rendered fields of all but the newest N runs of each dag (or count them)."""
    from rich.console import Console
    from rich.table import Table

    retain = settings.rendered_fields_retain_runs if args.retain is None else args.retain
    if retain <= 0:
        print(f"retention is off (keep {retain} runs): nothing pruned")
        return
    ensure_schema(settings)
    result = asyncio.run(_prune(settings, retain=retain, dry_run=args.dry_run))
    verb = "would remove" if result.dry_run else "removed"
    table = Table(title=f"rendered fields: keep the newest {retain} runs per dag")
    rows = "rows to remove" if result.dry_run else "rows removed"
    for column in ("dag", "runs", "runs kept", rows, "batches", "retries"):
        table.add_column(column, justify="left" if column == "dag" else "right")
    for dag in result.dags:
        table.add_row(
            dag.dag_id, *map(str, (dag.runs, dag.runs_kept, dag.rows, dag.batches, dag.retries))
        )
    Console(soft_wrap=True).print(table)
    print(f"total: {verb} {result.rows} rows of {len(result.dags)} dags")
    if result.stopped:
        raise CommandError(f"pruning stopped early ({result.stopped}); run it again later")


# --- serve ------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    """Run the API server (uvicorn, uvloop, httptools; N worker processes)."""
    import uvicorn

    from taskexec.api import deps

    ensure_schema(settings)
    # Create the signing secret before the workers start, so they all read one file.
    TokenSigner(settings)
    warning = deps.open_read_warning(args.host, settings)
    if warning:
        log.warning(warning)
    uvicorn.run(
        "taskexec.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=args.access_log,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
    )


# --- runs -------------------------------------------------------------------------


async def create_run(
    settings: Settings,
    *,
    dag_id: str,
    tasks: int,
    map_count: int | None,
    run_id: str | None = None,
    conf: dict[str, Any] | None = None,
    max_tries: int = 0,
) -> schemas.CreatedDagRun:
    """Create a dag run with queued task instances and mint a token for each."""
    if tasks < 1:
        raise CommandError("--tasks must be at least 1")
    indexes = list(range(map_count)) if map_count is not None else [-1]
    keys = [(f"task_{n}", m) for n in range(tasks) for m in indexes]
    run_id, rows = await trigger.create_run(
        settings, dag_id=dag_id, tasks=keys, run_id=run_id, conf=conf, max_tries=max_tries
    )
    signer = TokenSigner(settings)
    return schemas.CreatedDagRun(
        dag_id=dag_id,
        run_id=run_id,
        task_instances=[
            schemas.CreatedTaskInstance(
                id=row["id"],
                task_id=row["task_id"],
                map_index=row["map_index"],
                try_number=row["try_number"],
                token=signer.mint(row["id"]),
            )
            for row in rows
        ],
    )


def cmd_runs_create(args: argparse.Namespace, settings: Settings) -> None:
    """Create a dag run with queued task instances; print ids and tokens as JSON."""
    ensure_schema(settings)
    conf = _parse_conf(args.conf)
    created = asyncio.run(
        create_run(
            settings,
            dag_id=args.dag_id,
            tasks=args.tasks,
            map_count=args.map,
            run_id=args.run_id,
            conf=conf,
            max_tries=args.max_tries,
        )
    )
    print(created.model_dump_json(indent=2))


def _parse_conf(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--conf is not valid JSON: {exc}") from exc
    if not isinstance(conf, dict):
        raise CommandError("--conf must be a JSON object")
    return conf


def _parse_date(raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise CommandError(f"--logical-date is not an ISO date: {exc}") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _trigger(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    """Trigger ``args.dag_id`` with ``--conf``/``--logical-date``: (run id, task instances)."""
    from taskexec import running

    ensure_schema(settings)
    try:
        return running.trigger_run(
            settings,
            args.dag_id,
            conf=_parse_conf(args.conf),
            logical_date=_parse_date(args.logical_date),
        )
    except running.UnknownDagError as exc:
        raise CommandError(str(exc)) from exc


def cmd_trigger(args: argparse.Namespace, settings: Settings) -> None:
    """Create a dag run and queue all its task instances."""
    run_id, count = _trigger(args, settings)
    print(json.dumps({"dag_id": args.dag_id, "run_id": run_id, "task_instances": count}))


def cmd_run(args: argparse.Namespace, settings: Settings) -> None:
    """Trigger a dag and execute it with an executor; exit 1 if anything failed for good."""
    from taskexec import running

    run_id, count = _trigger(args, settings)
    print(f"triggered {args.dag_id} run {run_id}: {count} task instances", flush=True)
    try:
        with running.api_server(settings) as worker_settings:
            report = running.execute_run(
                worker_settings,
                args.dag_id,
                run_id,
                count,
                executor=args.executor,
                workers=args.workers,
            )
    except running.NoApiServerError as exc:
        raise CommandError(str(exc)) from exc
    from rich.console import Console

    Console().print(running.states_table(report, f"run {run_id}"))
    if report.counts.get("failed"):
        raise CommandError(f"{report.counts['failed']} task instance(s) failed")


def cmd_logs(args: argparse.Namespace, settings: Settings) -> None:
    """Print the log of a task instance's latest try (or of --try N)."""
    from taskexec.sdk.runner import log_path

    first = log_path(
        settings.effective_logs_dir, args.dag_id, args.run_id, args.task_id, args.map_index, 1
    )
    folder = first.parent
    tries = sorted(
        (int(p.stem.removeprefix("attempt=")) for p in folder.glob("attempt=*.log")),
    )
    if not tries:
        raise CommandError(f"no logs in {folder}")
    chosen = args.try_number or tries[-1]
    if chosen not in tries:
        raise CommandError(f"no log for try {chosen}; tries with logs: {tries}")
    sys.stdout.write(folder.joinpath(f"attempt={chosen}.log").read_text())


def cmd_celery_worker(args: argparse.Namespace, settings: Settings) -> None:
    """Run a Celery worker that executes task instances with the same runner."""
    from taskexec.executors import celery

    celery.start_worker(settings, concurrency=args.concurrency)


def _csv(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _int_csv(raw: str) -> list[int]:
    try:
        return [int(part) for part in _csv(raw)]
    except ValueError as exc:
        message = f"{raw!r} is not a comma-separated list of integers"
        raise argparse.ArgumentTypeError(message) from exc


def cmd_race(args: argparse.Namespace, settings: Settings) -> None:
    """Race first writes per strategy, writers and database; write table, JSON, MD, PNG."""
    from taskexec.race import main as race_main

    try:
        race_main.race_command(args)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def cmd_bench(args: argparse.Namespace, settings: Settings) -> None:
    """Measure sustained RTIF writes, the raw ceiling, cost growth and server memory."""
    from taskexec.race import main as race_main

    try:
        race_main.bench_command(args)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    """Run the bundled example dag on the embedded database, end to end."""
    from taskexec import demo

    if not demo.run(settings, workers=args.workers):
        raise CommandError("some task instances failed for good")


# --- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="taskexec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    up = db.add_parser("upgrade", help="apply migrations")
    up.add_argument("--revision", default="head")
    up.set_defaults(func=cmd_db_upgrade)
    down = db.add_parser("downgrade", help="revert migrations")
    down.add_argument("revision", help="target revision, or 'base'")
    down.set_defaults(func=cmd_db_downgrade)
    db.add_parser("check", help="fail if models, migrations and database differ").set_defaults(
        func=cmd_db_check
    )
    prune = db.add_parser("prune", help="delete rendered fields of all but the newest N runs")
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.add_argument(
        "--retain", type=int, default=None, help="runs to keep per dag (default: the setting)"
    )
    prune.set_defaults(func=cmd_db_prune)

    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(func=cmd_serve)

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

    worker = sub.add_parser("celery-worker", help="run a Celery worker")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.set_defaults(func=cmd_celery_worker)

    race = sub.add_parser("race", help="reproduce the RTIF race and show it gone")
    race.add_argument("--strategies", type=_csv, default=["merge", "merge-retry", "upsert"])
    race.add_argument("--writers", type=_int_csv, default=[1, 8, 32, 64])
    race.add_argument("--rounds", type=int, default=20)
    race.add_argument("--db", type=_csv, default=["sqlite", "postgresql", "mysql"])
    race.add_argument("--variants", type=_csv, default=["first-write", "retry"])
    race.add_argument("--postgres-url", default=None, help="admin URL (default: env)")
    race.add_argument("--mysql-url", default=None, help="admin URL (default: env)")
    race.add_argument("--against", default=None, help="race this server instead")
    race.add_argument("--targets", default=None, help="file of 'ti_id token' lines")
    race.add_argument("--out", default="artifacts/race", help="folder for JSON, MD, PNG")
    race.add_argument("--max-seconds", type=float, default=1800, help="stop starting cases after")
    race.set_defaults(func=cmd_race)

    bench = sub.add_parser("bench", help="measure RTIF write throughput and latency")
    bench.add_argument("--db", type=_csv, default=["sqlite", "postgresql", "mysql"])
    bench.add_argument("--clients", type=_int_csv, default=[1, 8, 32, 64])
    bench.add_argument("--modes", type=_csv, default=["distinct", "hot"])
    bench.add_argument("--payloads", type=_csv, default=["1KiB", "64KiB"])
    bench.add_argument("--seconds", type=float, default=5.0, help="per configuration")
    bench.add_argument("--growth", type=_int_csv, default=[1000, 100000, 1000000])
    bench.add_argument("--server-workers", type=int, default=2)
    bench.add_argument("--targets", type=int, default=2000, help="task instances to write to")
    bench.add_argument("--postgres-url", default=None, help="admin URL (default: env)")
    bench.add_argument("--mysql-url", default=None, help="admin URL (default: env)")
    bench.add_argument("--out", default="artifacts/bench")
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="run the example dag on the embedded database")
    demo.add_argument("--workers", type=int, default=None, help="local processes (default: CPUs)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskexec`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        args.func(args, get_settings())
    except (CommandError, errors.TaskExecError) as exc:
        print(f"taskexec: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
