"""Interleaved A/B of `taskexec bench` strategies: prints figures, asserts nothing.

On this kind of machine throughput moves by half from one hour to the next, so a
comparison of two server designs is only worth the rounds that ran side by side. This
starts one `taskexec serve` per strategy on one fresh database (the same task instances
and tokens), then measures them in turn, round after round, with the order reversed on
every other round, and prints each round and the ratio of the medians:

    python tools/bench_ab.py --db postgresql --strategies batched,route --clients 32
    python tools/bench_ab.py --db sqlite --mode hot --rounds 5 --seconds 8

``--before DIR`` adds a server running the code of another checkout (say
``git worktree add /tmp/before HEAD~1``), served with ``batched`` settings from
``DIR/src``, as the strategy ``before``: the code before a change against the code now.

Admin URLs as for `taskexec bench` (TASKEXEC_RACE_POSTGRES_URL, TASKEXEC_RACE_MYSQL_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

from taskexec.db import scratch
from taskexec.race import bench, databases
from taskexec.security import TokenSigner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="postgresql", choices=databases.BACKENDS)
    parser.add_argument("--strategies", default="batched,route")
    parser.add_argument("--mode", default="distinct", choices=bench.MODES)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--payload", default="1KiB", choices=tuple(bench.PAYLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--before", type=Path, help="a checkout of earlier code to compare")
    args = parser.parse_args()
    strategies = args.strategies.split(",") + (["before"] if args.before else [])
    admin = databases.admin_url(args.db, None)
    if admin is None:
        raise SystemExit(f"no admin URL for {args.db}")
    config = bench.BenchConfig(
        databases=[args.db], clients=[args.clients], server_workers=args.server_workers
    )
    body = bench.payload_body(bench.PAYLOADS[args.payload])
    with (
        tempfile.TemporaryDirectory(prefix="taskexec-ab-") as tmp,
        scratch.fresh_database(args.db, admin, workdir=Path(tmp)) as url,
        contextlib.ExitStack() as servers,
    ):
        settings = bench._bench_settings(config, url, tmp)
        # Two servers at once share the database's connections: half the pool each.
        settings = settings.model_copy(
            update={"db_pool_size": max(4, settings.db_pool_size // len(strategies) + 2)}
        )
        created = asyncio.run(databases.create_task_instances(settings, "ab", config.targets))
        signer = TokenSigner(settings)
        targets = [(t.id, signer.mint(t.id, lifetime=4 * 3600)) for t in created.task_instances]
        ports, pids = {}, {}
        for name in strategies:
            served = settings.model_copy(
                update=bench.STRATEGIES.get(name, bench.STRATEGIES["batched"])
            )
            with _code_from(args.before / "src" if name == "before" else None):
                ports[name], proc = servers.enter_context(bench.serve(served, args.server_workers))
            pids[name] = proc.pid
            bench.measure_api(ports[name], targets, args.mode, body, 8, 1.0)  # warm-up
        figures: dict[str, list[float]] = {name: [] for name in strategies}
        cpu_figures: dict[str, list[float]] = {name: [] for name in strategies}
        print(f"{args.db} {args.mode} {args.payload} {args.clients} clients, {args.seconds:g} s")
        for round_no in range(args.rounds):
            order = strategies if round_no % 2 == 0 else strategies[::-1]
            for name in order:
                server, database = _server_pids(pids[name]), _database_pids()
                before = _cpu_seconds(server + database)
                result = bench.measure_api(
                    ports[name], targets, args.mode, body, args.clients, args.seconds
                )
                after = _cpu_seconds(server + database)
                used = {pid: after[pid] - before[pid] for pid in before if pid in after}
                server_us = 1e6 * sum(used.get(p, 0.0) for p in server) / max(1, result.requests)
                database_us = (
                    1e6 * sum(used.get(p, 0.0) for p in database) / max(1, result.requests)
                )
                # Each worker's share of the workers' CPU: how evenly the load was spread.
                workers = [used.get(p, 0.0) for p in server[1:]]
                shares = "/".join(f"{100 * w / (sum(workers) or 1):.0f}" for w in workers)
                figures[name].append(result.req_per_s)
                cpu_figures[name].append(server_us)
                print(
                    f"round {round_no + 1} {name:>10}: {result.req_per_s:7.0f} req/s, "
                    f"p50 {result.percentile_ms(50):6.1f} ms, p99 {result.percentile_ms(99):6.1f}"
                    f" ms, non-2xx {result.non_2xx}; CPU µs/request: server {server_us:.0f}"
                    f" (workers' shares {shares} %), database {database_us:.0f}"
                )
    medians = {name: statistics.median(v) for name, v in figures.items()}
    first = strategies[0]
    for name in strategies:
        ratio = medians[first] / medians[name] if medians[name] else float("nan")
        print(
            f"median {name:>10}: {medians[name]:7.0f} req/s ({first} ÷ {name}: {ratio:.2f}), "
            f"server CPU {statistics.median(cpu_figures[name]):.0f} µs/request"
        )


_TICKS = os.sysconf("SC_CLK_TCK")
# The database's processes, by their command name (SQLite's work is the server's own).
_DATABASE_COMMANDS = {"postgres", "mariadbd", "mysqld"}


def _server_pids(supervisor: int) -> list[int]:
    """The supervisor (``taskexec serve``'s pid, kept across its exec), then its
    server processes."""
    try:
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except OSError:
        children = []
    workers = []
    for child in map(int, children):
        with contextlib.suppress(OSError):
            # Not multiprocessing's resource tracker: the server processes.
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
    return [supervisor, *workers]


def _database_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() in _DATABASE_COMMANDS:
                    pids.append(int(proc.name))
    return pids


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User plus system CPU time of each process so far (one that is gone: left out)."""
    seconds = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            seconds[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    return seconds


@contextlib.contextmanager
def _code_from(src: Path | None) -> Iterator[None]:
    """Servers started in the block import taskexec from ``src`` (None: this code)."""
    saved = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = str(src.resolve())
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


if __name__ == "__main__":
    main()
