"""taskexec's masking by name and by type against Airflow's own ``redact`` (from the
current ``apache-airflow-task-sdk``, run in its own virtualenv): the same values under
the same names give the same result. Value patterns are off on both sides here: Airflow
registers none by default, and taskexec's extra ones are checked by the masking corpus.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from taskexec.wire.masking import SecretsMasker

pytestmark = pytest.mark.compat

SCRIPT = Path(__file__).with_name("airflow_redact_script.py")

# (name, value): JSON values as a worker sends them, under sensitive and innocent names.
CASES: list[tuple[str | None, object]] = [
    ("password", "hunter2"),
    ("password", 12345),
    ("token", 1.5),
    ("secret", False),
    ("password", None),
    ("password", ""),
    ("API-Key", "abc"),
    ("my.Access-Token", "abc"),
    ("webhook_url", "https://hooks.example/x"),
    ("dsn", "host=db user=ada"),
    ("connection_string", "Server=db;Uid=ada"),
    ("keyfile_dict", {"type": "service_account", "project_id": 7, "private_key": "k"}),
    ("proxies", ["http://p:8080", 3128]),
    ("service_account", {"user": "ada", "pin": 1234, "hosts": ["a", None, ["b", 2]]}),
    ("op_kwargs", {"conn": {"host": "db", "port": 5432, "Password": "p"}, "n": 1}),
    ("op_kwargs", {"items": [{"api_key": ["k1", {"deep": "k2"}], "x": 1}, "plain"]}),
    ("env", {"TOKEN": "t", "DB_PASSWORD": 5, "HOME": "/root", "Auth-Header": "h"}),
    ("env", {"nested": {"deeper": {"secret": {"a": ["s", 1, True, None]}}}}),
    ("bash_command", "echo hello"),
    ("templates_dict", {"passenger": "kept", "bypass": "kept", "compass": "kept"}),
    (None, {"authorization": "Basic abc", "bearer": "t", "proxy": "p"}),
    ("sql", "SELECT 1"),
]


def test_masking_by_name_and_type_matches_airflows_redact(sdk_python: Path) -> None:
    proc = subprocess.run(
        [str(sdk_python), str(SCRIPT)],
        input=json.dumps(CASES),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    airflow = json.loads(proc.stdout.strip().splitlines()[-1])
    masker = SecretsMasker(patterns=False)
    ours = json.loads(json.dumps([masker.redact(value, name) for name, value in CASES]))
    differing = [
        (case, theirs, mine)
        for case, theirs, mine in zip(CASES, airflow, ours, strict=True)
        if theirs != mine
    ]
    assert differing == []
    # Not vacuous: the cases hide something and keep something.
    assert "***" in json.dumps(ours) and "5432" in json.dumps(ours)
