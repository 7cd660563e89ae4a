"""Group commit of rendered-fields writes (``PUT /rtif``), one queue per server process.

Writes that arrive while a batch is in the database wait, and go together as the next
batch: one statement in one transaction (``rendered_fields.upsert_rendered_fields_batch``).
There is no timer: a lone write goes at once, and under load each batch holds what
arrived during the previous one, up to ``max_batch``. Every request is answered after
its batch has committed, so a 201 still means durable.

Several writes to one try in a batch collapse to the latest received; the earlier ones
get its answer, as if overwritten by it an instant later (a valid order for concurrent
writes). A write that cannot be stored fails alone: 404, 409 and 410 come back per write
from the batch; a value the database refuses (422) makes the batch's transaction fail,
and then each of its writes is stored on its own, so only that one gets the 422.
Deadlocks and lost connections retry the whole batch in ``Database.write``, as for any
transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from typing import Any

from taskexec import errors
from taskexec.db.engine import Database
from taskexec.services import rendered_fields
from taskexec.wire import jsontree

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)  # compared by identity: each is one request
class _Waiting:
    write: rendered_fields.Write
    answer: asyncio.Future[None]


@dataclasses.dataclass
class BatchStats:
    """What the queue has done so far (for the benchmark and the tests)."""

    batches: int = 0
    writes: int = 0
    largest: int = 0
    # Batches the database refused a value of, stored again write by write.
    split: int = 0


class GroupCommit:
    """The per-process queue of rendered-fields writes and the one task that drains it."""

    def __init__(self, db: Database, max_batch: int) -> None:
        self._db = db
        self._max_batch = max(1, max_batch)
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
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved even when nobody waits any more (a client that hung up).
        answer.add_done_callback(_retrieve)
        waiting = _Waiting(rendered_fields.Write(ti_id, fields, meta), answer)
        self._queue.append(waiting)
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        try:
            # Shielded: a write already in a batch stays there whatever the request does.
            await asyncio.shield(waiting.answer)
        except asyncio.CancelledError:
            # A request cancelled (its deadline, a client that hung up) before a batch
            # took its write: the write is dropped, as an unbatched write's transaction
            # is rolled back. One already in a batch commits with it.
            if waiting in self._queue:
                self._queue.remove(waiting)
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._store(batch)
        finally:
            self._drainer = None

    async def _store(self, batch: list[_Waiting]) -> None:
        # The latest write per try stands for all of that try's writes in the batch.
        latest: dict[uuid.UUID, rendered_fields.Write] = {}
        for waiting in batch:
            latest[waiting.write.ti_id] = waiting.write
        writes = list(latest.values())
        self.stats.batches += 1
        self.stats.writes += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        if len(writes) == 1:
            # A lone write: the single-write statement, as with batching off.
            await self._store_one_by_one(batch[-1:], also=batch[:-1])
            return
        try:
            outcomes = await self._db.write(
                rendered_fields.upsert_rendered_fields_batch, writes=writes
            )
        except errors.InvalidValueError:
            self.stats.split += 1
            await self._store_one_by_one(batch)
            return
        except Exception as exc:
            # 503 and the like: every write of the batch gets it; none was stored.
            _answer_all(batch, exc)
            return
        by_id = {w.ti_id: outcome for w, outcome in zip(writes, outcomes, strict=True)}
        for waiting in batch:
            _answer(waiting, by_id[waiting.write.ti_id])

    async def _store_one_by_one(
        self, batch: list[_Waiting], also: list[_Waiting] | None = None
    ) -> None:
        """Every write on its own transaction, in the order received: a lone write, or
        a batch whose statement the database refused, so that only the refused write
        fails. ``also``: earlier writes to the same try, answered like it."""
        for waiting in batch:
            write = waiting.write
            outcome: BaseException | None = None
            try:
                await self._db.write(
                    rendered_fields.upsert_rendered_fields,
                    ti_id=write.ti_id,
                    fields=write.fields,
                    meta=write.meta,
                )
            except Exception as exc:
                outcome = exc
            for overwritten in [waiting, *(also or [])]:
                _answer(overwritten, outcome)


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
