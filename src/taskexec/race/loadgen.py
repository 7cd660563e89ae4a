"""A light load generator: asyncio keep-alive connections speaking raw HTTP/1.1.

Each connection sends one request, reads one response, and repeats until the deadline.
Requests are pre-built bytes, so the generator spends its time on sockets, not on an
HTTP client library; it reports its own CPU use so a reader can see it was not the
bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections import Counter
from collections.abc import Sequence

from taskexec.race import stats


@dataclasses.dataclass
class LoadResult:
    """What one load run measured."""

    requests: int
    seconds: float
    statuses: Counter[int]
    latencies: list[float]  # seconds
    cpu_seconds: float  # this process's CPU time during the run

    @property
    def req_per_s(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        """Answers that were not 2xx (0 counts transport failures)."""
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile latency in milliseconds."""
        return 1000 * stats.percentile(self.latencies, q)

    @property
    def cpu_share(self) -> float:
        """The generator's CPU use, in cores."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0


def build_put(host: str, path: str, token: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 PUT with a JSON body."""
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    host: str,
    port: int,
    requests: Sequence[bytes],
    deadline: float,
    statuses: Counter[int],
    latencies: list[float],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        i = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                end = lower.find(b"\r\n", at)
                length = int(lower[at + 15 : end])
                if length:
                    await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
    except (ConnectionError, asyncio.IncompleteReadError):
        statuses[0] += 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _run(
    host: str, port: int, per_connection: Sequence[Sequence[bytes]], seconds: float
) -> LoadResult:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    cpu0 = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(host, port, reqs, deadline, statuses, latencies) for reqs in per_connection)
    )
    elapsed = time.perf_counter() - started
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        statuses=statuses,
        latencies=latencies,
        cpu_seconds=time.process_time() - cpu0,
    )


def run_load(
    host: str, port: int, per_connection: Sequence[Sequence[bytes]], seconds: float
) -> LoadResult:
    """Open one keep-alive connection per entry of ``per_connection`` and send its
    requests round-robin for ``seconds``."""
    try:
        import uvloop

        return uvloop.run(_run(host, port, per_connection, seconds))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(_run(host, port, per_connection, seconds))


def payload_body(size: int) -> bytes:
    """A JSON object of ``size`` bytes, shaped like rendered fields."""
    fields = {"bash_command": "echo ", "env": {"A": "1"}}
    overhead = len(json.dumps(fields))
    fields["bash_command"] = "echo " + "x" * max(0, size - overhead)
    return json.dumps(fields).encode()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
