"""Race outputs: a Rich table, JSON, Markdown and a PNG."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from taskexec.race.command import CaseResult

COLUMNS = (
    "database",
    "strategy",
    "variant",
    "writers",
    "rounds",
    "requests",
    "non-2xx",
    "non-2xx %",
    "bad rounds",
    "req/s",
    "p50 ms",
    "p99 ms",
    "reasons",
)


def _row(case: CaseResult) -> list[str]:
    reasons = ", ".join(f"{k} x{v}" for k, v in sorted(case.reasons.items())) or "-"
    bad = "-" if case.bad_rounds is None else str(case.bad_rounds)
    if case.get_mismatches is not None:
        bad = f"GET≠PUT {case.get_mismatches}"
    elif case.readback.startswith("not checked"):
        bad = "GET not served"
    return [
        case.database,
        case.strategy,
        case.variant,
        str(case.writers),
        str(case.rounds),
        str(case.requests),
        str(case.non_2xx),
        f"{case.non_2xx_pct:.1f}",
        bad,
        f"{case.req_per_s:.0f}",
        f"{case.p50_ms:.1f}",
        f"{case.p99_ms:.1f}",
        reasons,
    ]


def rich_table(cases: Sequence[CaseResult], title: str = "taskexec race") -> Table:
    """The terminal table; non-2xx rows in red."""
    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(
            col,
            justify="left" if col in ("database", "strategy", "variant", "reasons") else "right",
        )
    for case in cases:
        table.add_row(*_row(case), style="red" if case.non_2xx or case.bad_rounds else None)
    return table


def environment_lines(env: dict[str, Any]) -> list[str]:
    """Markdown lines saying where a report's figures were measured."""
    return [
        "",
        f"Machine: {env.get('cpus')} CPUs, {env.get('platform')}, Python {env.get('python')}; "
        f"{env.get('date')}.",
        "",
        "Databases: " + "; ".join(f"{k}: {v}" for k, v in env.get("databases", {}).items()),
        "",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
        "",
    ]


def markdown(cases: Sequence[CaseResult], env: dict[str, Any], title: str = "taskexec race") -> str:
    """A Markdown report: the table plus where it ran."""
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(c)) + " |" for c in cases]
    lines += environment_lines(env)
    return "\n".join(lines)


def write_json(path: Path, cases: Sequence[CaseResult], env: dict[str, Any], **extra: Any) -> None:
    """Every figure, plus the environment."""
    body = {
        "environment": env,
        "cases": [dataclasses.asdict(c) | {"non_2xx_pct": c.non_2xx_pct} for c in cases],
        **extra,
    }
    path.write_text(json.dumps(body, indent=2))


def write_png(path: Path, cases: Sequence[CaseResult]) -> None:
    """Non-2xx % (top) and req/s (bottom) against writers: a line per strategy, a panel
    per database (first-write variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [c for c in cases if c.variant == "first-write"] or list(cases)
    dbs = sorted({c.database for c in chosen})
    fig, axes = plt.subplots(
        2, max(1, len(dbs)), figsize=(4.2 * max(1, len(dbs)), 6), squeeze=False
    )
    for col, db in enumerate(dbs):
        for strategy in sorted({c.strategy for c in chosen if c.database == db}):
            points = sorted(
                (c.writers, c) for c in chosen if c.database == db and c.strategy == strategy
            )
            xs = [w for w, _ in points]
            axes[0][col].plot(xs, [c.non_2xx_pct for _, c in points], marker="o", label=strategy)
            axes[1][col].plot(xs, [c.req_per_s for _, c in points], marker="o", label=strategy)
        axes[0][col].set_title(db)
        axes[0][col].set_ylabel("non-2xx %")
        axes[1][col].set_ylabel("req/s")
        axes[1][col].set_xlabel("concurrent writers")
        ticks = sorted({c.writers for c in chosen if c.database == db})
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.grid(True, alpha=0.3)
        axes[0][col].legend(fontsize=8)
    fig.suptitle("taskexec race: first writes to one fresh task instance")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
