"""Request dependencies: the database (transaction owner), settings and auth.

All are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in
its threadpool, a thread hop per request that the hot path cannot afford.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taskexec import errors, masking
from taskexec.api import middleware
from taskexec.config import Settings
from taskexec.db.engine import Database
from taskexec.security import TokenSigner


async def get_db(request: Request) -> Database:
    """The app's transaction owner."""
    db: Database = request.app.state.db
    return db


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_masker(request: Request) -> masking.SecretsMasker:
    """The server's masker: sensitive names and secret-looking values."""
    masker: masking.SecretsMasker = request.app.state.masker
    return masker


DbDep = Annotated[Database, Depends(get_db)]
MaskerDep = Annotated[masking.SecretsMasker, Depends(get_masker)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(auto_error=False, description="A task-instance JWT (sub = the id).")


async def require_ti_token(
    request: Request,
    task_instance_id: Annotated[uuid.UUID, Path(description="The task instance's try id.")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> uuid.UUID:
    """Checks the Bearer token and that its subject is the path's task instance.

    Decided before any database access, so a worker can only ever touch its own try.
    """
    if credentials is None:
        raise errors.MissingTokenError()
    signer: TokenSigner = request.app.state.signer
    claims = signer.decode(credentials.credentials)
    try:
        subject = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise errors.InvalidTokenError("The token's subject is not a task instance id.") from exc
    if subject != task_instance_id:
        raise errors.TokenSubjectMismatchError()
    if signer.needs_refresh(claims):
        request.scope.setdefault("state", {})[middleware.REFRESH_STATE_KEY] = signer.mint(
            task_instance_id
        )
    return task_instance_id


TaskInstanceIdDep = Annotated[uuid.UUID, Depends(require_ti_token)]
