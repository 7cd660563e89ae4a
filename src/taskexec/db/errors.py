"""Classify database errors by SQLSTATE, MySQL error number or SQLite result code.

Never by matching message text: messages change with driver, version and locale.
"""

from __future__ import annotations

import enum
import sqlite3

import sqlalchemy as sa

# Every error the database or its driver raises, for callers that must not import
# SQLAlchemy (the server's handler table).
DatabaseError = sa.exc.DBAPIError


class Kind(enum.Enum):
    """What a database error means to the transaction owner."""

    RETRYABLE = "retryable"  # deadlock, serialization failure, busy/locked, lost connection
    BAD_DATA = "bad_data"  # the value cannot be stored: answer 422
    UNIQUE_VIOLATION = "unique_violation"  # a real conflict on a unique key
    OTHER = "other"  # a bug or an outage we do not understand: answer 500, log it


# SQLSTATE codes (PostgreSQL appendix A).
_PG_RETRYABLE = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
    "57014",  # query_canceled: statement_timeout (the bound on every statement)
}
_PG_RETRYABLE_CLASSES = ("08",)  # connection exceptions
_PG_BAD_DATA_CLASSES = ("22",)  # data exceptions

# MySQL / MariaDB server and client error numbers.
_MYSQL_RETRYABLE = {
    1205,  # ER_LOCK_WAIT_TIMEOUT
    1213,  # ER_LOCK_DEADLOCK
    1040,  # ER_CON_COUNT_ERROR
    1053,  # ER_SERVER_SHUTDOWN
    2002,  # CR_CONNECTION_ERROR
    2003,  # CR_CONN_HOST_ERROR
    2006,  # CR_SERVER_GONE_ERROR
    2013,  # CR_SERVER_LOST
    4031,  # ER_CLIENT_INTERACTION_TIMEOUT
    1969,  # ER_STATEMENT_TIMEOUT (MariaDB's max_statement_time)
    3024,  # ER_QUERY_TIMEOUT (MySQL's max_execution_time)
}
_MYSQL_BAD_DATA = {
    1366,  # ER_TRUNCATED_WRONG_VALUE_FOR_FIELD (bad string for the charset)
    1406,  # ER_DATA_TOO_LONG
    3140,  # ER_INVALID_JSON_TEXT
    4025,  # ER_CONSTRAINT_FAILED (MariaDB's JSON_VALID check)
}

_SQLITE_RETRYABLE = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_SQLITE_UNIQUE = {sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY}


def _pg_sqlstate(orig: BaseException) -> str | None:
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else None


def _mysql_errno(orig: BaseException) -> int | None:
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _sqlite_code(orig: BaseException) -> int | None:
    code = getattr(orig, "sqlite_errorcode", None)
    # Extended result codes carry the primary code in their low byte.
    return code & 0xFF if isinstance(code, int) else None


def classify(exc: BaseException) -> Kind:
    """What kind of trouble ``exc`` is."""
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection became free in time
        return Kind.RETRYABLE
    if not isinstance(exc, sa.exc.DBAPIError):
        return Kind.OTHER
    if exc.connection_invalidated:
        return Kind.RETRYABLE
    orig = exc.orig
    if orig is None:
        return Kind.OTHER
    module = type(orig).__module__
    if module.startswith("psycopg"):
        sqlstate = _pg_sqlstate(orig)
        if sqlstate is None:
            # psycopg raises OperationalError without a SQLSTATE only for
            # connection-level failures (refused, reset, closed), and DataError without
            # one when it refuses a value itself (a NUL byte in text, say).
            if isinstance(exc, sa.exc.OperationalError):
                return Kind.RETRYABLE
            return Kind.BAD_DATA if isinstance(exc, sa.exc.DataError) else Kind.OTHER
        if sqlstate in _PG_RETRYABLE or sqlstate.startswith(_PG_RETRYABLE_CLASSES):
            return Kind.RETRYABLE
        if sqlstate.startswith(_PG_BAD_DATA_CLASSES):
            return Kind.BAD_DATA
        if sqlstate == "23505":  # unique_violation
            return Kind.UNIQUE_VIOLATION
        return Kind.OTHER
    if module.startswith(("pymysql", "aiomysql", "MySQLdb")):
        errno = _mysql_errno(orig)
        if errno in _MYSQL_RETRYABLE:
            return Kind.RETRYABLE
        if errno in _MYSQL_BAD_DATA:
            return Kind.BAD_DATA
        if errno == 1062:  # ER_DUP_ENTRY
            return Kind.UNIQUE_VIOLATION
        return Kind.OTHER
    code = _sqlite_code(orig)
    if code in _SQLITE_RETRYABLE:
        return Kind.RETRYABLE
    if code == sqlite3.SQLITE_TOOBIG:
        return Kind.BAD_DATA
    if getattr(orig, "sqlite_errorcode", None) in _SQLITE_UNIQUE:
        return Kind.UNIQUE_VIOLATION
    return Kind.OTHER


_PG_RETRY_KINDS = {"40P01": "deadlock", "55P03": "lock_timeout", "40001": "serialization"}
_MYSQL_RETRY_KINDS = {1213: "deadlock", 1205: "lock_timeout"}


def retry_kind(exc: BaseException) -> str:
    """A short name for retryable trouble, to count retries by: deadlock, lock_timeout,
    serialization, busy, pool_timeout, connection or other."""
    if isinstance(exc, sa.exc.TimeoutError):
        return "pool_timeout"
    if not isinstance(exc, sa.exc.DBAPIError) or exc.orig is None:
        return "other"
    if exc.connection_invalidated:
        return "connection"
    orig = exc.orig
    module = type(orig).__module__
    if module.startswith("psycopg"):
        sqlstate = _pg_sqlstate(orig)
        return _PG_RETRY_KINDS.get(sqlstate or "", "connection")
    if module.startswith(("pymysql", "aiomysql", "MySQLdb")):
        return _MYSQL_RETRY_KINDS.get(_mysql_errno(orig) or 0, "connection")
    if _sqlite_code(orig) in _SQLITE_RETRYABLE:
        return "busy"
    return "other"


def is_retryable(exc: BaseException) -> bool:
    """True for trouble that retrying the whole transaction may cure."""
    return classify(exc) is Kind.RETRYABLE


def constraint_name(exc: BaseException) -> str | None:
    """The violated constraint's name, where the driver reports it structurally."""
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)  # psycopg
    name = getattr(diag, "constraint_name", None)
    return name if isinstance(name, str) else None


def describe(exc: BaseException) -> str:
    """A short, log-only description: class, code and constraint, never the statement."""
    orig = getattr(exc, "orig", None) or exc
    code = _pg_sqlstate(orig) or _mysql_errno(orig) or _sqlite_code(orig)
    parts = [type(orig).__name__, f"code={code}"]
    if name := constraint_name(exc):
        parts.append(f"constraint={name}")
    return " ".join(parts)


def summary(exc: BaseException) -> str:
    """One log line about any failure: ``describe`` for a database error (never the
    statement), else the exception's class and message."""
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return describe(exc)
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def refused_connection(exc: BaseException) -> bool:
    """Whether the driver failed to connect or talk to the server (refused, reset, bad
    credentials, unknown host), as opposed to a statement it ran and failed."""
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
