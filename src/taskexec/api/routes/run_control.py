"""``/api/v1`` actions on runs: cancel a run, clear task instances. The same read
token (or loopback) as the read API; a JSON body is required, so that a page on another
site cannot send one from a browser without a CORS preflight, which this server never
grants."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from taskexec import errors, schemas
from taskexec.api.deps import DbDep, ReaderDep
from taskexec.services import run_actions
from taskexec.wire import schemas as wire_schemas

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": wire_schemas.ErrorResponse} for code in (401, 403, 404, 409, 415, 422, 503)
}


async def require_json(request: Request) -> None:
    """Refuse a body that is not sent as JSON (a cross-site form or text post)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise errors.UnsupportedMediaTypeError()


router = APIRouter(
    prefix="/api/v1",
    tags=["runs"],
    dependencies=[ReaderDep, Depends(require_json)],
    responses=ERROR_RESPONSES,
)


class RunStatePatch(BaseModel):
    """``{"state": "failed"}``: cancel the run (Airflow's "mark failed")."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["failed"]


class ClearRequest(BaseModel):
    """Which task instances of the run to clear; none named: all of them."""

    model_config = ConfigDict(extra="forbid")

    task_ids: list[str] = Field(default_factory=list, max_length=10_000)
    downstream: bool = False


@router.patch("/dags/{dag_id}/runs/{run_id}", response_model=schemas.RunCancelled)
async def patch_dag_run(
    dag_id: str,
    run_id: str,
    db: DbDep,
    body: Annotated[RunStatePatch, Body()],
) -> schemas.RunCancelled:
    """Cancel a run: its running tries are told to stop (their next call gets 409) and
    the others are skipped. Repeating it is harmless; a run that succeeded is a 409."""
    return await db.write(run_actions.cancel_run, dag_id=dag_id, run_id=run_id)


@router.post("/dags/{dag_id}/runs/{run_id}/clear", response_model=schemas.TaskInstancesCleared)
async def clear_task_instances(
    dag_id: str,
    run_id: str,
    db: DbDep,
    body: Annotated[ClearRequest, Body()],
) -> schemas.TaskInstancesCleared:
    """Clear task instances of a run (all, or ``task_ids`` and with ``downstream`` the
    tasks below them): each gets a new try with no status, and the run is queued again."""
    return await db.write(
        run_actions.clear_task_instances,
        dag_id=dag_id,
        run_id=run_id,
        task_ids=body.task_ids,
        downstream=body.downstream,
    )
