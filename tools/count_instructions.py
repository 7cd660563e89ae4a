"""Instructions per request of `PUT /rtif`, counted by valgrind's callgrind: prints
figures, asserts nothing.

On this kind of machine a timing moves by half from one hour to the next; a count of
instructions does not. This drives the server's own HTTP protocol class (uvicorn's
httptools protocol, ``server.connections``) and the app in one process, one request
after another over a stand-in transport, with the rendered-fields write a no-op (no
database, no sockets), and counts N requests as the difference of two runs under
callgrind, of N and of 0 requests (the same start-up and warm-up):

    python tools/count_instructions.py                          # the server's route
    python tools/count_instructions.py --variant trivial-app    # uvicorn's share
    python tools/count_instructions.py --variant no-masking     # masking's, by difference
    python tools/count_instructions.py --src /tmp/before/src    # another checkout's code

The body is `taskexec bench`'s 1 KiB payload. Every figure includes the harness's own
few thousand instructions per request (the request bytes, a future per write); what it
leaves out: the kernel's work for the sockets and the write path (group commit, the
driver, the database). It refuses to count if the hot path did not serve a request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import Any

VARIANTS = ("app", "trivial-app", "no-masking", "no-middleware")
WARM_UP = 200


class _Transport(asyncio.Transport):
    """Collects what the protocol writes, and wakes whoever waits for the next write."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.done: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _trivial(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-length", b"2"), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def _app(variant: str) -> Any:
    from taskexec.api import bodies
    from taskexec.config import get_settings
    from taskexec.server.app import create_app, freeze_start_up
    from taskexec.wire import jsontree

    app = create_app(get_settings())

    class NoWrite:
        async def write(self, *args: Any) -> None:
            return None

    class Unmasked:
        async def masked_body(self, raw: bytes) -> bodies.MaskedBody:
            fields = jsontree.loads(raw)
            return bodies.MaskedBody(frozenset(fields), fields)

    app.state.rtif_batches = NoWrite()
    app.state.db = None
    if variant == "no-masking":
        app.state.bodies = Unmasked()
    if variant == "no-middleware":
        app.user_middleware = []
    freeze_start_up(get_settings())  # as a server process does once its app is built
    return app


async def _hot_path_serves(app: Any, one_request: Any) -> None:
    """Refuse to count the FastAPI route under the hot route's name (a setting, a
    configured telemetry provider or another checkout can send requests there)."""
    from taskexec.api.routes import rtif_hot_path

    read_body, reads = rtif_hot_path._read_body, []

    async def counted(receive: Any) -> bytes:
        reads.append(1)
        return await read_body(receive)

    rtif_hot_path._read_body = counted
    try:
        await one_request()
    finally:
        rtif_hot_path._read_body = read_body
    if getattr(app, "hot_path", None) is None or not reads:
        raise SystemExit("the hot path did not serve the request: nothing to count")


async def _serve(requests: int, variant: str) -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from taskexec.config import get_settings
    from taskexec.race import loadgen
    from taskexec.security import TokenSigner
    from taskexec.server.connections import BoundedHttpProtocol

    app = _app(variant)
    ti_id = uuid.uuid4()
    token = TokenSigner(get_settings()).mint(ti_id)
    body = loadgen.payload_body(1024)
    head = (
        f"PUT /execution/task-instances/{ti_id}/rtif HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"
        f"content-type: application/json\r\nauthorization: Bearer {token}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    served = _trivial if variant == "trivial-app" else app
    config = Config(app=served, http=BoundedHttpProtocol, lifespan="off", access_log=False)
    config.load()
    state = ServerState()
    # What uvicorn's server sets once a second: the Date and Server headers.
    state.default_headers = [(b"date", formatdate(usegmt=True).encode()), *config.encoded_headers]
    protocol = BoundedHttpProtocol(config=config, server_state=state, app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    loop = asyncio.get_running_loop()

    async def one_request() -> None:
        protocol.data_received(head.encode() + body)
        while protocol.cycle is None or not protocol.cycle.response_complete:
            transport.done = loop.create_future()
            await transport.done
        await asyncio.sleep(0)  # the request's task ends

    for _ in range(WARM_UP):
        await one_request()
    if variant != "trivial-app":
        await _hot_path_serves(app, one_request)
    for _ in range(requests):
        await one_request()
    if b" 201 " not in transport.written[-2]:
        raise SystemExit(f"not answered 201: {transport.written[-2][:80]!r}")


def _count(requests: int, variant: str, src: Path | None) -> int:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    command = [
        *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
        *(sys.executable, __file__, "--child", str(requests), "--variant", variant),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(done.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split()),
        epilog="Needs valgrind. Each count runs the harness twice under callgrind (minutes).",
    )
    parser.add_argument(
        "--variant",
        default="app",
        choices=VARIANTS,
        help="app: the server's route (default); trivial-app: uvicorn and the harness "
        "alone; no-masking, no-middleware: without them, to count their share by difference",
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests to count")
    parser.add_argument("--src", type=Path, help="the src directory of another checkout")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["TASKEXEC_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp}/unused.db"
            import uvloop

            uvloop.run(_serve(args.child, args.variant))
        return
    base = _count(0, args.variant, args.src)
    total = _count(args.requests, args.variant, args.src)
    where = args.src or "this checkout"
    print(
        f"{args.variant} ({where}): {(total - base) / args.requests:,.0f} instructions "
        f"per request ({args.requests} requests)"
    )


if __name__ == "__main__":
    main()
