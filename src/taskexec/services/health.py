"""Whether the database answers (``/health``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


async def ping(conn: AsyncConnection) -> None:
    """One round trip to the database; raises if it does not answer."""
    await conn.execute(sa.text("SELECT 1"))
