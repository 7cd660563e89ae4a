"""``taskexec bench``: sustained rendered-fields writes against ``taskexec serve``, the
raw ceiling of the same upsert without HTTP, cost growth with table size, server memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.db import scratch
from taskexec.race import databases, loadgen, raw
from taskexec.race.loadgen import free_port, payload_body  # also this module's API
from taskexec.security import TokenSigner
from taskexec.services import dag_runs, rendered_fields

PAYLOADS = {"1KiB": 1024, "64KiB": 64 * 1024}
# Filler task instances (and rendered-fields rows) per run when growing the table.
FILL_BATCH = 20_000
MODES = ("distinct", "hot")
# How the server stores writes, as settings: group commit behind the hot path (the
# default); the same through FastAPI's route; or one transaction per write through
# FastAPI's route (the design before group commit); and the default with one of its
# parts turned off.
_BATCHED: dict[str, Any] = {"rtif_batch_max": 64, "rtif_hot_path": True}
STRATEGIES: dict[str, dict[str, Any]] = {
    "batched": _BATCHED,
    "unbatched": {
        "rtif_batch_max": 1,
        "rtif_hot_path": False,
        "db_one_statement_autocommit": False,
    },
    "route": {**_BATCHED, "rtif_hot_path": False},
    # SQLite: batched, its processes' writers meeting SQLite's busy handler (no queue).
    "busy-handler": {**_BATCHED, "sqlite_write_queue": False},
    # Batched, the server's start-up objects left in the garbage collector's sight.
    "gc-unfrozen": {**_BATCHED, "gc_freeze": False},
    # PostgreSQL: batched, each batch in BEGIN ... COMMIT rather than autocommit.
    "in-transaction": {
        **_BATCHED,
        "rtif_batch_direct": False,
        "db_one_statement_autocommit": False,
    },
    # PostgreSQL: batched, batches through SQLAlchemy rather than straight to the driver.
    "via-sqlalchemy": {**_BATCHED, "rtif_batch_direct": False},
    # Batched, the workers sharing one listening socket rather than one each.
    "shared-socket": {**_BATCHED, "http_reuse_port": False},
}


@dataclasses.dataclass
class Row:
    """One measured configuration."""

    database: str
    kind: str  # api | raw | growth
    mode: str
    payload: str
    clients: int
    requests: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    loadgen_cpu: float  # cores used by the load generator (api) or worker threads (raw)
    table_rows: int | None = None
    # api: batched (group commit, the default) or unbatched (one transaction per write);
    # raw: transaction or autocommit (``race.raw``).
    strategy: str = ""


def _peak_rss_kib(pid: int) -> int:
    """VmHWM of ``pid`` plus its children (uvicorn's worker processes)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# Settings of the benchmark's servers passed on as they are.
_SERVED = ("db_pool_size", "db_max_overflow", "rendered_fields_retain_runs", "scheduler_in_server")


def _env_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@contextmanager
def serve(settings: Settings, workers: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``taskexec serve`` as a subprocess on a free port; yields (port, process)."""
    port = free_port()
    env = {
        **os.environ,
        "TASKEXEC_DATABASE_URL": settings.effective_database_url,
        "TASKEXEC_DATA_DIR": str(settings.data_dir),
        "TASKEXEC_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        # The server's pool and scheduler, and what the strategies set.
        **{
            f"TASKEXEC_{name.upper()}": _env_value(getattr(settings, name))
            for name in {*_SERVED, *(name for strategy in STRATEGIES.values() for name in strategy)}
        },
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskexec",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the server exited")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _api_row(
    database: str, mode: str, payload: str, clients: int, result: loadgen.LoadResult, **kw: Any
) -> Row:
    return Row(
        database=database,
        kind=kw.pop("kind", "api"),
        mode=mode,
        payload=payload,
        clients=clients,
        requests=result.requests,
        req_per_s=result.req_per_s,
        p50_ms=result.percentile_ms(50),
        p99_ms=result.percentile_ms(99),
        max_ms=1000 * max(result.latencies, default=0.0),
        non_2xx=result.non_2xx,
        loadgen_cpu=result.cpu_share,
        **kw,
    )


def measure_api(
    port: int,
    targets: Sequence[tuple[uuid.UUID, str]],
    mode: str,
    body: bytes,
    clients: int,
    seconds: float,
) -> loadgen.LoadResult:
    """Sustained PUTs from ``clients`` keep-alive connections."""
    host = f"127.0.0.1:{port}"
    reqs = [
        loadgen.build_put(host, f"/execution/task-instances/{ti}/rtif", token, body)
        for ti, token in (targets if mode == "distinct" else targets[:1])
    ]
    per_connection = (
        [reqs[c::clients] or reqs for c in range(clients)]
        if mode == "distinct"
        else [reqs] * clients
    )
    return loadgen.run_load("127.0.0.1", port, per_connection, seconds)


async def _fill(settings: Settings, total: int) -> int:
    # A bulk statement of FILL_BATCH rows may take longer than a request's deadline.
    bulk = settings.model_copy(update={"request_timeout_seconds": 300.0})
    async with db_engine.open_database(bulk) as db:
        have = await db.read(rendered_fields.count_rows)
        fields = {"bash_command": "echo filler", "env": {"A": "1"}}
        while have < total:
            count = min(FILL_BATCH, total - have)
            tasks = [(f"fill_{have + i}", -1, 0) for i in range(count)]
            run = await db.write(dag_runs.create_dag_run, dag_id="bench_fill", tasks=tasks)
            have += await db.write(
                rendered_fields.upsert_rendered_fields_of_run,
                dag_id=run.dag_id,
                run_id=run.run_id,
                fields=fields,
            )
        return await db.read(rendered_fields.count_rows)


def fill_rtif(settings: Settings, total: int) -> int:
    """Fill rendered_task_instance_fields up to ``total`` rows: a run of ``FILL_BATCH``
    filler task instances at a time, each run's fields in one statement, through the
    same services as everything else. Returns the row count after."""
    return asyncio.run(_fill(settings, total))


@dataclasses.dataclass
class BenchConfig:
    """What to measure."""

    databases: Sequence[str] = ("sqlite", "postgresql", "mysql")
    clients: Sequence[int] = (1, 8, 32, 64)
    modes: Sequence[str] = MODES
    payloads: Sequence[str] = ("1KiB", "64KiB")
    seconds: float = 5.0
    growth: Sequence[int] = (1_000, 100_000, 1_000_000)
    growth_clients: int = 8
    server_workers: int = 2
    targets: int = 2000
    strategies: Sequence[str] = ("batched", "unbatched")
    raw: Sequence[str] = raw.KINDS
    admin_urls: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, given, known in (
            ("database", self.databases, databases.BACKENDS),
            ("mode", self.modes, MODES),
            ("payload", self.payloads, tuple(PAYLOADS)),
            ("strategy", self.strategies, tuple(STRATEGIES)),
            ("raw ceiling", self.raw, raw.KINDS),
        ):
            for value in given:
                if value not in known:
                    raise databases.OptionError(
                        f"unknown {label} {value!r}: use {', '.join(known)}"
                    )


def _bench_settings(config: BenchConfig, url: str, tmp: str) -> Settings:
    # Enough pooled connections for every client, split over the server's processes,
    # and no overflow: PostgreSQL's default max_connections is 100.
    per_worker = -(-max(config.clients) // config.server_workers) + 2
    return Settings(
        database_url=url,
        data_dir=Path(tmp),
        jwt_secret=SecretStr(secrets.token_urlsafe(48)),
        db_pool_size=per_worker,
        db_max_overflow=0,
        # The growth step fills the table run by run: retention would prune what it fills.
        rendered_fields_retain_runs=0,
        # Only the write path is measured: no scheduler beside it.
        scheduler_in_server=False,
    )


def _measure_served(
    config: BenchConfig,
    backend: str,
    settings: Settings,
    targets: Sequence[tuple[uuid.UUID, str]],
    step: Callable[[str], None],
) -> tuple[list[Row], int]:
    """The API rows of each strategy, a ``taskexec serve`` each, all on the same table
    (the growth step comes after everything else); and the first server's peak RSS."""
    rows: list[Row] = []
    peak = 0
    for strategy in config.strategies:
        served = settings.model_copy(update=STRATEGIES[strategy])
        with serve(served, config.server_workers) as (port, proc):
            measure_api(port, targets, "distinct", payload_body(1024), 8, 1.0)  # warm-up
            for payload in config.payloads:
                body = payload_body(PAYLOADS[payload])
                for mode in config.modes:
                    for clients in config.clients:
                        step(f"{backend} api {strategy} {mode} {payload} {clients} clients")
                        result = measure_api(port, targets, mode, body, clients, config.seconds)
                        row = _api_row(backend, mode, payload, clients, result, strategy=strategy)
                        rows.append(row)
            if strategy == config.strategies[0]:
                peak = _peak_rss_kib(proc.pid)
    return rows, peak


def _measure_grown(
    config: BenchConfig,
    backend: str,
    settings: Settings,
    targets: Sequence[tuple[uuid.UUID, str]],
    step: Callable[[str], None],
) -> list[Row]:
    """The growth rows, last: the table filled to each size, a server of the first
    strategy measured at each."""
    if not config.growth or not config.strategies:
        return []
    first = settings.model_copy(update=STRATEGIES[config.strategies[0]])
    with serve(first, config.server_workers) as (port, _proc):
        return _measure_growth(config, backend, first, targets, port, step)


def _measure_growth(
    config: BenchConfig,
    backend: str,
    settings: Settings,
    targets: Sequence[tuple[uuid.UUID, str]],
    port: int,
    step: Callable[[str], None],
) -> list[Row]:
    rows = []
    for size in config.growth:
        step(f"{backend} growth to {size} rows")
        have = fill_rtif(settings, size)
        clients = config.growth_clients
        result = measure_api(port, targets, "distinct", payload_body(1024), clients, config.seconds)
        rows.append(
            _api_row(
                backend,
                "distinct",
                "1KiB",
                clients,
                result,
                kind="growth",
                table_rows=have,
                strategy=(settings.rtif_batch_max > 1 and "batched") or "unbatched",
            )
        )
    return rows


def run_bench(config: BenchConfig, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure everything ``config`` names; returns rows, memory and skipped backends."""
    step = on_step or (lambda _s: None)
    rows: list[Row] = []
    memory: dict[str, int] = {}
    skipped: list[str] = []
    urls: dict[str, str] = {}
    for backend in config.databases:
        admin = databases.admin_url(backend, config.admin_urls.get(backend))
        if admin is None:
            skipped.append(f"{backend}: no URL")
            continue
        urls[backend] = admin
        with (
            tempfile.TemporaryDirectory(prefix="taskexec-bench-") as tmp,
            scratch.fresh_database(backend, admin, workdir=Path(tmp)) as url,
        ):
            settings = _bench_settings(config, url, tmp)
            created = asyncio.run(
                databases.create_task_instances(settings, "bench", config.targets)
            )
            signer = TokenSigner(settings)
            targets = [(t.id, signer.mint(t.id, lifetime=4 * 3600)) for t in created.task_instances]
            served, memory[backend] = _measure_served(config, backend, settings, targets, step)
            rows += served
            # The raw ceiling runs with the server stopped, so that its connections and
            # CPU are the database's and the driver's alone.
            ti_ids = [t.id for t in created.task_instances]
            for kind in config.raw:
                for clients in config.clients:
                    step(f"{backend} raw {kind} distinct 1KiB {clients} clients")
                    body = payload_body(1024)
                    result = raw.measure(kind, settings, ti_ids, body, clients, config.seconds)
                    rows.append(
                        _api_row(
                            backend, "distinct", "1KiB", clients, result, kind="raw", strategy=kind
                        )
                    )
            # Last, so that every API and raw row above ran on the same small table.
            rows += _measure_grown(config, backend, settings, targets, step)
    return {"rows": rows, "memory_kib": memory, "skipped": skipped, "urls": urls}
