"""Initial schema: dag_run, task_instance, task_instance_history, rendered fields.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from taskexec.db.types import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 250
# InnoDB: utf8mb4 everywhere; binary collation so ids compare case-sensitively, as on
# the other databases.
MYSQL_OPTS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
# The task-instance key as this revision created it (a migration keeps its own copy of
# the schema it writes: later changes to the models must not rewrite history).
TI_KEY = ["dag_id", "task_id", "run_id", "map_index"]


def _ti_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dag_id", sa.String(ID), nullable=False),
        sa.Column("task_id", sa.String(ID), nullable=False),
        sa.Column("run_id", sa.String(ID), nullable=False),
        sa.Column("map_index", sa.Integer(), server_default=sa.text("-1"), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("max_tries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("hostname", sa.String(1000), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("start_date", UtcDateTime(), nullable=True),
        sa.Column("end_date", UtcDateTime(), nullable=True),
        sa.Column("last_heartbeat_at", UtcDateTime(), nullable=True),
    ]


def _create_dag_run() -> None:
    op.create_table(
        "dag_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(ID), nullable=False),
        sa.Column("run_id", sa.String(ID), nullable=False),
        sa.Column("logical_date", UtcDateTime(), nullable=True),
        sa.Column("run_after", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("conf", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dag_run"),
        sa.UniqueConstraint("dag_id", "run_id", name="uq_dag_run_dag_id_run_id"),
        **MYSQL_OPTS,
    )
    op.create_index("ix_dag_run_dag_id_run_after", "dag_run", ["dag_id", "run_after"])


def _create_task_instance() -> None:
    op.create_table(
        "task_instance",
        *_ti_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_task_instance"),
        sa.UniqueConstraint(*TI_KEY, name="uq_task_instance_key"),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name="fk_task_instance_dag_run",
            ondelete="CASCADE",
        ),
        **MYSQL_OPTS,
    )
    op.create_index("ix_task_instance_state", "task_instance", ["state"])


def _create_task_instance_history() -> None:
    op.create_table(
        "task_instance_history",
        *_ti_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_task_instance_history"),
        sa.UniqueConstraint(*TI_KEY, "try_number", name="uq_task_instance_history_key_try"),
        sa.ForeignKeyConstraint(
            TI_KEY,
            [f"task_instance.{column}" for column in TI_KEY],
            name="fk_task_instance_history_task_instance",
            ondelete="CASCADE",
        ),
        **MYSQL_OPTS,
    )


def _create_rendered_task_instance_fields() -> None:
    op.create_table(
        "rendered_task_instance_fields",
        sa.Column("dag_id", sa.String(ID), nullable=False),
        sa.Column("task_id", sa.String(ID), nullable=False),
        sa.Column("run_id", sa.String(ID), nullable=False),
        sa.Column("map_index", sa.Integer(), server_default=sa.text("-1"), nullable=False),
        sa.Column("rendered_fields", sa.JSON(), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(*TI_KEY, name="pk_rendered_task_instance_fields"),
        sa.ForeignKeyConstraint(
            TI_KEY,
            [f"task_instance.{column}" for column in TI_KEY],
            name="fk_rendered_task_instance_fields_task_instance",
            ondelete="CASCADE",
        ),
        **MYSQL_OPTS,
    )


def upgrade() -> None:
    _create_dag_run()
    _create_task_instance()
    _create_task_instance_history()
    _create_rendered_task_instance_fields()


def downgrade() -> None:
    op.drop_table("rendered_task_instance_fields")
    op.drop_table("task_instance_history")
    op.drop_index("ix_task_instance_state", table_name="task_instance")
    op.drop_table("task_instance")
    op.drop_index("ix_dag_run_dag_id_run_after", table_name="dag_run")
    op.drop_table("dag_run")
