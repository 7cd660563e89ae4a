"""The Airflow task SDK's virtualenv, shared by the compatibility tests."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

SDK = "apache-airflow-task-sdk"


def _sdk_python() -> Path:
    """A cached virtualenv with the current task SDK (created once per machine)."""
    root = Path(os.environ.get("TASKEXEC_COMPAT_VENV", Path.home() / ".cache/taskexec/airflow-sdk"))
    python = root / "bin" / "python"
    if not (root / ".installed").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--upgrade", SDK],
            check=True,
            capture_output=True,
            timeout=900,
        )
        (root / ".installed").touch()
    return python


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    try:
        return _sdk_python()
    except (subprocess.SubprocessError, OSError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"could not install {SDK}: {exc}")
