"""``taskexec serve`` (the API server, with a scheduler beside it unless turned off),
``taskexec scheduler`` (a scheduler alone) and ``taskexec standalone`` (server,
scheduler and local workers in one process tree, on the embedded default)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

from taskexec.cli import parsing
from taskexec.cli.common import CommandError, check_broker, ensure_schema, wait_for_database
from taskexec.config import Settings, redacted_url
from taskexec.security import TokenSigner

log = logging.getLogger("taskexec")

PID_FILE = "standalone.pid"


def _uvicorn_config(settings: Settings, args: argparse.Namespace, app: Any, workers: int) -> Any:
    from taskexec.server import supervisor

    return supervisor.uvicorn_config(
        settings,
        app=app,
        host=args.host,
        port=args.port,
        workers=workers,
        log_level=args.log_level,
        access_log=args.access_log,
    )


def _check_address(host: str, port: int) -> None:
    """Fail with one line if ``host:port`` cannot be listened on (in use, no such
    address), before the database wait and before uvicorn's own attempt."""
    try:
        family, kind, _proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --host or "
            "--port, or stop what listens there"
        ) from exc


def _prepare(settings: Settings, args: argparse.Namespace) -> None:
    from taskexec.api import deps
    from taskexec.server import connections

    _check_address(args.host, args.port)

    # Each connection holds a file: let the cap, not the open-file limit, decide.
    log.info("open-file limit: %d", connections.raise_open_file_limit())
    wait_for_database(settings)
    # Create the signing secret before the workers start, so they all read one file.
    TokenSigner(settings)
    warning = deps.open_read_warning(args.host, settings)
    if warning:
        log.warning(warning)


def _uvicorn(settings: Settings, args: argparse.Namespace, app: Any) -> None:
    """One server process (``standalone``: the scheduler's workers are its children)."""
    import uvicorn

    _prepare(settings, args)
    uvicorn.Server(_uvicorn_config(settings, args, app, 1)).run()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    """Run the API server: ``--workers`` uvicorn processes (uvloop, httptools) under a
    supervisor, this process, which replaces a worker that dies within a second, for
    any worker count; a worker exits when the supervisor does (``server.supervision``).
    With a scheduler beside it on Celery, an unreachable broker stops it at once, as it
    does ``taskexec scheduler``. Once ready, this process becomes the light supervisor
    (same pid, ``server.supervisor``): what it loaded to get ready is not kept."""
    from taskexec.server import supervisor

    if settings.scheduler_in_server:
        _check_executor(settings)
    _prepare(settings, args)
    logging.shutdown()  # flush every handler before the exec
    supervisor.become_supervisor(
        args.host, args.port, args.workers, args.log_level, args.access_log
    )


def _check_executor(settings: Settings) -> None:
    if settings.executor == "celery":
        check_broker(settings)


async def _scheduler(settings: Settings) -> None:
    from taskexec.db import engine as db_engine
    from taskexec.scheduler import loop

    async with db_engine.open_database(settings) as db:
        scheduler = loop.Scheduler(db, settings)
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, scheduler.stop)
        log.info("scheduler %s started (%s executor)", scheduler.holder, settings.executor)
        await scheduler.run()


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> None:
    """Run a scheduler alone; it becomes the active one unless another already is."""
    ensure_schema(settings)
    _check_executor(settings)
    asyncio.run(_scheduler(settings))


def _stop_standalone(settings: Settings) -> None:
    pid_file = settings.data_dir / PID_FILE
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        print("no taskexec standalone is running (no pid file)")
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        print(f"stopped taskexec standalone (pid {pid})")
    pid_file.unlink(missing_ok=True)


def cmd_standalone(args: argparse.Namespace, settings: Settings) -> None:
    """Server, scheduler and local workers in one process tree (``--stop`` ends the one
    started in the background by ``taskexec run``)."""
    if args.stop:
        _stop_standalone(settings)
        return
    from taskexec.server.app import create_app, freeze_start_up

    here = settings.model_copy(update={"scheduler_in_server": True, "executor": "local"})
    workers = here.local_workers or os.cpu_count() or 1
    print(
        f"taskexec standalone: http://{args.host}:{args.port}/ui/ (API, web page), "
        f"a scheduler with {workers} local worker processes, database "
        f"{redacted_url(here.effective_database_url)}",
        flush=True,
    )
    pid_file = here.data_dir / PID_FILE
    here.data_dir.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))
    try:
        app = create_app(here)
        freeze_start_up(here)
        _uvicorn(here, args, app)
    finally:
        pid_file.unlink(missing_ok=True)


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for every interface (then set "
        "TASKEXEC_API_TOKEN: without it the read API answers loopback clients only)",
    )
    parser.add_argument(
        "--port", type=parsing.port, default=8080, help="TCP port to listen on, 1-65535"
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default="info",
        help="uvicorn's log level (taskexec's own: TASKEXEC_LOG_LEVEL)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (uvicorn's access log)"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``, ``scheduler`` and ``standalone``."""
    serve = parsing.command(
        sub,
        "serve",
        "run the API server (and a scheduler beside it)",
        "Run the Execution API, the read API (/api/v1), the web page (/ui) and, unless "
        "TASKEXEC_SCHEDULER_IN_SERVER=false, a scheduler, in --workers uvicorn processes "
        "under a supervisor that replaces a worker that dies. On the embedded SQLite "
        "database it migrates the schema itself; elsewhere it refuses an outdated schema. "
        "Started before its database, it waits for it (one line per attempt); a wrong URL "
        "or a missing database stops it at once.",
        [
            "taskexec serve",
            "taskexec serve --host 0.0.0.0 --port 8080 --workers 4",
            "TASKEXEC_DATABASE_URL=postgresql+psycopg://taskexec@db/taskexec taskexec serve",
        ],
    )
    _server_args(serve)
    serve.add_argument(
        "--workers", type=parsing.positive, default=1, help="server processes, 1 or more"
    )
    serve.set_defaults(func=cmd_serve)
    parsing.command(
        sub,
        "scheduler",
        "run a scheduler alone",
        "Run a scheduler without a server: it becomes the active one unless another "
        "already is (a lease in the database), and hands tries to TASKEXEC_EXECUTOR "
        "(local worker processes, or Celery, whose broker it checks first).",
        ["taskexec scheduler", "TASKEXEC_EXECUTOR=celery taskexec scheduler"],
    ).set_defaults(func=cmd_scheduler)
    standalone = parsing.command(
        sub,
        "standalone",
        "server, scheduler and local workers in one process tree",
        "Server, scheduler and local worker processes in one process tree, for one "
        "machine. `taskexec run` starts one in the background on the embedded database "
        "when no scheduler is active; --stop ends that one.",
        ["taskexec standalone --port 8080", "taskexec standalone --stop"],
    )
    _server_args(standalone)
    standalone.add_argument(
        "--stop", action="store_true", help="stop the one `taskexec run` started, and exit"
    )
    standalone.set_defaults(func=cmd_standalone)
