"""``taskexec dags list``: the dags in the dags folder, their tasks, and the files that
did not load."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from rich import markup
from rich.console import Console
from rich.table import Table

from taskexec.cli import parsing
from taskexec.cli.common import CommandError
from taskexec.config import Settings
from taskexec.sdk.dag import Dag, load_dag_files


@contextlib.contextmanager
def quiet_dag_loading() -> Iterator[None]:
    """Keep the loader's own log of a broken dag file (a traceback) off the terminal:
    the command names each such file with its reason on one line."""
    logger = logging.getLogger("taskexec.sdk.dag")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def _task_ids(dag: Dag) -> str:
    # A mapped task shows how many task instances a run of it has: transform[200].
    return ", ".join(
        task_id if task.expand_items is None else f"{task_id}[{len(task.expand_items)}]"
        for task_id, task in dag.tasks.items()
    )


def dags_table(dags: dict[str, Dag]) -> Table:
    """A row per dag: its id, and its tasks in the order the file defines them."""
    table = Table(title=f"{len(dags)} dag{'' if len(dags) == 1 else 's'}")
    table.add_column("dag", no_wrap=True)
    table.add_column(markup.escape("tasks (name[n]: mapped over n items)"))
    for dag_id in sorted(dags):
        table.add_row(markup.escape(dag_id), markup.escape(_task_ids(dags[dag_id])))
    return table


def cmd_dags_list(args: argparse.Namespace, settings: Settings) -> None:
    """Print the dags folder, its dags and their tasks; each file that did not load is a
    line on stderr, and makes the exit status 1."""
    folder = settings.effective_dags_folder
    if not folder.is_dir():
        raise CommandError(f"the dags folder {folder} does not exist: fix TASKEXEC_DAGS_FOLDER")
    with quiet_dag_loading():
        dags, problems = load_dag_files(folder)
    console = Console()
    console.print(f"dags folder: {folder}", soft_wrap=True, markup=False)
    console.print(dags_table(dags))
    for name, why in problems.items():
        reason = why.strip().splitlines()[0] if why.strip() else "?"
        print(f"taskexec: dag file {folder / name} not loaded: {reason}", file=sys.stderr)
    if problems:
        raise CommandError("")  # exit status 1; each file has had its line


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dags list``."""
    dags = parsing.group(
        sub,
        "dags",
        "the dags in the dags folder",
        "The dags taskexec can run: the Python files in TASKEXEC_DAGS_FOLDER (default: the "
        "bundled examples).",
        ["taskexec dags list"],
    )
    parsing.command(
        dags,
        "list",
        "list the dags, their tasks and the folder",
        "Import every dag file in the dags folder and list each dag with its tasks. A file "
        "that does not load (an import error, a dependency cycle) is named on stderr with "
        "its reason, and the exit status is 1.",
        ["taskexec dags list", "TASKEXEC_DAGS_FOLDER=~/dags taskexec dags list"],
    ).set_defaults(func=cmd_dags_list)
