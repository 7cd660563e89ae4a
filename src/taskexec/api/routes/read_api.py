"""``/api/v1``: the read API for people and tools (JSON, paginated). Its auth is the
read token (``deps.require_reader``), never a worker's task token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from taskexec import schemas
from taskexec.api.deps import DbDep, MapIndex, ReaderDep
from taskexec.services import dag_runs, dags, rendered_fields, task_instances
from taskexec.wire import schemas as wire_schemas
from taskexec.wire.schemas import INT32_MAX
from taskexec.wire.states import DagRunState, TaskInstanceState

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": wire_schemas.ErrorResponse} for code in (401, 403, 404, 422, 503)
}

PREFIX = "/api/v1"

router = APIRouter(
    prefix=PREFIX, tags=["read"], dependencies=[ReaderDep], responses=ERROR_RESPONSES
)

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=INT32_MAX, description="items to skip")]


class ApiResource(BaseModel):
    """One operation of ``/api/v1``."""

    method: str
    path: str
    description: str = Field(description="the first sentence of its documentation")


class ApiIndex(BaseModel):
    """What ``/api/v1`` offers, and where its full documentation is."""

    resources: list[ApiResource]
    docs: str = Field(description="Swagger UI: every operation, its parameters and answers")
    openapi: str = Field(description="the OpenAPI document")


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.replace("``", "").split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


@router.get("", response_model=ApiIndex)
@router.get("/", response_model=ApiIndex, include_in_schema=False)
async def api_index(request: Request) -> ApiIndex:
    """This index: each operation of ``/api/v1`` with its path and what it does."""
    root = str(request.scope.get("root_path", ""))
    # Read from the app's OpenAPI document (built once, then cached by FastAPI), so the
    # index lists every operation under the prefix, whichever module declares it.
    paths: dict[str, dict[str, Any]] = request.app.openapi()["paths"]
    resources = [
        ApiResource(
            method=method.upper(),
            path=root + path,
            description=_first_sentence(operation.get("description") or operation["summary"]),
        )
        for path, operations in paths.items()
        if path.startswith(PREFIX + "/")
        for method, operation in operations.items()
    ]
    return ApiIndex(
        resources=resources, docs=f"{root}/docs", openapi=f"{root}{request.app.openapi_url}"
    )


@router.get("/dags", response_model=schemas.Page[schemas.DagSummary])
async def list_dags(
    db: DbDep, limit: Limit = 50, offset: Offset = 0
) -> schemas.Page[schemas.DagSummary]:
    """The dags seen (those with at least one run), with their run counts."""
    return await db.read(dags.list_dags, limit=limit, offset=offset)


@router.get("/dags/{dag_id}/runs", response_model=schemas.Page[schemas.DagRunSummary])
async def list_dag_runs(
    dag_id: str,
    db: DbDep,
    state: DagRunState | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> schemas.Page[schemas.DagRunSummary]:
    """The dag's runs, newest first; optionally only those in one state."""
    return await db.read(
        dag_runs.list_dag_runs, dag_id=dag_id, state=state, limit=limit, offset=offset
    )


@router.get("/dags/{dag_id}/runs/{run_id}", response_model=schemas.DagRunSummary)
async def get_dag_run(dag_id: str, run_id: str, db: DbDep) -> schemas.DagRunSummary:
    """One run: its state, start and end, and how many task instances are in each state."""
    return await db.read(dag_runs.get_dag_run, dag_id=dag_id, run_id=run_id)


@router.get(
    "/dags/{dag_id}/runs/{run_id}/task-instances",
    response_model=schemas.Page[schemas.TaskInstanceSummary],
)
async def list_task_instances(
    dag_id: str,
    run_id: str,
    db: DbDep,
    state: TaskInstanceState | None = None,
    task_id: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> schemas.Page[schemas.TaskInstanceSummary]:
    """The run's task instances (state, try, map index); filter by state or task id."""
    return await db.read(
        task_instances.list_task_instances,
        dag_id=dag_id,
        run_id=run_id,
        state=state,
        task_id=task_id,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/dags/{dag_id}/runs/{run_id}/task-instances/{task_id}/rendered-fields",
    response_model=schemas.RenderedFieldsView,
)
async def get_rendered_fields(
    dag_id: str,
    run_id: str,
    task_id: str,
    db: DbDep,
    map_index: MapIndex = -1,
) -> schemas.RenderedFieldsView:
    """One task instance's rendered fields: each with its renderer and truncation, the
    try that wrote them and when."""
    return await db.read(
        rendered_fields.get_rendered_fields_view,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
    )
