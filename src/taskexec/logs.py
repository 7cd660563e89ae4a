"""Logging: one configuration for every process (the CLI, each server worker, a local
worker), as text or one JSON object per line, with the request's correlation id on
every line written while handling it; and ``Outage``, which logs a failure that repeats
(database down for the pruner or the scheduler) once when it starts and once when it
ends, with a count, rather than a traceback per round.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys
import time

import orjson

# The correlation id of the request being handled ("-" outside a request). Set by the
# request middleware; read by every log line.
correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONFIGURED_ATTR = "_taskexec_configured"


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, and ``[correlation_id=…]`` on a request's lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        cid = getattr(record, "correlation_id", "-")
        return line if cid == "-" else f"{line} [correlation_id={cid}]"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, correlation id, and the
    traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", "-"),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str | int = "INFO", fmt: str = "text") -> None:
    """Send every logger's records (uvicorn's included) to stderr in one format. Safe to
    call again in the same process (a server worker after the CLI): it replaces what an
    earlier call installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CorrelationFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _CONFIGURED_ATTR, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _CONFIGURED_ATTR, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # uvicorn's loggers (run with log_config=None) have no handlers of their own: they
    # write through this one, in the same format; its access log only when asked for.


class Outage:
    """A failure that may repeat every round (a loop meeting a database that is down):
    the first is logged as a warning, the repeats are counted, and the recovery is
    logged with how many rounds failed and for how long."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.failures = 0
        self._since = 0.0

    def failed(self, reason: str) -> None:
        """One more failed round, for ``reason`` (one line, no traceback)."""
        if self.failures == 0:
            self._since = time.monotonic()
            self.logger.warning("%s failing: %s (logged again when it recovers)", self.what, reason)
        self.failures += 1

    def succeeded(self) -> None:
        """A round that worked: ends the outage, if there was one."""
        if self.failures:
            took = time.monotonic() - self._since
            self.logger.warning(
                "%s recovered after %d failed rounds over %.1f s", self.what, self.failures, took
            )
            self.failures = 0
