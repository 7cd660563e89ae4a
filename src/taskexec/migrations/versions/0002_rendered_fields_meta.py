"""Rendered fields: per-field renderer and truncation, and an index for retention.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for rows written before this revision, or by a worker that sends no metadata
    # (an Airflow worker): the read side then shows plain text.
    op.add_column(
        "rendered_task_instance_fields", sa.Column("field_meta", sa.JSON(), nullable=True)
    )
    # Retention finds the rows of old runs per dag through this index, not by a scan.
    op.create_index(
        "ix_rendered_task_instance_fields_dag_id_run_id",
        "rendered_task_instance_fields",
        ["dag_id", "run_id"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_rendered_task_instance_fields_dag_id_run_id",
        table_name="rendered_task_instance_fields",
    )
    op.drop_column("rendered_task_instance_fields", "field_meta")
