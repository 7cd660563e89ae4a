"""What the user sees when a command fails: one line on stderr naming what to fix, and
the exit status (2 for a usage error, 1 for an environment error). Failures that are
not the user's to fix (bugs) keep their traceback; ``--debug`` shows every one."""

from __future__ import annotations

import dataclasses

import pydantic

from taskexec import config, errors
from taskexec.cli import common, parsing
from taskexec.cli.common import CommandError
from taskexec.db import errors as db_errors
from taskexec.db import migrate

# Settings whose value is never repeated in a message.
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD")


@dataclasses.dataclass(frozen=True)
class Failure:
    """One line for stderr and the exit status."""

    status: int
    message: str


def settings_problem(exc: pydantic.ValidationError) -> Failure:
    """A ``TASKEXEC_*`` variable that does not validate: a usage error."""
    parts = []
    for error in exc.errors():
        name = "TASKEXEC_" + "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        # A validator's own message quotes the value already (a URL without password).
        if error["type"] != "value_error" and not any(w in name for w in _SECRET_WORDS):
            message = f"{message}, not {error['input']!r}"
        parts.append(f"{name}: {message}")
    return Failure(parsing.USAGE, "; ".join(parts))


def database_problem(exc: BaseException, settings: config.Settings) -> Failure:
    """A database that cannot be reached, does not exist or refuses us."""
    url = config.redacted_url(settings.effective_database_url)
    missing = migrate.missing_database(settings)
    if missing is not None:
        return Failure(
            parsing.ENVIRONMENT,
            f"the database {missing!r} does not exist on the server of {url}, or this "
            "user may not see it: create it (then `taskexec db upgrade`) or grant access, "
            "or fix TASKEXEC_DATABASE_URL",
        )
    reason = common.driver_reason(exc)
    if migrate.unreachable(exc):
        return Failure(
            parsing.ENVIRONMENT,
            f"cannot connect to the database at {url} ({reason}): start it, or fix "
            "TASKEXEC_DATABASE_URL",
        )
    return Failure(parsing.ENVIRONMENT, f"the database at {url} refused: {reason}")


def explain(exc: BaseException, settings: config.Settings | None) -> Failure | None:
    """The failure to show for ``exc``, or None when it is not the user's to fix."""
    if isinstance(exc, CommandError):
        return Failure(exc.status, str(exc))
    if isinstance(exc, pydantic.ValidationError) and exc.title == config.Settings.__name__:
        return settings_problem(exc)
    if isinstance(exc, migrate.RevisionError):
        return Failure(
            parsing.USAGE,
            f"{exc}: give head, base, +N, -N or a revision id (the head is "
            f"{', '.join(migrate.heads())})",
        )
    cause = exc.__cause__ if isinstance(exc, errors.DatabaseUnavailableError) else exc
    # Only a connection problem is the user's to fix: a statement that failed is a bug.
    if (
        isinstance(cause, db_errors.DatabaseError)
        and settings is not None
        and (db_errors.refused_connection(cause) or migrate.unreachable(cause))
    ):
        return database_problem(cause, settings)
    if isinstance(exc, errors.TaskExecError):
        return Failure(parsing.ENVIRONMENT, str(exc))
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return Failure(parsing.ENVIRONMENT, f"{exc.strerror or exc}{where}")
    return None
