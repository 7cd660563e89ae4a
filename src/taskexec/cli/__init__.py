"""The ``taskexec`` command.

One module per command group, each with its arguments beside its commands: ``db``,
``serve`` (serve, scheduler, standalone), ``runs`` (runs create | list | cancel,
trigger, tasks clear, logs), ``run``, ``workers`` (celery-worker), ``tools`` (race,
bench) and ``demo``. Commands are plain functions of the parsed
arguments and the settings; their database work goes through ``Database`` → services
like every other entry point.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from taskexec import errors, logs
from taskexec.config import get_settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    # Imported when the parser is built, not with the package: importing
    # ``taskexec.cli`` alone loads none of the commands' dependencies (SQLAlchemy,
    # FastAPI, Rich).
    from taskexec.cli import db, demo, run, runs, serve, tools, workers

    parser = argparse.ArgumentParser(prog="taskexec", description="The ``taskexec`` command.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (db, serve, runs, run, workers, tools, demo):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskexec`` console script."""
    from taskexec.cli import common

    args = build_parser().parse_args(argv)
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.func(args, settings)
    except (common.CommandError, errors.TaskExecError) as exc:
        print(f"taskexec: {exc}", file=sys.stderr)
        return 1
    return 0
