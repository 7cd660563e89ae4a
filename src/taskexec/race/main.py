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

from taskexec.race import command, databases, harness, report, strategies
from taskexec.race.readback import Readback


def _advancer(progress: Progress, bar: TaskID) -> Callable[[int], None]:
    return lambda _round: progress.advance(bar)


def _plan(args: argparse.Namespace, writers: list[int]) -> list[tuple[str, int]]:
    # The retry variant is one write and its repeat: always two writers.
    return [(v, w) for v in args.variants for w in (writers if v == "first-write" else [2])]


def _race_against(
    args: argparse.Namespace,
    writers: list[int],
    progress: Progress,
    targets: list[harness.Target],
) -> list[command.CaseResult]:
    plan = _plan(args, writers)
    per_case = len(targets) // max(1, len(plan))
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
    for backend, admin in urls.items():
        for strategy in args.strategies:
            if strategy not in strategies.STRATEGIES:
                raise databases.OptionError(f"unknown strategy {strategy!r}")
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


def _console() -> Console:
    return Console() if Console().is_terminal else Console(width=160)


def _race_targets(args: argparse.Namespace, writers: list[int]) -> list[harness.Target]:
    """--against: the targets file, checked before anything runs."""
    if not args.targets:
        raise databases.OptionError("--against needs --targets FILE")
    targets = command.read_targets(Path(args.targets))
    cases = len(_plan(args, writers))
    if len(targets) < cases:
        raise databases.OptionError(f"{len(targets)} targets are too few for {cases} cases")
    return targets


def _admin_urls(args: argparse.Namespace) -> dict[str, str]:
    """The databases asked for, each with its admin URL, each answering."""
    given = {"postgresql": args.postgres_url, "mysql": args.mysql_url}
    urls = databases.admin_urls(args.db, given)
    databases.check_reachable(urls)
    return urls


def write_outputs(
    console: Console, out: Path, stem: str, markdown: str, png: Callable[[Path], None]
) -> None:
    """Beside ``stem``.json (written by the caller), write the Markdown and, if matplotlib
    is there, the PNG; then name what was written (never a PNG that was not)."""
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    written[1].write_text(markdown)
    try:
        png(out / f"{stem}.png")
        written.append(out / f"{stem}.png")
    except ImportError:
        console.print(
            "no PNG: matplotlib is missing (pip install 'taskexec[bench]')",
            style="yellow",
            markup=False,
        )
    console.print("wrote " + ", ".join(map(str, written)), markup=False, soft_wrap=True)


def race_command(args: argparse.Namespace) -> list[command.CaseResult]:
    """Run every case the options name; returns the results (also written to --out)."""
    console = _console()
    # The old strategies fail by design; their 500s are counted in the report, and a
    # traceback per failed request would drown the terminal.
    logging.getLogger("taskexec.server.app").setLevel(logging.CRITICAL)
    writers = [int(w) for w in args.writers]
    for variant in args.variants:
        if variant not in command.VARIANTS:
            raise databases.OptionError(
                f"unknown variant {variant!r}: use {', '.join(command.VARIANTS)}"
            )
    # Everything that can be wrong with the options is found before --out is made.
    targets = _race_targets(args, writers) if args.against else []
    urls = {} if args.against else _admin_urls(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = databases.not_asked_for(urls) if args.db is None and not args.against else []
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        if args.against:
            cases = _race_against(args, writers, progress, targets)
        else:
            cases = _race_here(args, writers, progress, urls, skipped)
    env = command.environment(urls)
    console.print(report.rich_table(cases))
    for line in skipped:
        console.print(f"[yellow]skipped[/] {line}")
    report.write_json(out / "race.json", cases, env, skipped=skipped)
    write_outputs(
        console, out, "race", report.markdown(cases, env), lambda p: report.write_png(p, cases)
    )
    return cases


def bench_command(args: argparse.Namespace) -> dict[str, object]:
    """Run ``taskexec bench`` and write its outputs."""
    from taskexec.race import bench, bench_report

    console = _console()
    urls = _admin_urls(args)
    config = bench.BenchConfig(
        databases=list(urls),
        clients=[int(c) for c in args.clients],
        modes=args.modes,
        payloads=args.payloads,
        seconds=args.seconds,
        growth=[int(g) for g in args.growth],
        server_workers=args.server_workers,
        targets=args.targets,
        strategies=args.strategies,
        raw=args.raw,
        admin_urls=dict(urls),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console.status("benchmarking") as status:

        def step(what: str) -> None:
            status.update(f"benchmarking: {what}")
            if not console.is_terminal:
                console.print(f"benchmarking: {what}")

        result = bench.run_bench(config, on_step=step)
    if args.db is None:
        result["skipped"] = databases.not_asked_for(urls) + result["skipped"]
    env = command.environment(result["urls"])
    for table in bench_report.rich_tables(result):
        console.print(table)
    for line in result["skipped"]:
        console.print(f"[yellow]skipped[/] {line}")
    bench_report.write_json(out / "bench.json", result, env)
    write_outputs(
        console,
        out,
        "bench",
        bench_report.markdown(result, env),
        lambda p: bench_report.write_png(p, result["rows"]),
    )
    return result
