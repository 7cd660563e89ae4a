"""Retryable database trouble: retried by the transaction owner, then 503 with Retry-After.
Anything else: a 500 that carries a correlation id and never SQL or a traceback."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.security import TokenSigner
from taskexec.server.app import create_app

from conftest import TEST_SECRET, LiveServer, run_server
from helpers import auth, only, rtif_rows, seed

pytestmark = pytest.mark.fault


def _fake(orig: BaseException) -> sa.exc.DBAPIError:
    return sa.exc.OperationalError("UPDATE secret_table SET x = 1", {}, orig)


def _no_leak(resp: httpx.Response) -> None:
    text = resp.text
    for needle in ("secret_table", "Traceback", "SELECT", "INSERT", 'File "'):
        assert needle not in text, text


def test_deadlock_is_retried_then_succeeds(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    attempts: list[str] = []

    async def deadlock_twice(operation: str) -> None:
        attempts.append(operation)
        if len(attempts) <= 2:
            raise _fake(psycopg.errors.DeadlockDetected())

    live_server.app.state.db.before_commit = deadlock_twice
    with live_server.client() as client:
        resp = client.put(
            f"/execution/task-instances/{ti.id}/rtif", json={"a": 1}, headers=auth(ti.token)
        )
    assert resp.status_code == 201
    assert len(attempts) == 3
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"a": 1}]


def test_persistent_trouble_is_503_with_retry_after(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    attempts: list[str] = []

    async def always(operation: str) -> None:
        attempts.append(operation)
        raise _fake(psycopg.errors.SerializationFailure())

    live_server.app.state.db.before_commit = always
    with live_server.client() as client:
        resp = client.put(
            f"/execution/task-instances/{ti.id}/rtif",
            json={"a": 1},
            headers={**auth(ti.token), "correlation-id": "cid-503"},
        )
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == str(settings.db_retry_after_seconds)
    detail = resp.json()["detail"]
    assert detail["reason"] == "database_unavailable"
    assert detail["correlation_id"] == "cid-503"
    assert len(attempts) == settings.db_retry_attempts
    assert rtif_rows(sync_engine) == []  # every attempt was rolled back
    _no_leak(resp)


@pytest.mark.parametrize(
    "boom",
    [RuntimeError("internal detail"), _fake(psycopg.errors.UndefinedTable("no table"))],
    ids=["bug", "db-error"],
)
def test_unexpected_error_is_500_without_leaks(
    live_server: LiveServer, settings: Settings, boom: BaseException
) -> None:
    ti = seed(settings).task_instances[0]
    attempts: list[str] = []

    async def explode(operation: str) -> None:
        attempts.append(operation)
        raise boom

    live_server.app.state.db.before_commit = explode
    with live_server.client() as client:
        resp = client.put(
            f"/execution/task-instances/{ti.id}/rtif",
            json={"a": 1},
            headers={**auth(ti.token), "correlation-id": "cid-500"},
        )
    assert resp.status_code == 500
    assert len(attempts) == 1  # not retried
    detail = resp.json()["detail"]
    assert detail["reason"] == "internal_error"
    assert detail["correlation_id"] == "cid-500"
    assert "internal detail" not in resp.text
    _no_leak(resp)


def _kill_sessions(engine: sa.Engine, backend: str) -> int:
    """Terminate every other session on the test database; returns how many."""
    with engine.connect() as conn:
        if backend == "postgresql":
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )
        ids = conn.execute(
            sa.text(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
        ).scalars()
        killed = 0
        for pid in ids:
            conn.execute(sa.text(f"KILL {int(pid)}"))
            killed += 1
        return killed


@only("postgresql", "mariadb")
@pytest.mark.parametrize("recovery", ["owner-retry", "idle-pre-ping"])
def test_lost_connections_are_survived(
    tmp_path: Path, settings: Settings, backend: str, sync_engine: sa.Engine, recovery: str
) -> None:
    """Kill every server-side session the app holds; the next write still succeeds:
    either the idle pre-ping replaces the dead connection (with no retry to hide behind),
    or the transaction owner retries the invalidated one (with the pre-ping off)."""
    tuned = settings.model_copy(
        update={"db_pool_pre_ping_idle_seconds": 0.0, "db_retry_attempts": 1}
        if recovery == "idle-pre-ping"
        else {"db_pool_pre_ping": False}
    )
    run = seed(settings, tasks=2)
    first, second = run.task_instances
    with run_server(create_app(tuned)) as live_server, live_server.client() as client:
        ok = client.put(
            f"/execution/task-instances/{first.id}/rtif", json={}, headers=auth(first.token)
        )
        assert ok.status_code == 201
        killed = _kill_sessions(sync_engine, backend)
        assert killed and killed >= 1
        resp = client.put(
            f"/execution/task-instances/{second.id}/rtif",
            json={"after": "kill"},
            headers=auth(second.token),
        )
    assert resp.status_code == 201, resp.text
    assert {"after": "kill"} in [r["rendered_fields"] for r in rtif_rows(sync_engine)]


@only("sqlite")
def test_sqlite_busy_is_retried_then_503(
    tmp_path: Path, settings: Settings, backend: str, sync_engine: sa.Engine
) -> None:
    """Another writer (here a plain sqlite3 connection) holds SQLite's write lock."""
    ti = seed(settings).task_instances[0]
    holder = sqlite3.connect(settings.effective_database_url.removeprefix("sqlite:///"))
    holder.isolation_level = None
    holder.execute("BEGIN IMMEDIATE")
    quick = Settings(
        database_url=settings.effective_database_url,
        data_dir=tmp_path / "quick",
        jwt_secret=TEST_SECRET,  # type: ignore[arg-type]
        sqlite_busy_timeout_ms=50,
        db_retry_attempts=2,
    )
    with run_server(create_app(quick)) as live, live.client() as client:
        url = f"/execution/task-instances/{ti.id}/rtif"
        busy = client.put(url, json={"a": 1}, headers=auth(ti.token))
        assert busy.status_code == 503, busy.text
        assert busy.json()["detail"]["reason"] == "database_unavailable"
        assert "retry-after" in busy.headers
        holder.execute("ROLLBACK")
        holder.close()
        assert client.put(url, json={"a": 2}, headers=auth(ti.token)).status_code == 201
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"a": 2}]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(
            "postgresql+psycopg://postgres@127.0.0.1:1/none", marks=pytest.mark.postgresql
        ),
        pytest.param("mysql+pymysql://root@127.0.0.1:1/none", marks=pytest.mark.mariadb),
    ],
)
def test_unreachable_database_is_503(tmp_path: Path, url: str) -> None:
    """A database server that refuses connections: 503, never a hang or a 500."""
    settings = Settings(
        database_url=url,
        data_dir=tmp_path,
        jwt_secret=TEST_SECRET,  # type: ignore[arg-type]
        db_retry_attempts=2,
    )
    ti_id = uuid.uuid4()
    token = TokenSigner(settings).mint(ti_id)
    with run_server(create_app(settings)) as live, live.client() as client:
        resp = client.put(f"/execution/task-instances/{ti_id}/rtif", json={}, headers=auth(token))
    assert resp.status_code == 503, resp.text
    assert resp.json()["detail"]["reason"] == "database_unavailable"
    _no_leak(resp)


@only("sqlite")
def test_a_database_error_is_answered_by_the_app_not_raised(settings: Settings) -> None:
    """The handler table answers database errors itself: nothing escapes the ASGI app,
    or this in-process client would raise instead of returning the 500."""
    ti = seed(settings).task_instances[0]
    app = create_app(settings)

    async def explode(operation: str) -> None:
        raise _fake(psycopg.errors.UndefinedTable("no table"))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
        ):
            app.state.db.before_commit = explode
            return await client.put(
                f"/execution/task-instances/{ti.id}/rtif", json={"a": 1}, headers=auth(ti.token)
            )

    resp = asyncio.run(go())
    assert resp.status_code == 500
    assert resp.json()["detail"]["reason"] == "internal_error"
    _no_leak(resp)
