"""``/execution/health``: liveness, and whether the database answers."""

from __future__ import annotations

from fastapi import APIRouter

from taskexec.api.deps import DbDep
from taskexec.services import health as health_service

router = APIRouter(tags=["health"])

HEALTH_DEADLINE_SECONDS = 0.9


@router.get("/health")
async def health(db: DbDep) -> dict[str, str]:
    """``{"status": "healthy"}`` when the server and its database answer; within a
    second either way (503 ``database_unavailable`` when the database does not)."""
    await db.within(HEALTH_DEADLINE_SECONDS).read(health_service.ping)
    return {"status": "healthy"}
