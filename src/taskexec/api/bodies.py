"""The rendered-fields body of ``PUT /rtif``: parsed, depth-checked and masked, off the
event loop when it is large.

Parsing is C (orjson), but the depth check and masking walk every value in Python: a
body of 200,000 one-element lists keeps a process busy for most of a second. On the
event loop that would stall every other request of the process, so a body of
``OFFLOAD_BYTES`` or more is handled by a worker process of this server process (a
thread would still hold the GIL the event loop needs). Small bodies, nearly all of
them, stay on the loop: the hop would cost more than the work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import multiprocessing
import os
import signal
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from taskexec import errors, processes
from taskexec.wire import jsontree, masking, protocol

OFFLOAD_BYTES = 64 * 1024


def masked_fields(raw: bytes, masker: masking.SecretsMasker) -> dict[str, Any]:
    """The body as a masked dict of field name to value; ``InvalidBodyError`` (422) if
    it is not a JSON object or is nested too deep."""
    try:
        body = jsontree.loads(raw)
    except RecursionError as exc:
        raise errors.InvalidBodyError(
            f"The request body is nested more than {protocol.MAX_NESTING_DEPTH} levels deep."
        ) from exc
    except ValueError as exc:
        raise errors.InvalidBodyError("The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise errors.InvalidBodyError(
            "The request body must be a JSON object of field name to value."
        )
    # Refused up front with a clear 422 rather than failing later in orjson. Text with
    # no more opening brackets than the limit cannot nest deeper (a bracket inside a
    # string only adds to the count), so most bodies skip the walk.
    limit = protocol.MAX_NESTING_DEPTH
    if raw.count(b"{") + raw.count(b"[") > limit and jsontree.exceeds_depth(body, limit):
        raise errors.InvalidBodyError(
            f"The request body is nested more than {protocol.MAX_NESTING_DEPTH} levels deep."
        )
    return masker.redact_fields(body)


@functools.cache
def _masker(words: tuple[str, ...]) -> masking.SecretsMasker:
    return masking.SecretsMasker(extra_words=words)


def _masked_json(raw: bytes, words: tuple[str, ...]) -> tuple[list[str], str]:
    """In the worker process: the field names and the masked fields as JSON text (the
    server process would spend longer building the tree again than the work took)."""
    fields = masked_fields(raw, _masker(words))
    return list(fields), jsontree.dumps(fields)


@dataclasses.dataclass(frozen=True)
class MaskedBody:
    """A masked rendered-fields body: its field names, and what to store (the fields,
    or for a large body their JSON text, never parsed again in this process)."""

    names: frozenset[str]
    fields: jsontree.JsonFields


def _end_with(parent: int) -> None:
    """In a masking process: end when the server process that started it does, however
    that ends (a kill -9 gives it no time to stop its pool), rather than wait forever
    for work (Linux; elsewhere the pool's own shutdown stops it)."""
    processes.signal_on_parent_death(signal.SIGKILL)
    if os.getppid() != parent:  # gone already, before the kernel was asked
        os._exit(0)


class BodyProcessor:
    """Masks rendered-fields bodies: small ones here, large ones in ``processes`` worker
    processes started on first need (spawned, not forked: this process has threads)."""

    def __init__(self, extra_words: Iterable[str], processes: int = 1) -> None:
        self._words = tuple(extra_words)
        self.masker = _masker(self._words)
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def masked_body(self, raw: bytes) -> MaskedBody:
        """The masked fields of ``raw`` (see ``masked_fields``)."""
        if len(raw) < OFFLOAD_BYTES:
            fields = masked_fields(raw, self.masker)
            return MaskedBody(frozenset(fields), fields)
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._running_pool()
            try:
                names, text = await loop.run_in_executor(pool, _masked_json, raw, self._words)
            except BrokenProcessPool:
                # Its process died (killed, out of memory): a new pool takes the next try.
                self._discard(pool)
                if attempt == 2:
                    raise errors.ServiceUnavailableError(
                        "The server could not process this body; try again."
                    ) from None
                continue
            return MaskedBody(frozenset(names), jsontree.SerializedJson(text))
        raise AssertionError("unreachable")

    def _running_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_end_with,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker processes (work in flight is dropped)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
