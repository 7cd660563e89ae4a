"""Which failures the CLI turns into one line, and which keep their traceback (bugs)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import sqlalchemy as sa

from taskexec.cli import failures
from taskexec.config import Settings


class _Other(pydantic.BaseModel):
    state: int


def _settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/x.db", data_dir=tmp_path)


def test_an_invalid_setting_is_a_usage_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKEXEC_REQUEST_TIMEOUT_SECONDS", "soon")
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings()
    failure = failures.explain(caught.value, None)
    assert failure is not None and failure.status == 2
    assert failure.message.startswith("TASKEXEC_REQUEST_TIMEOUT_SECONDS:")


def test_another_models_validation_error_is_a_bug() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        _Other(state="running")  # type: ignore[arg-type]
    assert failures.explain(caught.value, None) is None


def test_a_failed_statement_is_a_bug_not_a_database_problem(tmp_path: Path) -> None:
    bug = sa.exc.ProgrammingError("SELECT nope", {}, Exception("no such column: nope"))
    assert failures.explain(bug, _settings(tmp_path)) is None


def test_a_refused_connection_is_one_line_without_the_password(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql+psycopg://u:s3cret/x@127.0.0.1:1/db", data_dir=tmp_path
    )
    refused = sa.exc.OperationalError("connect", {}, Exception("connection refused"))
    failure = failures.explain(refused, settings)
    assert failure is not None and failure.status == 1
    assert "s3cret" not in failure.message and "***" in failure.message
