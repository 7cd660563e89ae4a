"""Request dependencies: the database (transaction owner), settings and auth.

All are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in
its threadpool, a thread hop per request that the hot path cannot afford.
"""

from __future__ import annotations

import hmac
import ipaddress
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taskexec import errors
from taskexec.api import bodies, group_commit, middleware
from taskexec.config import Settings
from taskexec.db.engine import Database
from taskexec.security import TokenSigner
from taskexec.services import rendered_fields
from taskexec.wire import jsontree
from taskexec.wire.schemas import INT32_MAX


async def get_db(request: Request) -> Database:
    """The app's transaction owner."""
    db: Database = request.app.state.db
    return db


async def get_bodies(request: Request) -> bodies.BodyProcessor:
    """The server's rendered-fields body processor (parsing, depth check, masking)."""
    processor: bodies.BodyProcessor = request.app.state.bodies
    return processor


# How PUT /rtif stores fields, given the transaction owner. Production uses the
# process's group commit (``api.group_commit``), or ``store_rendered_fields`` when
# batching is off; ``taskexec race`` overrides this dependency to compare the old
# read-then-write strategies against it on an otherwise identical server.
RtifWriter = Callable[
    [Database, uuid.UUID, jsontree.JsonFields, dict[str, Any] | None], Awaitable[None]
]


async def store_rendered_fields(
    db: Database, ti_id: uuid.UUID, fields: jsontree.JsonFields, meta: dict[str, Any] | None
) -> None:
    """The production write: one upsert statement in one transaction."""
    await db.write(rendered_fields.upsert_rendered_fields, ti_id=ti_id, fields=fields, meta=meta)


def rtif_writer(app: Any) -> RtifWriter:
    """The rendered-fields write strategy: the upsert, in batches (group commit) unless
    ``TASKEXEC_RTIF_BATCH_MAX`` is 1."""
    batches: group_commit.GroupCommit | None = app.state.rtif_batches
    return store_rendered_fields if batches is None else batches.write


async def get_rtif_writer(request: Request) -> RtifWriter:
    """``rtif_writer`` as a dependency (which ``taskexec race`` overrides)."""
    return rtif_writer(request.app)


DbDep = Annotated[Database, Depends(get_db)]
# A task instance's map index in a query (-1: not mapped), within the INT column.
MapIndex = Annotated[int, Query(ge=-1, le=INT32_MAX, description="map index (-1: not mapped)")]
RtifWriterDep = Annotated[RtifWriter, Depends(get_rtif_writer)]
BodiesDep = Annotated[bodies.BodyProcessor, Depends(get_bodies)]

_bearer = HTTPBearer(auto_error=False, description="A task-instance JWT (sub = the id).")


async def require_ti_token(
    request: Request,
    task_instance_id: Annotated[uuid.UUID, Path(description="The task instance's try id.")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> uuid.UUID:
    """Checks the Bearer token and that its subject is the path's task instance.

    Decided before any database access, so a worker can only ever touch its own try.
    """
    token = credentials.credentials if credentials is not None else None
    return check_ti_token(request.app.state.signer, token, task_instance_id, request.scope)


def check_ti_token(
    signer: TokenSigner, token: str | None, ti_id: uuid.UUID, scope: MutableMapping[str, Any]
) -> uuid.UUID:
    """``require_ti_token``'s check, for the route and for the hot path (``rtif_hot_path``):
    the id, or a 401/403-class error. A token near expiry puts a fresh one in the
    request's state, for ``RequestContextMiddleware`` to send."""
    if token is None:
        raise errors.MissingTokenError()
    claims = signer.decode(token)
    try:
        subject = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise errors.InvalidTokenError("The token's subject is not a task instance id.") from exc
    if subject != ti_id:
        raise errors.TokenSubjectMismatchError()
    if signer.needs_refresh(claims):
        scope.setdefault("state", {})[middleware.REFRESH_STATE_KEY] = signer.mint(ti_id)
    return ti_id


TaskInstanceIdDep = Annotated[uuid.UUID, Depends(require_ti_token)]


# The web page keeps the read token in this cookie (set by its sign-in form), since a
# browser cannot send a Bearer header when following a link.
READ_TOKEN_COOKIE = "taskexec_api_token"
_read_bearer = HTTPBearer(auto_error=False, description="The read API token (TASKEXEC_API_TOKEN).")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1, or 127.x mapped to IPv6)."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _loopback_request(request: Request) -> bool:
    # The client's address, and also the name it asked for: a page on another site whose
    # name was rebound to 127.0.0.1 (DNS rebinding) comes from loopback too, but asks
    # for its own name, not for localhost.
    client = request.client.host if request.client else None
    asked = request.url.hostname
    return is_loopback(client) and (asked == "localhost" or is_loopback(asked))


def open_read_warning(host: str, settings: Settings) -> str | None:
    """The warning to print when the server listens beyond loopback without a read token."""
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    if token or host == "localhost" or is_loopback(host):
        return None
    return (
        f"listening on {host} without TASKEXEC_API_TOKEN: the read API (/api/v1) and the "
        "web page (/ui) answer loopback clients only, and refuse everyone else with 403. "
        "Set TASKEXEC_API_TOKEN to let others read with that token."
    )


async def require_reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_read_bearer)],
) -> None:
    """The read side's own auth, separate from the workers' task tokens.

    With ``TASKEXEC_API_TOKEN`` set, every request must carry it (Bearer header, or the
    web page's cookie). Without it, only loopback clients are answered: the embedded
    default stays zero-setup, and a server exposed on a network does not leak what ran.
    (The Host asked for must be a loopback name too, against DNS rebinding.)
    """
    configured = request.app.state.settings.api_token
    expected = configured.get_secret_value() if configured is not None else ""
    if not expected:
        if not _loopback_request(request):
            raise errors.ReadAccessDeniedError()
        return
    given = credentials.credentials if credentials else request.cookies.get(READ_TOKEN_COOKIE)
    if not given:
        raise errors.MissingTokenError("The read API needs the API token as a Bearer token.")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.InvalidTokenError("The API token is not the one this server was given.")


ReaderDep = Depends(require_reader)
