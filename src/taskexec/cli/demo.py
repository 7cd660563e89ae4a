"""``taskexec demo``: the main job, with zero set-up, on the embedded SQLite database.

It starts the API server in-process on a free port and runs the bundled example dag
(a task mapped over 200 items, bash and python templates, a secret, a task that fails
once) with the local executor. The workers reach the server through the race's
recording proxy, which sends every rendered-fields PUT twice, the second while the
first is in flight, as a client retrying after a timeout would: the race of Airflow
#61705, provoked on purpose. The summary shows that no write failed.
"""

from __future__ import annotations

import argparse
import urllib.parse

from rich.console import Console
from rich.table import Table

from taskexec.cli import runs
from taskexec.cli.common import CommandError, ensure_schema
from taskexec.config import Settings
from taskexec.executors import base
from taskexec.race import proxy
from taskexec.server.app import create_app
from taskexec.server.background import background_server

DAG_ID = "example_rendered_fields"


def summary_table(report: base.RunReport, writes: proxy.WriteLog) -> Table:
    """States, RTIF writes, non-2xx answers and write latency in one table."""
    table = Table(title="taskexec demo: summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for state, count in sorted(report.counts.items()):
        table.add_row(f"task instances {state}", str(count))
    table.add_row("RTIF writes sent", str(writes.sent))
    table.add_row("  of which duplicates sent in flight", str(writes.duplicates))
    table.add_row("RTIF non-2xx answers (expected 0)", str(writes.non_2xx))
    table.add_row("RTIF write latency p50", f"{writes.percentile(50) * 1000:.1f} ms")
    table.add_row("RTIF write latency p99", f"{writes.percentile(99) * 1000:.1f} ms")
    table.add_row("wall time", f"{report.seconds:.1f} s")
    return table


def _where_to_look(console: Console, settings: Settings, run_id: str) -> None:
    logs = settings.effective_logs_dir
    page = f"http://127.0.0.1:8080/ui/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id, safe=':+')}"
    console.print(
        f"rendered fields: run `taskexec serve`, then open {page}\n"
        f"  (or GET /api/v1/dags/{DAG_ID}/runs; stored in {settings.effective_database_url})\n"
        f"task logs: taskexec logs {DAG_ID} '{run_id}' transform --map-index 0   (files in {logs})",
        # Long links and commands stay whole, so they can be copied.
        soft_wrap=True,
    )


def run(settings: Settings, *, workers: int | None = None) -> bool:
    """Run the demo; True when no task instance failed for good and no write failed."""
    console = Console()
    ensure_schema(settings)
    console.print(f"database: {settings.effective_database_url}")
    with (
        background_server(create_app(settings)) as base_url,
        proxy.recording_proxy(base_url, duplicate=True) as (proxy_url, writes),
    ):
        console.print(f"API server: {base_url} (OpenAPI docs at {base_url}/docs)")
        created = runs.trigger(settings, DAG_ID)
        console.print(
            f"triggered {DAG_ID} run {created.run_id}: {len(created.task_instances)} task instances"
        )
        worker_settings = settings.model_copy(update={"api_url": proxy_url})
        report = runs.execute_run(worker_settings, created, workers=workers, console=console)
    console.print(summary_table(report, writes))
    _where_to_look(console, settings, created.run_id)
    return not report.counts.get("failed") and writes.non_2xx == 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    """Run the bundled example dag on the embedded database, end to end."""
    if not run(settings, workers=args.workers):
        raise CommandError("some task instances failed for good")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    demo = sub.add_parser("demo", help="run the example dag on the embedded database")
    demo.add_argument("--workers", type=int, default=None, help="local processes (default: CPUs)")
    demo.set_defaults(func=cmd_demo)
