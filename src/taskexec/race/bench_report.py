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

COLUMNS = (
    "database",
    "kind",
    "strategy",
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
        r.strategy,
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


def _find(rows: Sequence[Row], **match: Any) -> Row | None:
    return next((r for r in rows if all(getattr(r, k) == v for k, v in match.items())), None)


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per database and client count (distinct, 1 KiB): the API batched and unbatched,
    the two raw ceilings, API ÷ the faster raw, and batched ÷ unbatched."""
    out = []
    keys = sorted({(r.database, r.clients) for r in rows if r.kind == "api"})
    for database, clients in keys:
        same = {"database": database, "clients": clients, "mode": "distinct", "payload": "1KiB"}
        batched = _find(rows, kind="api", strategy="batched", **same)
        unbatched = _find(rows, kind="api", strategy="unbatched", **same)
        raws = {
            k: _find(rows, kind="raw", strategy=k, **same) for k in ("transaction", "autocommit")
        }
        best = max((r.req_per_s for r in raws.values() if r is not None), default=0.0)
        api = batched or unbatched
        if api is None:
            continue
        out.append(
            {
                "database": database,
                "clients": clients,
                "batched": batched.req_per_s if batched else None,
                "unbatched": unbatched.req_per_s if unbatched else None,
                "raw_transaction": raws["transaction"].req_per_s if raws["transaction"] else None,
                "raw_autocommit": raws["autocommit"].req_per_s if raws["autocommit"] else None,
                "ratio": api.req_per_s / best if best else None,
                "batched_over_unbatched": (
                    batched.req_per_s / unbatched.req_per_s
                    if batched and unbatched and unbatched.req_per_s
                    else None
                ),
            }
        )
    return out


def _goal(value: float | None, goal: float, at_least: bool) -> dict[str, Any]:
    met = value is not None and (value >= goal if at_least else value <= goal)
    return {"value": value, "goal": f"{'≥' if at_least else '≤'} {goal:.4g}", "met": met}


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's goals, each from this run's rows: the batched API at 32 clients."""
    rows: Sequence[Row] = result["rows"]
    out: dict[str, Any] = {}
    one = {"kind": "api", "strategy": "batched", "payload": "1KiB"}
    pg = _find(rows, database="postgresql", mode="distinct", clients=32, **one)
    if pg is not None:
        ratio = next(
            (
                x["ratio"]
                for x in ratios(rows)
                if (x["database"], x["clients"]) == ("postgresql", 32)
            ),
            None,
        )
        out["postgresql distinct: API ÷ raw"] = _goal(ratio, 0.8, True)
        out["postgresql distinct: p99 ms"] = _goal(pg.p99_ms, 30, False)
    hot = _find(rows, database="postgresql", mode="hot", clients=32, **one)
    if hot is not None:
        out["postgresql hot: req/s"] = _goal(hot.req_per_s, 2000, True)
        out["postgresql hot: p99 ms"] = _goal(hot.p99_ms, 50, False)
    lite = _find(rows, database="sqlite", mode="distinct", clients=32, **one)
    if lite is not None:
        out["sqlite distinct: req/s"] = _goal(lite.req_per_s, 2000, True)
    single = _find(rows, database="postgresql", mode="distinct", clients=1, **one)
    before = _find(
        rows, database="postgresql", mode="distinct", clients=1, kind="api", strategy="unbatched"
    )
    if single is not None and before is not None:
        out["postgresql 1 client: p50 ms (unbatched's)"] = _goal(
            single.p50_ms, before.p50_ms, False
        )
    rss = result["memory_kib"].get("postgresql")
    if rss is not None:
        out["postgresql serve --workers 2: peak RSS MiB"] = _goal(rss / 1024, 300, False)
    return out


def _ratio_cells(x: dict[str, Any]) -> list[str]:
    def num(v: float | None, fmt: str = ".0f") -> str:
        return "-" if v is None else format(v, fmt)

    return [
        x["database"],
        str(x["clients"]),
        num(x["batched"]),
        num(x["unbatched"]),
        num(x["raw_transaction"]),
        num(x["raw_autocommit"]),
        num(x["ratio"], ".2f"),
        num(x["batched_over_unbatched"], ".2f"),
    ]


RAW_KINDS = ("transaction", "autocommit")
RATIO_COLUMNS = (
    "database",
    "clients",
    "API batched",
    "API unbatched",
    "raw transaction",
    "raw autocommit",
    "API ÷ faster raw",
    "batched ÷ unbatched",
)


def rich_tables(result: dict[str, Any]) -> list[Table]:
    """The measurements, the API ÷ raw ratios, and memory."""
    main = Table(title="taskexec bench")
    for col in COLUMNS:
        main.add_column(
            col, justify="left" if col in ("database", "kind", "mode", "payload") else "right"
        )
    for r in result["rows"]:
        main.add_row(*_cells(r), style="red" if r.non_2xx else None)
    ratio = Table(title="req/s, distinct, 1 KiB: API against the raw ceilings")
    for col in RATIO_COLUMNS:
        ratio.add_column(col, justify="right")
    for x in ratios(result["rows"]):
        ratio.add_row(*_ratio_cells(x))
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
        "## req/s, distinct, 1 KiB: API against the raw ceilings",
        "",
        "| " + " | ".join(RATIO_COLUMNS) + " |",
        "|" + "---|" * len(RATIO_COLUMNS),
    ]
    lines += ["| " + " | ".join(_ratio_cells(x)) + " |" for x in ratios(result["rows"])]
    lines += ["", "## Server peak RSS", "", "| database | MiB |", "|---|---|"]
    lines += [f"| {db} | {kib / 1024:.0f} |" for db, kib in result["memory_kib"].items()]
    g = goals(result)
    if g:
        lines += ["", "## Goals (the batched API)", "", "| goal | target | measured | met |"]
        lines += ["|---|---|---|---|"]
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
        "goals": goals(result),
        "skipped": result["skipped"],
    }
    path.write_text(json.dumps(body, indent=2))


def write_png(path: Path, rows: Sequence[Row]) -> None:
    """req/s against clients: a panel per database (columns) and payload (rows), a line
    per kind, strategy and mode (raw ceilings dashed), one legend below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbs = sorted({r.database for r in rows})
    payloads = sorted({r.payload for r in rows}, key=lambda p: (len(p), p))
    fig, axes = plt.subplots(
        len(payloads),
        max(1, len(dbs)),
        figsize=(4.6 * max(1, len(dbs)), 3.2 * len(payloads) + 1.2),
        squeeze=False,
    )
    styles: dict[tuple[str, str, str], Any] = {}
    for row_n, payload in enumerate(payloads):
        for col, db in enumerate(dbs):
            ax = axes[row_n][col]
            mine = [r for r in rows if (r.database, r.payload) == (db, payload)]
            for key in sorted({(r.kind, r.strategy, r.mode) for r in mine if r.kind != "growth"}):
                same = (r for r in mine if (r.kind, r.strategy, r.mode) == key)
                pts = sorted((r.clients, r.req_per_s) for r in same)
                kind, strategy, mode = key
                (line,) = ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    linestyle="--" if kind == "raw" else "-",
                    color=styles[key].get_color() if key in styles else None,
                    label=f"{kind} {strategy} {mode}",
                )
                styles.setdefault(key, line)
            ticks = sorted({r.clients for r in mine}) or [1]
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_title(f"{db}, {payload} bodies")
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel("req/s")
            ax.grid(True, alpha=0.3)
    fig.legend(
        [styles[k] for k in sorted(styles)],
        [styles[k].get_label() for k in sorted(styles)],
        loc="lower center",
        ncol=min(4, max(1, len(styles))),
        fontsize=8,
    )
    fig.suptitle("taskexec bench: sustained rendered-fields writes")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
