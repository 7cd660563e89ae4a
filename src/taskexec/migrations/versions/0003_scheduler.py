"""The scheduler: run start/end dates and the dag spec, task instances with no status
yet, queueing and retry times, and the scheduler lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from taskexec.db.types import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MYSQL_OPTS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
TRY_TABLES = ("task_instance", "task_instance_history")


def _try_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("queued_at", UtcDateTime(), nullable=True),
        sa.Column("queued_by", sa.String(200), nullable=True),
        sa.Column("next_retry_at", UtcDateTime(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("dag_run") as batch:
        batch.add_column(sa.Column("start_date", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("end_date", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("spec", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("clear_number", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.create_index("ix_dag_run_state", ["state"])
    for table in TRY_TABLES:
        # SQLite cannot change a column's nullability in place: batch mode copies the
        # table (``db.migrate`` turns SQLite's foreign keys off meanwhile, so the copy
        # does not cascade into the rows that refer to it).
        with op.batch_alter_table(table) as batch:
            batch.alter_column("state", existing_type=sa.String(20), nullable=True)
            for column in _try_columns():
                batch.add_column(column)
    op.create_index("ix_task_instance_dag_id_run_id", "task_instance", ["dag_id", "run_id"])
    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("executor", sa.String(20), nullable=False),
        sa.Column("acquired_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_scheduler_lease"),
        **MYSQL_OPTS,
    )


def _drop_run_index() -> None:
    if op.get_bind().dialect.name != "mysql":
        op.drop_index("ix_task_instance_dag_id_run_id", table_name="task_instance")
        return
    # InnoDB serves the (dag_id, run_id) foreign key with this index now and refuses to
    # drop it; dropping and re-adding the key brings back the index InnoDB made for it.
    op.drop_constraint("fk_task_instance_dag_run", "task_instance", type_="foreignkey")
    op.drop_index("ix_task_instance_dag_id_run_id", table_name="task_instance")
    op.create_foreign_key(
        "fk_task_instance_dag_run",
        "task_instance",
        "dag_run",
        ["dag_id", "run_id"],
        ["dag_id", "run_id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_table("scheduler_lease")
    _drop_run_index()
    for table in TRY_TABLES:
        # A task instance with no status yet becomes queued, the old first state.
        op.execute(sa.text(f"UPDATE {table} SET state = 'queued' WHERE state IS NULL"))
        with op.batch_alter_table(table) as batch:
            for column in _try_columns():
                batch.drop_column(column.name)
            batch.alter_column("state", existing_type=sa.String(20), nullable=False)
    with op.batch_alter_table("dag_run") as batch:
        batch.drop_index("ix_dag_run_state")
        batch.drop_column("clear_number")
        batch.drop_column("spec")
        batch.drop_column("end_date")
        batch.drop_column("start_date")
