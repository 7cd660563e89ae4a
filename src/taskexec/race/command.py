"""``taskexec race``: is this server affected by the RTIF race, and how does the fix compare?

Per case (database, strategy, writers, variant) it starts the production app
in-process on a fresh database, with the write strategy injected through the app's
dependency override, creates one fresh task instance per round, and races W writers
on it. After each round it reads the database: exactly one row, holding the value of a
writer that got a 2xx.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from taskexec import errors
from taskexec.api import deps
from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import scratch
from taskexec.race import databases, harness, stats, strategies
from taskexec.race.readback import NotServed, Readback
from taskexec.security import TokenSigner
from taskexec.server.app import create_app
from taskexec.server.background import background_server
from taskexec.services import rendered_fields

VARIANTS = ("first-write", "retry")


@dataclasses.dataclass
class CaseResult:
    """The figures of one case."""

    database: str
    strategy: str
    writers: int
    variant: str
    rounds: int
    requests: int
    non_2xx: int
    statuses: dict[str, int]
    reasons: dict[str, int]
    req_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    # Rounds after which the database did not hold exactly one row with a 2xx value
    # (None: not checked, as with --against).
    bad_rounds: int | None
    # --against: task instances whose GET after the race showed no 2xx writer's value;
    # None when not checked (the server offers no read-back: Airflow has no GET for
    # rendered fields).
    get_mismatches: int | None = None
    readback: str = "checked"

    @property
    def non_2xx_pct(self) -> float:
        """Non-2xx answers as a percentage of requests."""
        return 100.0 * self.non_2xx / self.requests if self.requests else 0.0


def summarize(
    database: str,
    strategy: str,
    writers: int,
    variant: str,
    rounds: list[list[harness.Request]],
    elapsed: float,
    bad_rounds: int | None,
) -> CaseResult:
    """Turn the raw requests of a case into its figures."""
    flat = [r for rnd in rounds for r in rnd]
    latencies = [r.seconds * 1000 for r in flat]
    return CaseResult(
        database=database,
        strategy=strategy,
        writers=writers,
        variant=variant,
        rounds=len(rounds),
        requests=len(flat),
        non_2xx=sum(not r.ok for r in flat),
        statuses={str(k): v for k, v in sorted(Counter(r.status for r in flat).items())},
        reasons=dict(Counter(r.reason for r in flat if not r.ok)),
        req_per_s=len(flat) / elapsed if elapsed else 0.0,
        p50_ms=stats.percentile(latencies, 50),
        p99_ms=stats.percentile(latencies, 99),
        max_ms=max(latencies, default=0.0),
        bad_rounds=bad_rounds,
    )


async def _stored_value(db: db_engine.Database, target: harness.Target) -> str | None:
    try:
        stored = await db.read(rendered_fields.get_rendered_fields, ti_id=uuid.UUID(target.id))
    except errors.NotFoundError:
        return None
    value = stored.rendered_fields.get("bash_command")
    return value if isinstance(value, str) else repr(value)


async def count_bad_rounds(
    db: db_engine.Database,
    targets: Sequence[harness.Target],
    rounds: list[list[harness.Request]],
) -> int:
    """Rounds whose task instance does not end with a row whose value one of the round's
    2xx writers sent (or, if none got a 2xx, with no row). The primary key allows one
    row per task instance, so "a row" is "exactly one row"."""
    bad = 0
    for target, requests in zip(targets, rounds, strict=True):
        accepted = {r.value for r in requests if r.ok}
        stored = await _stored_value(db, target)
        bad += stored is not None if not accepted else stored not in accepted
    return bad


async def _bad_rounds(
    settings: Settings, targets: Sequence[harness.Target], rounds: list[list[harness.Request]]
) -> int:
    async with db_engine.open_database(settings) as db:
        return await count_bad_rounds(db, targets, rounds)


def run_case(
    backend: str,
    admin_url: str,
    strategy: str,
    writers: int,
    rounds: int,
    variant: str,
    *,
    on_round: Callable[[int], None] | None = None,
) -> CaseResult:
    """Race one case on a fresh database and an in-process server."""
    with (
        tempfile.TemporaryDirectory(prefix="taskexec-race-") as tmp,
        scratch.fresh_database(backend, admin_url, workdir=Path(tmp)) as url,
    ):
        settings = Settings(
            database_url=url,
            data_dir=Path(tmp),
            jwt_secret=SecretStr(secrets.token_urlsafe(48)),
            db_pool_size=max(10, min(writers, 64)),
            # The race is about the write path: no scheduler beside it.
            scheduler_in_server=False,
        )
        run = asyncio.run(databases.create_task_instances(settings, "race", rounds))
        signer = TokenSigner(settings)
        targets = [harness.Target(str(t.id), signer.mint(t.id)) for t in run.task_instances]
        app = create_app(settings)
        writer = strategies.STRATEGIES[strategy]
        app.dependency_overrides[deps.get_rtif_writer] = lambda: writer
        width = 2 if variant == "retry" else writers
        with background_server(app) as base_url:
            results, elapsed = harness.race(
                base_url, targets, width, duplicate=variant == "retry", on_round=on_round
            )
        bad = asyncio.run(_bad_rounds(settings, targets, results))
    return summarize(backend, strategy, width, variant, results, elapsed, bad)


def read_targets(path: Path) -> list[harness.Target]:
    """``id token`` lines, or ``id token dag_id run_id task_id map_index`` (the key lets
    the stored value be read back through Airflow's REST API); blank lines and ``#``
    comments are ignored."""
    targets = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) == 2:
            targets.append(harness.Target(parts[0], parts[1]))
        elif len(parts) == 6 and parts[5].lstrip("-").isdigit():
            key = (parts[2], parts[3], parts[4], int(parts[5]))
            targets.append(harness.Target(parts[0], parts[1], key))
        else:
            raise databases.OptionError(
                "expected 'task_instance_id token' or 'task_instance_id token dag_id run_id "
                f"task_id map_index', got: {line[:80]}"
            )
    return targets


def run_against(
    base_url: str,
    targets: Sequence[harness.Target],
    writers: int,
    variant: str,
    *,
    readback: Readback = Readback(),
    on_round: Callable[[int], None] | None = None,
) -> CaseResult:
    """Race a remote server. Without database access, check what the API shows: the
    statuses, and that the value read back after the race is one some 2xx writer sent."""
    width = 2 if variant == "retry" else writers
    results, elapsed = harness.race(
        base_url, targets, width, duplicate=variant == "retry", on_round=on_round
    )
    result = summarize(base_url, "server", width, variant, results, elapsed, None)
    mismatches = 0
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for target, requests in zip(targets, results, strict=True):
            accepted = {r.value for r in requests if r.ok}
            try:
                value = readback.value(client, target)
            except NotServed:
                result.readback = "not checked: the server has no GET for rendered fields"
                return result
            mismatches += bool(accepted) and value not in accepted
    result.get_mismatches = mismatches
    result.readback = readback.describe()
    return result


def environment(urls: dict[str, str]) -> dict[str, Any]:
    """Versions and machine facts to keep beside the figures."""
    import importlib.metadata
    import os
    import platform

    packages = {}
    for name in (
        "taskexec",
        "fastapi",
        "uvicorn",
        "sqlalchemy",
        "psycopg",
        "aiomysql",
        "aiosqlite",
        "httpx",
    ):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "-"
    servers = {}
    for backend, url in urls.items():
        try:
            servers[backend] = scratch.server_version(url)
        except Exception as exc:
            servers[backend] = f"unknown ({type(exc).__name__})"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": packages,
        "databases": servers,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
