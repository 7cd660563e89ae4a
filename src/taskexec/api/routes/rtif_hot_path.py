"""``PUT /execution/task-instances/{id}/rtif`` in front of FastAPI's request machinery.

The hot route of a busy server: every try of every task writes it. Through FastAPI, its
middleware layers, routing, dependency resolution, request object and response handling
cost several times the route's own work (docs/benchmarks.md). ``Front`` serves it ahead
of all that: the app's own middleware (correlation id, deadline, body limit), then the
same work in the same order with the same functions as the route (the token check, the
content-type rule, the body processor, the field-meta header, the rendered-fields
writer), errors answered by the app's own exception handlers as Starlette's exception
layers would (a domain error inside the middleware; anything else as its outermost
500), and nothing else.

It takes only the ordinary case. A request that fails any check made before the body
is read (path, token, content type), any request while a dependency is overridden
(``taskexec race``, tests) or with FastAPI's telemetry on (checked once a second),
goes to the whole app untouched: every such answer is the route's, byte for byte.
"""

from __future__ import annotations

import inspect
import time
import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import TypeAdapter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskexec import errors
from taskexec.api import bodies, deps
from taskexec.api.routes import task_instances
from taskexec.wire import protocol

_LENGTH = str(len(task_instances.RTIF_SET_BODY)).encode()
_PATH_ID = TypeAdapter(uuid.UUID)


# The path as the app serves it (the route's own prefixes are not known to the route).
PATH = "/execution/task-instances/{task_instance_id}/rtif"
_PATH_REGEX = compile_path(PATH)[0]
# Set in a request's scope by ``Front.takes``: the try id the token was checked for.
_TI_ID = "taskexec.rtif_hot_path.ti_id"
# Set with the try id: the headers the route reads (``_read_headers``).
_HEADERS = "taskexec.rtif_hot_path.headers"
# Those headers, by their names in an ASGI scope (lower case) and in a ``Headers``.
_READ = {
    name.lower().encode("latin-1"): name
    for name in ("authorization", "content-type", protocol.FIELD_META_HEADER)
}
# Telemetry switched on while serving (an OpenTelemetry provider set) reaches this
# route's requests within this long.
TELEMETRY_CHECK_SECONDS = 1.0


class Front:
    """``PUT /rtif``'s ordinary requests, ahead of the app's middleware stack."""

    def __init__(self, app: FastAPI) -> None:
        # The handler stands in for the route ``put_rtif``: it must serve the same path.
        route_path = app.url_path_for("put_rtif", task_instance_id="{task_instance_id}")
        if route_path != PATH:
            raise RuntimeError(f"put_rtif is served at {route_path}, the hot path at {PATH}")
        self._app = app
        self._stack: ASGIApp | None = None
        self._telemetry = False
        self._telemetry_checked = -TELEMETRY_CHECK_SECONDS

    def _telemetry_on(self) -> bool:
        """Whether FastAPI's telemetry is on, asked at most every
        ``TELEMETRY_CHECK_SECONDS``: FastAPI's own check looks up OpenTelemetry's
        providers in the environment, a tenth of the route's CPU if done per request."""
        now = time.monotonic()
        if now - self._telemetry_checked >= TELEMETRY_CHECK_SECONDS:
            telemetry = getattr(self._app, "_native_telemetry", None)
            self._telemetry = telemetry is not None and bool(telemetry.enabled())
            self._telemetry_checked = now
        return self._telemetry

    def takes(self, scope: Scope) -> bool:
        """Whether this request is one for the front (then its try id is in the scope)."""
        if scope["type"] != "http" or scope["method"] != "PUT":
            return False
        match = _PATH_REGEX.match(scope["path"])
        if match is None or scope.get("root_path") or self._app.dependency_overrides:
            return False
        if self._telemetry_on():
            return False
        scope["app"] = self._app
        ti_id = _authorized(scope, match.group("task_instance_id"))
        if ti_id is None:
            return False
        scope[_TI_ID] = ti_id
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request ``takes`` took; what Starlette's outermost error layer does
        for an exception no handler answers (500 from the app's handler, re-raised)."""
        if self._stack is None:
            # The app's middleware, outermost first, as Starlette stacks it.
            stack: ASGIApp = self._put
            for layer in reversed(self._app.user_middleware):
                stack = layer.cls(stack, *layer.args, **layer.kwargs)
            self._stack = stack
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._stack(scope, receive, tracking_send)
        except Exception as exc:
            handler = self._app.exception_handlers[Exception]
            response = await _answer(handler, Request(scope), exc)  # it logs the error
            if not started:
                await response(scope, receive, send)
            raise

    async def _put(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        try:
            raw = await _read_body(receive)
            processor: bodies.BodyProcessor = app.state.bodies
            body = await processor.masked_body(raw)
            meta = task_instances.field_meta(scope[_HEADERS], body.names)
            write = deps.rtif_writer(app)
            await write(app.state.db, scope[_TI_ID], body.fields, meta)
        except Exception as exc:
            handler = _handler_for(app, exc)
            if handler is None:
                raise
            response = await _answer(handler, Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        # New messages each time: middleware adds its headers to them.
        # In the order Starlette's Response sends them (the route's answer).
        headers = [(b"content-length", _LENGTH), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": task_instances.RTIF_SET_BODY})


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    """The app's handler for ``exc`` as Starlette's exception layer finds it (by the
    exception's classes, nearest first; ``Exception`` is the outermost layer's)."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in app.exception_handlers:
            return app.exception_handlers[cls]
    return None


async def _answer(handler: Any, request: Request, exc: Exception) -> Response:
    response = handler(request, exc)
    return await response if inspect.isawaitable(response) else response  # type: ignore[no-any-return]


def _authorized(scope: Scope, raw_id: str) -> uuid.UUID | None:
    """The path's try id when the token and the content type pass, else None (the
    FastAPI route then answers, with its own error)."""
    try:
        # FastAPI's own parser: uuid.UUID alone accepts forms the route refuses with 422.
        ti_id = _PATH_ID.validate_python(raw_id)
    except ValueError:  # pydantic's ValidationError
        return None
    headers = _read_headers(scope)
    scheme, token = get_authorization_scheme_param(headers.get("authorization"))
    if not token or scheme.lower() != "bearer":
        return None
    if not task_instances.is_json(headers.get("content-type")):
        return None
    try:
        checked = deps.check_ti_token(scope["app"].state.signer, token, ti_id, scope)
    except errors.TaskExecError:
        return None
    scope[_HEADERS] = headers
    return checked


def _read_headers(scope: Scope) -> dict[str, str]:
    """The request headers the route reads, by their lower-case names, in one pass over
    the request's (Starlette's ``Headers`` scans them again for each one): the first of
    each, as ``Headers.get`` finds it."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = _READ.get(raw_name)
        if name is not None and name not in found:
            found[name] = raw_value.decode("latin-1")
    return found


async def _read_body(receive: Receive) -> bytes:
    """The whole body; ``ClientDisconnect`` if the client went away first (as Starlette's
    ``Request.body`` raises it in the route)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
