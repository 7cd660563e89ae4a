"""``taskexec db``: schema migrations, the schema check, and pruning rendered fields."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from taskexec.cli import parsing
from taskexec.cli.common import CommandError, ensure_schema
from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import migrate
from taskexec.server import pruner


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> None:
    """Apply all migrations."""
    with migrate.sync_engine(settings) as engine:
        migrate.upgrade(engine, args.revision)
        print(f"database at revision {migrate.current_revision(engine)}")


def cmd_db_downgrade(args: argparse.Namespace, settings: Settings) -> None:
    """Revert migrations down to a revision."""
    with migrate.sync_engine(settings) as engine:
        migrate.downgrade(engine, args.revision)
        print(f"database at revision {migrate.current_revision(engine) or 'base'}")


def _migrations_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    heads = migrate.heads()
    if len(heads) != 1:
        problems.append(f"migrations have {len(heads)} heads: {', '.join(heads)}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        migrate.sync_engine(settings, f"sqlite:///{Path(tmp) / 'check.db'}") as scratch,
    ):
        migrate.upgrade(scratch)
        diffs = migrate.diff(scratch)
    if diffs:
        problems.append("the migrations do not produce the models' schema:")
        problems.extend(f"  {d}" for d in diffs)
    return problems


def _database_problems(settings: Settings) -> list[str]:
    heads = migrate.heads()
    with migrate.sync_engine(settings) as engine:
        current = migrate.current_revision(engine)
        if current not in heads:
            return [
                f"the database is at revision {current or 'empty'}, not {heads[0]}: "
                "run `taskexec db upgrade`"
            ]
        live = migrate.diff(engine)
    if live:
        return ["the database schema differs from the models:", *(f"  {d}" for d in live)]
    return []


def cmd_db_check(args: argparse.Namespace, settings: Settings) -> None:
    """Fail when the models and the migrations differ, or the database is not at head."""
    problems = _migrations_problems(settings) + _database_problems(settings)
    if problems:
        raise CommandError("\n".join(problems))
    print(f"ok: one head ({migrate.heads()[0]}), migrations match the models, database at head")


async def _prune(settings: Settings, *, retain: int, dry_run: bool) -> pruner.PruneResult:
    # The same loop and transaction owner as the server's background pruner.
    async with db_engine.open_database(settings) as db:
        return await pruner.prune_rendered_fields(
            db, retain=retain, batch_size=settings.prune_batch_size, dry_run=dry_run
        )


def _prune_table(result: pruner.PruneResult) -> Table:
    table = Table(title=f"rendered fields: keep the newest {result.retain} runs per dag")
    rows = "rows to remove" if result.dry_run else "rows removed"
    for column in ("dag", "runs", "runs kept", rows, "batches", "retries"):
        table.add_column(column, justify="left" if column == "dag" else "right")
    for dag in result.dags:
        table.add_row(
            dag.dag_id, *map(str, (dag.runs, dag.runs_kept, dag.rows, dag.batches, dag.retries))
        )
    return table


def cmd_db_prune(args: argparse.Namespace, settings: Settings) -> None:
    """Delete the rendered fields of all but the newest N runs of each dag (or count them)."""
    retain = settings.rendered_fields_retain_runs if args.retain is None else args.retain
    if retain <= 0:
        print(f"retention is off (keep {retain} runs): nothing pruned")
        return
    ensure_schema(settings)
    result = asyncio.run(_prune(settings, retain=retain, dry_run=args.dry_run))
    Console(soft_wrap=True).print(_prune_table(result))
    verb = "would remove" if result.dry_run else "removed"
    print(f"total: {verb} {result.rows} rows of {len(result.dags)} dags")
    if result.stopped:
        raise CommandError(f"pruning stopped early ({result.stopped}); run it again later")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``db upgrade | downgrade | check | prune``."""
    db = parsing.group(
        sub,
        "db",
        "migrate, check and prune the database",
        "The database's schema (Alembic migrations packaged with taskexec) and its "
        "rendered fields. The database is TASKEXEC_DATABASE_URL (default: SQLite in "
        "TASKEXEC_DATA_DIR).",
        ["taskexec db upgrade", "taskexec db check", "taskexec db prune --dry-run"],
    )
    up = parsing.command(
        db,
        "upgrade",
        "apply migrations",
        "Bring the database schema up to a revision (all the way, by default). Run it after "
        "installing a new release on PostgreSQL or MariaDB/MySQL; on the embedded SQLite "
        "database every command does it by itself.",
        ["taskexec db upgrade", "taskexec db upgrade --revision +1   # one step"],
    )
    up.add_argument(
        "--revision",
        default="head",
        help="the revision to go to: head, +N, or a revision id",
    )
    up.set_defaults(func=cmd_db_upgrade)
    down = parsing.command(
        db,
        "downgrade",
        "revert migrations",
        "Take the database schema down to a revision; 'base' drops every table, and the "
        "data in them.",
        ["taskexec db downgrade -1", "taskexec db downgrade base   # drops everything"],
    )
    down.add_argument("revision", help="the revision to go to: base, -N, or a revision id")
    down.set_defaults(func=cmd_db_downgrade)
    parsing.command(
        db,
        "check",
        "fail if models, migrations and database differ",
        "Apply the migrations to a scratch SQLite database and compare the result with the "
        "models; then check that the configured database is at the head revision and "
        "matches the models. Exits 1 and lists the differences otherwise.",
        ["taskexec db check"],
    ).set_defaults(func=cmd_db_check)
    _register_prune(db)


def _register_prune(db: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prune = parsing.command(
        db,
        "prune",
        "delete rendered fields of all but the newest N runs",
        "Delete the rendered fields of all but the newest N runs of each dag, in small "
        "transactions (the server does the same in the background every "
        "TASKEXEC_PRUNE_INTERVAL_SECONDS).",
        ["taskexec db prune --dry-run   # what would go", "taskexec db prune --retain 10"],
    )
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.add_argument(
        "--retain",
        type=int,
        default=None,
        help="runs to keep per dag; 0 or less keeps them all "
        "(default: TASKEXEC_RENDERED_FIELDS_RETAIN_RUNS, 30)",
    )
    prune.set_defaults(func=cmd_db_prune)
