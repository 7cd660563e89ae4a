"""``/execution/task-instances``: the worker-facing endpoints, wire-compatible with
Airflow 3's Execution API on the paths it shares."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request, Response, status
from pydantic import TypeAdapter, ValidationError

from taskexec import errors
from taskexec.api import middleware
from taskexec.api.deps import BodiesDep, DbDep, RtifWriterDep, TaskInstanceIdDep
from taskexec.services import rendered_fields, task_instances
from taskexec.wire import protocol, schemas

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse} for code in (401, 403, 404, 409, 410, 415, 422, 503)
}

router = APIRouter(prefix="/task-instances", tags=["task-instances"], responses=ERROR_RESPONSES)

RTIF_SET_MESSAGE = "Rendered task instance fields successfully set"
# Encoded once: the hot path skips response-model validation and serialization.
RTIF_SET_BODY = orjson.dumps({"message": RTIF_SET_MESSAGE})
_FIELD_META = TypeAdapter(dict[str, schemas.FieldMeta])
# The meta header is outside the body limit; a renderer and a length per field fit in
# far less than this.
MAX_FIELD_META_BYTES = 64 * 1024


def is_json(declared: str | None) -> bool:
    """Whether a Content-Type is JSON. A body declared as anything else is refused (415),
    as FastAPI refuses it for Airflow's endpoint; no Content-Type at all is read as
    JSON, as FastAPI does."""
    if declared is None:
        return True
    media = declared.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def field_meta(headers: Mapping[str, str], fields: Collection[str]) -> dict[str, Any] | None:
    """The optional ``Taskexec-Rendered-Fields-Meta`` header: a JSON object of field name
    to ``{"renderer": ..., "truncated_at": ...}``. A header rather than a body key keeps
    the body exactly Airflow's; entries for fields not in the body are dropped."""
    raw = headers.get(protocol.FIELD_META_HEADER)
    if raw is None:
        return None
    if len(raw) > MAX_FIELD_META_BYTES:
        raise errors.PayloadTooLargeError(
            f"The {protocol.FIELD_META_HEADER} header is larger than {MAX_FIELD_META_BYTES} bytes."
        )
    try:
        parsed = _FIELD_META.validate_json(raw)
    except ValidationError as exc:
        raise errors.InvalidBodyError(
            f"The {protocol.FIELD_META_HEADER} header must be a JSON object of field name to "
            '{"renderer": name, "truncated_at": positive int}.'
        ) from exc
    return {
        name: meta.model_dump(exclude_none=True) for name, meta in parsed.items() if name in fields
    }


@router.put(
    "/{task_instance_id}/rtif",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.MessageResponse,
    operation_id="put_rtif",
    responses={413: {"model": schemas.ErrorResponse}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": True,
                        "title": "RenderedFields",
                        "description": "Template field name to its rendered JSON value.",
                    }
                }
            },
        }
    },
)
async def put_rtif(
    request: Request,
    ti_id: TaskInstanceIdDep,
    db: DbDep,
    bodies: BodiesDep,
    write: RtifWriterDep,
) -> Response:
    """Store the rendered template fields of a task instance (one upsert; repeat-safe)."""
    if not is_json(request.headers.get("content-type")):
        raise errors.UnsupportedMediaTypeError()
    # Masked again here, so a worker that forgot to mask cannot leak a secret into
    # the database.
    body = await bodies.masked_body(await request.body())
    await write(db, ti_id, body.fields, field_meta(request.headers, body.names))
    return Response(RTIF_SET_BODY, status_code=201, media_type="application/json")


@router.get(
    "/{task_instance_id}/rtif",
    response_model=schemas.RenderedFieldsResponse,
    operation_id="get_rtif",
)
async def get_rtif(ti_id: TaskInstanceIdDep, db: DbDep) -> schemas.RenderedFieldsResponse:
    """The stored rendered fields, with the try that wrote them and when."""
    return await db.read(rendered_fields.get_rendered_fields, ti_id=ti_id)


@router.patch(
    "/{task_instance_id}/run",
    response_model=schemas.TIRunContextResponse,
    operation_id="ti_run",
)
async def ti_run(
    ti_id: TaskInstanceIdDep,
    payload: Annotated[schemas.TIEnterRunningPayload, Body()],
    db: DbDep,
) -> schemas.TIRunContextResponse:
    """Mark the try running (queued → running); the same host and pid again is a no-op."""
    return await db.write(task_instances.start, ti_id=ti_id, payload=payload)


@router.put(
    "/{task_instance_id}/heartbeat",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="ti_heartbeat",
)
async def ti_heartbeat(
    ti_id: TaskInstanceIdDep,
    payload: Annotated[schemas.TIHeartbeatPayload, Body()],
    db: DbDep,
) -> None:
    """Record that the worker running this try is alive."""
    await db.write(task_instances.heartbeat, ti_id=ti_id, payload=payload)


@router.patch(
    "/{task_instance_id}/state",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="ti_update_state",
    responses={200: {"model": schemas.MessageResponse, "description": "Already in that state"}},
)
async def ti_update_state(
    request: Request,
    ti_id: TaskInstanceIdDep,
    payload: Annotated[schemas.TIStatePayload, Body()],
    db: DbDep,
) -> Response:
    """running → success, failed or up_for_retry: 204 when this request moved the try,
    200 when it already was in the requested state (a repeated request). The try has
    ended: no refreshed token."""
    request.scope.setdefault("state", {}).pop(middleware.REFRESH_STATE_KEY, None)
    outcome = await db.write(task_instances.finish, ti_id=ti_id, payload=payload)
    if outcome is task_instances.Outcome.CHANGED:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    body = {"message": f"The task instance was already in state {payload.state}."}
    return Response(orjson.dumps(body), status_code=200, media_type="application/json")
