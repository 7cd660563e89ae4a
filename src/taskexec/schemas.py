"""Bodies of the read API (/api/v1) and of ``taskexec runs create``. The Execution
API's bodies, shared with workers, are in ``taskexec.wire.schemas``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel, Field, JsonValue

from taskexec.wire import schemas as wire_schemas


class NewTaskInstance(BaseModel):
    """A task instance as ``dag_runs.create_dag_run`` created it: queued, try 1."""

    id: uuid.UUID
    task_id: str
    map_index: int
    try_number: int


class NewDagRun(BaseModel):
    """A dag run as ``dag_runs.create_dag_run`` created it."""

    dag_id: str
    run_id: str
    task_instances: list[NewTaskInstance]


class CreatedTaskInstance(NewTaskInstance):
    """One task instance created by ``taskexec runs create``, with its token."""

    token: str


class CreatedDagRun(BaseModel):
    """The output of ``taskexec runs create``: the new run, a token per task instance."""

    dag_id: str
    run_id: str
    task_instances: list[CreatedTaskInstance]

    @classmethod
    def with_tokens(cls, run: NewDagRun, mint: Callable[[uuid.UUID], str]) -> CreatedDagRun:
        """``run`` with a token from ``mint`` for each of its task instances."""
        return cls(
            dag_id=run.dag_id,
            run_id=run.run_id,
            task_instances=[
                CreatedTaskInstance(**ti.model_dump(), token=mint(ti.id))
                for ti in run.task_instances
            ],
        )


# --- The read API (/api/v1): for people and tools, not workers. ---

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list, and how many items the whole list holds."""

    items: list[ItemT]
    total: int
    limit: int
    offset: int


class DagSummary(BaseModel):
    """A dag seen in the runs table."""

    dag_id: str
    run_count: int
    latest_run_after: dt.datetime


class DagRunSummary(BaseModel):
    """One run of a dag."""

    dag_id: str
    run_id: str
    state: str
    logical_date: dt.datetime | None
    run_after: dt.datetime
    created_at: dt.datetime
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    task_instance_states: dict[str, int] = Field(
        default_factory=dict,
        description="how many task instances are in each state (no_status: not scheduled)",
    )


class TaskInstanceSummary(BaseModel):
    """The current try of one task instance (``state`` null: no status yet)."""

    id: uuid.UUID
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    max_tries: int
    state: str
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    has_rendered_fields: bool


class RenderedField(BaseModel):
    """One rendered field as stored, with how to show it."""

    name: str
    value: JsonValue
    renderer: str | None = Field(description="as the worker reported it; null if unknown")
    truncated: bool
    truncated_at: int | None = Field(description="the length the worker cut to, if known")


class RenderedFieldsView(BaseModel):
    """The rendered fields of one task instance, for people."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int = Field(description="the try that wrote these fields")
    updated_at: dt.datetime
    fields: list[RenderedField]
    map_indexes: list[int] = Field(description="every map index of this task in this run")


class RunCancelled(BaseModel):
    """What ``runs cancel`` did."""

    dag_id: str
    run_id: str
    changed: bool = Field(description="false when the run had already failed")
    tries_failed: int = Field(description="running tries ended as failed")
    tries_skipped: int = Field(description="tries that had not started, now skipped")


class TaskInstancesCleared(BaseModel):
    """What ``tasks clear`` did."""

    dag_id: str
    run_id: str
    cleared: int
    task_instance_ids: list[uuid.UUID] = Field(description="the new tries' ids")


# --- What the scheduler reads: plain records (thousands per iteration). ---


@dataclasses.dataclass
class ActiveRun:
    """A queued or running dag run, as the scheduler sees it."""

    pk: int
    dag_id: str
    run_id: str
    state: str
    run_after: dt.datetime
    start_date: dt.datetime | None
    spec: wire_schemas.DagSpec | None
    clear_number: int = 0


@dataclasses.dataclass
class TryRow:
    """The current try of a task instance of a running run."""

    id: uuid.UUID
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    max_tries: int
    start_date: dt.datetime | None
    last_heartbeat_at: dt.datetime | None
    queued_at: dt.datetime | None
    queued_by: str | None
    next_retry_at: dt.datetime | None
