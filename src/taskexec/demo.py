"""``taskexec demo``: the main job, with zero set-up, on the embedded SQLite database.

It starts the API server in-process on a free port and runs the bundled example dag
(a task mapped over 200 items, bash and python templates, a secret, a task that fails
once) with the local executor. Every rendered-fields PUT is sent twice, the second
while the first is in flight, as a client retrying after a timeout would: the race of
Airflow #61705, provoked on purpose. The summary shows that no write failed.
"""

from __future__ import annotations

import urllib.parse

from rich.console import Console
from rich.table import Table

from taskexec import cli, running
from taskexec.api import background
from taskexec.api.app import create_app
from taskexec.config import Settings
from taskexec.executors.base import RunReport

DAG_ID = "example_rendered_fields"


def summary_table(report: RunReport) -> Table:
    """States, RTIF writes, non-2xx answers and write latency in one table."""
    table = Table(title="taskexec demo: summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for state, count in sorted(report.counts.items()):
        table.add_row(f"task instances {state}", str(count))
    writes = report.writes
    table.add_row("RTIF writes sent", str(writes.sent))
    table.add_row("  of which duplicates sent in flight", str(writes.duplicates))
    table.add_row("RTIF non-2xx answers (expected 0)", str(writes.non_2xx))
    table.add_row("RTIF write latency p50", f"{writes.percentile(50) * 1000:.1f} ms")
    table.add_row("RTIF write latency p99", f"{writes.percentile(99) * 1000:.1f} ms")
    table.add_row("wall time", f"{report.seconds:.1f} s")
    return table


def run(settings: Settings, *, workers: int | None = None) -> bool:
    """Run the demo; True when no task instance failed for good and no write failed."""
    console = Console()
    cli.ensure_schema(settings)
    console.print(f"database: {settings.effective_database_url}")
    with background.background_server(create_app(settings)) as base_url:
        console.print(f"API server: {base_url} (OpenAPI docs at {base_url}/docs)")
        worker_settings = settings.model_copy(update={"api_url": base_url})
        run_id, total = running.trigger_run(worker_settings, DAG_ID)
        console.print(f"triggered {DAG_ID} run {run_id}: {total} task instances")
        report = running.execute_run(
            worker_settings,
            DAG_ID,
            run_id,
            total,
            workers=workers,
            duplicate_writes=True,
            console=console,
        )
    console.print(summary_table(report))
    logs = settings.effective_logs_dir
    page = f"http://127.0.0.1:8080/ui/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id, safe=':+')}"
    console.print(
        f"rendered fields: run `taskexec serve`, then open {page}\n"
        f"  (or GET /api/v1/dags/{DAG_ID}/runs; stored in {settings.effective_database_url})\n"
        f"task logs: taskexec logs {DAG_ID} '{run_id}' transform --map-index 0   (files in {logs})",
        # Long links and commands stay whole, so they can be copied.
        soft_wrap=True,
    )
    return not report.counts.get("failed") and report.writes.non_2xx == 0
