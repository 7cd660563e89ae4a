"""The Execution API's conventions, as both ends apply them: header names, the error
body, ids, the nesting limit and the truncation notice."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

# Sent with every request by the worker; echoed by the server, which logs it.
CORRELATION_HEADER = "correlation-id"
# Sent by the server when a task token is close to expiry; the worker switches to it.
REFRESHED_TOKEN_HEADER = "Refreshed-API-Token"
# The optional request header of ``PUT /rtif`` that carries each field's renderer and
# truncation; a header rather than a body key keeps the body exactly Airflow's.
FIELD_META_HEADER = "Taskexec-Rendered-Fields-Meta"

# A local worker process writes its reports to this file descriptor (executors.local
# starts it, executors.worker reads the variable).
WORKER_REPORT_FD_ENV = "TASKEXEC_WORKER_REPORT_FD"

# How deep rendered fields may nest, counting the body's own object as 1: one limit on
# every database, MariaDB's (its JSON check refuses 32 containers deep). The server
# refuses deeper bodies with a 422, and the worker replaces deeper containers with a
# marker before sending.
MAX_NESTING_DEPTH = 31
# Masking's own guard, far deeper than the wire allows (the masker also guards values
# that never crossed it): a subtree deeper than this is masked whole, since nothing
# downstream (repr, json, orjson) could handle it and masking it whole cannot leak.
MASKING_MAX_DEPTH = 2000

# Airflow's notice at the start of a field the worker cut to max_templated_field_length.
TRUNCATION_PREFIX = "Truncated. You can change this behaviour in max_templated_field_length. "


def is_truncated(value: object) -> bool:
    """Whether ``value`` is a truncated field (a str starting with the notice)."""
    return isinstance(value, str) and value.startswith(TRUNCATION_PREFIX)


def error_body(reason: str, message: str, **extra: Any) -> dict[str, Any]:
    """Every error response's body: ``{"detail": {"reason": ..., "message": ...}}``."""
    return {"detail": {"reason": reason, "message": message, **extra}}


def uuid7() -> uuid.UUID:
    """A new RFC 9562 version-7 UUID: 48 bits of Unix milliseconds, then randomness."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def log_path(
    logs_dir: Path, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int
) -> Path:
    """Where the log of one try lives: the worker writes it, ``taskexec logs`` and the web
    page read it (Airflow's layout)."""
    return (
        logs_dir
        / f"dag_id={dag_id}"
        / f"run_id={run_id}"
        / f"task_id={task_id}"
        / f"map_index={map_index}"
        / f"attempt={try_number}.log"
    )
