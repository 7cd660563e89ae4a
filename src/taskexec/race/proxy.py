"""A recording proxy in front of an Execution API server (the demo and the tests).

Workers are pointed at the proxy's URL instead of the server's. It forwards every
request unchanged and times each rendered-fields PUT; with ``duplicate`` it also sends
each PUT a second time while the first is in flight, as a client retrying after a
timeout would: the race of Airflow #61705, provoked on purpose. Like the SDK's client,
it retries a write that got no answer or a 5xx (honouring ``Retry-After``), and records
what the write finally got. The measuring lives here, beside the race, so the
production client and runner carry no benchmark knobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
from starlette.types import Receive, Scope, Send

from taskexec.race import stats
from taskexec.server.background import background_server
from taskexec.wire import protocol

_RTIF_PUT = re.compile(r"^/execution/task-instances/[^/]+/rtif$")
# Connection-level headers are each hop's own; httpx and uvicorn set them again.
_HOP_BY_HOP = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
)
# The SDK client's policy, with short waits: a write is tried up to this many times.
ATTEMPTS = 5
MAX_WAIT_SECONDS = 2.0


@dataclasses.dataclass
class WriteLog:
    """Every rendered-fields PUT that passed the proxy, as its sender saw it."""

    sent: int = 0
    duplicates: int = 0
    non_2xx: int = 0
    retries: int = 0  # attempts after a first one that got no answer or a 5xx
    latencies: list[float] = dataclasses.field(default_factory=list)
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def add(self, status: int, seconds: float, duplicate: bool, retries: int = 0) -> None:
        """Count one PUT by the status it finally got (0: no answer at all)."""
        with self._lock:
            self.sent += 1
            self.retries += retries
            self.duplicates += duplicate
            self.non_2xx += not 200 <= status < 300
            self.latencies.append(seconds)
            self.statuses[status] += 1

    def percentile(self, q: float) -> float:
        """The q-th percentile write latency, in seconds."""
        with self._lock:
            return stats.percentile(self.latencies, q)


class RecordingProxy:
    """The proxy as an ASGI app, forwarding to ``upstream``."""

    def __init__(self, upstream: str, log: WriteLog, *, duplicate: bool) -> None:
        self.upstream = upstream
        self.log = log
        self.duplicate = duplicate
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert scope["type"] == "http" and self._client is not None
        body = await _read_body(receive)
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        # The path as the client sent it, still percent-encoded.
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope["query_string"]
        url = (raw_path + (b"?" + query if query else b"")).decode("latin-1")
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        if scope["method"] == "PUT" and _RTIF_PUT.match(scope["path"]):
            response = await self._timed_put(request, body, headers, url)
        else:
            response, _ = await self._forward(request)
        await _answer(send, response)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(base_url=self.upstream, timeout=60.0)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, request: httpx.Request) -> tuple[httpx.Response, bool]:
        """The server's response, and whether the server gave one (else a 502 from here)."""
        assert self._client is not None
        try:
            return await self._client.send(request), True
        except httpx.TransportError as exc:
            body = protocol.error_body("bad_gateway", f"{type(exc).__name__}: {exc}")
            return httpx.Response(502, json=body), False

    async def _timed(self, request: httpx.Request, duplicate: bool) -> httpx.Response:
        # Retried here, like the SDK's client would (a 503 while a deadlock persists, a
        # connection the server closed), so the log says what each write finally got.
        started = time.perf_counter()
        for attempt in range(1, ATTEMPTS + 1):
            response, answered = await self._forward(request)
            if response.status_code < 500 or attempt == ATTEMPTS:
                break
            await asyncio.sleep(_wait(response, attempt))
        status = response.status_code if answered else 0
        self.log.add(status, time.perf_counter() - started, duplicate, retries=attempt - 1)
        return response

    async def _timed_put(
        self, request: httpx.Request, body: bytes, headers: list[tuple[str, str]], url: str
    ) -> httpx.Response:
        if not self.duplicate:
            return await self._timed(request, False)
        assert self._client is not None
        again = self._client.build_request("PUT", url, headers=headers, content=body)
        # Both go out at once; the sender gets the first one's answer.
        first, _ = await asyncio.gather(self._timed(request, False), self._timed(again, True))
        return first


def _wait(response: httpx.Response, attempt: int) -> float:
    retry_after = response.headers.get("retry-after", "")
    wait = float(retry_after) if retry_after.isdigit() else 0.05 * 2**attempt
    return min(wait, MAX_WAIT_SECONDS)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, response: httpx.Response) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in response.headers.multi_items()
        if k.lower() not in _HOP_BY_HOP
    ]
    content = response.content
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": content})


@contextlib.contextmanager
def recording_proxy(upstream: str, *, duplicate: bool = False) -> Iterator[tuple[str, WriteLog]]:
    """Serve a recording proxy for ``upstream`` on a free loopback port; yields its URL
    and the log of the rendered-fields writes that pass it."""
    log = WriteLog()
    with background_server(RecordingProxy(upstream, log, duplicate=duplicate)) as url:
        yield url, log
