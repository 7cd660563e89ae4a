"""Helpers shared by the tests (importable because pytest puts ``tests/`` on the path)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from taskexec import schemas
from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import models
from taskexec.race import harness
from taskexec.sdk.dag import Dag
from taskexec.security import TokenSigner
from taskexec.services import dag_runs, rendered_fields, run_actions
from taskexec.wire.states import DagRunState


def seed_run(
    settings: Settings,
    *,
    dag_id: str = "test_dag",
    tasks: int = 1,
    map_count: int | None = None,
    max_tries: int = 0,
    run_id: str | None = None,
) -> schemas.CreatedDagRun:
    """Create a dag run with queued task instances ``task_0``.. (each mapped over
    ``map_count`` indexes), through the transaction owner and the one service that
    creates runs; with a token for each task instance."""
    specs = dag_runs.bare_tasks(tasks, map_count, max_tries)

    async def go() -> schemas.NewDagRun:
        async with db_engine.open_database(settings) as db:
            return await db.write(
                dag_runs.create_dag_run, dag_id=dag_id, tasks=specs, run_id=run_id
            )

    return schemas.CreatedDagRun.with_tokens(asyncio.run(go()), TokenSigner(settings).mint)


def seed_dag_run(settings: Settings, dag: Dag) -> schemas.NewDagRun:
    """Create a run of ``dag`` as ``taskexec trigger`` does (with the dag's spec, for the
    scheduler): through the transaction owner and the one service that creates runs."""

    async def go() -> schemas.NewDagRun:
        async with db_engine.open_database(settings) as db:
            return await db.write(
                dag_runs.create_dag_run,
                dag_id=dag.dag_id,
                tasks=dag.task_instance_keys(),
                spec=dag.spec(),
            )

    return asyncio.run(go())


def store_fields(settings: Settings, ti_id: uuid.UUID, fields: dict[str, Any]) -> None:
    """Store rendered fields for a task instance through the production write."""

    async def go() -> None:
        async with db_engine.open_database(settings) as db:
            await db.write(rendered_fields.upsert_rendered_fields, ti_id=ti_id, fields=fields)

    asyncio.run(go())


def end_run(settings: Settings, engine: sa.Engine, run_id: str, state: str) -> None:
    """End a run as success or failed through the service that owns ending runs (the
    scheduler's ``dag_runs.end_run``)."""
    dr = models.dag_run
    with engine.connect() as conn:
        pk = conn.execute(sa.select(dr.c.id).where(dr.c.run_id == run_id)).scalar_one()

    async def go() -> None:
        async with db_engine.open_database(settings) as db:
            assert await db.write(dag_runs.end_run, pk=pk, state=DagRunState(state))

    asyncio.run(go())


def clear(settings: Settings, run_id: str, task_ids: list[str]) -> None:
    """Clear task instances of ``test_dag``'s run as ``taskexec tasks clear`` does."""

    async def go() -> None:
        async with db_engine.open_database(settings) as db:
            await db.write(
                run_actions.clear_task_instances,
                dag_id="test_dag",
                run_id=run_id,
                task_ids=task_ids,
            )

    asyncio.run(go())


def seed(
    settings: Settings, tasks: int = 1, map_count: int | None = None, max_tries: int = 0
) -> schemas.CreatedDagRun:
    """Create a dag run with queued task instances (and their tokens) in the test DB."""
    return seed_run(settings, tasks=tasks, map_count=map_count, max_tries=max_tries)


def get_as(
    app: FastAPI, path: str, client_host: str, asked: str = "127.0.0.1:8080"
) -> httpx.Response:
    """GET ``path`` from ``app`` in-process (lifespan included), as a client at
    ``client_host`` asking for the host ``asked``."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client_host, 5555))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url=f"http://{asked}") as c,
        ):
            return await c.get(path)

    return asyncio.run(go())


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


def check_race(
    base_url: str, run: schemas.CreatedDagRun, engine: sa.Engine, label: str, writers: int
) -> None:
    """Race ``writers`` first writes per task instance of ``run``; assert the invariants."""
    targets = [harness.Target(str(t.id), t.token) for t in run.task_instances]
    results, elapsed = harness.race(base_url, targets, writers)
    statuses = Counter(r.status for rnd in results for r in rnd)
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
        accepted = {req.value for req in results[r] if req.ok}
        assert stored["bash_command"] in accepted
        # The row is one writer's whole value, never a mix of two.
        assert stored["bash_command"].startswith(f"writer-{stored['writer']}-")


def run_with_scheduler(
    settings: Settings, run: schemas.NewDagRun, *, max_seconds: float = 120
) -> schemas.DagRunSummary:
    """Run a scheduler (with the executor ``settings`` name) in this process until
    ``run`` ends; returns the run as it ended."""
    from taskexec.cli import run as run_command
    from taskexec.scheduler import loop

    async def go() -> schemas.DagRunSummary:
        async with db_engine.open_database(settings) as db:
            scheduler = loop.Scheduler(db, settings)
            scheduler.start()
            try:
                follow = run_command.follow(settings, run, lambda _now: None)
                return await asyncio.wait_for(follow, max_seconds)
            finally:
                await scheduler.aclose()

    return asyncio.run(go())


def serve_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``taskexec serve`` subprocess on the test database."""
    import os

    from conftest import TEST_SECRET

    return {
        **os.environ,
        "TASKEXEC_DATABASE_URL": settings.effective_database_url,
        "TASKEXEC_DATA_DIR": str(settings.data_dir),
        "TASKEXEC_JWT_SECRET": TEST_SECRET,
        **extra,
    }


def wait_healthy(port: int, seconds: float = 60) -> None:
    """Wait until the server on ``port`` answers ``/health``."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).is_success:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no server answered on port {port}"
        time.sleep(0.1)
