"""Pure ASGI middleware: correlation ids, the refreshed-token header and the body limit.

Pure ASGI (not ``BaseHTTPMiddleware``) keeps the hot path cheap and lets the body
limit act while the body streams in, before it is read whole.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskexec import errors
from taskexec.wire import protocol

# Keys in ``scope["state"]`` (``request.state``). The auth dependency sets the refreshed
# token; the correlation id is kept there so that even the outermost 500 handler sees it.
REFRESH_STATE_KEY = "refreshed_token"
CORRELATION_STATE_KEY = "correlation_id"


def correlation_id(scope: Scope) -> str:
    """The request's correlation id, or "-" outside a request."""
    return str(scope.get("state", {}).get(CORRELATION_STATE_KEY, "-"))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class RequestContextMiddleware:
    """Adopts the client's ``correlation-id`` (or makes one), echoes it on the response,
    and adds ``Refreshed-API-Token`` when the auth dependency minted a fresh token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = _header(scope, protocol.CORRELATION_HEADER.encode())
        cid = raw.decode("latin-1")[:64] if raw else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state[CORRELATION_STATE_KEY] = cid

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((protocol.CORRELATION_HEADER.encode(), cid.encode("latin-1")))
                refreshed = state.get(REFRESH_STATE_KEY)
                if refreshed:
                    headers.append((protocol.REFRESHED_TOKEN_HEADER.encode(), refreshed.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, before they are read whole.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is
    counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise errors.PayloadTooLargeError(self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"The request body is larger than the limit of {self.max_bytes} bytes."

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps(
            protocol.error_body(errors.PayloadTooLargeError.reason, self._message())
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
