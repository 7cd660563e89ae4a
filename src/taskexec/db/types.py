"""Column types and id generation shared by the models and the migrations."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect


def uuid7() -> uuid.UUID:
    """A new RFC 9562 version-7 UUID: 48 bits of Unix milliseconds, then randomness."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)


class UtcDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    MySQL/MariaDB and SQLite keep no zone, so values are stored as naive UTC there;
    MySQL gets microsecond precision (``DATETIME(6)``), which its default lacks.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        # A naive value (a client that sent no offset) is taken to be UTC.
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        if dialect.name != "postgresql":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        moment: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)


# Plain JSON everywhere (json on PostgreSQL, not jsonb): it stores exactly what the worker
# sent, accepts any valid JSON text (jsonb rejects \u0000) and skips the binary conversion.
JsonType = sa.JSON()
