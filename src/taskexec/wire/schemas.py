"""The Execution API's request and response bodies, shared by the server and workers.
Field names follow Airflow's Execution API where the paths are shared, so an
Airflow-shaped client can talk to taskexec."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal, TypedDict, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

# The largest value of the INT columns (pids, map indexes) and of paging offsets.
INT32_MAX = 2**31 - 1
# Dates every database stores alike (MariaDB's DATETIME ends at year 9999).
_EARLIEST = dt.datetime(1000, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)


def _in_utc(value: dt.datetime) -> dt.datetime:
    """The instant in UTC (a naive value is taken as UTC), within what every database
    stores; a ValueError (422) otherwise, never an overflow later."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        value = value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the date is out of range once converted to UTC") from None
    if not _EARLIEST <= value <= _LATEST:
        raise ValueError("the date must be between the years 1000 and 9999 in UTC")
    return value


# A date in a request body.
WireDate = Annotated[dt.datetime, AfterValidator(_in_utc)]


class TIEnterRunningPayload(BaseModel):
    """Body of ``PATCH /run``: queued → running."""

    model_config = ConfigDict(extra="ignore")

    state: Literal["running"] = "running"
    hostname: str = Field(min_length=1, max_length=1000)
    unixname: str | None = None
    pid: int = Field(ge=0, le=INT32_MAX)
    start_date: WireDate | None = None


class TIHeartbeatPayload(BaseModel):
    """Body of ``PUT /heartbeat``."""

    model_config = ConfigDict(extra="ignore")

    hostname: str = Field(min_length=1, max_length=1000)
    pid: int = Field(ge=0, le=INT32_MAX)


class TITerminalStatePayload(BaseModel):
    """running → success or failed."""

    model_config = ConfigDict(extra="ignore")

    state: Literal["success", "failed"]
    end_date: WireDate | None = None


class TIRetryStatePayload(BaseModel):
    """running → up_for_retry: the try moves to history and a new try is queued."""

    model_config = ConfigDict(extra="ignore")

    state: Literal["up_for_retry"]
    end_date: WireDate | None = None


TIStatePayload = Annotated[
    TITerminalStatePayload | TIRetryStatePayload, Field(discriminator="state")
]


class DagRunInfo(BaseModel):
    """The dag run a task instance belongs to, in the shape of Airflow's ``DagRun``
    (every key present, as its task SDK's client requires, null where taskexec has no
    value: no data intervals, no assets, no partitions)."""

    dag_id: str
    run_id: str
    logical_date: dt.datetime | None
    data_interval_start: dt.datetime | None = None
    data_interval_end: dt.datetime | None = None
    run_after: dt.datetime
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    state: str
    conf: dict[str, Any]
    run_type: str = "manual"
    clear_number: int = 0
    triggering_user_name: str | None = None
    consumed_asset_events: list[Any] = []
    partition_key: str | None = None


class TIRunContextResponse(BaseModel):
    """Answer to ``PATCH /run``: what the worker needs to run this try."""

    dag_run: DagRunInfo
    task_id: str
    map_index: int
    try_number: int
    max_tries: int
    should_retry: bool
    task_reschedule_count: int = 0
    variables: list[Any] = []
    connections: list[Any] = []
    xcom_keys_to_clear: list[str] = []
    upstream_map_indexes: dict[str, Any] | None = None
    next_method: str | None = None
    next_kwargs: dict[str, Any] | None = None
    start_date: dt.datetime | None = None


class MessageResponse(BaseModel):
    """A plain acknowledgement."""

    message: str


# A renderer names how a field is shown (bash, sql, json, ...). Any short identifier is
# accepted, so that Airflow's renderers pass through; the web page highlights those it
# knows and shows the rest as plain text.
RendererName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_+-]{0,31}$")]


class FieldMeta(BaseModel):
    """What the worker knows about one rendered field, beyond its value."""

    model_config = ConfigDict(extra="forbid")

    renderer: RendererName | None = None
    # Bounded so that any accepted value can be stored (JSON integers past 64 bits cannot).
    truncated_at: int | None = Field(
        default=None, gt=0, le=INT32_MAX, description="max length the worker cut to"
    )


class RenderedFieldsResponse(BaseModel):
    """The stored rendered fields of a task instance."""

    task_instance_id: uuid.UUID
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    updated_at: dt.datetime
    rendered_fields: dict[str, JsonValue]


class ErrorDetail(BaseModel):
    """The ``detail`` of every error response."""

    model_config = ConfigDict(extra="allow")

    reason: str
    message: str


class ErrorResponse(BaseModel):
    """Every error response: ``{"detail": {"reason": ..., "message": ...}}``."""

    detail: ErrorDetail


# --- What a dag run needs scheduled, sent with the run when it is triggered. ---

# Airflow's trigger rules: when a task instance may run, given its upstreams' states.
TriggerRule = Literal[
    "all_success",
    "all_failed",
    "all_done",
    "all_skipped",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
]
TRIGGER_RULES: frozenset[str] = frozenset(get_args(TriggerRule))


class TaskSpec(BaseModel):
    """How one task of a dag is scheduled. Durations are in seconds."""

    model_config = ConfigDict(extra="forbid")

    upstream: list[str] = []
    trigger_rule: TriggerRule = "all_success"
    retries: int = Field(default=0, ge=0)
    retry_delay: float = Field(default=300.0, ge=0)
    # The factor each retry's delay grows by (Airflow's retry_exponential_backoff; True
    # is 2); 1 keeps the delay constant.
    retry_exponential_backoff: float = Field(default=1.0, ge=1.0)
    max_retry_delay: float | None = Field(default=None, ge=0)
    execution_timeout: float | None = Field(default=None, gt=0)
    # Mapped over this many items (map indexes 0..n-1); None: not mapped.
    map_count: int | None = Field(default=None, ge=0)


class DagSpec(BaseModel):
    """How the task instances of one run are scheduled: the dag's tasks, their
    dependencies and policies, and the run's limits."""

    model_config = ConfigDict(extra="forbid")

    tasks: dict[str, TaskSpec]
    dagrun_timeout: float | None = Field(default=None, gt=0)
    max_active_tasks: int = Field(default=16, ge=1)
    max_active_runs: int = Field(default=16, ge=1)


class TryReport(TypedDict):
    """What a worker tells its executor about a try it was handed (plain JSON, carried by
    a pipe or a Celery result)."""

    ti_id: str
    # None when the runner itself failed (the API refused the try or stayed unreachable
    # through every retry); ``error`` then says why, and the executor ends the try if it
    # is still queued or running on this worker.
    outcome: str | None
    error: str | None
    hostname: str
    pid: int
