"""A TCP proxy on loopback that can freeze: while frozen it forwards nothing in either
direction and keeps every socket open, as a database stopped with SIGSTOP looks to its
clients. New connections wait too."""

from __future__ import annotations

import asyncio
import threading


class FreezeProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>`` in a thread."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thawed: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    def __enter__(self) -> FreezeProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(lambda: self._stop.set() if self._stop else None)
        self._thread.join(10)

    def freeze(self) -> None:
        """Stop forwarding, from now on."""
        self._call(lambda: self._thawed.clear() if self._thawed else None)

    def thaw(self) -> None:
        """Forward again, what waited first."""
        self._call(lambda: self._thawed.set() if self._thawed else None)

    def _call(self, fn: object) -> None:
        assert self._loop is not None and callable(fn)
        self._loop.call_soon_threadsafe(fn)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._thawed is not None
        try:
            while data := await reader.read(65536):
                await self._thawed.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._thawed is not None
        try:
            await self._thawed.wait()
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except (OSError, asyncio.CancelledError):
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thawed, self._stop = asyncio.Event(), asyncio.Event()
        self._thawed.set()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
