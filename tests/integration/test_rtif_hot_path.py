"""PUT /rtif's hot path (``api/routes/rtif_hot_path``) answers exactly as the FastAPI
route does: the same requests, sent to a server with it and to one without it (on one
database), get the same status, body and headers, on every backend."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from taskexec.api.routes import rtif_hot_path
from taskexec.config import Settings
from taskexec.security import TokenSigner
from taskexec.server.app import create_app
from taskexec.wire import protocol

from conftest import run_server
from helpers import auth, rtif_rows, seed

# Headers whose value differs from one answer to the next by design: compared by
# presence and place only.
_VARYING = {"date", "correlation-id", "refreshed-api-token"}
_LIMIT = 100_000


def _url(ti_id: object) -> str:
    return f"/execution/task-instances/{ti_id}/rtif"


def _seen(resp: httpx.Response, stored: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer as bytes and ordered headers, and what the database holds after it."""
    headers = [
        (name, "…" if name in _VARYING else value) for name, value in resp.headers.multi_items()
    ]
    # A redirect names the server's own port: its path is what must match.
    headers = [(n, httpx.URL(v).path if n == "location" else v) for n, v in headers]
    rows = [{k: r[k] for k in ("rendered_fields", "field_meta", "try_number")} for r in stored]
    return {"status": resp.status_code, "body": resp.content, "headers": headers, "rows": rows}


@pytest.fixture
def both(settings: Settings) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Clients of a server with the hot path and of one without, on one database."""
    limited = settings.model_copy(update={"max_request_body_bytes": _LIMIT})
    without = limited.model_copy(update={"rtif_hot_path": False})
    with (
        run_server(create_app(limited)) as hot,
        run_server(create_app(without)) as route,
        hot.client() as h,
        route.client() as r,
    ):
        yield h, r


@pytest.fixture
def hot_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per request the hot path handled itself (it reads the body)."""
    handled: list[int] = []
    read_body = rtif_hot_path._read_body

    async def counting(receive: Any) -> bytes:
        handled.append(1)
        return await read_body(receive)

    monkeypatch.setattr(rtif_hot_path, "_read_body", counting)
    return handled


def _chunks(size: int) -> Iterator[bytes]:
    yield b'{"big": "'
    yield b"x" * size
    yield b'"}'


def _cases(settings: Settings) -> list[tuple[str, bool, dict[str, Any]]]:
    """(name, whether the hot path handles it itself, httpx request arguments)."""
    ti, other = seed(settings, tasks=2).task_instances
    signer = TokenSigner(settings)
    token = auth(ti.token)
    unknown = uuid.uuid4()
    meta = json.dumps({"a": {"renderer": "bash"}})
    secret = {"password": "hunter2", "cmd": "echo"}
    return [
        ("stored", True, {"url": _url(ti.id), "json": {"a": 1}, "headers": token}),
        ("near expiry", True, {"url": _url(ti.id), "json": {"a": 2},
                               "headers": auth(signer.mint(ti.id, lifetime=20))}),
        ("charset", True, {"url": _url(ti.id), "content": b'{"a": 3}', "headers": {
            **token, "content-type": "application/json; charset=utf-8"}}),
        ("no content type", True, {"url": _url(ti.id), "content": b'{"a": 4}', "headers": token}),
        ("field meta", True, {"url": _url(ti.id), "json": {"a": 5}, "headers": {
            **token, protocol.FIELD_META_HEADER: meta}}),
        ("masked", True, {"url": _url(ti.id), "json": secret, "headers": token}),
        ("upper-case id", True, {"url": _url(str(ti.id).upper()), "json": {"a": 7},
                                 "headers": token}),
        ("id without hyphens", True, {"url": _url(ti.id.hex), "json": {"a": 8},
                                      "headers": token}),
        ("urn:uuid: id", True, {"url": _url(f"urn:uuid:{ti.id}"), "json": {"a": 9},
                                "headers": token}),
        ("uuid: id", False, {"url": _url(f"uuid:{ti.id}"), "json": {}, "headers": token}),
        ("unclosed brace", False, {"url": _url(f"{{{ti.id}"), "json": {}, "headers": token}),
        ("bad field meta", True, {"url": _url(ti.id), "json": {"a": 6}, "headers": {
            **token, protocol.FIELD_META_HEADER: "[1]"}}),
        ("not json", True, {"url": _url(ti.id), "content": b"{nope", "headers": token}),
        ("a list", True, {"url": _url(ti.id), "json": [1], "headers": token}),
        ("too deep", True, {"url": _url(ti.id), "headers": token,
                            "json": json.loads("[" * 40 + "]" * 40)}),
        ("chunked, too large", True, {"url": _url(ti.id), "headers": token,
                                      "content": _chunks(2 * _LIMIT)}),
        ("unknown try", True, {"url": _url(unknown), "json": {},
                               "headers": auth(signer.mint(unknown))}),
        ("declared too large", False, {"url": _url(ti.id), "headers": token,
                                       "content": b"{}" + b" " * _LIMIT}),
        ("no token", False, {"url": _url(ti.id), "json": {}}),
        ("basic auth", False, {"url": _url(ti.id), "json": {},
                               "headers": {"Authorization": "Basic dTpw"}}),
        ("bad token", False, {"url": _url(ti.id), "json": {}, "headers": auth("x.y.z")}),
        ("another try's token", False, {"url": _url(ti.id), "json": {},
                                        "headers": auth(other.token)}),
        ("expired", False, {"url": _url(ti.id), "json": {},
                            "headers": auth(signer.mint(ti.id, lifetime=-120))}),
        ("path not a uuid", False, {"url": _url("nope"), "json": {}, "headers": token}),
        ("text/plain", False, {"url": _url(ti.id), "content": b"{}", "headers": {
            **token, "content-type": "text/plain"}}),
    ]  # fmt: skip


def test_the_hot_path_answers_as_the_route_does(
    both: tuple[httpx.Client, httpx.Client],
    hot_reads: list[int],
    settings: Settings,
    sync_engine: sa.Engine,
) -> None:
    cases = _cases(settings)
    for name, handled, request in cases:
        before = len(hot_reads)
        answers = [_seen(c.request("PUT", **_fresh(request)), rtif_rows(sync_engine)) for c in both]
        assert answers[0] == answers[1], name
        assert (len(hot_reads) > before) == handled, name
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"a": 9}]


def test_other_methods_and_a_trailing_slash_answer_as_before(
    both: tuple[httpx.Client, httpx.Client], settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    for method, url in (
        ("DELETE", _url(ti.id)),
        ("POST", _url(ti.id)),
        ("HEAD", _url(ti.id)),
        ("PUT", _url(ti.id) + "/"),
    ):
        answers = [
            _seen(c.request(method, url, json={}, headers=auth(ti.token)), rtif_rows(sync_engine))
            for c in both
        ]
        assert answers[0] == answers[1], (method, url)


def _fresh(request: dict[str, Any]) -> dict[str, Any]:
    # A generator body can be sent once: each server gets a new one.
    if not isinstance(request.get("content"), (bytes, type(None))):
        return {**request, "content": _chunks(2 * _LIMIT)}
    return request


def test_ended_and_stale_tries_answer_as_the_route_does(
    both: tuple[httpx.Client, httpx.Client],
    hot_reads: list[int],
    settings: Settings,
    sync_engine: sa.Engine,
) -> None:
    ended, stale = seed(settings, tasks=2, max_tries=1).task_instances
    hot = both[0]
    runner = {"hostname": "w", "pid": 1}
    for ti, state in ((ended, "success"), (stale, "up_for_retry")):
        base = f"/execution/task-instances/{ti.id}"
        assert hot.patch(f"{base}/run", json=runner, headers=auth(ti.token)).status_code == 200
        assert hot.patch(f"{base}/state", json={"state": state}, headers=auth(ti.token)).is_success
    for ti, status in ((ended, 409), (stale, 410)):
        answers = [
            _seen(c.put(_url(ti.id), json={}, headers=auth(ti.token)), rtif_rows(sync_engine))
            for c in both
        ]
        assert answers[0] == answers[1]
        assert answers[0]["status"] == status
    assert len(hot_reads) == 2


def test_overridden_dependencies_send_every_request_to_the_route(
    settings: Settings, hot_reads: list[int]
) -> None:
    """``taskexec race`` swaps the writer through FastAPI's dependency overrides: then
    the hot path must not write with the production writer behind its back."""
    from taskexec.api import deps

    written: list[uuid.UUID] = []

    async def writer(db: Any, ti_id: uuid.UUID, fields: Any, meta: Any) -> None:
        written.append(ti_id)

    app = create_app(settings)
    app.dependency_overrides[deps.get_rtif_writer] = lambda: writer
    ti = seed(settings).task_instances[0]
    with run_server(app) as live, live.client() as c:
        assert c.put(_url(ti.id), json={"a": 1}, headers=auth(ti.token)).status_code == 201
    assert written == [ti.id] and hot_reads == []


class _Failing:
    """A body processor that fails as a bug would."""

    async def masked_body(self, raw: bytes) -> Any:
        raise RuntimeError("a bug")

    def close(self) -> None:
        pass


def test_an_unexpected_error_answers_as_the_route_does(
    settings: Settings, hot_reads: list[int], sync_engine: sa.Engine
) -> None:
    """A 500 from the hot path is the app's outermost one: same status, body (but for
    the correlation id it quotes) and headers as from the FastAPI route."""
    apps = [create_app(settings), create_app(settings.model_copy(update={"rtif_hot_path": False}))]
    for app in apps:
        app.state.bodies = _Failing()
    ti = seed(settings).task_instances[0]
    answers = []
    with run_server(apps[0]) as hot, run_server(apps[1]) as route:
        for live in (hot, route):
            with live.client() as c:
                resp = c.put(_url(ti.id), json={"a": 1}, headers=auth(ti.token))
            seen = _seen(resp, rtif_rows(sync_engine))
            cid = resp.json()["detail"]["correlation_id"]
            seen["body"] = resp.content.replace(cid.encode(), b"<cid>")
            answers.append(seen)
    assert answers[0] == answers[1]
    assert answers[0]["status"] == 500 and len(hot_reads) == 1


class _Telemetry:
    """Stands in for FastAPI's native telemetry: on or off, and passing requests on."""

    def __init__(self) -> None:
        self.on = False
        self.observed = 0

    def enabled(self) -> bool:
        return self.on

    async def __call__(self, *, app: Any, scope: Any, receive: Any, send: Any, **_: Any) -> None:
        self.observed += 1
        await app(scope, receive, send)


def _with_telemetry(settings: Settings) -> tuple[Any, _Telemetry, Any]:
    """An app whose telemetry is the stand-in (off), and a task instance to write to."""
    app = create_app(settings)
    telemetry = _Telemetry()
    app._native_telemetry = telemetry  # type: ignore[attr-defined]
    return app, telemetry, seed(settings).task_instances[0]


def test_with_telemetry_on_requests_go_to_the_whole_app(
    settings: Settings, hot_reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI's telemetry observes every request it sees: once it is on, the hot path
    leaves them all to the app (checked once a second; here at every request)."""
    monkeypatch.setattr(rtif_hot_path, "TELEMETRY_CHECK_SECONDS", 0.0)
    app, telemetry, ti = _with_telemetry(settings)
    with run_server(app) as live, live.client() as c:
        assert c.put(_url(ti.id), json={"a": 1}, headers=auth(ti.token)).status_code == 201
        assert (len(hot_reads), telemetry.observed) == (1, 0)
        telemetry.on = True
        assert c.put(_url(ti.id), json={"a": 2}, headers=auth(ti.token)).status_code == 201
        assert (len(hot_reads), telemetry.observed) == (1, 1)


def test_telemetry_is_asked_once_per_interval(
    settings: Settings, hot_reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer is kept for ``TELEMETRY_CHECK_SECONDS``: asking on every request read
    OpenTelemetry's settings from the environment each time."""
    monkeypatch.setattr(rtif_hot_path, "TELEMETRY_CHECK_SECONDS", 3600.0)
    app, telemetry, ti = _with_telemetry(settings)
    with run_server(app) as live, live.client() as c:
        for n in range(3):
            assert c.put(_url(ti.id), json={"a": n}, headers=auth(ti.token)).status_code == 201
            telemetry.on = True  # not seen again within the interval
    assert (len(hot_reads), telemetry.observed) == (3, 0)
