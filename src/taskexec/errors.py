"""Domain exceptions. Each has a snake_case ``reason``; its docstring is the default message.

The HTTP status for each class lives in one table, in ``taskexec.server.app``.
"""

from __future__ import annotations

from typing import Any


class TaskExecError(Exception):
    """The request could not be completed."""

    reason = "error"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        # A docstring wrapped over lines is one line of message: no newline, no indent.
        self.message = message or " ".join((type(self).__doc__ or "").split())
        self.extra = extra
        super().__init__(self.message)

    def detail(self) -> dict[str, Any]:
        """The ``detail`` object of an error response."""
        return {"reason": self.reason, "message": self.message, **self.extra}


class NotFoundError(TaskExecError):
    """Task instance not found."""

    reason = "not_found"


class StaleTryError(TaskExecError):
    """This id belongs to an earlier try of the task instance; a newer try has replaced it."""

    reason = "stale_try"


class InvalidStateError(TaskExecError):
    """The task instance is not in a state that allows this transition."""

    reason = "invalid_state"


class NotRunningError(TaskExecError):
    """The task instance is not running."""

    reason = "not_running"


class TryEndedError(TaskExecError):
    """This try has ended: what it stored stays as it was."""

    reason = "try_ended"


class RunningElsewhereError(TaskExecError):
    """The task instance is running on another host or process."""

    reason = "running_elsewhere"


class RunExistsError(TaskExecError):
    """A dag run with this dag_id and run_id already exists."""

    reason = "run_exists"


class InvalidBodyError(TaskExecError):
    """The request body is not valid."""

    reason = "invalid_body"


class PayloadTooLargeError(TaskExecError):
    """The request body is larger than the server accepts."""

    reason = "payload_too_large"


class UnsupportedMediaTypeError(TaskExecError):
    """The request body must be sent as application/json."""

    reason = "unsupported_media_type"


class MissingTokenError(TaskExecError):
    """A Bearer token is required."""

    reason = "missing_token"


class InvalidTokenError(TaskExecError):
    """The Bearer token is not valid."""

    reason = "invalid_token"


class ExpiredTokenError(TaskExecError):
    """The Bearer token has expired."""

    reason = "token_expired"


class TokenSubjectMismatchError(TaskExecError):
    """Token subject does not match task instance id."""

    reason = "token_subject_mismatch"


class InvalidValueError(TaskExecError):
    """The database cannot store this value."""

    reason = "invalid_value"


class DatabaseUnavailableError(TaskExecError):
    """The database is busy or unreachable; retry the request."""

    reason = "database_unavailable"


class ServiceUnavailableError(TaskExecError):
    """The server cannot handle this request now; try again."""

    reason = "temporarily_unavailable"


class SchemaOutdatedError(TaskExecError):
    """The database schema is not at the version this release needs."""

    reason = "schema_outdated"


class DagNotFoundError(NotFoundError):
    """No run of this dag is known."""

    reason = "dag_not_found"


class DagRunNotFoundError(NotFoundError):
    """This dag has no run with that id."""

    reason = "dag_run_not_found"


class TaskInstanceKeyNotFoundError(NotFoundError):
    """This run has no task instance with that task id and map index."""

    reason = "task_instance_not_found"


class RenderedFieldsNotFoundError(NotFoundError):
    """No rendered fields are stored for this task instance."""

    reason = "rendered_fields_not_found"


class ReadAccessDeniedError(TaskExecError):
    """The read API answers only loopback clients (asking for localhost or a loopback
    address) unless TASKEXEC_API_TOKEN is set."""

    reason = "read_token_required"
