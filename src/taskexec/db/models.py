"""Typed SQLAlchemy models. Every constraint and index is named, so that migrations,
error classification and ``db check`` can refer to it by name."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from taskexec.db import types

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# InnoDB: utf8mb4, with a binary collation so ids compare case-sensitively as they do on
# the other databases.
MYSQL_OPTS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

# What identifies a task instance across its tries; rendered fields and the history of
# tries are keyed by it.
TI_KEY = ("dag_id", "task_id", "run_id", "map_index")
# The values of those columns, in that order.
TIKey = tuple[str, str, str, int]

# Airflow's StringID width; four of these plus an int still fit InnoDB's 3072-byte key limit.
ID_LEN = 250


class Base(DeclarativeBase):
    """Declarative base with the project's constraint naming convention."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class DagRun(Base):
    """One run of a dag."""

    __tablename__ = "dag_run"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(sa.String(ID_LEN))
    run_id: Mapped[str] = mapped_column(sa.String(ID_LEN))
    logical_date: Mapped[dt.datetime | None] = mapped_column(types.UtcDateTime())
    run_after: Mapped[dt.datetime] = mapped_column(types.UtcDateTime())
    state: Mapped[str] = mapped_column(sa.String(20))
    conf: Mapped[dict[str, Any]] = mapped_column(types.JsonType)
    created_at: Mapped[dt.datetime] = mapped_column(types.UtcDateTime())
    start_date: Mapped[dt.datetime | None] = mapped_column(types.UtcDateTime())
    end_date: Mapped[dt.datetime | None] = mapped_column(types.UtcDateTime())
    # How the scheduler runs this run (wire.schemas.DagSpec), from the dag file when it
    # was triggered. NULL for a bare run (``taskexec runs create``): its tries are
    # queued for external workers at once, with no dependencies.
    spec: Mapped[dict[str, Any] | None] = mapped_column(types.JsonType)
    # How often the run was cleared (Airflow's clear_number).
    clear_number: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))

    __table_args__ = (
        sa.UniqueConstraint("dag_id", "run_id", name="uq_dag_run_dag_id_run_id"),
        sa.Index("ix_dag_run_dag_id_run_after", "dag_id", "run_after"),
        sa.Index("ix_dag_run_state", "state"),
        MYSQL_OPTS,
    )


class _TryColumns:
    """The columns of one try; shared by the current try and the archived ones."""

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    dag_id: Mapped[str] = mapped_column(sa.String(ID_LEN))
    task_id: Mapped[str] = mapped_column(sa.String(ID_LEN))
    run_id: Mapped[str] = mapped_column(sa.String(ID_LEN))
    map_index: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("-1"))
    try_number: Mapped[int] = mapped_column(sa.Integer)
    max_tries: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    # NULL is Airflow's "no status": not yet scheduled.
    state: Mapped[str | None] = mapped_column(sa.String(20))
    hostname: Mapped[str | None] = mapped_column(sa.String(1000))
    pid: Mapped[int | None] = mapped_column(sa.Integer)
    start_date: Mapped[dt.datetime | None] = mapped_column(types.UtcDateTime())
    end_date: Mapped[dt.datetime | None] = mapped_column(types.UtcDateTime())
    last_heartbeat_at: Mapped[dt.datetime | None] = mapped_column(types.UtcDateTime())
    # When, and by which scheduler, the try was handed to an executor.
    queued_at: Mapped[dt.datetime | None] = mapped_column(types.UtcDateTime())
    queued_by: Mapped[str | None] = mapped_column(sa.String(200))
    # up_for_retry: when the scheduler may run this try.
    next_retry_at: Mapped[dt.datetime | None] = mapped_column(types.UtcDateTime())


class TaskInstance(_TryColumns, Base):
    """The current try of one task instance. A new try gets a new id (UUID7)."""

    __tablename__ = "task_instance"

    __table_args__ = (
        sa.UniqueConstraint(*TI_KEY, name="uq_task_instance_key"),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name="fk_task_instance_dag_run",
            ondelete="CASCADE",
        ),
        sa.Index("ix_task_instance_state", "state"),
        sa.Index("ix_task_instance_dag_id_run_id", "dag_id", "run_id"),
        MYSQL_OPTS,
    )


class TaskInstanceHistory(_TryColumns, Base):
    """Earlier tries of a task instance, keeping their ids so stale workers get a 410."""

    __tablename__ = "task_instance_history"

    __table_args__ = (
        sa.UniqueConstraint(*TI_KEY, "try_number", name="uq_task_instance_history_key_try"),
        sa.ForeignKeyConstraint(
            TI_KEY,
            [f"task_instance.{column}" for column in TI_KEY],
            name="fk_task_instance_history_task_instance",
            ondelete="CASCADE",
        ),
        MYSQL_OPTS,
    )


class RenderedTaskInstanceFields(Base):
    """The rendered template fields of a task instance: one row per logical task instance,
    overwritten by each try (the ``try_number`` column says which one wrote it)."""

    __tablename__ = "rendered_task_instance_fields"

    dag_id: Mapped[str] = mapped_column(sa.String(ID_LEN), primary_key=True)
    task_id: Mapped[str] = mapped_column(sa.String(ID_LEN), primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.String(ID_LEN), primary_key=True)
    map_index: Mapped[int] = mapped_column(
        sa.Integer, primary_key=True, server_default=sa.text("-1")
    )
    rendered_fields: Mapped[dict[str, Any]] = mapped_column(types.JsonType, nullable=False)
    # Field name → {"renderer": ..., "truncated_at": ...}, as the worker reported it.
    field_meta: Mapped[dict[str, Any] | None] = mapped_column(types.JsonType)
    try_number: Mapped[int] = mapped_column(sa.Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(types.UtcDateTime())

    __table_args__ = (
        sa.Index("ix_rendered_task_instance_fields_dag_id_run_id", "dag_id", "run_id"),
        sa.ForeignKeyConstraint(
            TI_KEY,
            [f"task_instance.{column}" for column in TI_KEY],
            name="fk_rendered_task_instance_fields_task_instance",
            ondelete="CASCADE",
        ),
        MYSQL_OPTS,
    )


class SchedulerLease(Base):
    """Which scheduler is the active one. The holder renews the lease every loop; when
    it stops renewing (it died), another takes the lease once it has expired."""

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(200))
    executor: Mapped[str] = mapped_column(sa.String(20))
    acquired_at: Mapped[dt.datetime] = mapped_column(types.UtcDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(types.UtcDateTime())

    __table_args__ = (MYSQL_OPTS,)


# The Core tables, for the services' statements (no ORM object loading on hot paths).
dag_run = cast(sa.Table, DagRun.__table__)
task_instance = cast(sa.Table, TaskInstance.__table__)
task_instance_history = cast(sa.Table, TaskInstanceHistory.__table__)
rendered_task_instance_fields = cast(sa.Table, RenderedTaskInstanceFields.__table__)
scheduler_lease = cast(sa.Table, SchedulerLease.__table__)


def key_columns(table: sa.Table) -> tuple[sa.Column[Any], ...]:
    """``table``'s task-instance key columns, in ``TI_KEY`` order."""
    return tuple(table.c[column] for column in TI_KEY)


def same_task_instance(left: sa.Table, right: sa.Table) -> sa.ColumnElement[bool]:
    """The join condition of two tables on the task-instance key."""
    return sa.and_(*(left.c[column] == right.c[column] for column in TI_KEY))
