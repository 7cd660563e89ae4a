"""The app factory and the one table of exception handlers.

A request goes: middleware (correlation id, deadline, body limit; ``api/middleware``) → route
(``api/routes`` or ``web``) → auth dependency (``api/deps``) → ``Database.write`` /
``read``, which owns the transaction → a service function (``services/``) → commit →
response. Errors on the way come back here, to ``EXCEPTION_HANDLERS``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from taskexec import __version__, errors, logs
from taskexec.api import bodies, group_commit, middleware
from taskexec.api.routes import health, read_api, rtif_hot_path, run_control, task_instances
from taskexec.config import Settings, get_settings
from taskexec.db import engine as db_engine
from taskexec.db import errors as db_errors
from taskexec.scheduler import loop
from taskexec.security import TokenSigner
from taskexec.server import connections, pruner, supervision
from taskexec.web import docs, pages
from taskexec.wire import protocol

log = logging.getLogger(__name__)

# The one table: domain error → HTTP status.
STATUS_BY_ERROR: dict[type[errors.TaskExecError], int] = {
    errors.InvalidBodyError: 422,
    errors.InvalidValueError: 422,
    errors.MissingTokenError: 401,
    errors.ExpiredTokenError: 401,
    errors.InvalidTokenError: 403,
    errors.TokenSubjectMismatchError: 403,
    errors.NotFoundError: 404,
    errors.DagNotFoundError: 404,
    errors.DagRunNotFoundError: 404,
    errors.TaskInstanceKeyNotFoundError: 404,
    errors.RenderedFieldsNotFoundError: 404,
    errors.ReadAccessDeniedError: 403,
    errors.InvalidStateError: 409,
    errors.NotRunningError: 409,
    errors.RunningElsewhereError: 409,
    errors.TryEndedError: 409,
    errors.RunExistsError: 409,
    errors.StaleTryError: 410,
    errors.PayloadTooLargeError: 413,
    errors.UnsupportedMediaTypeError: 415,
    errors.DatabaseUnavailableError: 503,
    errors.ServiceUnavailableError: 503,
    errors.SchemaOutdatedError: 503,
}

_STARLETTE_REASONS = {404: "not_found", 405: "method_not_allowed"}


def _error(
    status: int, detail: dict[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(protocol.error_body(**detail), status_code=status, headers=headers)


def _internal_error(request: Request, exc: BaseException, what: str) -> JSONResponse:
    cid = middleware.correlation_id(request.scope)
    # The statement, driver text and traceback go to the log only, under the id.
    log.error("%s [correlation_id=%s]", what, cid, exc_info=exc)
    return _error(
        500,
        {
            "reason": "internal_error",
            "message": f"The server failed to handle this request; quote correlation id {cid}.",
            "correlation_id": cid,
        },
    )


async def _handle_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.TaskExecError)
    status = STATUS_BY_ERROR.get(type(exc), 500)
    headers: dict[str, str] = {}
    detail = exc.detail()
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        settings: Settings = request.app.state.settings
        headers["Retry-After"] = str(settings.db_retry_after_seconds)
        detail["correlation_id"] = middleware.correlation_id(request.scope)
    return _error(status, detail, headers)


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and what: echoing the input back could leak or balloon the response.
    problems = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return _error(
        422,
        {"reason": "validation_error", "message": "The request is not valid.", "errors": problems},
    )


async def _handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reason = _STARLETTE_REASONS.get(exc.status_code, "http_error")
    return _error(exc.status_code, {"reason": reason, "message": str(exc.detail)}, exc.headers)


async def _handle_client_gone(request: Request, exc: Exception) -> JSONResponse:
    # The client hung up before its whole body arrived (a worker killed mid-request): no
    # one will read this answer, and nothing on the server failed.
    cid = middleware.correlation_id(request.scope)
    log.info("the client disconnected before its request body arrived [correlation_id=%s]", cid)
    message = "The client disconnected before its request body arrived."
    return _error(400, {"reason": "client_disconnected", "message": message})


async def _handle_db_error(request: Request, exc: Exception) -> JSONResponse:
    # Neither retryable nor bad data (the transaction owner turns those into domain
    # errors): a bug or an outage we do not understand.
    return _internal_error(request, exc, f"database error: {db_errors.describe(exc)}")


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return _internal_error(request, exc, "unhandled error")


EXCEPTION_HANDLERS = {
    errors.TaskExecError: _handle_domain_error,
    RequestValidationError: _handle_validation_error,
    StarletteHTTPException: _handle_http_error,
    ClientDisconnect: _handle_client_gone,
    db_errors.DatabaseError: _handle_db_error,
    Exception: _handle_unexpected,
}


class App(FastAPI):
    """The taskexec app: FastAPI, with ``PUT /rtif``'s ordinary requests served in
    front of its request machinery (``api/routes/rtif_hot_path``) when that is on."""

    hot_path: rtif_hot_path.Front | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.hot_path
        if front is not None and front.takes(scope):
            await front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_server_app() -> FastAPI:
    """The app of one ``taskexec serve`` worker process (``uvicorn --factory``): logging
    is set up here, in each process, not only in the parent that started them."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    supervision.die_with_supervisor()
    connections.raise_open_file_limit()
    # The protocol class was named in the supervisor; its limits are set here, where
    # the connections are.
    connections.configure(
        header_timeout=settings.http_header_timeout_seconds,
        max_connections=settings.http_max_connections,
    )
    app = create_app(settings)
    freeze_start_up(settings)
    return app


def freeze_start_up(settings: Settings) -> None:
    """Hide what the process loaded at start-up from the garbage collector
    (``TASKEXEC_GC_FREEZE``): a full collection then scans only what requests made."""
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app. Called once per server process (``uvicorn --factory``)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = db_engine.Database.from_settings(settings)
        app.state.rtif_batches = group_commit.for_settings(app.state.db, settings)
        # Retention runs beside the requests, never inside a worker's transaction.
        app.state.pruner = pruner.start(app.state.db, settings)
        app.state.scheduler = None
        if settings.scheduler_in_server:
            app.state.scheduler = loop.Scheduler(app.state.db, settings)
            app.state.scheduler.start()
        try:
            yield
        finally:
            if app.state.scheduler is not None:
                await app.state.scheduler.aclose()
            if app.state.pruner is not None:
                await app.state.pruner.stop()
            if app.state.rtif_batches is not None:
                await app.state.rtif_batches.aclose()
            app.state.bodies.close()
            await app.state.db.dispose()

    app = App(
        title="taskexec",
        version=__version__,
        description="Task Execution API: race-free rendered-fields writes.",
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        **docs.FASTAPI_OPTIONS,
    )
    app.state.settings = settings
    app.state.signer = TokenSigner(settings)
    app.state.bodies = bodies.BodyProcessor(settings.extra_sensitive_words)

    execution = APIRouter(prefix="/execution")
    execution.include_router(health.router)
    execution.include_router(task_instances.router)
    app.include_router(execution)
    app.include_router(read_api.router)
    app.include_router(run_control.router)
    app.include_router(health.router)
    app.include_router(pages.router)
    docs.install(app)
    app.add_middleware(middleware.BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(
        middleware.DeadlineMiddleware,
        seconds=settings.request_timeout_seconds,
        retry_after=settings.db_retry_after_seconds,
    )
    app.add_middleware(middleware.RequestContextMiddleware)
    if settings.rtif_hot_path:
        app.hot_path = rtif_hot_path.Front(app)
    return app
