"""The ``taskexec`` command.

One module per command group, each with its arguments beside its commands: ``db``,
``serve`` (serve, scheduler, standalone), ``runs`` (runs create | list | cancel,
trigger, tasks clear, logs), ``run``, ``dags`` (dags list), ``workers``
(celery-worker), ``tools`` (race, bench) and ``demo``. Commands are plain functions of
the parsed arguments and the settings; their database work goes through ``Database`` →
services like every other entry point. ``parsing`` is the parser they share, and
``failures`` turns what went wrong into one line and an exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from taskexec import __version__, logs
from taskexec.config import Settings, get_settings

DESCRIPTION = """\
taskexec runs dags (Python files of tasks) through a scheduler and workers that report
to its Execution API, and stores every task's rendered template fields with one upsert,
so that overlapping writes never race. It runs on an embedded SQLite database with no
set-up, or on PostgreSQL or MariaDB/MySQL (TASKEXEC_DATABASE_URL).

Settings come from TASKEXEC_* environment variables (see the README's Configuration).
An error is one line on stderr; the exit status is 2 for a usage error (an option or a
TASKEXEC_* value) and 1 for an environment error (a database or broker that cannot be
reached, a missing database, an outdated schema)."""

EXAMPLES = """\
first steps:
  taskexec demo                  # the bundled example dag, end to end, on SQLite
  taskexec dags list             # the dags in the dags folder and their tasks
  taskexec run example_rendered_fields
  taskexec serve                 # the API, the read API and the web page /ui
  taskexec COMMAND --help        # what a command does, its options and defaults"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    # Imported when the parser is built, not with the package: importing
    # ``taskexec.cli`` alone loads none of the commands' dependencies (SQLAlchemy,
    # FastAPI, Rich).
    from taskexec.cli import dags, db, demo, parsing, run, runs, serve, tools, workers

    parser = parsing.Parser(prog="taskexec", description=DESCRIPTION, epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"taskexec {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error instead of its one-line message "
        "(also TASKEXEC_DEBUG=1)",
    )
    sub = parser.add_subparsers(required=True, title="commands", metavar="COMMAND")
    for group in (demo, dags, run, runs, serve, db, workers, tools):
        group.register(sub)
    return parser


def _debug(args: argparse.Namespace | None) -> bool:
    flag = os.environ.get("TASKEXEC_DEBUG", "").strip().lower() in ("1", "true", "yes")
    return flag or bool(args is not None and args.debug)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskexec`` console script; returns the exit status."""
    from taskexec.cli import failures

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return done.code if isinstance(done.code, int) else 2
    settings: Settings | None = None
    try:
        settings = get_settings()
        logs.configure(settings.log_level, settings.log_format)
        for noisy in ("alembic", "httpx", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        args.func(args, settings)
    except KeyboardInterrupt:
        print("taskexec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        failure = failures.explain(exc, settings)
        if failure is None or _debug(args):
            traceback.print_exc()
            return failure.status if failure else 1
        if failure.message:
            print(f"taskexec: {failure.message}", file=sys.stderr)
        return failure.status
    return 0
