"""``taskexec run``: trigger a dag and execute it with an executor, showing progress."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from taskexec import trigger
from taskexec.config import Settings
from taskexec.executors.base import RunReport
from taskexec.sdk.dag import Dag, load_dags

FINISHED = ("success", "failed")


class UnknownDagError(Exception):
    """No dag with this id in the dags folder."""


class NoApiServerError(Exception):
    """No API server answers at the configured URL."""


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
        raise NoApiServerError(
            f"no API server answers at {settings.api_url}: start `taskexec serve` "
            "or set TASKEXEC_API_URL"
        )
    from taskexec.api.app import create_app
    from taskexec.api.background import background_server

    with background_server(create_app(settings)) as base_url:
        yield settings.model_copy(update={"api_url": base_url})


def find_dag(settings: Settings, dag_id: str) -> Dag:
    """Load the dags folder and return ``dag_id``."""
    dags = load_dags(settings.effective_dags_folder)
    if dag_id not in dags:
        known = ", ".join(sorted(dags)) or "none"
        raise UnknownDagError(
            f"no dag {dag_id!r} in {settings.effective_dags_folder} (found: {known})"
        )
    return dags[dag_id]


def trigger_run(
    settings: Settings,
    dag_id: str,
    *,
    conf: dict[str, Any] | None = None,
    logical_date: dt.datetime | None = None,
) -> tuple[str, int]:
    """Trigger ``dag_id``; returns the run id and how many task instances it has."""
    dag = find_dag(settings, dag_id)
    run_id, rows = asyncio.run(
        trigger.trigger_dag(settings, dag, conf=conf, logical_date=logical_date)
    )
    return run_id, len(rows)


def execute_run(
    settings: Settings,
    dag_id: str,
    run_id: str,
    total: int,
    *,
    executor: str = "local",
    workers: int | None = None,
    duplicate_writes: bool = False,
    console: Console | None = None,
) -> RunReport:
    """Run every task instance of the run with ``executor``, with a progress bar."""
    console = console or Console()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task(f"{dag_id}", total=total, states="")

        def tick(counts: Counter[str]) -> bool:
            done = sum(counts[s] for s in FINISHED)
            states = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            progress.update(bar, completed=done, states=states)
            return True

        if executor == "local":
            from taskexec.executors import local

            report = local.run_local(
                settings,
                dag_id,
                run_id,
                workers=workers,
                duplicate_writes=duplicate_writes,
                on_tick=tick,
            )
        elif executor == "celery":
            from taskexec.executors import celery

            report = celery.run_celery(
                settings, dag_id, run_id, duplicate_writes=duplicate_writes, on_tick=tick
            )
        else:
            raise ValueError(f"unknown executor {executor!r}: use local or celery")
        tick(report.counts)
    return report


def states_table(report: RunReport, title: str = "task instances by state") -> Table:
    """A table of the run's final states."""
    table = Table(title=title)
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, count in sorted(report.counts.items()):
        style = "green" if state == "success" else "red" if state == "failed" else ""
        table.add_row(state, str(count), style=style)
    return table
