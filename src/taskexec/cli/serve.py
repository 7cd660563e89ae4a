"""``taskexec serve``: the API server."""

from __future__ import annotations

import argparse
import logging

from taskexec.cli.common import ensure_schema
from taskexec.config import Settings
from taskexec.security import TokenSigner

log = logging.getLogger("taskexec")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    """Run the API server (uvicorn, uvloop, httptools; N worker processes)."""
    import uvicorn

    from taskexec.api import deps

    ensure_schema(settings)
    # Create the signing secret before the workers start, so they all read one file.
    TokenSigner(settings)
    warning = deps.open_read_warning(args.host, settings)
    if warning:
        log.warning(warning)
    uvicorn.run(
        "taskexec.server.app:create_app",
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``."""
    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(func=cmd_serve)
