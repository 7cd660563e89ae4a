"""What every executor shares: claiming, watching a run, and the per-try stats."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from taskexec.db import engine as db_engine
from taskexec.db import models, types
from taskexec.db.models import TaskInstanceState
from taskexec.sdk.runner import RunResult

ti = models.task_instance
ACTIVE = (TaskInstanceState.QUEUED, TaskInstanceState.RUNNING)


def claim_next(
    engine: sa.Engine, dag_id: str, run_id: str, hostname: str, pid: int
) -> uuid.UUID | None:
    """Claim one queued try of the run for this worker, or None if none is free.

    ``FOR UPDATE SKIP LOCKED`` (PostgreSQL, MariaDB/MySQL) lets concurrent workers pass
    over each other's rows instead of queueing on them; SQLite's ``BEGIN IMMEDIATE``
    serializes the claim instead. The conditional UPDATE makes this worker the only
    one that ever starts this try; its later ``/run`` with the same host and pid is
    the API's idempotent repeat.
    """
    with engine.begin() as conn:
        candidate = conn.execute(
            sa.select(ti.c.id)
            .where(ti.c.dag_id == dag_id, ti.c.run_id == run_id, ti.c.state == "queued")
            .order_by(ti.c.task_id, ti.c.map_index)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).scalar()
        if candidate is None:
            return None
        now = types.utcnow()
        claimed = conn.execute(
            sa.update(ti)
            .where(ti.c.id == candidate, ti.c.state == TaskInstanceState.QUEUED)
            .values(
                state=TaskInstanceState.RUNNING,
                hostname=hostname,
                pid=pid,
                start_date=now,
                last_heartbeat_at=now,
            )
        )
        return candidate if claimed.rowcount == 1 else None


def fail_claim(engine: sa.Engine, ti_id: uuid.UUID, hostname: str, pid: int) -> bool:
    """Mark a try this worker claimed, but could not run, as failed (only if it is still
    running here), so the run does not wait for it forever. True if it was marked."""
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(ti)
            .where(
                ti.c.id == ti_id,
                ti.c.state == TaskInstanceState.RUNNING,
                ti.c.hostname == hostname,
                ti.c.pid == pid,
            )
            .values(state=TaskInstanceState.FAILED, end_date=types.utcnow())
        )
        return result.rowcount == 1


def state_counts(engine: sa.Engine, dag_id: str, run_id: str) -> Counter[str]:
    """How many task instances of the run are in each state."""
    with db_engine.read_only(engine).connect() as conn:
        rows = conn.execute(
            sa.select(ti.c.state, sa.func.count())
            .where(ti.c.dag_id == dag_id, ti.c.run_id == run_id)
            .group_by(ti.c.state)
        ).all()
    return Counter({state: count for state, count in rows})


def queued_ids(engine: sa.Engine, dag_id: str, run_id: str) -> list[uuid.UUID]:
    """The ids of the run's queued tries."""
    with db_engine.read_only(engine).connect() as conn:
        return list(
            conn.execute(
                sa.select(ti.c.id).where(
                    ti.c.dag_id == dag_id, ti.c.run_id == run_id, ti.c.state == "queued"
                )
            ).scalars()
        )


def is_active(counts: Counter[str]) -> bool:
    """True while some task instance is queued or running."""
    return any(counts[state] for state in ACTIVE)


def watch_run(
    engine: sa.Engine,
    dag_id: str,
    run_id: str,
    *,
    on_tick: Callable[[Counter[str]], bool] | None = None,
    poll: float = 0.25,
    timeout: float = 3600.0,
) -> Counter[str]:
    """Poll until no task instance of the run is queued or running; returns the final
    counts. ``on_tick`` sees each poll's counts and returns False to stop early."""
    deadline = time.monotonic() + timeout
    while True:
        counts = state_counts(engine, dag_id, run_id)
        if on_tick is not None and not on_tick(counts):
            return counts
        if not is_active(counts) or time.monotonic() > deadline:
            return counts
        time.sleep(poll)


@dataclasses.dataclass
class WriteSummary:
    """RTIF writes as the workers saw them."""

    sent: int = 0
    non_2xx: int = 0
    duplicates: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)

    def add(self, status: int, seconds: float, duplicate: bool) -> None:
        """Count one PUT."""
        self.sent += 1
        self.duplicates += bool(duplicate)
        self.non_2xx += not 200 <= status < 300
        self.latencies.append(seconds)

    def percentile(self, q: float) -> float:
        """The q-th percentile write latency, in seconds."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclasses.dataclass
class RunReport:
    """How an executed run ended."""

    counts: Counter[str]
    writes: WriteSummary
    seconds: float


def record_result(path: Path, ti_id: uuid.UUID, result: RunResult) -> None:
    """Append one try's outcome and its RTIF writes to a worker's stats file."""
    line = {
        "ti": str(ti_id),
        "outcome": result.outcome,
        "writes": [[w.status, w.seconds, w.duplicate] for w in result.write_stats],
    }
    with path.open("a") as fh:
        fh.write(json.dumps(line) + "\n")


def summarize_writes(paths: list[Path]) -> WriteSummary:
    """Add up the stats files of all workers."""
    summary = WriteSummary()
    for path in paths:
        if not path.exists():
            continue
        for raw in path.read_text().splitlines():
            entry: dict[str, Any] = json.loads(raw)
            for status, seconds, duplicate in entry["writes"]:
                summary.add(status, seconds, duplicate)
    return summary
