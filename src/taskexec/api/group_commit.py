"""Group commit of rendered-fields writes (``PUT /rtif``), one queue per server process.

Writes that arrive while a batch is in the database wait, and go together as the next
batch: one statement in one transaction (``rendered_fields.upsert_rendered_fields_batch``).
There is no timer: a lone write goes at once, and under load each batch holds what
arrived during the previous one, up to ``max_batch`` writes and ``max_bytes`` of fields.
Every request is answered after its batch has committed, so a 201 still means durable.

Several writes to one try in a batch collapse to the latest received; the earlier ones
get its answer, as if overwritten by it an instant later (a valid order for concurrent
writes). A write that cannot be stored fails alone: 404, 409 and 410 come back per write
from the batch; when the database refuses the batch's statement (a value it cannot
store, 422, or anything else but an outage) each of its writes is stored on its own, in
the order received, so that only the bad one fails. Deadlocks and lost connections retry
the whole batch in ``Database.write``, as for any transaction.

Deadlines: a write's transaction must end within the transaction deadline counted from
the write's arrival, as an unbatched write's does, so that no request is answered 503 at
its deadline while its write is still on the way to a commit. A batch runs within what is
left of its oldest write's deadline; a write already past it is answered 503 unstored.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import uuid
from typing import Any

from taskexec import errors
from taskexec.api import bodies
from taskexec.config import Settings
from taskexec.db.engine import Database
from taskexec.services import rendered_fields, rtif_direct
from taskexec.wire import jsontree

log = logging.getLogger(__name__)

# A batch never waits for less than this much of a deadline: below it, the write is
# answered 503 at once rather than sent to the database to be cut off.
_MIN_SECONDS = 0.05


@dataclasses.dataclass(eq=False)  # compared by identity: each is one request
class _Waiting:
    write: rendered_fields.Write
    answer: asyncio.Future[None]
    arrived: float  # the event loop's clock
    size: int  # bytes counted against the batch's size


@dataclasses.dataclass
class BatchStats:
    """What the queue has done so far (for the benchmark and the tests)."""

    batches: int = 0
    writes: int = 0
    largest: int = 0
    # Batches the database refused, stored again write by write.
    split: int = 0
    # Writes answered 503 unstored: their deadline passed while they waited.
    expired: int = 0


def _size(fields: jsontree.JsonFields, offload_bytes: int) -> int:
    # A body of offload_bytes or more arrives as its JSON text; a smaller one as a
    # value, counted at that bound (its size is not known without serializing it).
    return len(fields) if isinstance(fields, jsontree.SerializedJson) else offload_bytes


class GroupCommit:
    """The per-process queue of rendered-fields writes and the one task that drains it."""

    def __init__(self, db: Database, max_batch: int, max_bytes: int = 4 * 1024 * 1024) -> None:
        self._db = db
        self._max_batch = max(1, max_batch)
        self._max_bytes = max(1, max_bytes)
        self._queue: list[_Waiting] = []
        self._drainer: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    async def write(
        self,
        db: Database,
        ti_id: uuid.UUID,
        fields: jsontree.JsonFields,
        meta: dict[str, Any] | None,
    ) -> None:
        """Store one write with the next batch; returns once that batch has committed
        (raises what the write got: ``NotFoundError``, ``StaleTryError``, ...)."""
        del db  # the queue's own transaction owner is the same Database
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[None] = loop.create_future()
        # Retrieved even when nobody waits any more (a client that hung up).
        answer.add_done_callback(_retrieve)
        size = _size(fields, bodies.OFFLOAD_BYTES)
        waiting = _Waiting(rendered_fields.Write(ti_id, fields, meta), answer, loop.time(), size)
        self._queue.append(waiting)
        if self._drainer is None:
            # A context of its own: the drainer's log lines belong to no one request.
            self._drainer = asyncio.create_task(self._drain(), context=contextvars.Context())
        try:
            # A write already in a batch stays there whatever the request does: cancelling
            # the request cancels its answer only (``_answer`` skips it).
            await waiting.answer
        except asyncio.CancelledError:
            # A request cancelled (a client that hung up) before a batch took its write:
            # the write is dropped, as an unbatched write's transaction is rolled back.
            # One already in a batch commits with it (within its deadline).
            if waiting in self._queue:
                self._queue.remove(waiting)
            raise

    async def aclose(self) -> None:
        """Let the batch in the database finish (the server is stopping)."""
        if self._drainer is not None:
            await asyncio.wait((self._drainer,), timeout=self._db.deadline)

    def _next_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        size = 0
        while self._queue and len(batch) < self._max_batch:
            if batch and size + self._queue[0].size > self._max_bytes:
                break
            waiting = self._queue.pop(0)
            batch.append(waiting)
            size += waiting.size
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._store(self._next_batch())
        finally:
            self._drainer = None

    def _within_deadline(self, batch: list[_Waiting]) -> tuple[list[_Waiting], Database]:
        """The writes that still have time, and the transaction owner bounded by the
        oldest one's deadline; the others are answered 503 here."""
        now = asyncio.get_running_loop().time()
        live = []
        for waiting in batch:
            if waiting.arrived + self._db.deadline - now < _MIN_SECONDS:
                self.stats.expired += 1
                _answer(waiting, errors.DatabaseUnavailableError())
            else:
                live.append(waiting)
        oldest = min((w.arrived for w in live), default=now)
        return live, self._db.within(oldest + self._db.deadline - now)

    async def _store(self, batch: list[_Waiting]) -> None:
        batch, db = self._within_deadline(batch)
        if not batch:
            return
        # The latest write per try stands for all of that try's writes in the batch.
        latest: dict[uuid.UUID, _Waiting] = {}
        for waiting in batch:
            latest[waiting.write.ti_id] = waiting
        self.stats.batches += 1
        self.stats.writes += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        if len(latest) == 1:
            # A lone write: the single-write statement, as with batching off.
            await self._store_latest(db, batch)
            return
        writes = [w.write for w in latest.values()]
        try:
            outcomes = await _store_batch(db, writes)
        except errors.DatabaseUnavailableError as exc:
            # An outage or the deadline: every write of the batch gets it; none stored.
            _answer_all(batch, exc)
            return
        except Exception:
            # A value the database refused (422), or any other refusal of the statement:
            # every write on its own, so that only the bad one fails.
            self.stats.split += 1
            await self._store_each(batch)
            return
        by_id = {w.ti_id: outcome for w, outcome in zip(writes, outcomes, strict=True)}
        for waiting in batch:
            _answer(waiting, by_id[waiting.write.ti_id])

    async def _store_latest(self, db: Database, batch: list[_Waiting]) -> None:
        """Writes to one try: the latest stands for all; if the database refuses it, the
        earlier ones are stored on their own (the refused one was never stored)."""
        outcome = await self._store_one(db, batch[-1])
        earlier = batch[:-1]
        if isinstance(outcome, errors.InvalidValueError):
            await self._store_each(earlier)
        else:
            for waiting in earlier:
                _answer(waiting, outcome)

    async def _store_each(self, batch: list[_Waiting]) -> None:
        """Every write in a transaction of its own, in the order received, each within
        its own deadline."""
        for waiting in batch:
            live, db = self._within_deadline([waiting])
            if live:
                await self._store_one(db, waiting)

    async def _store_one(self, db: Database, waiting: _Waiting) -> BaseException | None:
        """One write in a transaction of its own; answers it and returns its outcome."""
        write = waiting.write
        outcome: BaseException | None = None
        try:
            if db.writes_direct:
                started = asyncio.get_running_loop().time()
                upsert = rtif_direct.upsert_rendered_fields
                if not await db.write_direct(upsert, write=write):
                    outcome = (await _outcomes(db, started, [write], set()))[0]
            else:
                await db.write(
                    rendered_fields.upsert_rendered_fields,
                    ti_id=write.ti_id,
                    fields=write.fields,
                    meta=write.meta,
                )
        except Exception as exc:
            outcome = exc
        _answer(waiting, outcome)
        return outcome


async def _store_batch(
    db: Database, writes: list[rendered_fields.Write]
) -> list[BaseException | None]:
    """One batch statement; per write, None (stored) or the error it gets alone. On
    PostgreSQL straight through the driver (``Database.write_direct``), and only when
    not every write was stored, a read of why."""
    if not db.writes_direct:
        return list(await db.write(rendered_fields.upsert_rendered_fields_batch, writes=writes))
    started = asyncio.get_running_loop().time()
    upsert = rtif_direct.upsert_rendered_fields_batch
    stored = await db.write_direct(upsert, writes=writes)
    if len(stored) == len(writes):
        return [None] * len(writes)
    return await _outcomes(db, started, writes, stored)


async def _outcomes(
    db: Database, started: float, writes: list[rendered_fields.Write], stored: set[Any]
) -> list[BaseException | None]:
    """After a direct statement (begun at ``started``) that stored the task instances
    keyed ``stored``: which writes those were and why the others were not, read within
    what is left of ``db``'s deadline (503 past it: to every write, stored or not; a
    retry stores the same value again)."""
    left = db.deadline - (asyncio.get_running_loop().time() - started)
    if left < _MIN_SECONDS:
        raise errors.DatabaseUnavailableError()
    read = db.within(left).read
    return list(await read(rendered_fields.outcomes, writes=writes, stored_keys=stored))


def for_settings(db: Database, settings: Settings) -> GroupCommit | None:
    """The server process's queue, or None when batching is off (``rtif_batch_max`` 1)."""
    if settings.rtif_batch_max <= 1:
        return None
    return GroupCommit(db, settings.rtif_batch_max, settings.rtif_batch_max_bytes)


def _retrieve(answer: asyncio.Future[None]) -> None:
    if not answer.cancelled():
        answer.exception()


def _answer(waiting: _Waiting, outcome: BaseException | None) -> None:
    if waiting.answer.done():
        return
    if outcome is None:
        waiting.answer.set_result(None)
    else:
        waiting.answer.set_exception(outcome)


def _answer_all(batch: list[_Waiting], outcome: BaseException) -> None:
    for waiting in batch:
        _answer(waiting, outcome)
