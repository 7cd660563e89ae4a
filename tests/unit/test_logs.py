"""Logging: the text and JSON formats with the request's correlation id, and an outage
logged when it starts and when it ends rather than every round."""

from __future__ import annotations

import json
import logging

import pytest

from taskexec import logs


def _record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("taskexec.x", logging.INFO, __file__, 1, message, None, None)
    record.correlation_id = logs.correlation_id.get()
    return record


def test_json_lines_carry_the_correlation_id() -> None:
    token = logs.correlation_id.set("cid-42")
    try:
        line = logs.JsonFormatter().format(_record("hello"))
    finally:
        logs.correlation_id.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "hello" and entry["correlation_id"] == "cid-42"
    assert entry["level"] == "INFO" and entry["logger"] == "taskexec.x" and "\n" not in line


def test_text_lines_name_the_correlation_id_only_inside_a_request() -> None:
    outside = logs.TextFormatter().format(_record("plain"))
    assert outside.endswith("INFO taskexec.x: plain")
    token = logs.correlation_id.set("cid-7")
    try:
        inside = logs.TextFormatter().format(_record("in a request"))
    finally:
        logs.correlation_id.reset(token)
    assert inside.endswith("in a request [correlation_id=cid-7]")


def test_an_outage_is_logged_once_and_its_recovery_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = logs.Outage(logging.getLogger("taskexec.test"), "pruning")
    with caplog.at_level(logging.INFO, "taskexec.test"):
        for _ in range(5):
            outage.failed("OperationalError code=08006")
        outage.succeeded()
        outage.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        "pruning failing: OperationalError code=08006 (logged again when it recovers)"
    )
    assert lines[1].startswith("pruning recovered after 5 failed rounds over ")
    assert len(lines) == 2 and not any(r.exc_info for r in caplog.records)
