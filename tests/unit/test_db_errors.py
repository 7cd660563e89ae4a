"""Database errors are classified by SQLSTATE / errno / result code, never by message."""

from __future__ import annotations

import sqlite3

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from taskexec.db import errors as db_errors
from taskexec.db.errors import Kind


def _wrap(
    orig: BaseException, cls: type[sa.exc.DBAPIError] = sa.exc.OperationalError
) -> sa.exc.DBAPIError:
    return cls("SELECT secret FROM t", {}, orig)


def _sqlite_error(code: int) -> sqlite3.Error:
    exc = sqlite3.OperationalError("some text that must not matter")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("orig", "kind"),
    [
        (psycopg.errors.DeadlockDetected(), Kind.RETRYABLE),
        (psycopg.errors.SerializationFailure(), Kind.RETRYABLE),
        (psycopg.errors.AdminShutdown(), Kind.RETRYABLE),
        (psycopg.errors.UntranslatableCharacter(), Kind.BAD_DATA),
        (psycopg.errors.UniqueViolation(), Kind.UNIQUE_VIOLATION),
        (psycopg.errors.UndefinedTable(), Kind.OTHER),
        (psycopg.OperationalError("connection refused"), Kind.RETRYABLE),
        (pymysql.err.OperationalError(1213, "Deadlock found"), Kind.RETRYABLE),
        (pymysql.err.OperationalError(1205, "Lock wait timeout"), Kind.RETRYABLE),
        (pymysql.err.OperationalError(2013, "Lost connection"), Kind.RETRYABLE),
        (pymysql.err.IntegrityError(1062, "Duplicate entry"), Kind.UNIQUE_VIOLATION),
        (pymysql.err.DataError(1406, "Data too long"), Kind.BAD_DATA),
        (pymysql.err.ProgrammingError(1146, "Table doesn't exist"), Kind.OTHER),
        (_sqlite_error(sqlite3.SQLITE_BUSY), Kind.RETRYABLE),
        (_sqlite_error(sqlite3.SQLITE_LOCKED), Kind.RETRYABLE),
        (_sqlite_error(sqlite3.SQLITE_BUSY_SNAPSHOT), Kind.RETRYABLE),
        (_sqlite_error(sqlite3.SQLITE_CONSTRAINT_UNIQUE), Kind.UNIQUE_VIOLATION),
        (_sqlite_error(sqlite3.SQLITE_ERROR), Kind.OTHER),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_classify(orig: BaseException, kind: Kind) -> None:
    assert db_errors.classify(_wrap(orig)) is kind


def test_message_text_is_ignored() -> None:
    # A message that reads like a deadlock, with a code that says otherwise.
    orig = pymysql.err.OperationalError(1146, "Deadlock found when trying to get lock")
    assert db_errors.classify(_wrap(orig)) is Kind.OTHER


def test_invalidated_connection_is_retryable() -> None:
    exc = sa.exc.OperationalError("x", {}, Exception("gone"), connection_invalidated=True)
    assert db_errors.is_retryable(exc)


def test_pool_timeout_is_retryable() -> None:
    assert db_errors.is_retryable(sa.exc.TimeoutError())


def test_describe_never_contains_the_statement() -> None:
    text = db_errors.describe(_wrap(psycopg.errors.DeadlockDetected("detail with SQL")))
    assert "SELECT" not in text
    assert "40P01" in text


@pytest.mark.parametrize(
    ("orig", "kind"),
    [
        (psycopg.errors.DeadlockDetected(), "deadlock"),
        (psycopg.errors.LockNotAvailable(), "lock_timeout"),
        (psycopg.errors.SerializationFailure(), "serialization"),
        (psycopg.errors.AdminShutdown(), "connection"),
        (psycopg.OperationalError("connection refused"), "connection"),
        (pymysql.err.OperationalError(1213, "Deadlock found"), "deadlock"),
        (pymysql.err.OperationalError(1205, "Lock wait timeout"), "lock_timeout"),
        (pymysql.err.OperationalError(2013, "Lost connection"), "connection"),
        (_sqlite_error(sqlite3.SQLITE_BUSY), "busy"),
        (_sqlite_error(sqlite3.SQLITE_ERROR), "other"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_retry_kind(orig: BaseException, kind: str) -> None:
    """Retries are counted under a short name taken from the code, not the message."""
    assert db_errors.retry_kind(_wrap(orig)) == kind


def test_retry_kind_of_a_pool_timeout() -> None:
    assert db_errors.retry_kind(sa.exc.TimeoutError()) == "pool_timeout"
