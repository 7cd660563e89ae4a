"""``PUT /execution/task-instances/{id}/rtif`` without FastAPI's request machinery.

The hot route of a busy server: every try of every task writes it. Through FastAPI, its
dependency resolution, request object and response handling cost several times the
route's own work (docs/benchmarks.md). This plain ASGI handler does the same work in the
same order with the same functions (the token check, the content-type rule, the body
processor, the field-meta header, the rendered-fields writer), and nothing else.

It answers only the ordinary case. A request that fails any check made before the body
is read (path, token, content type), and any request while a dependency is overridden
(``taskexec race``, tests), goes on to the FastAPI route untouched: every such answer
is the route's, byte for byte. Errors after that point
(413 while reading, 422 from the body, 404/409/410/503 from the write) are raised to the
app's exception handlers, as the route raises them.
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import TypeAdapter
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from taskexec import errors
from taskexec.api import bodies, deps
from taskexec.api.routes import task_instances

_LENGTH = str(len(task_instances.RTIF_SET_BODY)).encode()
_PATH_ID = TypeAdapter(uuid.UUID)


# Set in a request's scope once the hot path has passed it on to the app's routes.
_PASSED = "taskexec.rtif_hot_path.passed"
# The path as the app serves it (the route's own prefixes are not known to the route).
PATH = "/execution/task-instances/{task_instance_id}/rtif"


class PutRtif:
    """The ASGI handler (a class: Starlette calls a function route as request → response)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app: FastAPI = scope["app"]
        ti_id = None if app.dependency_overrides else _authorized(scope)
        if ti_id is None:
            scope[_PASSED] = True
            await app.router(scope, receive, send)
            return
        raw = await _read_body(receive)
        processor: bodies.BodyProcessor = app.state.bodies
        body = await processor.masked_body(raw)
        meta = task_instances.field_meta(Headers(scope=scope), body.names)
        write = deps.rtif_writer(app)
        await write(app.state.db, ti_id, body.fields, meta)
        # New messages each time: middleware adds its headers to them.
        # In the order Starlette's Response sends them (the route's answer).
        headers = [(b"content-length", _LENGTH), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": task_instances.RTIF_SET_BODY})


class _HotRoute(Route):
    """Matches as its path and method say, except a request already passed on."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_PASSED):
            return Match.NONE, {}
        return super().matches(scope)


def _authorized(scope: Scope) -> uuid.UUID | None:
    """The path's try id when the token and the content type pass, else None (the
    FastAPI route then answers, with its own error)."""
    try:
        # FastAPI's own parser: uuid.UUID alone accepts forms the route refuses with 422.
        ti_id = _PATH_ID.validate_python(scope["path_params"]["task_instance_id"])
    except ValueError:  # pydantic's ValidationError
        return None
    headers = Headers(scope=scope)
    scheme, token = get_authorization_scheme_param(headers.get("authorization"))
    if not token or scheme.lower() != "bearer":
        return None
    if not task_instances.is_json(headers.get("content-type")):
        return None
    try:
        return deps.check_ti_token(scope["app"].state.signer, token, ti_id, scope)
    except errors.TaskExecError:
        return None


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


def install(app: FastAPI) -> None:
    """Put the handler first among the app's routes. The FastAPI route ``put_rtif``
    stays, in the OpenAPI schema, and answers every request the handler passes on."""
    # The handler stands in for that route: it must serve the same path.
    route_path = app.url_path_for("put_rtif", task_instance_id="{task_instance_id}")
    if route_path != PATH:
        raise RuntimeError(f"put_rtif is served at {route_path}, the hot path at {PATH}")
    route = _HotRoute(PATH, PutRtif(), methods=["PUT"], include_in_schema=False)
    app.router.routes.insert(0, route)
