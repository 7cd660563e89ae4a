"""Group commit of rendered-fields writes on every backend: a batch is one statement, each
write gets its own answer (good, unknown, stale, ended, refused value, duplicates), the
row holds the latest write received, and under real concurrent load batches do form."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
import sqlalchemy as sa

from taskexec import errors
from taskexec.api.group_commit import GroupCommit
from taskexec.config import Settings
from taskexec.db import engine as db_engine
from taskexec.services import rendered_fields, task_instances
from taskexec.wire import jsontree, schemas
from taskexec.wire.jsontree import SerializedJson

from conftest import LiveServer
from helpers import auth, report, rtif_rows, seed, store_fields

RUNNER = schemas.TIEnterRunningPayload(hostname="worker-1", pid=4242)


def _held(db: db_engine.Database) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the next transaction open before its commit until ``release`` is set."""
    inside, release = asyncio.Event(), asyncio.Event()

    async def hold(_operation: str) -> None:
        db.before_commit = None
        inside.set()
        await release.wait()

    db.before_commit = hold
    return inside, release


async def _queue_held(
    db: db_engine.Database,
    ti_id: uuid.UUID,
    fields: jsontree.JsonFields,
    max_bytes: int | None = None,
) -> tuple[GroupCommit, asyncio.Task[None], asyncio.Event]:
    """A queue whose first write (to ``ti_id``) is in the database, its transaction held
    open until the returned event is set: what is written meanwhile forms the next batch."""
    queue = GroupCommit(db, max_batch=64, **({"max_bytes": max_bytes} if max_bytes else {}))
    inside, release = _held(db)
    first = asyncio.create_task(queue.write(db, ti_id, fields, None))
    await inside.wait()
    return queue, first, release


def _prepare(settings: Settings) -> dict[str, uuid.UUID]:
    """Tries in every state a write can meet: queued, running, ended, an earlier try's
    id (stale) and an id nobody knows."""
    run = seed(settings, tasks=5, max_tries=1)
    queued, running, ended, retried, other = (t.id for t in run.task_instances)
    store_fields(settings, ended, {"cmd": "written while running"})
    success = schemas.TITerminalStatePayload(state="success")
    retry = schemas.TIRetryStatePayload(state="up_for_retry")

    async def go() -> None:
        async with db_engine.open_database(settings) as db:
            for ti_id in (running, ended, retried):
                await db.write(task_instances.start, ti_id=ti_id, payload=RUNNER)
            await db.write(task_instances.finish, ti_id=ended, payload=success)
            await db.write(task_instances.finish, ti_id=retried, payload=retry)

    asyncio.run(go())
    return {
        "queued": queued,
        "running": running,
        "ended": ended,
        "stale": retried,
        "unknown": uuid.uuid4(),
        "other": other,
    }


def test_one_statement_answers_each_write(settings: Settings, sync_engine: sa.Engine) -> None:
    ids = _prepare(settings)
    names = ["queued", "running", "ended", "stale", "unknown"]
    writes = [rendered_fields.Write(ids[n], {"cmd": n}) for n in names]

    async def go() -> list[errors.TaskExecError | None]:
        async with db_engine.open_database(settings) as db:
            return await db.write(rendered_fields.upsert_rendered_fields_batch, writes=writes)

    outcomes = asyncio.run(go())
    assert [type(o).__name__ if o else None for o in outcomes] == [
        None,
        None,
        "TryEndedError",
        "StaleTryError",
        "NotFoundError",
    ]
    stored = {(r["task_id"], r["try_number"]): r["rendered_fields"] for r in rtif_rows(sync_engine)}
    assert stored == {
        ("task_0", 1): {"cmd": "queued"},
        ("task_1", 1): {"cmd": "running"},
        ("task_2", 1): {"cmd": "written while running"},  # an ended try's fields stay
    }


async def _through_queue(
    settings: Settings, ids: dict[str, uuid.UUID], refused: bool
) -> tuple[list[str], GroupCommit]:
    """A blocker write holds its batch open in the database; meanwhile the writes below
    queue up, in this order, and go as one batch once it commits."""
    async with db_engine.open_database(settings) as db:
        queue, blocker, release = await _queue_held(db, ids["other"], {"cmd": "blocker"})
        planned: list[tuple[str, jsontree.JsonFields]] = [
            ("queued", {"cmd": "first"}),
            ("running", {"cmd": "running"}),
            ("queued", {"cmd": "latest"}),
            ("unknown", {"cmd": "x"}),
            ("stale", {"cmd": "x"}),
            ("ended", {"cmd": "x"}),
        ]
        if refused:
            # JSON text the database's JSON check refuses: PostgreSQL and MariaDB.
            planned.append(("other", SerializedJson('{"cmd": not json')))
        tasks = [
            asyncio.create_task(queue.write(db, ids[name], fields, {"cmd": {"renderer": "bash"}}))
            for name, fields in planned
        ]
        await asyncio.sleep(0.05)  # every write is queued behind the blocker
        release.set()
        await blocker
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [type(r).__name__ if r is not None else "ok" for r in results], queue


@pytest.mark.parametrize("direct", [True, False], ids=["driver", "sqlalchemy"])
@pytest.mark.parametrize("refused", [False, True], ids=["plain", "refused-value"])
def test_a_mixed_batch_through_the_queue(
    settings: Settings, sync_engine: sa.Engine, backend: str, refused: bool, direct: bool
) -> None:
    """On PostgreSQL twice: batches straight through the driver (``db.direct``, the
    default) and through SQLAlchemy."""
    if refused and backend == "sqlite":
        pytest.skip("SQLite stores any JSON text: it refuses no value")
    if direct and backend != "postgresql":
        pytest.skip("only PostgreSQL writes batches straight through the driver")
    settings = settings.model_copy(update={"rtif_batch_direct": direct})

    ids = _prepare(settings)
    answers, queue = asyncio.run(_through_queue(settings, ids, refused))
    expected = ["ok", "ok", "ok", "NotFoundError", "StaleTryError", "TryEndedError"]
    assert answers == expected + (["InvalidValueError"] if refused else [])
    # The blocker's batch, then one batch of every queued write (or, when the database
    # refused a value, that batch again write by write).
    assert (queue.stats.batches, queue.stats.largest) == (2, 7 if refused else 6)
    assert queue.stats.split == (1 if refused else 0)
    rows = {r["task_id"]: r for r in rtif_rows(sync_engine)}
    # The two writes to one try collapsed to the latest received.
    assert rows["task_0"]["rendered_fields"] == {"cmd": "latest"}
    assert rows["task_0"]["field_meta"] == {"cmd": {"renderer": "bash"}}
    assert rows["task_1"]["rendered_fields"] == {"cmd": "running"}
    assert rows["task_4"]["rendered_fields"] == {"cmd": "blocker"}
    assert rows["task_2"]["rendered_fields"] == {"cmd": "written while running"}
    assert set(rows) == {"task_0", "task_1", "task_2", "task_4"}


def test_a_batch_stores_an_escaped_nul_as_a_single_write_does(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    """JSON's \\u0000, which a single write stores as sent (PostgreSQL's JSON functions
    would refuse it, its json type does not), is stored by a batch too, in one go."""
    ids = _prepare(settings)
    values = {"queued": {"cmd": "nul \u0000 here"}, "running": {"cmd": "plain"}}

    async def go() -> tuple[list[object], GroupCommit]:
        async with db_engine.open_database(settings) as db:
            queue, blocker, release = await _queue_held(db, ids["other"], {"b": 1})
            tasks = [
                asyncio.create_task(queue.write(db, ids[name], fields, None))
                for name, fields in values.items()
            ]
            await asyncio.sleep(0.05)  # both queued behind the blocker: one batch
            release.set()
            await blocker
            return await asyncio.gather(*tasks, return_exceptions=True), queue

    answers, queue = asyncio.run(go())
    assert answers == [None, None]
    assert (queue.stats.batches, queue.stats.largest, queue.stats.split) == (2, 2, 0)
    rows = {r["task_id"]: r["rendered_fields"] for r in rtif_rows(sync_engine)}
    assert rows["task_0"] == values["queued"] and rows["task_1"] == values["running"]


def test_concurrent_distinct_writers_batch_and_every_row_is_theirs(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine, backend: str
) -> None:
    """32 writers, each on its own try, 20 rounds each with a new value, through the
    real server: every answer 201, every row holds its writer's last value, and the
    queue really formed batches of several writes."""
    writers, rounds = 32, 20
    run = seed(settings, tasks=writers)
    barrier = threading.Barrier(writers)
    codes: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        ti = run.task_instances[n]
        with live_server.client() as client:
            barrier.wait()
            for r in range(rounds):
                resp = client.put(
                    f"/execution/task-instances/{ti.id}/rtif",
                    json={"cmd": f"writer-{n}-round-{r}"},
                    headers=auth(ti.token),
                )
                with lock:
                    codes.append(resp.status_code)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stats = live_server.app.state.rtif_batches.stats
    assert codes == [201] * (writers * rounds)
    stored = {r["task_id"]: r["rendered_fields"] for r in rtif_rows(sync_engine)}
    assert stored == {
        f"task_{n}": {"cmd": f"writer-{n}-round-{rounds - 1}"} for n in range(writers)
    }
    assert stats.writes == writers * rounds
    assert stats.largest > 1
    report(
        f"[{backend}] group commit: {stats.writes} writes in {stats.batches} batches "
        f"(largest {stats.largest}, mean {stats.writes / stats.batches:.1f})"
    )


def test_a_cancelled_request_leaves_the_queue(settings: Settings, sync_engine: sa.Engine) -> None:
    """A request cancelled (its deadline, a client gone) while its write still waits for
    a batch: the write is dropped, as an unbatched write's transaction is rolled back."""
    ids = _prepare(settings)

    async def go() -> GroupCommit:
        async with db_engine.open_database(settings) as db:
            queue, blocker, release = await _queue_held(db, ids["other"], {"cmd": "b"})
            gone = asyncio.create_task(queue.write(db, ids["queued"], {"cmd": "gone"}, None))
            kept = asyncio.create_task(queue.write(db, ids["running"], {"cmd": "kept"}, None))
            await asyncio.sleep(0.05)
            gone.cancel()
            release.set()
            await asyncio.gather(blocker, kept)
            with pytest.raises(asyncio.CancelledError):
                await gone
            return queue

    queue = asyncio.run(go())
    stored = {r["task_id"]: r["rendered_fields"] for r in rtif_rows(sync_engine)}
    assert stored == {
        "task_4": {"cmd": "b"},
        "task_1": {"cmd": "kept"},
        "task_2": {"cmd": "written while running"},
    }
    assert (queue.stats.batches, queue.stats.writes) == (2, 2)


def test_a_request_cancelled_once_its_batch_is_in_the_database_is_stored(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    """Cancelling a request whose write a batch has taken cancels only its answer: the
    write commits with its batch, as an unbatched write past its statement would."""
    ids = _prepare(settings)

    async def go() -> None:
        async with db_engine.open_database(settings) as db:
            queue, taken, release = await _queue_held(
                db, ids["queued"], {"cmd": "taken"}
            )  # its batch is in the database
            taken.cancel()
            with pytest.raises(asyncio.CancelledError):
                await taken
            release.set()
            await queue.aclose()

    asyncio.run(go())
    stored = {r["task_id"]: r["rendered_fields"] for r in rtif_rows(sync_engine)}
    assert stored["task_0"] == {"cmd": "taken"}


def test_two_writes_to_one_try_and_the_latest_is_refused(
    settings: Settings, sync_engine: sa.Engine, backend: str
) -> None:
    """The earlier write is stored on its own; only the refused one gets 422."""
    if backend == "sqlite":
        pytest.skip("SQLite stores any JSON text: it refuses no value")
    ids = _prepare(settings)

    async def go() -> list[str]:
        async with db_engine.open_database(settings) as db:
            queue, blocker, release = await _queue_held(db, ids["other"], {"cmd": "b"})
            writes = [{"cmd": "valid"}, SerializedJson('{"cmd": not json')]
            tasks = [asyncio.create_task(queue.write(db, ids["queued"], f, None)) for f in writes]
            await asyncio.sleep(0.05)
            release.set()
            await blocker
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return [type(r).__name__ if r is not None else "ok" for r in results]

    assert asyncio.run(go()) == ["ok", "InvalidValueError"]
    stored = {r["task_id"]: r["rendered_fields"] for r in rtif_rows(sync_engine)}
    assert stored["task_0"] == {"cmd": "valid"}


def test_a_write_past_its_deadline_is_answered_503_unstored(
    settings: Settings, sync_engine: sa.Engine
) -> None:
    """A write waits behind a batch that outlives the deadline: it is answered 503 and
    never stored, so no request gets 503 while its write may still commit."""
    ids = _prepare(settings)
    short = settings.model_copy(update={"request_timeout_seconds": 0.5})

    async def go() -> tuple[list[str], GroupCommit]:
        async with db_engine.open_database(short) as db:
            queue, blocker, _never = await _queue_held(db, ids["other"], {"cmd": "b"})
            late = asyncio.create_task(queue.write(db, ids["queued"], {"cmd": "late"}, None))
            results = await asyncio.gather(blocker, late, return_exceptions=True)
            return [type(r).__name__ for r in results], queue

    answers, queue = asyncio.run(go())
    assert answers == ["DatabaseUnavailableError", "DatabaseUnavailableError"]
    assert queue.stats.expired == 1
    stored = {r["task_id"] for r in rtif_rows(sync_engine)}
    assert "task_0" not in stored and "task_4" not in stored


def test_batches_are_bounded_in_bytes(settings: Settings, sync_engine: sa.Engine) -> None:
    run = seed(settings, tasks=6)
    ids = [t.id for t in run.task_instances]
    big = SerializedJson('{"cmd": "' + "x" * (100 * 1024) + '"}')

    async def go() -> GroupCommit:
        async with db_engine.open_database(settings) as db:
            queue, blocker, release = await _queue_held(
                db, ids[5], {"cmd": "b"}, max_bytes=250 * 1024
            )
            tasks = [asyncio.create_task(queue.write(db, i, big, None)) for i in ids[:5]]
            await asyncio.sleep(0.05)
            release.set()
            await asyncio.gather(blocker, *tasks)
            return queue

    queue = asyncio.run(go())
    # The blocker, then 5 bodies of 100 KiB in batches of at most 250 KiB: 2, 2, 1.
    assert (queue.stats.batches, queue.stats.largest, queue.stats.writes) == (4, 2, 6)
    assert len(rtif_rows(sync_engine)) == 6
