"""Bench outputs: Rich tables, JSON, Markdown, PNG, and the performance goals."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from taskexec.race import report
from taskexec.race.bench import Row

GOALS = {"req_per_s": 2500.0, "p99_ms": 30.0, "non_2xx": 0, "api_over_raw": 0.3}
COLUMNS = (
    "database",
    "kind",
    "mode",
    "payload",
    "clients",
    "rows in table",
    "requests",
    "req/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "non-2xx",
    "loadgen CPU",
)


def _cells(r: Row) -> list[str]:
    return [
        r.database,
        r.kind,
        r.mode,
        r.payload,
        str(r.clients),
        "-" if r.table_rows is None else f"{r.table_rows:,}",
        str(r.requests),
        f"{r.req_per_s:.0f}",
        f"{r.p50_ms:.1f}",
        f"{r.p99_ms:.1f}",
        f"{r.max_ms:.1f}",
        str(r.non_2xx),
        f"{r.loadgen_cpu:.2f}",
    ]


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """API ÷ raw req/s, distinct 1 KiB, per database and client count."""
    out = []
    for api in rows:
        if (api.kind, api.mode, api.payload) != ("api", "distinct", "1KiB"):
            continue
        raw = next(
            (
                r
                for r in rows
                if r.kind == "raw" and r.database == api.database and r.clients == api.clients
            ),
            None,
        )
        if raw is not None and raw.req_per_s:
            out.append(
                {
                    "database": api.database,
                    "clients": api.clients,
                    "api_req_per_s": api.req_per_s,
                    "raw_req_per_s": raw.req_per_s,
                    "ratio": api.req_per_s / raw.req_per_s,
                }
            )
    return out


def goals(rows: Sequence[Row], database: str = "postgresql", clients: int = 32) -> dict[str, Any]:
    """The issue's goals at PostgreSQL, 32 clients, distinct, 1 KiB: figure and met?"""
    api = next(
        (
            r
            for r in rows
            if (r.database, r.kind, r.mode, r.payload, r.clients)
            == (database, "api", "distinct", "1KiB", clients)
        ),
        None,
    )
    if api is None:
        return {}
    ratio = next(
        (x["ratio"] for x in ratios(rows) if x["database"] == database and x["clients"] == clients),
        None,
    )
    return {
        "req_per_s": {
            "value": api.req_per_s,
            "goal": GOALS["req_per_s"],
            "met": api.req_per_s >= GOALS["req_per_s"],
        },
        "p99_ms": {
            "value": api.p99_ms,
            "goal": GOALS["p99_ms"],
            "met": api.p99_ms <= GOALS["p99_ms"],
        },
        "non_2xx": {"value": api.non_2xx, "goal": 0, "met": api.non_2xx == 0},
        "api_over_raw": {
            "value": ratio,
            "goal": GOALS["api_over_raw"],
            "met": ratio is not None and ratio >= GOALS["api_over_raw"],
        },
    }


def rich_tables(result: dict[str, Any]) -> list[Table]:
    """The measurements, the API ÷ raw ratios, and memory."""
    main = Table(title="taskexec bench")
    for col in COLUMNS:
        main.add_column(
            col, justify="left" if col in ("database", "kind", "mode", "payload") else "right"
        )
    for r in result["rows"]:
        main.add_row(*_cells(r), style="red" if r.non_2xx else None)
    ratio = Table(title="API ÷ raw (distinct, 1 KiB)")
    for col in ("database", "clients", "API req/s", "raw req/s", "ratio"):
        ratio.add_column(col, justify="right")
    for x in ratios(result["rows"]):
        ratio.add_row(
            x["database"],
            str(x["clients"]),
            f"{x['api_req_per_s']:.0f}",
            f"{x['raw_req_per_s']:.0f}",
            f"{x['ratio']:.2f}",
        )
    mem = Table(title="server peak RSS (all processes)")
    mem.add_column("database")
    mem.add_column("MiB", justify="right")
    for db, kib in result["memory_kib"].items():
        mem.add_row(db, f"{kib / 1024:.0f}")
    return [main, ratio, mem]


def markdown(result: dict[str, Any], env: dict[str, Any]) -> str:
    """The full report as Markdown."""
    lines = ["# taskexec bench", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in result["rows"]]
    lines += [
        "",
        "## API ÷ raw (distinct, 1 KiB)",
        "",
        "| database | clients | API req/s | raw req/s | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['database']} | {x['clients']} | {x['api_req_per_s']:.0f} "
        f"| {x['raw_req_per_s']:.0f} | {x['ratio']:.2f} |"
        for x in ratios(result["rows"])
    ]
    lines += ["", "## Server peak RSS", "", "| database | MiB |", "|---|---|"]
    lines += [f"| {db} | {kib / 1024:.0f} |" for db, kib in result["memory_kib"].items()]
    g = goals(result["rows"])
    if g:
        lines += [
            "",
            "## Goals (PostgreSQL, 32 clients, distinct, 1 KiB)",
            "",
            "| goal | target | measured | met |",
            "|---|---|---|---|",
        ]
        for name, v in g.items():
            value = "-" if v["value"] is None else f"{v['value']:.2f}"
            lines.append(f"| {name} | {v['goal']} | {value} | {'yes' if v['met'] else 'no'} |")
    lines += report.environment_lines(env)
    return "\n".join(lines)


def write_json(path: Path, result: dict[str, Any], env: dict[str, Any]) -> None:
    """Every figure plus the environment."""
    body = {
        "environment": env,
        "rows": [dataclasses.asdict(r) for r in result["rows"]],
        "ratios": ratios(result["rows"]),
        "memory_kib": result["memory_kib"],
        "goals": goals(result["rows"]),
        "skipped": result["skipped"],
    }
    path.write_text(json.dumps(body, indent=2))


def write_png(path: Path, rows: Sequence[Row]) -> None:
    """req/s against clients: a line per mode and payload (and raw), a panel per database."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbs = sorted({r.database for r in rows})
    fig, axes = plt.subplots(
        1, max(1, len(dbs)), figsize=(4.5 * max(1, len(dbs)), 3.6), squeeze=False
    )
    for col, db in enumerate(dbs):
        ax = axes[0][col]
        series = sorted(
            {(r.kind, r.mode, r.payload) for r in rows if r.database == db and r.kind != "growth"}
        )
        for kind, mode, payload in series:
            pts = sorted(
                (r.clients, r.req_per_s)
                for r in rows
                if (r.database, r.kind, r.mode, r.payload) == (db, kind, mode, payload)
            )
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                linestyle="--" if kind == "raw" else "-",
                label=f"{kind} {mode} {payload}",
            )
        ticks = sorted({r.clients for r in rows if r.database == db})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(db)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("req/s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("taskexec bench: sustained RTIF writes")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
