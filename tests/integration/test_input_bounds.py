"""No 500 from input, on every backend: offsets, indexes and dates out of what the
databases store are refused with 422 (an HTML 400 page on /ui) before any query, and
a /ui page that fails for another reason is an HTML page too, never JSON or SQL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.server.app import create_app
from taskexec.services import dags

from conftest import LiveServer
from helpers import auth, only, seed

HUGE = "9223372036854775808"
RUNNER = {"hostname": "worker-1", "pid": 4242}
# A valid ISO date whose UTC instant is in the year 10000.
PAST_9999 = "9999-12-31T23:59:59.999999-05:00"


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/dags?offset={HUGE}",
        "/api/v1/dags?offset=2147483648",
        f"/api/v1/dags/test_dag/runs?offset={HUGE}",
        f"/api/v1/dags/test_dag/runs/r/task-instances?offset={HUGE}",
        f"/api/v1/dags/test_dag/runs/r/task-instances/t/rendered-fields?map_index={HUGE}",
    ],
)
def test_out_of_range_numbers_are_422(client: httpx.Client, settings: Settings, path: str) -> None:
    seed(settings)
    resp = client.get(path)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]["reason"] == "validation_error"


def test_the_largest_offset_is_answered(client: httpx.Client, settings: Settings) -> None:
    seed(settings)
    resp = client.get("/api/v1/dags?offset=2147483647")
    assert resp.status_code == 200 and resp.json()["items"] == []


def test_out_of_range_numbers_on_pages_are_html(client: httpx.Client, settings: Settings) -> None:
    seed(settings)
    for path in (f"/ui/?offset={HUGE}", f"/ui/?dag_id=test_dag&offset={HUGE}"):
        resp = client.get(path)
        assert resp.status_code == 400, resp.text
        assert resp.headers["content-type"].startswith("text/html")


def test_dates_past_what_databases_store_are_422(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    base = f"/execution/task-instances/{ti.id}"
    late_start = client.patch(
        f"{base}/run", json={**RUNNER, "start_date": PAST_9999}, headers=auth(ti.token)
    )
    assert late_start.status_code == 422, late_start.text
    early = client.patch(
        f"{base}/run", json={**RUNNER, "start_date": "0999-01-01T00:00:00Z"}, headers=auth(ti.token)
    )
    assert early.status_code == 422, early.text
    started = client.patch(
        f"{base}/run",
        json={**RUNNER, "start_date": "2026-11-25T10:00:00+05:00"},
        headers=auth(ti.token),
    )
    assert started.status_code == 200, started.text
    late_end = client.patch(
        f"{base}/state", json={"state": "success", "end_date": PAST_9999}, headers=auth(ti.token)
    )
    assert late_end.status_code == 422, late_end.text
    done = client.patch(
        f"{base}/state",
        json={"state": "success", "end_date": "9999-12-31T23:59:59Z"},
        headers=auth(ti.token),
    )
    assert done.status_code == 204, done.text


def test_a_failing_page_is_an_html_500_without_sql(
    live_server: LiveServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(settings)

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise sa.exc.ProgrammingError("SELECT secret_column FROM t", {}, Exception("boom"))

    monkeypatch.setattr(dags, "list_dags", broken)
    with live_server.client() as client:
        resp = client.get("/ui/")
        api = client.get("/api/v1/dags")
    assert resp.status_code == 500 and resp.headers["content-type"].startswith("text/html")
    assert "correlation id" in resp.text and "secret_column" not in resp.text
    assert api.status_code == 500 and api.json()["detail"]["reason"] == "internal_error"


@only("sqlite")
@pytest.mark.parametrize("hot_path", [True, False], ids=["hot-path", "route"])
def test_a_client_gone_mid_body_is_no_server_error(
    settings: Settings, hot_path: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker killed while sending its body: logged as what it is, no 500, no traceback."""
    ti = seed(settings).task_instances[0]
    app = create_app(settings.model_copy(update={"rtif_hot_path": hot_path}))
    sent: list[dict[str, Any]] = []
    incoming = iter(
        [
            {"type": "http.request", "body": b'{"a": ', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": f"/execution/task-instances/{ti.id}/rtif",
        "raw_path": b"",
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {ti.token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
        ],
    }

    async def go() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    # Its own logger's level too: an in-process `taskexec race` (another test) silences it.
    with caplog.at_level(logging.INFO, logger="taskexec.server.app"):
        asyncio.run(go())
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [400]
    assert b"client_disconnected" in b"".join(m.get("body", b"") for m in sent)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("disconnected before its request body" in r.getMessage() for r in caplog.records)
