"""Schemathesis against the live server's own OpenAPI, on SQLite and PostgreSQL: every
operation gets generated requests, valid ones and invalid ones (bodies, query and path
values, headers), and no answer may be a 5xx. The task-instance operations are aimed
at a real task instance with its valid token, so that the generated bodies reach the
database. Bounded: a fixed number of examples per operation and mode."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis.errors import Unsatisfiable

from taskexec.config import Settings

from conftest import LiveServer
from helpers import only, report, seed

pytestmark = [
    pytest.mark.fault,
    # Schemathesis's own negative-mode strategies call the random module; recent
    # Hypothesis releases deprecate that, and "error" would fail the run on their code.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

EXAMPLES = 60


@only("sqlite", "postgresql")
def test_no_input_gets_a_5xx(live_server: LiveServer, settings: Settings) -> None:
    ti = seed(settings, tasks=1).task_instances[0]
    base_url = live_server.base_url
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    calls = 0

    def check(case: Any) -> None:
        nonlocal calls
        if "task_instance_id" in (case.path_parameters or {}):
            case.path_parameters["task_instance_id"] = str(ti.id)
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {ti.token}"}
        response = case.call(base_url=base_url, timeout=30)
        calls += 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):
        run = settings_(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )(given(operation.as_strategy(mode))(check))
        with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (GET /health)
            run()
    report(
        f"[{settings.effective_database_url.split(':')[0]}] schemathesis: {calls} generated "
        f"requests (valid and invalid) over {len(operations)} operations, 5xx {len(failures)}"
    )
    assert not failures, failures[:10]
