"""Helpers shared by the tests (importable because pytest puts ``tests/`` on the path)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from taskexec import cli, schemas
from taskexec.config import Settings
from taskexec.db import models


def seed(
    settings: Settings, tasks: int = 1, map_count: int | None = None, max_tries: int = 0
) -> schemas.CreatedDagRun:
    """Create a dag run with queued task instances (and their tokens) in the test DB."""
    return asyncio.run(
        cli.create_run(
            settings, dag_id="test_dag", tasks=tasks, map_count=map_count, max_tries=max_tries
        )
    )


def auth(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


def rtif_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every stored rendered-fields row, read from the database."""
    t = models.rendered_task_instance_fields
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t))]


def ti_row(engine: sa.Engine, **where: Any) -> dict[str, Any] | None:
    """The task_instance row matching ``where``."""
    t = models.task_instance
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).filter_by(**where)).first()
    return dict(row._mapping) if row else None


def history_rows(engine: sa.Engine, ti_id: uuid.UUID) -> list[dict[str, Any]]:
    """The task_instance_history rows with this id."""
    t = models.task_instance_history
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.id == ti_id))]


def only(*backends: str) -> pytest.MarkDecorator:
    """Run a database test on these backends only (sqlite, postgresql, mariadb)."""
    return pytest.mark.parametrize(
        "db_url", [pytest.param(b, marks=getattr(pytest.mark, b)) for b in backends], indirect=True
    )


FIGURES: list[str] = []


def report(line: str) -> None:
    """Record a measured figure; conftest prints them all in the terminal summary."""
    FIGURES.append(line)


RaceResults = list[list[tuple[int, int, str]]]


def race_first_writes(
    base_url: str, tis: list[schemas.CreatedTaskInstance], writers: int
) -> tuple[RaceResults, float]:
    """For each task instance in turn, release ``writers`` threads at a barrier, each
    PUTting a different value as the first write. Returns (writer, status, value) per
    round, and the elapsed seconds."""
    import threading
    import time

    import httpx

    barrier = threading.Barrier(writers)
    results: RaceResults = [[] for _ in tis]
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=60.0) as client:
                client.get("/health")  # open the keep-alive connection before the race
                for r, ti in enumerate(tis):
                    barrier.wait(timeout=60)
                    value = f"writer-{w}-round-{r}"
                    resp = client.put(
                        f"/execution/task-instances/{ti.id}/rtif",
                        json={"bash_command": value, "writer": w},
                        headers=auth(ti.token),
                    )
                    with lock:
                        results[r].append((w, resp.status_code, value))
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return results, elapsed


def check_race(
    base_url: str, run: schemas.CreatedDagRun, engine: sa.Engine, label: str, writers: int
) -> None:
    """Race ``writers`` first writes per task instance of ``run``; assert the invariants."""
    results, elapsed = race_first_writes(base_url, run.task_instances, writers)
    statuses = Counter(code for rnd in results for _, code, _ in rnd)
    total = sum(statuses.values())
    report(
        f"[{label}] race: {len(results)} rounds x {writers} writers = {total} requests, "
        f"statuses {dict(statuses)}, non-2xx {total - statuses[201]}, "
        f"{total / elapsed:.0f} req/s over {elapsed:.1f}s"
    )
    assert total == len(run.task_instances) * writers
    assert set(statuses) == {201}, statuses
    rows = {row["task_id"]: row for row in rtif_rows(engine)}
    assert len(rows) == len(run.task_instances)
    for r, ti in enumerate(run.task_instances):
        stored = rows[ti.task_id]["rendered_fields"]
        accepted = {value for _, code, value in results[r] if 200 <= code < 300}
        assert stored["bash_command"] in accepted
        # The row is one writer's whole value, never a mix of two.
        assert stored["bash_command"].startswith(f"writer-{stored['writer']}-")
