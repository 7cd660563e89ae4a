"""``taskexec bench`` in a tiny configuration: well-formed JSON, Markdown and PNG.
No timing assertions: a benchmark prints figures, it does not judge them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskexec import cli
from taskexec.race import bench


def test_payload_sizes() -> None:
    for size in (1024, 64 * 1024):
        body = bench.payload_body(size)
        assert len(body) == size
        assert set(json.loads(body)) == {"bash_command", "env"}


@pytest.mark.sqlite
def test_bench_tiny_configuration(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code = cli.main(
        [
            "bench",
            "--db",
            "sqlite",
            "--clients",
            "1,2",
            "--modes",
            "distinct,hot",
            "--payloads",
            "1KiB",
            "--seconds",
            "0.3",
            "--growth",
            "100,300",
            "--targets",
            "40",
            "--server-workers",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    body = json.loads((out / "bench.json").read_text())
    rows = body["rows"]
    kinds = {(r["kind"], r["strategy"], r["mode"], r["clients"]) for r in rows}
    assert {
        ("api", "batched", "distinct", 1),
        ("api", "unbatched", "hot", 2),
        ("raw", "transaction", "distinct", 2),
        ("raw", "autocommit", "distinct", 2),
    } <= kinds
    growth = sorted(r["table_rows"] for r in rows if r["kind"] == "growth")
    assert growth == [100, 300]
    assert all(r["requests"] > 0 and r["non_2xx"] == 0 for r in rows)
    assert all(r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] for r in rows)
    assert {x["clients"] for x in body["ratios"]} == {1, 2}
    for x in body["ratios"]:
        fastest = max(x["raw_transaction"], x["raw_autocommit"])
        assert x["ratio"] == pytest.approx(x["batched"] / fastest)
        assert x["batched_over_unbatched"] == pytest.approx(x["batched"] / x["unbatched"])
    assert body["memory_kib"]["sqlite"] > 10_000
    assert body["environment"]["databases"]["sqlite"].startswith("SQLite")
    assert "API against the raw ceilings" in (out / "bench.md").read_text()
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--payloads", "1k", "'1k' is not one of 1KiB, 64KiB"),
        ("--modes", "cold", "'cold' is not one of distinct, hot"),
        ("--db", "oracle", "'oracle' is not one of sqlite, postgresql, mysql, mariadb"),
        ("--strategies", "lazy", "'lazy' is not one of batched, unbatched, route"),
        ("--raw", "fast", "'fast' is not one of transaction, autocommit"),
    ],
)
def test_unknown_choice_is_a_clear_error(
    option: str, value: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["bench", option, value, "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unknown_choice_in_the_config_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown payload '1k'"):
        bench.BenchConfig(payloads=["1k"])


def test_non_integer_clients_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--clients", "8,many"]) == 2
    assert "not a comma-separated list of integers" in capsys.readouterr().err
