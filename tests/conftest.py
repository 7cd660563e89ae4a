"""Fixtures: a fresh database per test on sqlite, postgresql and mariadb, and a real
uvicorn server on a free loopback port.

PostgreSQL and MariaDB come from ``TASKEXEC_TEST_POSTGRES_URL`` and
``TASKEXEC_TEST_MYSQL_URL``. Locally a backend whose URL is unset is skipped with a
reason; with ``CI=true`` an unset or unreachable backend fails the run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from taskexec.config import Settings
from taskexec.db import connect, migrate, scratch
from taskexec.server.app import create_app
from taskexec.server.background import background_server

IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ("sqlite", "postgresql", "mariadb")
URL_ENV = {"postgresql": "TASKEXEC_TEST_POSTGRES_URL", "mariadb": "TASKEXEC_TEST_MYSQL_URL"}
TEST_SECRET = "test-secret-for-the-suite-only-0123456789abcdef"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a database that cannot be used fails the run)")
    pytest.skip(message)


def _admin_url(backend: str) -> str:
    url = os.environ.get(URL_ENV[backend], "")
    if not url:
        _unavailable(f"{URL_ENV[backend]} is not set")
    return url


def _check_reachable(url: str) -> None:
    engine = scratch.admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        _unavailable(f"cannot connect to {make_url(url).render_as_string()}: {exc.orig}")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test clones (CREATE DATABASE ... TEMPLATE)."""
    admin = _admin_url("postgresql")
    _check_reachable(admin)
    name = f"taskexec_tpl_{os.getpid()}"
    engine = scratch.admin_engine(admin)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    migrated = connect.make_sync_engine(url, Settings())
    migrate.upgrade(migrated)
    migrated.dispose()
    yield name
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _fresh_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        with scratch.fresh_database("sqlite", "sqlite://", workdir=tmp_path) as url:
            yield url
        return
    admin = _admin_url(backend)
    template = None
    if backend == "postgresql":
        template = request.getfixturevalue("pg_template")
    else:
        _check_reachable(admin)
    name = "mysql" if backend == "mariadb" else backend
    with scratch.fresh_database(name, admin, template=template) as url:
        yield url


@pytest.fixture(params=[pytest.param(b, marks=getattr(pytest.mark, b)) for b in BACKENDS])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database of each backend; dropped after the test."""
    yield from _fresh_database(request.param, request, tmp_path)


@pytest.fixture
def backend(db_url: str) -> str:
    """sqlite, postgresql or mysql."""
    return connect.sync_url(db_url).get_backend_name()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test database, with a fixed signing secret."""
    return Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        jwt_secret=TEST_SECRET,  # type: ignore[arg-type]
        db_pool_size=40,
        db_max_overflow=10,
        # The tests that want a scheduler start their own (helpers.scheduler): the others
        # keep the states they set.
        scheduler_in_server=False,
    )


@pytest.fixture
def sync_engine(settings: Settings) -> Iterator[sa.Engine]:
    """A sync engine on the test database, for assertions on what was stored."""
    engine = connect.make_sync_engine(settings.effective_database_url, settings)
    yield engine
    engine.dispose()


@dataclass
class LiveServer:
    """A real uvicorn server in a thread, serving ``app`` on ``base_url``."""

    app: FastAPI
    base_url: str

    def client(self, **kwargs: Any) -> httpx.Client:
        """A keep-alive client for this server."""
        return httpx.Client(base_url=self.base_url, timeout=30.0, **kwargs)


@contextlib.contextmanager
def run_server(app: FastAPI) -> Iterator[LiveServer]:
    """Serve ``app`` for real on a free loopback port."""
    with background_server(app) as base_url:
        yield LiveServer(app, base_url)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """The production app, served for real, on the test database."""
    with run_server(create_app(settings)) as live:
        yield live


# The read token of ``token_server``.
READ_TOKEN = "s3cret-token"


@pytest.fixture
def token_server(settings: Settings) -> Iterator[LiveServer]:
    """The production app with a read API token (TASKEXEC_API_TOKEN) configured."""
    configured = settings.model_copy(update={"api_token": SecretStr(READ_TOKEN)})
    with run_server(create_app(configured)) as live:
        yield live


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client for the live server."""
    with live_server.client() as c:
        yield c


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the tests measured (race statuses, req/s)."""
    import helpers

    if helpers.FIGURES:
        terminalreporter.section("measured figures")
        for line in helpers.FIGURES:
            terminalreporter.write_line(line)


# Airflow's own task SDK, for the compatibility tests (tests/compat): in a virtualenv of
# its own, so that its dependencies never mix with taskexec's.
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
