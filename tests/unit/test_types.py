"""UUID7 ids and the upsert statement's shape per dialect."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite

from taskexec.services import rendered_fields
from taskexec.wire import protocol


def test_uuid7_layout_and_order() -> None:
    ids = []
    for _ in range(5):
        ids.append(protocol.uuid7())
        time.sleep(0.002)
    assert all(u.version == 7 and u.variant == "specified in RFC 4122" for u in ids)
    assert ids == sorted(ids)
    assert len({protocol.uuid7() for _ in range(10_000)}) == 10_000
    ms = ids[0].int >> 80
    assert abs(ms - time.time() * 1000) < 5_000


@pytest.mark.parametrize(
    ("name", "dialect", "clause"),
    [
        (
            "postgresql",
            postgresql.dialect(),
            "ON CONFLICT (dag_id, task_id, run_id, map_index) DO UPDATE",
        ),
        ("sqlite", sqlite.dialect(), "ON CONFLICT (dag_id, task_id, run_id, map_index) DO UPDATE"),
        ("mysql", mysql.dialect(), "ON DUPLICATE KEY UPDATE"),
    ],
)
def test_rtif_write_is_one_insert_select_upsert(name: str, dialect: object, clause: str) -> None:
    sql = str(rendered_fields.upsert_statement(name).compile(dialect=dialect))  # type: ignore[arg-type]
    assert sql.startswith("INSERT INTO rendered_task_instance_fields")
    assert "SELECT task_instance.dag_id" in sql
    assert "FROM task_instance" in sql and "WHERE task_instance.id =" in sql
    assert clause in sql
    assert sql.count("INSERT") == 1 and ";" not in sql
