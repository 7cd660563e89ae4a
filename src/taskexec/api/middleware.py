"""Pure ASGI middleware: correlation ids, the refreshed-token header, the request deadline
and the body limit.

Pure ASGI (not ``BaseHTTPMiddleware``) keeps the hot path cheap and lets the body
limit act while the body streams in, before it is read whole.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskexec import errors, logs
from taskexec.wire import protocol

log = logging.getLogger(__name__)

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
        # 32 hex digits, as a UUID's: unique, not secret (random's, no system call).
        cid = raw.decode("latin-1")[:64] if raw else f"{random.getrandbits(128):032x}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state[CORRELATION_STATE_KEY] = cid
        logs.correlation_id.set(cid)  # on every log line written for this request

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((protocol.CORRELATION_HEADER.encode(), cid.encode("latin-1")))
                # Only a request that succeeded on a try that goes on gets a new token
                # (a route that ends the try drops it).
                refreshed = state.get(REFRESH_STATE_KEY)
                if refreshed and 200 <= message["status"] < 300:
                    headers.append((protocol.REFRESHED_TOKEN_HEADER.encode(), refreshed.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# How much of an oversized body is read and discarded before the 413 goes out. A client
# that writes its whole body before reading (urllib, http.client) would otherwise meet
# a closed socket (a broken pipe or a reset) instead of the answer. Past this, the
# connection is closed anyway: draining is bounded (and so is time, by the deadline).
DRAIN_BYTES = 16 * 1024 * 1024


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, before they are kept whole.

    A declared ``Content-Length`` over the limit is refused without being stored; a
    chunked body is counted as it arrives and refused as soon as it passes the limit.
    Either way the rest of the body is read and discarded (up to ``DRAIN_BYTES``) before
    the answer, so that every ordinary client gets to read it.
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
            await _drain(receive, 0)
            await self._refuse(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive, received)
                    raise errors.PayloadTooLargeError(self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"The request body is larger than the limit of {self.max_bytes} bytes."

    async def _refuse(self, send: Send) -> None:
        await send_error(send, 413, errors.PayloadTooLargeError.reason, self._message(), close=True)


async def _drain(receive: Receive, already: int) -> None:
    """Read and drop the rest of a request body, up to ``DRAIN_BYTES`` in all."""
    drained = already
    while drained <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client is gone
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class DeadlineMiddleware:
    """Every request is answered within ``seconds``: one that has not started its
    response by then is answered here, 408 ``request_timeout`` if its body had not all
    arrived (a slow sender), else 503 ``deadline_exceeded`` with Retry-After, and its
    handler is cancelled. A response already started goes on to its end.

    The handler runs in the request's own task, with a timer beside it (no task per
    request: that cost a third of the hot route's CPU). At the deadline the answer goes
    out from a task of its own at once, so that it is never held up by a handler that is
    slow to unwind (a rollback on a database that hangs); the request's task is
    cancelled and ends when its handler does.
    """

    def __init__(self, app: ASGIApp, seconds: float, retry_after: int) -> None:
        self.app = app
        self.seconds = seconds
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = _header(scope, b"content-length") in (None, b"0") and (
            _header(scope, b"transfer-encoding") is None
        )
        started = False
        answer: asyncio.Task[None] | None = None

        async def tracking_receive() -> Message:
            nonlocal body_complete
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_complete = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answer is not None:
                return  # answered at the deadline: nothing more goes out
            started = started or message["type"] == "http.response.start"
            await send(message)

        task = asyncio.current_task()
        assert task is not None
        cancelled = False  # by the deadline, and not yet accounted for

        def at_deadline() -> None:
            nonlocal answer, cancelled
            if started:
                return
            answer = asyncio.ensure_future(self._answer(send, body_complete))
            task.cancel()
            cancelled = True

        timer = asyncio.get_running_loop().call_later(self.seconds, at_deadline)
        try:
            await self.app(scope, tracking_receive, tracking_send)
        except asyncio.CancelledError:
            # Ours only if nothing else cancelled the task as well.
            if not cancelled or task.uncancel() > 0:
                raise
            cancelled = False
        except Exception as exc:
            if answer is None:
                raise
            log.info("a request answered at its deadline then failed: %r", exc)
        finally:
            timer.cancel()
        if cancelled:  # the handler swallowed the cancellation
            task.uncancel()
        if answer is not None:
            await answer

    async def _answer(self, send: Send, body_complete: bool) -> None:
        if not body_complete:
            message = f"The request body did not arrive within {self.seconds:g} seconds."
            await send_error(send, 408, "request_timeout", message, close=True)
            return
        message = f"The server could not answer within {self.seconds:g} seconds; try again."
        retry = [(b"retry-after", str(self.retry_after).encode())]
        await send_error(send, 503, "deadline_exceeded", message, headers=retry)


async def send_error(
    send: Send,
    status: int,
    reason: str,
    message: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    close: bool = False,
) -> None:
    """Answer with the error body, from middleware (outside the app's handlers)."""
    body = orjson.dumps(protocol.error_body(reason, message))
    extra = list(headers or []) + ([(b"connection", b"close")] if close else [])
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
