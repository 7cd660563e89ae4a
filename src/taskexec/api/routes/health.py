"""``/execution/health``: liveness, and whether the database answers."""

from __future__ import annotations

from fastapi import APIRouter

from taskexec.api.deps import DbDep
from taskexec.services import health as health_service

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(db: DbDep) -> dict[str, str]:
    """``{"status": "healthy"}`` when the server and its database answer."""
    await db.read(health_service.ping)
    return {"status": "healthy"}
