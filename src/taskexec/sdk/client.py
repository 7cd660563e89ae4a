"""The Execution API client used by workers.

Retries (tenacity) network errors, timeouts and 5xx, honouring ``Retry-After`` on 503,
with random exponential backoff; never a 4xx. Retrying a write is safe because every
write on the server is idempotent: that is the point of taskexec.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import uuid
from typing import Any

import httpx
import tenacity

from taskexec.wire import protocol

log = logging.getLogger(__name__)


class ServerResponseError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.detail = detail
        self.retry_after: float | None = None

    @classmethod
    def from_response(cls, resp: httpx.Response) -> ServerResponseError:
        """Parse ``{"detail": {"reason", "message"}}`` (or anything else) from ``resp``."""
        detail: Any = None
        try:
            detail = resp.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, dict):
            reason = str(detail.get("reason", "error"))
            message = str(detail.get("message", ""))
        else:
            reason, message = "error", str(detail or resp.reason_phrase)
        err = cls(resp.status_code, reason, message, detail)
        retry_after = resp.headers.get("retry-after", "")
        if retry_after.isdigit():
            err.retry_after = float(retry_after)
        return err


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry retryable failures."""

    attempts: int = 5
    wait_min: float = 1.0
    wait_max: float = 90.0


def is_retryable(exc: BaseException) -> bool:
    """Network errors, timeouts and 5xx are retried; 4xx never are."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ServerResponseError) and exc.status >= 500


class _Wait(tenacity.wait.wait_base):
    """Random exponential backoff; on 503 never less than the server's Retry-After."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        ceiling = min(self.policy.wait_max, self.policy.wait_min * 2**retry_state.attempt_number)
        wait = random.uniform(self.policy.wait_min, max(self.policy.wait_min, ceiling))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, ServerResponseError) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.policy.wait_max))
        return wait


class Client:
    """An Execution API client for one task instance (its token's subject)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        """``transport`` replaces the network (tests); ``http`` replaces the whole
        httpx client, e.g. with an in-process ASGI client."""
        self.token = token
        self.retry = retry or RetryPolicy()
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._lock = threading.Lock()
        self.task_instances = TaskInstanceOperations(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (unless it was handed in)."""
        if self._owns_http:
            self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one logical request, retrying as the policy says; raise on an error status.

        Every attempt carries the same ``correlation-id``, so the server's log ties the
        retries of one request together.
        """
        correlation_id = str(protocol.uuid7())
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            wait=_Wait(self.retry),
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=lambda state: log.warning(
                "retrying %s %s after attempt %d: %s",
                method,
                path,
                state.attempt_number,
                state.outcome.exception() if state.outcome else "",
            ),
            reraise=True,
        )
        return retrying(self._send, method, path, json, headers or {}, correlation_id)

    def _send(
        self, method: str, path: str, json: Any, extra: dict[str, str], correlation_id: str
    ) -> httpx.Response:
        headers = {
            **extra,
            "Authorization": f"Bearer {self.token}",
            protocol.CORRELATION_HEADER: correlation_id,
        }
        resp = self._http.request(method, path, json=json, headers=headers)
        refreshed = resp.headers.get(protocol.REFRESHED_TOKEN_HEADER)
        if refreshed:
            with self._lock:
                self.token = refreshed
        if resp.is_error:
            raise ServerResponseError.from_response(resp)
        return resp


class TaskInstanceOperations:
    """``/execution/task-instances/{id}/...``"""

    def __init__(self, client: Client) -> None:
        self.client = client

    @staticmethod
    def _path(ti_id: uuid.UUID | str, action: str) -> str:
        return f"/execution/task-instances/{ti_id}/{action}"

    def start(self, ti_id: uuid.UUID | str, *, hostname: str, pid: int) -> dict[str, Any]:
        """queued → running; returns the run context."""
        resp = self.client.request(
            "PATCH", self._path(ti_id, "run"), json={"hostname": hostname, "pid": pid}
        )
        body: dict[str, Any] = resp.json()
        return body

    def heartbeat(self, ti_id: uuid.UUID | str, *, hostname: str, pid: int) -> None:
        """Tell the server this try is alive."""
        self.client.request(
            "PUT", self._path(ti_id, "heartbeat"), json={"hostname": hostname, "pid": pid}
        )

    def finish(self, ti_id: uuid.UUID | str, state: str) -> int:
        """running → success, failed or up_for_retry; returns 204 (moved) or 200 (already)."""
        resp = self.client.request("PATCH", self._path(ti_id, "state"), json={"state": state})
        return resp.status_code

    def set_rtif(
        self,
        ti_id: uuid.UUID | str,
        fields: dict[str, Any],
        *,
        meta: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Store the rendered fields, with each field's renderer and truncation (``meta``,
        sent in a header so the body stays Airflow's)."""
        headers = (
            {protocol.FIELD_META_HEADER: json.dumps(meta, separators=(",", ":"))} if meta else {}
        )
        self.client.request("PUT", self._path(ti_id, "rtif"), json=fields, headers=headers)

    def get_rtif(self, ti_id: uuid.UUID | str) -> dict[str, Any]:
        """The stored rendered fields."""
        body: dict[str, Any] = self.client.request("GET", self._path(ti_id, "rtif")).json()
        return body
