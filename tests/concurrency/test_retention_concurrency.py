"""Retention under load: pruning never deadlocks a worker's write.

For 30 s, a creator thread makes a new run every ~60 ms in four dags, and 32 writer
threads PUT the first rendered fields of those runs' task instances to a real server,
while that server's own background pruner keeps only the newest 3 runs of each dag.
Every fourth write is also repeated later as a "late retry" of an earlier task instance,
often one of a run the pruner is deleting at that moment, so upserts and pruning
batches contend for the same rows. Every writer must get a 2xx (never a deadlock or
any 5xx); afterwards, one final prune leaves rendered fields for exactly the newest 3
runs of each dag.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import random
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import connect, models
from taskexec.db import engine as db_engine
from taskexec.security import TokenSigner
from taskexec.server import pruner
from taskexec.server.app import create_app
from taskexec.services import dag_runs

from conftest import run_server
from helpers import auth, only, report

DURATION_SECONDS = 30.0
HARD_TIMEOUT_SECONDS = 240
WRITERS = 32
RETAIN = 3
DAGS = ("etl_a", "etl_b", "etl_c", "etl_d")
RUN_EVERY_SECONDS = 0.06
# Two plain tasks and one mapped over ten indexes: twelve task instances per run.
TASKS = [("extract", -1, 0), ("load", -1, 0), *(("transform", m, 0) for m in range(10))]

Item = tuple[str, str]  # (task-instance id, token)


def _creator(
    settings: Settings,
    work: queue.Queue[Item],
    stop: threading.Event,
    created: list[tuple[str, str]],
) -> None:
    """Create runs round-robin over DAGS until ``stop``; queue their task instances."""
    signer = TokenSigner(settings)

    async def go() -> None:
        db = db_engine.Database(
            connect.make_engine(settings.effective_database_url, settings), settings
        )
        try:
            for n in itertools.count():
                if stop.is_set():
                    return
                dag_id = DAGS[n % len(DAGS)]
                run_id = f"load_{n:05d}"
                run = await db.write(
                    dag_runs.create_dag_run, dag_id=dag_id, run_id=run_id, tasks=TASKS
                )
                created.append((dag_id, run_id))
                for ti in run.task_instances:
                    work.put((str(ti.id), signer.mint(ti.id)))
                await asyncio.sleep(RUN_EVERY_SECONDS)
        finally:
            await db.dispose()

    asyncio.run(go())


@only("postgresql", "mariadb")
@pytest.mark.slow
@pytest.mark.timeout(HARD_TIMEOUT_SECONDS)
def test_first_writes_of_new_runs_while_the_server_prunes(
    settings: Settings, sync_engine: sa.Engine, backend: str
) -> None:
    # Faster and smaller than the defaults (10 s, 500 rows) on purpose: many more
    # pruning transactions interleave with the writes than in production.
    tuned = settings.model_copy(
        update={
            "rendered_fields_retain_runs": RETAIN,
            "prune_interval_seconds": 0.5,
            "prune_batch_size": 10,
        }
    )
    work: queue.Queue[Item] = queue.Queue()
    stop_creating = threading.Event()
    created: list[tuple[str, str]] = []  # (dag_id, run_id), in creation order
    statuses: Counter[int] = Counter()
    late_retries = 0
    done: list[Item] = []  # written once; candidates for a late retry
    deadlock_bodies: list[str] = []
    lock = threading.Lock()
    app = create_app(tuned)

    with run_server(app) as live:
        barrier = threading.Barrier(WRITERS + 1)
        creating = threading.Event()

        def writer(number: int) -> None:
            nonlocal late_retries
            local: Counter[int] = Counter()
            bad: list[str] = []
            rng = random.Random(number)
            retried = 0
            with live.client() as client:
                client.get("/health")
                barrier.wait(timeout=30)
                # Bounded: the creator stops after DURATION_SECONDS, then the queue drains.
                while creating.is_set() or not work.empty():
                    try:
                        ti_id, token = work.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    fields = {
                        "sql": f"SELECT * FROM t WHERE writer = {number}",
                        "bash_command": f"echo {ti_id}",
                    }
                    resp = client.put(
                        f"/execution/task-instances/{ti_id}/rtif",
                        json=fields,
                        headers=auth(token),
                    )
                    local[resp.status_code] += 1
                    if "deadlock" in resp.text.lower():
                        bad.append(resp.text)
                    with lock:
                        done.append((ti_id, token))
                        late = rng.choice(done[-400:]) if rng.random() < 0.25 else None
                    if late is not None:
                        resp = client.put(
                            f"/execution/task-instances/{late[0]}/rtif",
                            json={**fields, "late_retry": True},
                            headers=auth(late[1]),
                        )
                        local[resp.status_code] += 1
                        retried += 1
                        if "deadlock" in resp.text.lower():
                            bad.append(resp.text)
            with lock:
                statuses.update(local)
                deadlock_bodies.extend(bad)
                late_retries += retried

        creating.set()
        creator = threading.Thread(target=_creator, args=(tuned, work, stop_creating, created))
        writers = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        for t in writers:
            t.start()
        barrier.wait(timeout=30)
        started = time.perf_counter()
        creator.start()
        time.sleep(DURATION_SECONDS)
        stop_creating.set()
        creator.join(timeout=30)
        creating.clear()
        for t in writers:
            t.join(timeout=60)
        elapsed = time.perf_counter() - started
        assert not creator.is_alive() and not any(t.is_alive() for t in writers)
        background = app.state.pruner
        assert background is not None
        server_retries = Counter(app.state.db.retries)
        rounds, failed_rounds = background.rounds, background.failed_rounds
        pruned_in_background = background.rows_deleted

    final = _final_prune(tuned)
    writes = sum(statuses.values())
    non_2xx = sum(n for code, n in statuses.items() if not 200 <= code < 300)
    server_5xx = sum(n for code, n in statuses.items() if code >= 500)
    kinds = Counter({kind: 0 for kind in ("deadlock", "lock_timeout")})
    for key, n in server_retries.items():
        kinds[key.split(":")[1]] += n
    kept = _runs_with_fields(sync_engine)
    rows_left = _rtif_rows(sync_engine)
    report(
        f"[{backend}] retention under load: {writes} writes ({writes - late_retries} first "
        f"writes, {late_retries} late retries) by {WRITERS} writers over "
        f"{elapsed:.1f}s ({writes / elapsed:.0f}/s), {len(created)} runs in {len(DAGS)} dags; "
        f"non-2xx {non_2xx}, 5xx {server_5xx}, deadlocks surfaced {len(deadlock_bodies)}; "
        f"retried internally: {kinds['deadlock']} deadlocks, {kinds['lock_timeout']} lock "
        f"timeouts (all retries {dict(server_retries)}); background pruner {rounds} rounds "
        f"({failed_rounds} failed), {pruned_in_background} rows deleted; final prune "
        f"{final.rows} rows; rtif rows left {rows_left}, runs pruned "
        f"{len(created) - sum(len(v) for v in kept.values())}"
    )

    assert writes - late_retries == len(created) * len(TASKS)
    assert late_retries > 0
    assert statuses.keys() == {201}, statuses
    assert deadlock_bodies == []
    assert final.stopped is None and failed_rounds == 0
    # The background pruner really ran during the load, not only the final prune.
    assert rounds >= 5 and pruned_in_background > 0
    # Expected from the creator's own order (each run is created after the previous one,
    # so it is the newer), not from the production ordering under test.
    newest = {d: set([run for dag, run in created if dag == d][-RETAIN:]) for d in DAGS}
    assert kept == newest
    assert rows_left == len(DAGS) * RETAIN * len(TASKS)


def _final_prune(settings: Settings) -> pruner.PruneResult:
    async def go() -> pruner.PruneResult:
        db = db_engine.Database(
            connect.make_engine(settings.effective_database_url, settings), settings
        )
        try:
            return await pruner.prune_rendered_fields(
                db, retain=RETAIN, batch_size=settings.prune_batch_size
            )
        finally:
            await db.dispose()

    return asyncio.run(go())


def _runs_with_fields(engine: sa.Engine) -> dict[str, set[str]]:
    """Per dag, the runs that have rendered fields, each with all its task instances'."""
    t = models.rendered_task_instance_fields
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.dag_id, t.c.run_id, sa.func.count()).group_by(t.c.dag_id, t.c.run_id)
        ).all()
    found: dict[str, set[str]] = {}
    for dag_id, run_id, count in rows:
        assert count == len(TASKS), (dag_id, run_id, count)
        found.setdefault(dag_id, set()).add(run_id)
    return found


def _rtif_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        count = conn.scalar(
            sa.select(sa.func.count()).select_from(models.rendered_task_instance_fields)
        )
    return count or 0
