"""What some commands print: ``dags list`` (the dags, their tasks, the folder and the
files that did not load), ``run``'s final table, and what ``race``/``bench`` say they
wrote."""

from __future__ import annotations

import builtins
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from taskexec import cli, schemas
from taskexec.cli import run as run_command
from taskexec.config import get_settings
from taskexec.race import main as race_main

GOOD_DAG = """
from taskexec.sdk import BashTask, Dag

with Dag("nightly"):
    a = BashTask("extract", bash_command="echo a")
    b = BashTask("shard", bash_command="echo {{ item }}").expand(range(3))
    a >> b
"""
CYCLE_DAG = """
from taskexec.sdk import BashTask, Dag

with Dag("loop"):
    a = BashTask("a", bash_command="echo a")
    b = BashTask("b", bash_command="echo b")
    a >> b >> a
"""


@pytest.fixture(autouse=True)
def _fresh_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TASKEXEC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TASKEXEC_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_dags_list_names_dags_tasks_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "nightly.py").write_text(GOOD_DAG)
    monkeypatch.setenv("TASKEXEC_DAGS_FOLDER", str(folder))
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["dags", "list"]) == 0
    out, err = capsys.readouterr()
    assert f"dags folder: {folder}" in out
    assert "nightly" in out and "extract, shard[3]" in out
    assert err == ""


def test_dags_list_names_each_file_that_did_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "nightly.py").write_text(GOOD_DAG)
    (folder / "broken.py").write_text("import no_such_module_here\n")
    (folder / "cycle.py").write_text(CYCLE_DAG)
    monkeypatch.setenv("TASKEXEC_DAGS_FOLDER", str(folder))
    assert cli.main(["dags", "list"]) == 1
    out, err = capsys.readouterr()
    assert "nightly" in out
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert any(
        "broken.py not loaded: ModuleNotFoundError" in line and "no_such_module_here" in line
        for line in lines
    )
    assert any("cycle.py not loaded:" in line and "cycle" in line for line in lines)
    assert "Traceback" not in err


def test_dags_list_with_no_such_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TASKEXEC_DAGS_FOLDER", str(tmp_path / "nope"))
    assert cli.main(["dags", "list"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"taskexec: the dags folder {tmp_path / 'nope'} does not exist: fix TASKEXEC_DAGS_FOLDER"
    ]


def test_the_final_table_keeps_the_run_id_on_one_line() -> None:
    now = dt.datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=dt.UTC)
    run_id = f"manual__{now.isoformat()}"
    final = schemas.DagRunSummary(
        dag_id="example_rendered_fields",
        run_id=run_id,
        state="success",
        logical_date=None,
        run_after=now,
        created_at=now,
        task_instance_states={"success": 203, "upstream_failed": 1},
    )
    for width in (120, 40):
        out = io.StringIO()
        run_command.print_final(Console(file=out, width=width), final)
        assert any(run_id in line for line in out.getvalue().splitlines()), out.getvalue()
        assert "203" in out.getvalue()


def _no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("matplotlib", [True, False])
def test_outputs_name_only_what_was_written(
    matplotlib: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskexec.race import report

    if not matplotlib:
        _no_matplotlib(monkeypatch)
    (tmp_path / "race.json").write_text("{}")
    out = io.StringIO()
    race_main.write_outputs(
        Console(file=out, width=300),
        tmp_path,
        "race",
        "# md",
        lambda p: report.write_png(p, []),
    )
    text = out.getvalue()
    assert (tmp_path / "race.md").read_text() == "# md"
    assert (tmp_path / "race.png").exists() is matplotlib
    assert ("race.png" in text) is matplotlib
    if not matplotlib:
        assert "pip install 'taskexec[bench]'" in text
    assert f"wrote {tmp_path / 'race.json'}, {tmp_path / 'race.md'}" in text
