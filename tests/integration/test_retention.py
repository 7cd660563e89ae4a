"""Retention of rendered fields: the newest N runs of each dag keep theirs, on every
database, deleted in small batches by the service the server and the CLI share."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time
from collections.abc import Sequence

import psycopg
import pytest
import sqlalchemy as sa

from taskexec import cli
from taskexec.config import Settings
from taskexec.db import connect, models
from taskexec.db import engine as db_engine
from taskexec.server import pruner
from taskexec.server.app import create_app
from taskexec.services import dag_runs, rendered_fields

from conftest import run_server
from helpers import auth, only, seed_run

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TASKS = (("extract", -1, 0), ("load", -1, 0))

Run = tuple[str, str]  # (dag_id, run_id)


def _database(settings: Settings) -> db_engine.Database:
    return db_engine.Database(
        connect.make_engine(settings.effective_database_url, settings), settings
    )


def make_runs(
    settings: Settings,
    dag_id: str,
    days: Sequence[int],
    tasks: Sequence[tuple[str, int, int]] = TASKS,
) -> list[str]:
    """Create one run per entry of ``days`` (run_after = T0 + days), in that order, and
    write rendered fields for every task instance through the real upsert."""

    async def go() -> list[str]:
        db = _database(settings)
        run_ids = []
        try:
            for n, day in enumerate(days):
                run_id = f"run_{n}_day_{day}"
                run = await db.write(
                    dag_runs.create_dag_run,
                    dag_id=dag_id,
                    run_id=run_id,
                    tasks=tasks,
                    logical_date=T0 + dt.timedelta(days=day),
                )
                for ti in run.task_instances:
                    await db.write(
                        rendered_fields.upsert_rendered_fields,
                        ti_id=ti.id,
                        fields={"sql": f"select '{run_id}'", "map_index": ti.map_index},
                    )
                run_ids.append(run_id)
        finally:
            await db.dispose()
        return run_ids

    return asyncio.run(go())


def prune(
    settings: Settings, retain: int, *, batch_size: int = 500, dry_run: bool = False
) -> pruner.PruneResult:
    """One prune through a fresh transaction owner, as the CLI does it."""

    async def go() -> pruner.PruneResult:
        db = _database(settings)
        try:
            return await pruner.prune_rendered_fields(
                db, retain=retain, batch_size=batch_size, dry_run=dry_run
            )
        finally:
            await db.dispose()

    return asyncio.run(go())


def rtif_count(engine: sa.Engine) -> dict[Run, int]:
    """Rendered-fields rows per (dag, run)."""
    t = models.rendered_task_instance_fields
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.dag_id, t.c.run_id, sa.func.count()).group_by(t.c.dag_id, t.c.run_id)
        )
        return {(dag_id, run_id): n for dag_id, run_id, n in rows}


def table_counts(engine: sa.Engine) -> tuple[int, int]:
    """(dag_run rows, task_instance rows)."""
    with engine.connect() as conn:
        runs = conn.scalar(sa.select(sa.func.count()).select_from(models.dag_run))
        tis = conn.scalar(sa.select(sa.func.count()).select_from(models.task_instance))
    return runs or 0, tis or 0


def test_newest_runs_by_run_after_keep_their_rows(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    # Created out of order: run_after decides, not creation order.
    runs = make_runs(settings, "etl", [3, 1, 4, 0, 2])
    before = table_counts(sync_engine)

    result = prune(settings, retain=2)

    assert rtif_count(sync_engine) == {("etl", runs[2]): 2, ("etl", runs[0]): 2}
    [dag] = result.dags
    assert (dag.dag_id, dag.runs, dag.runs_kept, dag.rows, dag.batches) == ("etl", 5, 2, 6, 1)
    assert result.rows == 6 and not result.dry_run and result.stopped is None
    # Only rendered fields go: runs and task instances stay.
    assert table_counts(sync_engine) == before == (5, 10)
    # A second prune finds nothing left to do.
    assert prune(settings, retain=2).rows == 0


def test_ties_on_run_after_are_broken_by_creation_order(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    # Three runs share run_after; the later-created of them counts as newer.
    runs = make_runs(settings, "etl", [1, 2, 2, 2])

    prune(settings, retain=2)

    assert set(rtif_count(sync_engine)) == {("etl", runs[3]), ("etl", runs[2])}


def test_mapped_task_instances_go_or_stay_with_their_run(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    mapped = [("transform", m, 0) for m in range(7)] + [("report", -1, 0)]
    _old, kept = make_runs(settings, "mapped", [0, 1], tasks=mapped)

    result = prune(settings, retain=1)

    assert rtif_count(sync_engine) == {("mapped", kept): 8}
    assert result.rows == 8
    t = models.rendered_task_instance_fields
    with sync_engine.connect() as conn:
        indexes = conn.scalars(
            sa.select(t.c.map_index).where(t.c.task_id == "transform").order_by(t.c.map_index)
        ).all()
    assert indexes == list(range(7))


@pytest.mark.parametrize("retain", [0, -1])
def test_retain_zero_or_less_disables_pruning(
    settings: Settings, sync_engine: sa.Engine, retain: int
) -> None:
    make_runs(settings, "etl", [0, 1, 2])

    result = prune(settings, retain=retain)

    assert result.disabled and result.dags == [] and result.rows == 0
    assert sum(rtif_count(sync_engine).values()) == 6
    # Nor does the server start a background pruner.
    off = settings.model_copy(update={"rendered_fields_retain_runs": retain})
    assert pruner.start(_database(off), off) is None


def test_dry_run_counts_and_deletes_nothing(settings: Settings, sync_engine: sa.Engine) -> None:
    make_runs(settings, "etl", [0, 1, 2, 3])
    before = rtif_count(sync_engine)

    result = prune(settings, retain=1, batch_size=4, dry_run=True)

    assert result.dry_run
    [dag] = result.dags
    assert (dag.runs, dag.runs_kept, dag.rows, dag.batches) == (4, 1, 6, 2)
    assert rtif_count(sync_engine) == before


def test_batches_smaller_than_the_rows_delete_them_all(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    tasks = [(f"t{n}", -1, 0) for n in range(5)]
    runs = make_runs(settings, "etl", [0, 1, 2], tasks=tasks)

    result = prune(settings, retain=1, batch_size=3)

    assert rtif_count(sync_engine) == {("etl", runs[2]): 5}
    [dag] = result.dags
    # 10 rows in batches of 3: 3 + 3 + 3 + 1.
    assert (dag.rows, dag.batches) == (10, 4)


def test_dags_are_pruned_independently(settings: Settings, sync_engine: sa.Engine) -> None:
    # "recent" has more runs, all newer than "old"'s; each dag keeps its own newest 2.
    recent = make_runs(settings, "recent", [10, 11, 12, 13])
    old = make_runs(settings, "old", [0, 1])
    single = make_runs(settings, "single", [5])

    result = prune(settings, retain=2)

    assert set(rtif_count(sync_engine)) == {
        ("recent", recent[3]),
        ("recent", recent[2]),
        ("old", old[0]),
        ("old", old[1]),
        ("single", single[0]),
    }
    by_dag = {d.dag_id: (d.runs, d.runs_kept, d.rows) for d in result.dags}
    assert by_dag == {"old": (2, 2, 0), "recent": (4, 2, 4), "single": (1, 1, 0)}


def test_cli_prune_reports_what_it_removed(
    settings: Settings, sync_engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    make_runs(settings, "etl", [0, 1, 2])
    make_runs(settings, "other", [0])
    parser = cli.build_parser()

    dry = parser.parse_args(["db", "prune", "--dry-run", "--retain", "1"])
    dry.func(dry, settings)
    out = capsys.readouterr().out
    assert "total: would remove 4 rows of 2 dags" in out
    assert "etl" in out and "other" in out
    assert sum(rtif_count(sync_engine).values()) == 8

    real = parser.parse_args(["db", "prune", "--retain", "1"])
    assert real.func(real, settings) is None  # no CommandError: exit status 0
    out = capsys.readouterr().out
    assert "total: removed 4 rows of 2 dags" in out
    assert sum(rtif_count(sync_engine).values()) == 4

    # Without --retain it uses TASKEXEC_RENDERED_FIELDS_RETAIN_RUNS; 0 turns it off.
    off = parser.parse_args(["db", "prune"])
    off.func(off, settings.model_copy(update={"rendered_fields_retain_runs": 0}))
    assert "retention is off" in capsys.readouterr().out


def test_a_deadlock_while_pruning_is_retried_and_counted(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    make_runs(settings, "etl", [0, 1, 2])

    async def go() -> tuple[pruner.PruneResult, pruner.PruneResult, dict[str, int]]:
        db = _database(settings)
        calls: list[str] = []

        async def deadlock_once(operation: str) -> None:
            calls.append(operation)
            if len(calls) == 1:
                raise sa.exc.OperationalError("DELETE ...", {}, psycopg.errors.DeadlockDetected())

        db.before_commit = deadlock_once
        try:
            first = await pruner.prune_rendered_fields(db, retain=2, batch_size=500)

            async def always(operation: str) -> None:
                raise sa.exc.OperationalError("DELETE ...", {}, psycopg.errors.LockNotAvailable())

            db.before_commit = always
            # Persistent trouble: retried, then logged and left for the next round.
            second = await pruner.prune_rendered_fields(db, retain=1, batch_size=500)
            return first, second, dict(db.retries)
        finally:
            await db.dispose()

    first, second, retries = asyncio.run(go())
    assert first.rows == 2 and first.retries == 1 and first.stopped is None
    assert second.rows == 0 and second.stopped is not None
    assert retries == {
        "retention:deadlock": 1,
        "retention:lock_timeout": settings.db_retry_attempts - 1,
    }
    assert len(rtif_count(sync_engine)) == 2  # the newest run, and the one left for later


def test_the_server_prunes_in_the_background(settings: Settings, sync_engine: sa.Engine) -> None:
    runs = make_runs(settings, "etl", [0, 1, 2])
    fast = settings.model_copy(
        update={"rendered_fields_retain_runs": 1, "prune_interval_seconds": 0.1}
    )
    app = create_app(fast)
    with run_server(app) as live:
        deadline = time.monotonic() + 20
        while len(rtif_count(sync_engine)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # With the pruner running, a worker's first write for a new run still gets its 201.
        created = seed_run(fast, dag_id="etl", tasks=1)
        ti = created.task_instances[0]
        with live.client() as client:
            resp = client.put(
                f"/execution/task-instances/{ti.id}/rtif", json={"a": 1}, headers=auth(ti.token)
            )
        assert resp.status_code == 201, resp.text
        deadline = time.monotonic() + 20
        while ("etl", runs[2]) in rtif_count(sync_engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        background = app.state.pruner
        assert background is not None and background.rounds >= 1
        assert background.failed_rounds == 0
    assert rtif_count(sync_engine) == {("etl", created.run_id): 1}
    assert background.rows_deleted == 6


@only("sqlite")
def test_a_failing_round_does_not_stop_the_pruner(
    settings: Settings, sync_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_runs(settings, "etl", [0, 1])
    real = pruner.prune_rendered_fields
    calls: list[int] = []

    async def flaky(*args: object, **kwargs: object) -> pruner.PruneResult:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in one round")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pruner, "prune_rendered_fields", flaky)
    fast = settings.model_copy(
        update={"rendered_fields_retain_runs": 1, "prune_interval_seconds": 0.05}
    )

    async def go() -> pruner.Pruner:
        db = _database(fast)
        background = pruner.start(db, fast)
        assert background is not None
        try:
            for _ in range(200):
                if background.rounds >= 1:
                    break
                await asyncio.sleep(0.05)
        finally:
            await background.stop()
            await db.dispose()
        return background

    background = asyncio.run(go())
    assert background.failed_rounds == 1 and background.rounds >= 1
    assert background.rows_deleted == 2
    assert len(rtif_count(sync_engine)) == 1


def test_an_outage_is_logged_once_and_its_end_with_a_count(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    async def down(*args: object, **kwargs: object) -> pruner.PruneResult:
        calls.append(1)
        if len(calls) <= 5:
            raise sa.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("no db"))
        return pruner.PruneResult(retain=1, dry_run=False)

    monkeypatch.setattr(pruner, "prune_rendered_fields", down)

    async def go() -> None:
        db = _database(settings)
        try:
            background = pruner.Pruner(db, settings)
            for _ in range(7):
                await background.prune_once()
        finally:
            await db.dispose()

    with caplog.at_level(logging.INFO, "taskexec.server.pruner"):
        asyncio.run(go())
    lines = [r.getMessage() for r in caplog.records if r.name == "taskexec.server.pruner"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("pruning rendered fields failing: OperationalError")
    assert lines[1].startswith("pruning rendered fields recovered after 5 failed rounds")
    assert not any(r.exc_info for r in caplog.records)


@only("postgresql", "mariadb")
def test_one_server_process_prunes_at_a_time(settings: Settings, sync_engine: sa.Engine) -> None:
    make_runs(settings, "etl", [0, 1, 2])
    tuned = settings.model_copy(update={"rendered_fields_retain_runs": 1})

    async def go() -> tuple[bool, bool, int, int, int]:
        holder, other = _database(tuned), _database(tuned)
        follower = pruner.Pruner(other, tuned)
        try:
            async with holder.try_lock(pruner.PRUNE_LOCK) as held:
                # Another process holds the round: this one skips it and deletes nothing.
                async with other.try_lock(pruner.PRUNE_LOCK) as second:
                    pass
                skipped = await follower.prune_once()
                rows_while_held = len(rtif_count(sync_engine))
            assert skipped is None
            done = await follower.prune_once()
            assert done is not None
            return held, second, follower.skipped_rounds, rows_while_held, done.rows
        finally:
            await holder.dispose()
            await other.dispose()

    held, second, skipped, rows_while_held, pruned = asyncio.run(go())
    assert (held, second, skipped) == (True, False, 1)
    assert rows_while_held == 3  # runs with fields: nothing pruned while the lock was held
    assert pruned == 2 * len(TASKS) and len(rtif_count(sync_engine)) == 1
