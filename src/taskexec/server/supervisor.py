"""The ``taskexec serve`` supervisor, light: uvicorn's ``Multiprocess`` over the server
processes, with none of the server's own modules loaded.

``taskexec serve`` checks the address, waits for the database and creates the signing
secret (which loads SQLAlchemy, FastAPI and every command of the CLI, about 100 MiB),
then replaces itself, same pid, with this module (``os.execv``): the supervisor that
stays for the server's lifetime holds uvicorn and the settings only (about 35 MiB), and
each worker process imports the app itself (``create_server_app``, a fresh interpreter
per worker). Settings come from the environment, which the exec keeps.

With two workers or more, each worker listens on a socket of its own, all bound to the
one address with ``SO_REUSEPORT``, and the kernel spreads new connections over them
(``balanced_listeners``). On one shared socket, as uvicorn has it, the worker that
wakes first accepts every connection waiting: a burst of keep-alive clients then all
lands on one worker while the others sit idle, for as long as those connections live.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from taskexec import logs
from taskexec.config import Settings, get_settings
from taskexec.server import connections, supervision

log = logging.getLogger(__name__)

APP = "taskexec.server.app:create_server_app"


def uvicorn_config(
    settings: Settings,
    *,
    app: Any,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool,
) -> Any:
    """uvicorn's configuration of a taskexec server (``app``: an app, or the import
    string of a factory for worker processes)."""
    import uvicorn

    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        # httptools, with a headers deadline and a connection cap (server.connections).
        http=connections.configure(
            header_timeout=settings.http_header_timeout_seconds,
            max_connections=settings.http_max_connections,
        ),
        timeout_keep_alive=settings.http_keep_alive_seconds,
        access_log=access_log,
        log_level=log_level,
        # Logging is set up by taskexec in every process (taskexec.logs), uvicorn's too.
        log_config=None,
        timeout_graceful_shutdown=10,
    )


def _argv(host: str, port: int, workers: int, log_level: str, access_log: bool) -> list[str]:
    argv = ["--host", host, "--port", str(port), "--workers", str(workers)]
    return argv + ["--log-level", log_level] + (["--access-log"] if access_log else [])


# Held back from the exec until the supervisor's own handlers are in place: a Ctrl-C
# while the new interpreter is still importing would end it with a traceback.
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def become_supervisor(host: str, port: int, workers: int, log_level: str, access_log: bool) -> None:
    """Replace this process (same pid) with the light supervisor; never returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    # The interpreter's own options (-X, -W, ...) as multiprocessing passes them on;
    # -P: not the working directory first on sys.path (where `python -m` would put it).
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    module = [sys.executable, *flags, "-P", "-m", __name__]
    argv = [*module, *_argv(host, port, workers, log_level, access_log)]
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # kept across exec
    try:
        os.execv(sys.executable, argv)
    finally:  # only if the exec failed
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskexec serve (supervisor)")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--log-level", required=True)
    parser.add_argument("--access-log", action="store_true")
    return parser.parse_args(argv)


def balanced_listeners(settings: Settings, workers: int) -> bool:
    """Whether each worker listens on a socket of its own (``SO_REUSEPORT``): on Linux,
    whose kernel spreads connections over such sockets (others give them all to one)."""
    return workers > 1 and settings.http_reuse_port and sys.platform.startswith("linux")


def _reserve(host: str, port: int) -> socket.socket:
    """The address bound, not listened on: it holds the port for the workers' sockets
    (each binds it too, ``SO_REUSEPORT``), and the kernel sends it no connection."""
    # The address family as uvicorn picks it for one shared socket ("localhost" is IPv4).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # First bound alone: a port another server holds (even one of ours, sharing it with
    # its workers) is refused, as it is without SO_REUSEPORT.
    with socket.socket(family, socket.SOCK_STREAM) as alone:
        alone.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        alone.bind((host, port))
        port = alone.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _share_address(sock)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _share_address(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


class OwnListenerWorker(multiprocess.Process):
    """A uvicorn worker process that listens on a socket of its own, bound to the
    address of the socket it is handed (the supervisor's, ``_reserve``). When the
    worker dies its socket closes with it: new connections go to the workers alive,
    and only those that were waiting in its queue, not yet accepted, are reset."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        own = []
        for reserved in sockets or []:
            sock = socket.socket(reserved.family, reserved.type, reserved.proto)
            try:
                _share_address(sock)
                sock.bind(reserved.getsockname())
            except OSError as exc:
                # As a worker that cannot start: the supervisor stops, not restarts it.
                log.error("cannot listen on %s: %s", reserved.getsockname(), exc)
                sys.exit(STARTUP_FAILURE)
            reserved.close()
            own.append(sock)
        super().target(own)


def main(argv: Sequence[str] | None = None) -> int:
    """Supervise ``--workers`` server processes until stopped (SIGINT, SIGTERM)."""
    from uvicorn.supervisors import Multiprocess

    args = _parse(argv)
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    config = uvicorn_config(
        settings,
        app=APP,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    balanced = balanced_listeners(settings, args.workers)
    try:
        sock = _reserve(args.host, args.port) if balanced else config.bind_socket()
    except OSError as exc:  # the address was taken since ``taskexec serve`` checked it
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc.strerror or exc)
        return 1
    except SystemExit:  # uvicorn logged why (the address was taken since it was checked)
        return 1
    if balanced:
        # uvicorn's supervisor starts (and replaces) its workers as its module's Process.
        multiprocess.Process = OwnListenerWorker  # type: ignore[misc]
        log.info("listening on http://%s:%d, one socket per worker", args.host, args.port)
    supervision.mark_supervisor()
    supervisor = Multiprocess(config, sockets=[sock])  # its signal handlers are set here
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
