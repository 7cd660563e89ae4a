"""The ``taskexec`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from taskexec import errors, schemas
from taskexec.config import Settings, get_settings
from taskexec.db import engine as db_engine
from taskexec.db import migrate
from taskexec.security import TokenSigner
from taskexec.services import dag_runs

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


# --- serve ------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    """Run the API server (uvicorn, uvloop, httptools; N worker processes)."""
    import uvicorn

    ensure_schema(settings)
    # Create the signing secret before the workers start, so they all read one file.
    TokenSigner(settings)
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
    run_id = run_id or dag_runs.new_run_id()
    engine = db_engine.make_engine(settings.effective_database_url, settings)
    db = db_engine.Database(engine, settings)
    try:
        rows = await db.write(
            dag_runs.create_dag_run,
            dag_id=dag_id,
            run_id=run_id,
            tasks=keys,
            conf=conf,
            max_tries=max_tries,
        )
    finally:
        await db.dispose()
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
    try:
        conf = json.loads(args.conf) if args.conf else None
    except json.JSONDecodeError as exc:
        raise CommandError(f"--conf is not valid JSON: {exc}") from exc
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


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    """Start a server on the embedded database and exercise the rendered-fields path."""
    from taskexec import demo

    demo.run(settings, port=args.port)


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

    demo = sub.add_parser("demo", help="run the example on the embedded database")
    demo.add_argument("--port", type=int, default=0, help="0 picks a free port")
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
