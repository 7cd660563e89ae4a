"""Every wait is bounded: with the database frozen (a proxy that stops forwarding, as a
database stopped with SIGSTOP looks from outside), or SQLite locked by another process,
each request is answered within the request deadline, 503 with Retry-After; /health
within a second. When the database answers again, so does the server, and no
acknowledged write is lost. The request deadline also ends slow senders and slow
handlers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.engine import make_url

from freeze_proxy import FreezeProxy
from taskexec.api import middleware
from taskexec.config import Settings
from taskexec.server.app import create_app

from conftest import run_server
from helpers import auth, only, report, rtif_rows, seed

pytestmark = pytest.mark.fault

DEADLINE = 2.0
# What the clock may add to a deadline on a loaded 2-core machine.
SLACK = 1.0


def _put(client: httpx.Client, ti: Any, value: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    resp = client.put(
        f"/execution/task-instances/{ti.id}/rtif", json={"v": value}, headers=auth(ti.token)
    )
    return resp, time.monotonic() - started


def _timed_get(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    resp = client.get(path)
    return resp, time.monotonic() - started


@pytest.fixture
def proxied(settings: Settings, backend: str) -> Iterator[tuple[Settings, FreezeProxy]]:
    """Settings whose database is reached through a FreezeProxy."""
    url = make_url(settings.database_url)
    assert url.port is not None or backend != "sqlite"
    with FreezeProxy(url.port or 0) as proxy:
        through = url.set(port=proxy.port).render_as_string(hide_password=False)
        yield (
            settings.model_copy(
                update={"database_url": through, "request_timeout_seconds": DEADLINE}
            ),
            proxy,
        )


@only("postgresql", "mariadb")
def test_a_frozen_database_gets_503_within_the_deadline_and_nothing_acknowledged_is_lost(
    proxied: tuple[Settings, FreezeProxy], settings: Settings, sync_engine: Any, backend: str
) -> None:
    frozen_settings, proxy = proxied
    ti = seed(settings).task_instances[0]
    with run_server(create_app(frozen_settings)) as live, live.client() as client:
        first, _ = _put(client, ti, "before")
        assert first.status_code == 201, first.text
        proxy.freeze()
        try:
            clients = [live.client() for _ in range(7)]
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                puts = [pool.submit(_put, clients[n], ti, n) for n in range(6)]
                health = pool.submit(_timed_get, clients[6], "/execution/health")
                answers = [p.result() for p in puts]
                health_resp, health_took = health.result()
            for each in clients:
                each.close()
        finally:
            proxy.thaw()
        for resp, took in answers:
            assert resp.status_code == 503, resp.text
            assert resp.headers["retry-after"] and took < DEADLINE + SLACK, took
            assert resp.json()["detail"]["reason"] in ("database_unavailable", "deadline_exceeded")
        assert health_resp.status_code == 503 and health_took < 1 + SLACK, health_took
        # Answering again once the database does (the first tries may meet the
        # connections the freeze broke: those are retried or answered 503).
        deadline = time.monotonic() + 30
        while (last := _put(client, ti, "after")[0]).status_code != 201:
            assert last.status_code == 503 and time.monotonic() < deadline, last.text
            time.sleep(0.5)
        assert client.get("/execution/health").status_code == 200
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"v": "after"}]
    slowest = max(took for _, took in answers)
    report(
        f"[{backend}] frozen database: 6 PUTs answered 503 in ≤ {slowest:.2f} s "
        f"(deadline {DEADLINE:g} s), /health 503 in {health_took:.2f} s"
    )


@only("sqlite")
def test_a_locked_sqlite_database_gets_503_within_the_deadline(
    settings: Settings, sync_engine: Any
) -> None:
    ti = seed(settings).task_instances[0]
    bounded = settings.model_copy(update={"request_timeout_seconds": DEADLINE})
    path = make_url(settings.database_url).database
    assert path is not None
    with run_server(create_app(bounded)) as live, live.client() as client:
        assert _put(client, ti, "before")[0].status_code == 201
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            resp, took = _put(client, ti, "locked")
            health, _ = _timed_get(client, "/execution/health")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert resp.status_code == 503 and resp.headers["retry-after"], resp.text
        assert took < DEADLINE + SLACK, took
        assert health.status_code == 200  # readers are not blocked by a writer (WAL)
        assert _put(client, ti, "after")[0].status_code == 201
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"v": "after"}]


def _deadline_app(seconds: float) -> FastAPI:
    app = FastAPI()

    @app.post("/slow")
    async def slow(request: Request) -> dict[str, int]:
        body = await request.body()
        await asyncio.sleep(float(request.query_params.get("sleep", "0")))
        return {"bytes": len(body)}

    @app.post("/stubborn")
    async def stubborn() -> dict[str, str]:
        # A handler slow to unwind once cancelled (a rollback on a database that hangs),
        # which then even answers: its answer must not go out after the deadline's.
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(3)
        return {"late": "yes"}

    app.add_middleware(middleware.DeadlineMiddleware, seconds=seconds, retry_after=1)
    return app


def test_the_deadline_answer_does_not_wait_for_a_handler_slow_to_unwind() -> None:
    with run_server(_deadline_app(1.0)) as live, live.client() as client:
        started = time.monotonic()
        resp = client.post("/stubborn")
        took = time.monotonic() - started
        assert resp.status_code == 503, resp.text
        assert resp.json()["detail"]["reason"] == "deadline_exceeded"
        assert took < 1 + SLACK, took
        # The connection still serves the next request.
        assert client.post("/slow", content=b"ok").json() == {"bytes": 2}


def test_the_request_deadline_ends_slow_handlers_and_slow_senders() -> None:
    with run_server(_deadline_app(1.0)) as live, live.client() as client:
        quick = client.post("/slow", content=b"x" * 10)
        assert quick.status_code == 200 and quick.json() == {"bytes": 10}

        started = time.monotonic()
        slow = client.post("/slow?sleep=30", content=b"x")
        assert slow.status_code == 503 and slow.headers["retry-after"] == "1"
        assert slow.json()["detail"]["reason"] == "deadline_exceeded"
        assert time.monotonic() - started < 1 + SLACK

        def trickle() -> Iterator[bytes]:
            for _ in range(40):
                yield b"x"
                time.sleep(0.1)

        started = time.monotonic()
        try:
            resp = client.post("/slow", content=trickle(), headers={"content-length": "40"})
            assert resp.status_code == 408
            assert resp.json()["detail"]["reason"] == "request_timeout"
        except httpx.TransportError:
            pass  # the server may close before the client has sent it all
        # The server cut it off at its deadline, not after the 4 s the sender wanted.
        assert time.monotonic() - started < 1 + SLACK + 0.5
