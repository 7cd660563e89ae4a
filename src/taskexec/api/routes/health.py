"""``/execution/health``: liveness, and whether the database answers."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncConnection

from taskexec.api.deps import DbDep

router = APIRouter(tags=["health"])


async def _ping(*, conn: AsyncConnection) -> None:
    await conn.execute(sa.text("SELECT 1"))


@router.get("/health")
async def health(db: DbDep) -> dict[str, str]:
    """``{"status": "healthy"}`` when the server and its database answer."""
    await db.read(_ping)
    return {"status": "healthy"}
