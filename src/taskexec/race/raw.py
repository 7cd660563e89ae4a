"""The raw ceilings ``taskexec bench`` measures the API against: the service's own upsert
statement and payload, from ``clients`` threads, with no HTTP and no app, on a database
the server is not using at the time.

- ``transaction``: through SQLAlchemy, BEGIN, the upsert, COMMIT per write (three round
  trips), as the unbatched server does it;
- ``autocommit``: the same SQL text straight through the driver's own connection in
  autocommit mode, one round trip per write and no SQLAlchemy on the way: the fastest
  honest way to do one write per transaction.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import connect, types
from taskexec.race import databases, loadgen
from taskexec.services import rendered_fields

KINDS = ("transaction", "autocommit")


def _run_threads(
    clients: int, seconds: float, one_write: Callable[[Any, int, int], None], open_conn: Any
) -> loadgen.LoadResult:
    """``clients`` threads, each on its own connection, writing until the deadline."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    cpu0 = time.process_time()

    failures: list[BaseException] = []

    def worker(c: int) -> None:
        local: list[float] = []
        try:
            with open_conn() as conn:
                i = 0
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    one_write(conn, c, i)
                    local.append(time.perf_counter() - started)
                    i += 1
        except BaseException as exc:
            # A thread that died would leave a ceiling lower than the truth: the
            # measurement fails instead.
            failures.append(exc)
        with lock:
            latencies.extend(local)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return loadgen.LoadResult(
        len(latencies),
        elapsed,
        Counter({201: len(latencies)}),
        latencies,
        time.process_time() - cpu0,
    )


def _share(ti_ids: Sequence[uuid.UUID], clients: int, c: int) -> list[uuid.UUID]:
    return list(ti_ids[c::clients]) or list(ti_ids)


def measure(
    kind: str,
    settings: Settings,
    ti_ids: Sequence[uuid.UUID],
    body: bytes,
    clients: int,
    seconds: float,
) -> loadgen.LoadResult:
    """Writes per second of the raw ceiling ``kind`` (``KINDS``)."""
    fields = json.loads(body)
    # No pool: each thread holds one connection for the run.
    engine = connect.make_sync_engine(settings.effective_database_url, settings)
    stmt = rendered_fields.upsert_statement(engine.dialect.name)
    mine = [_share(ti_ids, clients, c) for c in range(clients)]
    try:
        if kind == "transaction":

            def in_transaction(conn: sa.Connection, c: int, i: int) -> None:
                with conn.begin():
                    conn.execute(stmt, _params(mine[c][i % len(mine[c])], fields))

            return _run_threads(clients, seconds, in_transaction, engine.connect)
        if kind == "autocommit":
            return _autocommit(engine, stmt, mine, fields, clients, seconds)
        raise databases.OptionError(f"unknown raw kind {kind!r}: use {', '.join(KINDS)}")
    finally:
        engine.dispose()


def _params(ti_id: uuid.UUID, fields: Any) -> dict[str, Any]:
    return {
        "ti_id": ti_id,
        "rendered_fields": fields,
        "field_meta": None,
        "updated_at": types.utcnow(),
    }


def _autocommit(
    engine: sa.Engine,
    stmt: sa.Insert,
    mine: list[list[uuid.UUID]],
    fields: Any,
    clients: int,
    seconds: float,
) -> loadgen.LoadResult:
    """The statement's SQL text and values exactly as SQLAlchemy hands them to the
    driver (captured once), executed on the driver's connection with autocommit on;
    only the try's id and the time change from write to write."""
    sql, template, slots = _captured(engine, stmt, fields)
    dialect = engine.dialect
    compiled = stmt.compile(dialect=dialect)

    def processor(name: str) -> Callable[[Any], Any]:
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        return process or (lambda value: value)

    id_of, stamp = processor("ti_id"), processor("updated_at")
    ids = [[id_of(ti) for ti in share] for share in mine]

    def one_write(cursor: Any, c: int, i: int) -> None:
        values = template.copy()
        values[slots["ti_id"]] = ids[c][i % len(ids[c])]
        values[slots["updated_at"]] = stamp(types.utcnow())
        cursor.execute(sql, values if isinstance(values, dict) else tuple(values))

    return _run_threads(clients, seconds, one_write, lambda: _AutocommitCursor(engine))


def _captured(engine: sa.Engine, stmt: sa.Insert, fields: Any) -> tuple[str, Any, dict[str, Any]]:
    """The SQL and parameters SQLAlchemy sends for ``stmt`` (in a transaction rolled
    back), and where in the parameters the try's id and the time go."""
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    marker_id = uuid.uuid4()
    marker_time = datetime.datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=datetime.UTC)
    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            values = {**_params(marker_id, fields), "updated_at": marker_time}
            conn.execute(stmt, values)
            transaction.rollback()
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)
    sql, parameters = next((s, p) for s, p in seen if "rendered_task_instance_fields" in s)
    template = dict(parameters) if isinstance(parameters, dict) else list(parameters)
    positions = template.keys() if isinstance(template, dict) else range(len(template))
    slots = {}
    for slot in positions:
        value = template[slot]
        if value == marker_id or value == marker_id.hex or value == str(marker_id):
            slots["ti_id"] = slot
        elif isinstance(value, datetime.datetime | str) and "2001-02-03" in str(value):
            slots["updated_at"] = slot
    assert set(slots) == {"ti_id", "updated_at"}, (sql, parameters)
    return sql, template, slots


class _AutocommitCursor:
    """A driver connection in autocommit mode and its cursor, for one thread."""

    def __init__(self, engine: sa.Engine) -> None:
        self._fairy = engine.raw_connection()
        driver = self._fairy.dbapi_connection
        assert driver is not None
        if engine.dialect.name == "sqlite":
            driver.isolation_level = None
        elif engine.dialect.name == "mysql":
            driver.autocommit(True)
        else:
            driver.autocommit = True
        self._cursor = driver.cursor()

    def __enter__(self) -> Any:
        return self._cursor

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()
        self._fairy.close()
