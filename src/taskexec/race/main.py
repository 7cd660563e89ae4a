"""The ``taskexec race`` command: loops over the cases with a progress bar, then writes
the table, JSON, Markdown and PNG."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from taskexec.race import command, databases, report, strategies
from taskexec.race.readback import Readback


def _advancer(progress: Progress, bar: TaskID) -> Callable[[int], None]:
    return lambda _round: progress.advance(bar)


def _plan(args: argparse.Namespace, writers: list[int]) -> list[tuple[str, int]]:
    # The retry variant is one write and its repeat: always two writers.
    return [(v, w) for v in args.variants for w in (writers if v == "first-write" else [2])]


def _race_against(
    args: argparse.Namespace, writers: list[int], progress: Progress
) -> list[command.CaseResult]:
    if not args.targets:
        raise ValueError("--against needs --targets FILE")
    targets = command.read_targets(Path(args.targets))
    plan = _plan(args, writers)
    per_case = len(targets) // max(1, len(plan))
    if per_case < 1:
        raise ValueError(f"{len(targets)} targets are too few for {len(plan)} cases")
    token = args.readback_token or os.environ.get("TASKEXEC_RACE_READBACK_TOKEN") or None
    check = Readback(args.readback, args.readback_url, token)
    cases = []
    for n, (variant, w) in enumerate(plan):
        chunk = targets[n * per_case : (n + 1) * per_case]
        bar = progress.add_task(f"{args.against} {variant} W={w}", total=len(chunk))
        advance = _advancer(progress, bar)
        cases.append(
            command.run_against(args.against, chunk, w, variant, readback=check, on_round=advance)
        )
    return cases


def _race_here(
    args: argparse.Namespace,
    writers: list[int],
    progress: Progress,
    urls: dict[str, str],
    skipped: list[str],
) -> list[command.CaseResult]:
    deadline = time.monotonic() + args.max_seconds
    cases = []
    for backend in ("mysql" if b in ("mariadb", "mysql") else b for b in args.db):
        given = {"postgresql": args.postgres_url, "mysql": args.mysql_url}.get(backend)
        admin = databases.admin_url(backend, given)
        if admin is None:
            skipped.append(f"{backend}: no URL (use --{backend}-url or env)")
            continue
        urls[backend] = admin
        for strategy in args.strategies:
            if strategy not in strategies.STRATEGIES:
                raise ValueError(f"unknown strategy {strategy!r}")
            for variant, w in _plan(args, writers):
                if time.monotonic() > deadline:
                    skipped.append(f"{backend}/{strategy}/{variant}/W={w}: time budget")
                    continue
                bar = progress.add_task(f"{backend} {strategy} {variant} W={w}", total=args.rounds)
                advance = _advancer(progress, bar)
                cases.append(
                    command.run_case(
                        backend, admin, strategy, w, args.rounds, variant, on_round=advance
                    )
                )
    return cases


def race_command(args: argparse.Namespace) -> list[command.CaseResult]:
    """Run every case the options name; returns the results (also written to --out)."""
    console = Console() if Console().is_terminal else Console(width=160)
    # The old strategies fail by design; their 500s are counted in the report, and a
    # traceback per failed request would drown the terminal.
    logging.getLogger("taskexec.server.app").setLevel(logging.CRITICAL)
    writers = [int(w) for w in args.writers]
    for variant in args.variants:
        if variant not in command.VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: use {', '.join(command.VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    urls: dict[str, str] = {}
    skipped: list[str] = []
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        if args.against:
            cases = _race_against(args, writers, progress)
        else:
            cases = _race_here(args, writers, progress, urls, skipped)
    env = command.environment(urls)
    console.print(report.rich_table(cases))
    for line in skipped:
        console.print(f"[yellow]skipped[/] {line}")
    report.write_json(out / "race.json", cases, env, skipped=skipped)
    (out / "race.md").write_text(report.markdown(cases, env))
    try:
        report.write_png(out / "race.png", cases)
    except ImportError:
        console.print("[yellow]no PNG: matplotlib is missing (pip install 'taskexec[bench]')[/]")
    console.print(f"wrote {out / 'race.json'}, {out / 'race.md'}, {out / 'race.png'}")
    return cases


def bench_command(args: argparse.Namespace) -> dict[str, object]:
    """Run ``taskexec bench`` and write its outputs."""
    from taskexec.race import bench, bench_report

    console = Console() if Console().is_terminal else Console(width=160)
    dbs = ["mysql" if d in ("mariadb", "mysql") else d for d in args.db]
    config = bench.BenchConfig(
        databases=dbs,
        clients=[int(c) for c in args.clients],
        modes=args.modes,
        payloads=args.payloads,
        seconds=args.seconds,
        growth=[int(g) for g in args.growth],
        server_workers=args.server_workers,
        targets=args.targets,
        strategies=args.strategies,
        raw=args.raw,
        admin_urls={"postgresql": args.postgres_url, "mysql": args.mysql_url},
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console.status("benchmarking") as status:

        def step(what: str) -> None:
            status.update(f"benchmarking: {what}")
            if not console.is_terminal:
                console.print(f"benchmarking: {what}")

        result = bench.run_bench(config, on_step=step)
    env = command.environment(result["urls"])
    for table in bench_report.rich_tables(result):
        console.print(table)
    for line in result["skipped"]:
        console.print(f"[yellow]skipped[/] {line}")
    bench_report.write_json(out / "bench.json", result, env)
    (out / "bench.md").write_text(bench_report.markdown(result, env))
    try:
        bench_report.write_png(out / "bench.png", result["rows"])
    except ImportError:
        console.print("[yellow]no PNG: matplotlib is missing (pip install 'taskexec[bench]')[/]")
    console.print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")
    return result
