"""A user error is one line on stderr naming what to fix, exit status 2 for usage and 1
for the environment, and no traceback (unless ``--debug`` or ``TASKEXEC_DEBUG=1``).

Most cases run ``cli.main`` in this process; ``serve`` and the console entry point run
as a subprocess, as users run them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskexec import cli
from taskexec.config import get_settings

from conftest import URL_ENV, _check_reachable, _unavailable

URL_VARIABLES = (
    "TASKEXEC_DATABASE_URL",
    "TASKEXEC_RACE_POSTGRES_URL",
    "TASKEXEC_TEST_POSTGRES_URL",
    "TASKEXEC_RACE_MYSQL_URL",
    "TASKEXEC_TEST_MYSQL_URL",
)


# Read before any test runs: the fixture below clears them from the environment.
SERVER_URLS = {backend: os.environ.get(name, "") for backend, name in URL_ENV.items()}


def _missing_database_url(backend: str) -> tuple[str, str]:
    """A URL on the test server of ``backend`` naming a database that does not exist."""
    admin = SERVER_URLS[backend]
    if not admin:
        _unavailable(f"{URL_ENV[backend]} is not set")
    _check_reachable(admin)
    name = f"taskexec_missing_{uuid.uuid4().hex[:8]}"
    return admin.rsplit("/", 1)[0] + "/" + name, name


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh data folder, no database URLs, and settings read again."""
    monkeypatch.setenv("TASKEXEC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TASKEXEC_DEBUG", raising=False)
    for name in URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield dict(os.environ)
    get_settings.cache_clear()


def _one_line(capsys: pytest.CaptureFixture[str], *, status: int, code: int, says: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert says in lines[0], lines[0]
    assert status == code, err
    return lines[0]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("notaurl", "TASKEXEC_DATABASE_URL: 'notaurl' is not a database URL: use sqlite:///"),
        ("foo://bar", "TASKEXEC_DATABASE_URL: unsupported database 'foo'"),
        ("postgres://u:pw@h/db", "use postgresql:// rather than postgres://"),
    ],
)
@pytest.mark.parametrize(
    "argv",
    [["db", "upgrade"], ["db", "check"], ["run", "example_rendered_fields"], ["trigger", "x"]],
)
def test_a_bad_database_url(
    url: str,
    says: str,
    argv: list[str],
    clean_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TASKEXEC_DATABASE_URL", url)
    line = _one_line(capsys, status=cli.main(argv), code=2, says=says)
    assert "pw" not in line


def test_an_unreachable_database(
    clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    monkeypatch.setenv(
        "TASKEXEC_DATABASE_URL", f"postgresql+psycopg://postgres:pw@127.0.0.1:{port}/test"
    )
    line = _one_line(
        capsys, status=cli.main(["db", "upgrade"]), code=1, says="cannot connect to the database"
    )
    assert f"postgres:***@127.0.0.1:{port}/test" in line
    assert "fix TASKEXEC_DATABASE_URL" in line


@pytest.mark.postgresql
def test_a_missing_postgresql_database(
    clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, name = _missing_database_url("postgresql")
    monkeypatch.setenv("TASKEXEC_DATABASE_URL", url)
    says = f"the database '{name}' does not exist"
    _one_line(capsys, status=cli.main(["db", "upgrade"]), code=1, says=says)
    _one_line(capsys, status=cli.main(["runs", "list"]), code=1, says=says)


@pytest.mark.mariadb
def test_a_missing_mariadb_database(
    clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, name = _missing_database_url("mariadb")
    monkeypatch.setenv("TASKEXEC_DATABASE_URL", url)
    says = f"the database '{name}' does not exist"
    _one_line(capsys, status=cli.main(["db", "upgrade"]), code=1, says=says)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["db", "upgrade", "--revision", "nonsense"], "'nonsense'"),
        (["db", "downgrade", "nonsense"], "'nonsense'"),
    ],
)
def test_a_bad_revision(
    argv: list[str], says: str, clean_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line(capsys, status=cli.main(argv), code=2, says=says)
    assert "give head, base, +N, -N or a revision id" in line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
        (["serve", "--port", "99999"], "argument --port: 99999 is out of range: use 1-65535"),
        (["serve", "--port", "0"], "argument --port: 0 is out of range"),
        (["serve", "--port", "-1"], "argument --port: -1 is out of range"),
        (["serve", "--port", "http"], "argument --port: 'http' is not a port"),
        (["serve", "--workers", "0"], "argument --workers: 0 is out of range: use 1 or more"),
        (["standalone", "--port", "70000"], "argument --port: 70000 is out of range"),
        (["race", "--db", "nosuch"], "'nosuch' is not one of sqlite, postgresql, mysql"),
        (["race", "--strategies", "lazy"], "'lazy' is not one of merge, merge-retry, upsert"),
        (["race", "--variants", "twice"], "'twice' is not one of first-write, retry"),
        (["race", "--writers", "8,many"], "not a comma-separated list of integers"),
        (["race", "--postgres-url", "notaurl"], "'notaurl' is not a database URL"),
        (["bench", "--payloads", "1024"], "'1024' is not one of 1KiB, 64KiB"),
        (["bench", "--modes", "cold"], "'cold' is not one of distinct, hot"),
        (["bench", "--db", "oracle"], "'oracle' is not one of sqlite"),
        (["bench", "--strategies", "lazy"], "'lazy' is not one of batched, unbatched"),
        (["bench", "--raw", "fast"], "'fast' is not one of transaction, autocommit"),
        (["bench", "--clients", "0"], "give integers of 1 or more"),
        (["bench", "--seconds", "0"], "must be above 0"),
        (["runs", "list", "--state", "done"], "argument --state: invalid choice: 'done'"),
        (["runs", "create", "--dag-id", "d", "--tasks", "0"], "argument --tasks: 0 is out of"),
        (["logs", "d", "r", "t", "--try", "0"], "argument --try: 0 is out of range"),
        (["celery-worker", "--concurrency", "0"], "argument --concurrency: 0 is out of"),
        (["db"], "the following arguments are required: COMMAND"),
        (["nosuch"], "invalid choice: 'nosuch'"),
    ],
)
def test_a_bad_option(
    argv: list[str],
    says: str,
    clean_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    extra = ["--out", str(out)] if argv[0] in ("race", "bench") else []
    line = _one_line(capsys, status=cli.main([*argv, *extra]), code=2, says=says)
    assert "--help" in line  # where to read more
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "flag", "variable"),
    [
        (["race", "--db", "postgresql"], "--postgres-url", "TASKEXEC_RACE_POSTGRES_URL"),
        (["race", "--db", "sqlite,mariadb"], "--mysql-url", "TASKEXEC_RACE_MYSQL_URL"),
        (["bench", "--db", "mysql"], "--mysql-url", "TASKEXEC_RACE_MYSQL_URL"),
        (["bench", "--db", "postgresql"], "--postgres-url", "TASKEXEC_RACE_POSTGRES_URL"),
    ],
)
def test_a_requested_database_without_a_url(
    argv: list[str],
    flag: str,
    variable: str,
    clean_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    line = _one_line(
        capsys, status=cli.main([*argv, "--out", str(out)]), code=2, says="needs an admin URL"
    )
    assert flag in line and variable in line
    assert not out.exists()


def test_an_unreachable_race_database(
    clean_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/test"
    argv = ["race", "--db", "postgresql", "--postgres-url", url, "--out", str(out)]
    line = _one_line(capsys, status=cli.main(argv), code=1, says="cannot use postgresql at")
    assert "--postgres-url" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("TASKEXEC_LOG_LEVEL", "loud", "TASKEXEC_LOG_LEVEL: Input should be 'DEBUG'"),
        ("TASKEXEC_EXECUTOR", "threads", "TASKEXEC_EXECUTOR: Input should be 'local' or 'celery'"),
        ("TASKEXEC_DB_POOL_SIZE", "none", "TASKEXEC_DB_POOL_SIZE: Input should be a valid integer"),
    ],
)
def test_a_bad_setting(
    variable: str,
    value: str,
    says: str,
    clean_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    _one_line(capsys, status=cli.main(["runs", "list"]), code=2, says=says)


@pytest.mark.parametrize("argv", [["scheduler"], ["celery-worker"]])
def test_an_unreachable_broker(
    argv: list[str],
    clean_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TASKEXEC_EXECUTOR", "celery")
    port = _closed_port()
    monkeypatch.setenv("TASKEXEC_CELERY_BROKER_URL", f"redis://:secret@127.0.0.1:{port}/0")
    line = _one_line(
        capsys, status=cli.main(argv), code=1, says="cannot reach the Celery broker at"
    )
    assert "secret" not in line
    assert "fix TASKEXEC_CELERY_BROKER_URL" in line


def test_debug_shows_the_traceback(
    clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TASKEXEC_DATABASE_URL", "notaurl")
    assert cli.main(["--debug", "db", "upgrade"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("TASKEXEC_DEBUG", "1")
    assert cli.main(["db", "upgrade", "--revision", "nonsense"]) == 2
    assert "Traceback" in capsys.readouterr().err


def _taskexec(
    *argv: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskexec", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_one_line(proc: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("taskexec")]
    assert len(lines) == 1 and says in lines[0], proc.stderr


def test_serve_refuses_a_bad_port_without_binding(clean_env: dict[str, str]) -> None:
    proc = _taskexec("serve", "--port", "99999", env=clean_env)
    _assert_one_line(proc, 2, "argument --port: 99999 is out of range")
    assert "running on" not in proc.stdout + proc.stderr


def test_serve_refuses_a_port_in_use(clean_env: dict[str, str]) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = _taskexec("serve", "--port", str(port), env=clean_env)
    _assert_one_line(proc, 1, f"cannot listen on 127.0.0.1:{port} (Address already in use)")


def test_serve_stops_at_once_on_a_bad_url(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "TASKEXEC_DATABASE_URL": "notaurl"}
    proc = _taskexec("serve", "--port", str(_closed_port()), env=env)
    _assert_one_line(proc, 2, "TASKEXEC_DATABASE_URL: 'notaurl' is not a database URL")


@pytest.mark.postgresql
def test_serve_stops_at_once_on_a_missing_database(clean_env: dict[str, str]) -> None:
    url, name = _missing_database_url("postgresql")
    env = {**clean_env, "TASKEXEC_DATABASE_URL": url}
    started = time.monotonic()
    proc = _taskexec("serve", "--port", str(_closed_port()), env=env)
    _assert_one_line(proc, 1, f"the database '{name}' does not exist")
    # Not the wait for an unreachable database (tests/e2e/test_serve_supervision.py).
    assert "trying again" not in proc.stderr
    assert time.monotonic() - started < 30
