"""``taskexec demo``: the main job, with zero set-up, on the embedded SQLite database.

It starts the API server in-process on a free port, triggers the bundled example dag
(extract >> a task mapped over 200 items >> load and report, bash and python
templates, a secret, a task that fails once and is retried) and runs a scheduler with
the local executor in-process until the run ends. The workers reach the server through the race's
recording proxy, which sends every rendered-fields PUT twice, the second while the
first is in flight, as a client retrying after a timeout would: the race of Airflow
#61705, provoked on purpose. The summary shows that no write failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from taskexec import schemas
from taskexec.cli import common, parsing, runs
from taskexec.cli import run as run_command
from taskexec.cli.common import CommandError, ensure_schema
from taskexec.config import Settings, redacted_url
from taskexec.db import engine as db_engine
from taskexec.race import proxy
from taskexec.scheduler import loop
from taskexec.server.app import create_app
from taskexec.server.background import background_server
from taskexec.services import scheduling
from taskexec.wire.states import DagRunState

DAG_ID = "example_rendered_fields"


def summary_table(
    final: schemas.DagRunSummary, api_state: str, writes: proxy.WriteLog, seconds: float
) -> Table:
    """The run's final state, states, RTIF writes, non-2xx answers and write latency."""
    table = Table(title="taskexec demo: summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("dag run state (read back from the read API)", api_state)
    for state, count in sorted(final.task_instance_states.items()):
        table.add_row(f"task instances {state}", str(count))
    table.add_row("RTIF writes sent", str(writes.sent))
    table.add_row("  of which duplicates sent in flight", str(writes.duplicates))
    table.add_row("RTIF non-2xx answers (expected 0)", str(writes.non_2xx))
    table.add_row("RTIF write latency p50", f"{writes.percentile(50) * 1000:.1f} ms")
    table.add_row("RTIF write latency p99", f"{writes.percentile(99) * 1000:.1f} ms")
    table.add_row("wall time", f"{seconds:.1f} s")
    return table


async def _schedule_and_follow(
    settings: Settings, created: schemas.NewDagRun, console: Console
) -> schemas.DagRunSummary:
    """A scheduler (with the local executor) in this process, until the run ends."""
    async with db_engine.open_database(settings) as db:
        scheduler = loop.Scheduler(db, settings)
        scheduler.start()
        try:
            return await run_command.follow(settings, created, lambda _now: None)
        finally:
            await scheduler.aclose()


def _shown_path(path: Path) -> str:
    """``path`` as typed from the current directory: relative below it, else absolute."""
    absolute = path.absolute()
    try:
        shown = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return shlex.quote(str(absolute))
    # A bare name would be looked up on PATH: keep a slash in it.
    return shlex.quote(shown if "/" in shown else f"./{shown}")


def _script() -> Path | None:
    """This ``taskexec`` script, if there is one."""
    # argv[0] is the script as the user typed it (``make demo`` runs
    # ``.venv-demo/bin/taskexec``); under ``python -m`` the script may still sit beside
    # the interpreter.
    for script in (Path(sys.argv[0]), Path(sys.executable).parent / "taskexec"):
        if script.name == "taskexec" and script.is_file() and os.access(script, os.X_OK):
            return script
    return None


def taskexec_command() -> str:
    """How to run this ``taskexec`` from the current directory: the bare name when PATH
    finds this very script, else the script's path, else ``python -m taskexec``."""
    script = _script()
    if script is None:
        return f"{shlex.quote(sys.executable)} -m taskexec"
    found = shutil.which("taskexec")
    if found is not None and os.path.samefile(found, script):
        return "taskexec"
    return _shown_path(script)


def hints(settings: Settings, run_id: str) -> list[str]:
    """The closing lines: where to see the run, as commands that run as printed."""
    command = taskexec_command()
    run_path = f"{DAG_ID}/runs/{urllib.parse.quote(run_id, safe=':+')}"
    stored = redacted_url(settings.effective_database_url)
    lines = [
        "rendered fields: start the server on the same database with",
        f"  {command} serve",
        f"then open http://127.0.0.1:8080/ui/dags/{run_path}",
        f"  (or GET /api/v1/dags/{DAG_ID}/runs; stored in {stored})",
        f"task logs (files in {settings.effective_logs_dir}):",
        f"  {command} logs {DAG_ID} {shlex.quote(run_id)} transform --map-index 0",
    ]
    script = _script()
    if command != "taskexec" and script and (activate := script.parent / "activate").is_file():
        lines.append(
            f"  (or activate the virtualenv, `. {_shown_path(activate)}`, and type `taskexec`)"
        )
    names = sorted(set(os.environ) & {f"TASKEXEC_{n.upper()}" for n in Settings.model_fields})
    if names:
        lines.append(f"(with the same {', '.join(names)} as this demo)")
    return lines


def _say(console: Console, line: str) -> None:
    # Long ids, links and commands stay on one line, so they can be copied, also when
    # stdout is not a terminal (where Rich would otherwise wrap at 80 columns).
    console.print(line, soft_wrap=True, markup=False)


def run(settings: Settings, *, workers: int | None = None) -> bool:
    """Run the demo; True when the run succeeded and no write failed."""
    console = Console()
    ensure_schema(settings)
    if (lease := common.read(settings, scheduling.current_lease)) is not None:
        raise CommandError(
            f"a scheduler is already active on this database ({lease.holder}); the demo "
            f"runs its own: stop the other first (`{taskexec_command()} standalone --stop`)"
        )
    _say(console, f"database: {redacted_url(settings.effective_database_url)}")
    started = time.perf_counter()
    server = settings.model_copy(update={"scheduler_in_server": False})
    with (
        background_server(create_app(server)) as base_url,
        proxy.recording_proxy(base_url, duplicate=True) as (proxy_url, writes),
    ):
        _say(console, f"API server: {base_url} (OpenAPI docs at {base_url}/docs)")
        created = runs.trigger(settings, DAG_ID)
        count = len(created.task_instances)
        _say(console, f"triggered {DAG_ID} run {created.run_id}: {count} task instances")
        # The scheduler's workers write through the proxy, which sends every PUT twice.
        scheduling_settings = settings.model_copy(
            update={"api_url": proxy_url, "executor": "local", "local_workers": workers or 0}
        )
        with console.status("the scheduler runs the dag: extract >> transform x200 >> ..."):
            final = asyncio.run(_schedule_and_follow(scheduling_settings, created, console))
        path = f"/api/v1/dags/{DAG_ID}/runs/{urllib.parse.quote(created.run_id, safe='')}"
        api_state = str(httpx.get(base_url + path, timeout=10).json().get("state"))
    console.print(summary_table(final, api_state, writes, time.perf_counter() - started))
    for line in hints(settings, created.run_id):
        _say(console, line)
    return final.state == DagRunState.SUCCESS and writes.non_2xx == 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    """Run the bundled example dag on the embedded database, end to end."""
    if not run(settings, workers=args.workers):
        raise CommandError("the run failed, or a write was refused")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    demo = parsing.command(
        sub,
        "demo",
        "run the example dag on the embedded database",
        "Bring the embedded SQLite database up to date, start the API server in-process, "
        "trigger the bundled example dag (204 task instances, a secret to mask, a retry) "
        "and run it through the scheduler and local workers whose rendered-fields writes "
        "are all sent twice at once, as a client retrying after a timeout would; then "
        "print a summary (non-2xx answers expected: 0) and commands to look at the run.",
        ["taskexec demo", "taskexec demo --workers 4"],
    )
    demo.add_argument(
        "--workers",
        type=parsing.positive,
        default=None,
        help="local worker processes, 1 or more (default: one per CPU)",
    )
    demo.set_defaults(func=cmd_demo)
