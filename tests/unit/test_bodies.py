"""Large rendered-fields bodies are masked in a worker process; one that dies (killed,
out of memory) is replaced: the next large body is still handled."""

from __future__ import annotations

import asyncio
import json
import os
import signal

from taskexec.api import bodies
from taskexec.wire import jsontree


def test_a_dead_worker_process_is_replaced() -> None:
    raw = json.dumps({"password": "hunter2", "pad": "x" * bodies.OFFLOAD_BYTES}).encode()

    async def go() -> list[jsontree.JsonFields]:
        processor = bodies.BodyProcessor(())
        try:
            first = await processor.masked_body(raw)
            pool = processor._pool
            assert pool is not None
            for pid in list(pool._processes):  # type: ignore[attr-defined]
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.5)
            second = await processor.masked_body(raw)
            return [first.fields, second.fields]
        finally:
            processor.close()

    for fields in asyncio.run(go()):
        assert isinstance(fields, jsontree.SerializedJson)
        assert json.loads(fields)["password"] == "***"
