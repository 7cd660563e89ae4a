"""Connection limits for the HTTP server (uvicorn with httptools), per process.

uvicorn closes a keep-alive connection left idle after a response, but not one that
never sends a request, nor one that sends its headers a byte at a time: both hold a
file descriptor for ever, and enough of them starve every other client. This protocol
adds the missing bounds:

- headers deadline: a request's headers must all arrive within ``header_timeout``
  seconds of the connection opening (or of the previous response), else the
  connection is closed (the body's own deadline is the request deadline's 408);
- a cap on open connections: past ``max_connections`` a new connection is closed at
  once, before it holds anything else;
- ``raise_open_file_limit``: the process's soft limit on open files raised to the hard one.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a headers deadline and a connection cap. The
    limits are class attributes, set once per process by ``configure``."""

    header_timeout: float = 10.0
    max_connections: int = 2048

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            transport.abort()
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is None:
            return  # refused by the cap: it never became a connection
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's headers are bounded too (uvicorn's keep-alive timeout
        # only covers a connection that stays silent).
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._headers_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_late(self) -> None:
        self._headers_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def configure(*, header_timeout: float, max_connections: int) -> type[BoundedHttpProtocol]:
    """The protocol class with this process's limits."""
    BoundedHttpProtocol.header_timeout = header_timeout
    BoundedHttpProtocol.max_connections = max_connections
    return BoundedHttpProtocol


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft
