"""The client's retry policy, against httpx.MockTransport (the only place it is mocked)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from taskexec.sdk.client import Client, RetryPolicy, ServerResponseError
from taskexec.sdk.dag import Dag
from taskexec.sdk.runner import RunnerConfig, _run

FAST = RetryPolicy(attempts=4, wait_min=0.0, wait_max=0.01)
TI = uuid.uuid4()


def _client(handler: Callable[[httpx.Request], httpx.Response], **kw: object) -> Client:
    return Client("http://api", "tok-1", retry=FAST, transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"detail": {"reason": reason, "message": f"{reason} happened"}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(409, "invalid_state"), (422, "invalid_body"), (404, "not_found"), (401, "missing_token")],
)
def test_4xx_is_never_retried(status: int, reason: str) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _error(status, reason)

    with _client(handler) as client, pytest.raises(ServerResponseError) as info:
        client.task_instances.set_rtif(TI, {"a": 1})
    assert len(calls) == 1
    assert (info.value.status, info.value.reason) == (status, reason)
    assert info.value.message == f"{reason} happened"


def test_503_is_retried_and_retry_after_honoured() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return _error(503, "database_unavailable", {"Retry-After": "1"})
        return httpx.Response(201, json={"message": "ok"})

    policy = RetryPolicy(attempts=3, wait_min=0.0, wait_max=5.0)
    with Client("http://api", "t", retry=policy, transport=httpx.MockTransport(handler)) as client:
        client.task_instances.set_rtif(TI, {"a": 1})
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.95


def test_timeouts_and_network_errors_are_retried() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["correlation-id"])
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        if len(calls) == 2:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json={"message": "ok"})

    with _client(handler) as client:
        client.task_instances.set_rtif(TI, {"a": 1})
    assert len(calls) == 3
    assert len(set(calls)) == 1  # one correlation id across the retries of one request


def test_5xx_gives_up_after_the_configured_attempts() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return _error(500, "internal_error")

    with _client(handler) as client, pytest.raises(ServerResponseError) as info:
        client.task_instances.heartbeat(TI, hostname="h", pid=1)
    assert len(calls) == FAST.attempts
    assert info.value.status == 500


def test_refreshed_token_is_used_next() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(
            204, headers={"Refreshed-API-Token": "tok-2"} if len(seen) == 1 else {}
        )

    with _client(handler) as client:
        client.task_instances.heartbeat(TI, hostname="h", pid=1)
        client.task_instances.heartbeat(TI, hostname="h", pid=1)
    assert seen == ["Bearer tok-1", "Bearer tok-2"]


def test_410_stops_the_runner_quietly(tmp_path: object) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path.rsplit('/', 1)[-1]}")
        return _error(410, "stale_try")

    config = RunnerConfig(api_url="http://api", logs_dir=tmp_path, retry=FAST)  # type: ignore[arg-type]
    with _client(handler) as client:
        result = _run(client, TI, {"d": Dag("d")}, config)
    assert result.outcome == "stale"
    assert calls == ["PATCH run"]  # nothing else: no /state that could touch the new try
