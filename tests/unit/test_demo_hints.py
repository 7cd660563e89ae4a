"""The demo's closing hints name a ``taskexec`` that runs from where the demo ran."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from taskexec.cli import demo
from taskexec.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _venv(root: Path, name: str) -> Path:
    """A virtualenv's bin/ with an executable ``taskexec`` script and ``activate``."""
    bin_dir = root / name / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "taskexec").write_text("#!/bin/sh\n")
    (bin_dir / "taskexec").chmod(0o755)
    (bin_dir / "activate").write_text("")
    (bin_dir / "python").write_text("")
    return bin_dir


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory, as after ``make demo``: the demo's venv not on PATH."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    return tmp_path


def test_make_demo_hints_the_venv_script_by_its_path(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``make demo`` runs ``.venv-demo/bin/taskexec demo`` from the repository root.
    bin_dir = _venv(repo, ".venv-demo")
    monkeypatch.setattr(sys, "argv", [".venv-demo/bin/taskexec", "demo"])
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert demo.taskexec_command() == ".venv-demo/bin/taskexec"
    # Typed as an absolute path, it is still shown from here.
    monkeypatch.setattr(sys, "argv", [str(bin_dir / "taskexec"), "demo"])
    assert demo.taskexec_command() == ".venv-demo/bin/taskexec"


def test_the_bare_name_when_path_finds_this_very_script(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _venv(repo, ".venv-demo")
    monkeypatch.setattr(sys, "argv", [str(bin_dir / "taskexec"), "demo"])
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert demo.taskexec_command() == "taskexec"
    # Another taskexec first on PATH is not this one: the path again.
    other = _venv(repo, "other")
    monkeypatch.setenv("PATH", f"{other}:{bin_dir}")
    assert demo.taskexec_command() == ".venv-demo/bin/taskexec"


def test_outside_the_current_directory_the_path_is_absolute(
    repo: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _venv(tmp_path_factory.mktemp("elsewhere"), "venv with space")
    monkeypatch.setattr(sys, "argv", [str(bin_dir / "taskexec"), "demo"])
    assert demo.taskexec_command() == f"'{bin_dir / 'taskexec'}'"


def test_under_python_m_the_script_beside_the_interpreter_or_python_m(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _venv(repo, "env")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "src/taskexec/__main__.py"), "demo"])
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert demo.taskexec_command() == "env/bin/taskexec"
    (bin_dir / "taskexec").unlink()
    assert demo.taskexec_command() == f"{bin_dir / 'python'} -m taskexec"


def test_hints_are_whole_commands_and_say_how_to_activate(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _venv(repo, ".venv-demo")
    monkeypatch.setattr(sys, "argv", [".venv-demo/bin/taskexec", "demo"])
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    run_id = "manual__2026-01-01T00:00:00.123456+00:00__0a1b2c3d"
    lines = demo.hints(Settings(data_dir=repo / "home"), run_id)
    assert "  .venv-demo/bin/taskexec serve" in lines
    logs = f"  .venv-demo/bin/taskexec logs {demo.DAG_ID} {run_id} transform --map-index 0"
    assert logs in lines
    assert any(re.search(rf"/ui/dags/{demo.DAG_ID}/runs/{re.escape(run_id)}$", x) for x in lines)
    assert any("`. .venv-demo/bin/activate`" in line for line in lines)


def test_the_makefile_virtualenvs_are_ignored_by_git() -> None:
    makefile = (ROOT / "Makefile").read_text()
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    venvs = re.findall(r"^(?:DEMO|TEST)_VENV \?= (\S+)$", makefile, re.M)
    assert sorted(venvs) == [".venv", ".venv-demo"]
    assert [f"{venv}/" for venv in venvs if f"{venv}/" not in ignored] == []
