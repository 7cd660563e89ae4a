"""Per-task-instance JWTs: the signing secret, minting and validation."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from taskexec import errors
from taskexec.config import Settings

ALGORITHM = "HS256"
SECRET_FILE = "jwt_secret"


def load_or_create_secret(data_dir: Path) -> str:
    """The signing secret kept in ``data_dir``; created once, mode 0600, never logged.

    Several server processes may start at once: the secret is written to a private
    temporary file and hard-linked into place, so exactly one version ever wins and
    no reader sees a half-written file.
    """
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(48).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; use its secret
        finally:
            tmp.unlink()
    return path.read_text().strip()


class TokenSigner:
    """Mints and validates the Bearer tokens of the Execution API."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.jwt_secret.get_secret_value() or load_or_create_secret(settings.data_dir)
        self._secret = secret
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.lifetime = settings.jwt_expiration_seconds
        self.leeway = settings.jwt_leeway_seconds
        # Airflow's rule: refresh once at most 20% of the lifetime (and ≥ 30 s) is left.
        self.refresh_window = max(self.lifetime * 0.2, min(30, self.lifetime / 2))
        # token → verified claims, oldest first (bounded; see ``decode``).
        self._verified: dict[str, dict[str, Any]] = {}
        self._cache_size = 10_000

    def mint(self, ti_id: uuid.UUID, *, lifetime: int | None = None) -> str:
        """A token whose subject is ``ti_id``."""
        now = int(time.time())
        claims = {
            "sub": str(ti_id),
            "aud": self.audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + (lifetime or self.lifetime),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> dict[str, Any]:
        """The validated claims; raises a 401-class error for any invalid token.

        A worker sends the same token with each of its requests, so a token whose
        signature was verified is remembered (by its exact bytes) and only its time
        claims are checked again: the HMAC and JSON work are done once per token.
        """
        cached = self._verified.get(token)
        if cached is not None:
            now = time.time()
            if float(cached["exp"]) + self.leeway < now:
                del self._verified[token]
                raise errors.ExpiredTokenError()
            return cached
        claims = self._decode(token)
        if len(self._verified) >= self._cache_size:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = claims
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["sub", "aud", "iat", "nbf", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise errors.ExpiredTokenError() from exc
        except jwt.InvalidAudienceError as exc:
            raise errors.InvalidTokenError("The token's audience is not this server.") from exc
        except jwt.InvalidSignatureError as exc:
            raise errors.InvalidTokenError("The token's signature is not valid.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise errors.InvalidTokenError("The token is not valid yet.") from exc
        except jwt.PyJWTError as exc:
            raise errors.InvalidTokenError() from exc
        return claims

    def needs_refresh(self, claims: dict[str, Any]) -> bool:
        """True when the token is close enough to expiry to send a fresh one."""
        return float(claims["exp"]) - time.time() <= self.refresh_window
