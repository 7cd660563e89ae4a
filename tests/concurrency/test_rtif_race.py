"""The race behind Airflow #61705 / #53905, on a real server and a real database.

W writers, each with its own keep-alive connection, wait at a barrier and then PUT a
different value as the FIRST write for the same fresh task instance. With a
read-then-write this is where the second INSERT hits the primary key and answers 409.
Here every answer must be 2xx, and the database must hold exactly one row whose value
is one that some 2xx writer sent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import models

from conftest import LiveServer
from helpers import auth, check_race, history_rows, rtif_rows, seed, ti_row

WRITERS = 32
ROUNDS = 50


def test_concurrent_first_writes_never_conflict(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, backend: str
) -> None:
    run = seed(settings, tasks=ROUNDS)
    check_race(live_server.base_url, run, sync_engine, backend, WRITERS)


def test_duplicate_retry_while_first_is_in_its_transaction(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine
) -> None:
    """A client times out and retries while its first PUT is still uncommitted: the
    retry waits on the database's row lock (or SQLite's write lock), then both
    succeed and one row holds the value."""
    ti = seed(settings).task_instances[0]
    db = live_server.app.state.db
    first_inside = threading.Event()
    calls = Counter[str]()

    async def slow_first(operation: str) -> None:
        calls[operation] += 1
        if calls[operation] == 1:
            first_inside.set()
            await asyncio.sleep(1.0)  # hold the transaction open, uncommitted

    db.before_commit = slow_first
    fields = {"bash_command": "echo retry-safe"}
    codes: list[int] = []

    def put() -> None:
        with live_server.client() as client:
            resp = client.put(
                f"/execution/task-instances/{ti.id}/rtif", json=fields, headers=auth(ti.token)
            )
            codes.append(resp.status_code)

    first = threading.Thread(target=put)
    first.start()
    assert first_inside.wait(timeout=10)
    started = time.perf_counter()
    second = threading.Thread(target=put)
    second.start()
    first.join(timeout=30)
    second.join(timeout=30)
    waited = time.perf_counter() - started
    db.before_commit = None

    assert codes == [201, 201]
    # Two writes reached the database (on PostgreSQL by the direct path's function).
    assert sum(calls.values()) == 2
    # The retry really overlapped the first transaction instead of running after it.
    assert waited < 5
    rows = rtif_rows(sync_engine)
    assert [r["rendered_fields"] for r in rows] == [fields]


def test_concurrent_run_claims_have_one_winner(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine
) -> None:
    """Eight workers race to start the same queued try: exactly one wins."""
    ti = seed(settings).task_instances[0]
    barrier = threading.Barrier(8)
    codes: dict[int, int] = {}

    def claim(pid: int) -> None:
        with live_server.client() as client:
            client.get("/health")
            barrier.wait(timeout=30)
            resp = client.patch(
                f"/execution/task-instances/{ti.id}/run",
                json={"hostname": "host", "pid": pid},
                headers=auth(ti.token),
            )
            codes[pid] = resp.status_code

    threads = [threading.Thread(target=claim, args=(pid,)) for pid in range(1000, 1008)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [pid for pid, code in codes.items() if code == 200]
    assert len(winners) == 1, codes
    assert sorted(codes.values()) == [200] + [409] * 7
    row = ti_row(sync_engine, id=ti.id)
    assert row is not None and row["pid"] == winners[0]


def test_concurrent_retry_requests_archive_once(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine
) -> None:
    """The same up_for_retry sent eight times at once: all 2xx, one history row, one new try."""
    ti = seed(settings, max_tries=3).task_instances[0]
    with live_server.client() as client:
        client.patch(
            f"/execution/task-instances/{ti.id}/run",
            json={"hostname": "h", "pid": 1},
            headers=auth(ti.token),
        )
    barrier = threading.Barrier(8)
    codes: list[int] = []

    def retry() -> None:
        with live_server.client() as client:
            client.get("/health")
            barrier.wait(timeout=30)
            resp = client.patch(
                f"/execution/task-instances/{ti.id}/state",
                json={"state": "up_for_retry"},
                headers=auth(ti.token),
            )
            codes.append(resp.status_code)

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(codes) == [200] * 7 + [204], codes
    assert len(history_rows(sync_engine, ti.id)) == 1
    with sync_engine.connect() as conn:
        tries = conn.execute(
            sa.select(models.task_instance.c.try_number, models.task_instance.c.state)
        ).all()
    assert [tuple(t) for t in tries] == [(2, "queued")]
