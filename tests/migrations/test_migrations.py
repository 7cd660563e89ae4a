"""Migrations on every backend: models and schema agree, one head, down and up with data."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from taskexec import cli
from taskexec.cli import common
from taskexec.cli import db as db_commands
from taskexec.config import Settings
from taskexec.db import migrate, models

from helpers import clear, rtif_rows, seed, store_fields


def test_one_head() -> None:
    assert len(migrate.heads()) == 1


def test_upgrade_head_matches_models(sync_engine: sa.Engine) -> None:
    assert migrate.current_revision(sync_engine) == migrate.heads()[0]
    assert migrate.diff(sync_engine) == []


def test_every_constraint_is_named(sync_engine: sa.Engine) -> None:
    inspector = sa.inspect(sync_engine)
    for table in models.Base.metadata.sorted_tables:
        assert inspector.get_pk_constraint(table.name)["name"] in (f"pk_{table.name}", None)
        for fk in inspector.get_foreign_keys(table.name):
            assert fk["name"] and fk["name"].startswith("fk_"), (table.name, fk)
        for uq in inspector.get_unique_constraints(table.name):
            assert uq["name"] and uq["name"].startswith("uq_"), (table.name, uq)
    for table in models.Base.metadata.sorted_tables:
        for constraint in table.constraints:
            assert constraint.name, (table.name, constraint)


def test_downgrade_to_base_and_upgrade_again_with_rows(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    run = seed(settings, tasks=2, map_count=2)
    store_fields(settings, run.task_instances[0].id, {"a": 1})
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"a": 1}]
    migrate.downgrade(sync_engine, "base")
    assert migrate.current_revision(sync_engine) is None
    assert not set(sa.inspect(sync_engine).get_table_names()) & {
        t.name for t in models.Base.metadata.sorted_tables
    }
    migrate.upgrade(sync_engine)
    assert migrate.diff(sync_engine) == []
    seed(settings, tasks=1)  # the schema works again
    with sync_engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(models.task_instance)) == 1


def test_db_check_command(settings: Settings, sync_engine: sa.Engine) -> None:
    args = cli.build_parser().parse_args(["db", "check"])
    db_commands.cmd_db_check(args, settings)
    migrate.downgrade(sync_engine, "base")
    with pytest.raises(common.CommandError, match="taskexec db upgrade"):
        db_commands.cmd_db_check(args, settings)
    # ...and a schema that drifted from the models.
    migrate.upgrade(sync_engine)
    with sync_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
    with pytest.raises(common.CommandError, match="differs from the models"):
        db_commands.cmd_db_check(args, settings)


def test_serve_refuses_an_old_schema_off_sqlite(settings: Settings, sync_engine: sa.Engine) -> None:
    migrate.downgrade(sync_engine, "base")
    if settings.is_embedded:
        common.ensure_schema(settings)  # the embedded default migrates itself
        assert migrate.current_revision(sync_engine) == migrate.heads()[0]
        return
    with pytest.raises(common.CommandError, match="taskexec db upgrade"):
        common.ensure_schema(settings)


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0
            for table in (
                models.dag_run,
                models.task_instance,
                models.task_instance_history,
                models.rendered_task_instance_fields,
            )
        }


def test_the_scheduler_migration_keeps_every_row(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    """0003 copies task_instance on SQLite (batch mode): the rendered fields and the
    history that refer to it must survive, both ways."""
    run = seed(settings, tasks=3, max_tries=1)
    for ti in run.task_instances:
        store_fields(settings, ti.id, {"cmd": ti.task_id})
    # A clear archives task_0's try into the history and gives it a new try with no
    # status yet, which 0003 allows and going down turns back to queued.
    clear(settings, run.run_id, ["task_0"])
    before = _counts(sync_engine)
    assert before == {
        "dag_run": 1,
        "task_instance": 3,
        "task_instance_history": 1,
        "rendered_task_instance_fields": 3,
    }
    migrate.downgrade(sync_engine, "0002")
    with sync_engine.connect() as conn:
        states = conn.execute(sa.text("SELECT task_id, state FROM task_instance")).all()
    assert sorted(states) == [("task_0", "queued"), ("task_1", "queued"), ("task_2", "queued")]
    assert _counts(sync_engine) == before
    migrate.upgrade(sync_engine)
    assert _counts(sync_engine) == before
    assert migrate.diff(sync_engine) == []
