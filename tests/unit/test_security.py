"""Tokens and the signing secret."""

from __future__ import annotations

import stat
import threading
import time
import uuid
from pathlib import Path

import pytest

from taskexec import errors
from taskexec.config import Settings
from taskexec.security import TokenSigner, load_or_create_secret


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path)
    second = load_or_create_secret(tmp_path)
    assert first == second and len(first) >= 40
    mode = stat.S_IMODE((tmp_path / "jwt_secret").stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["jwt_secret"]


def test_concurrent_creation_agrees_on_one_secret(tmp_path: Path) -> None:
    seen: list[str] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        seen.append(load_or_create_secret(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1


def test_mint_and_decode(tmp_path: Path) -> None:
    signer = TokenSigner(Settings(data_dir=tmp_path))
    ti_id = uuid.uuid4()
    claims = signer.decode(signer.mint(ti_id))
    assert claims["sub"] == str(ti_id)
    assert {"aud", "iat", "nbf", "exp"} <= set(claims)
    assert not signer.needs_refresh(claims)


def test_needs_refresh_near_expiry(tmp_path: Path) -> None:
    signer = TokenSigner(Settings(data_dir=tmp_path, jwt_expiration_seconds=600))
    claims = signer.decode(signer.mint(uuid.uuid4(), lifetime=100))
    assert signer.needs_refresh(claims)  # 100 s left of 600: under 20%


def test_expired_and_foreign_tokens(tmp_path: Path) -> None:
    signer = TokenSigner(Settings(data_dir=tmp_path, jwt_leeway_seconds=0))
    other = TokenSigner(Settings(data_dir=tmp_path / "other"))
    expired = signer.mint(uuid.uuid4(), lifetime=1)
    time.sleep(1.1)
    with pytest.raises(errors.ExpiredTokenError):
        signer.decode(expired)
    with pytest.raises(errors.InvalidTokenError):
        signer.decode(other.mint(uuid.uuid4()))


def test_a_remembered_token_still_expires(tmp_path: Path) -> None:
    signer = TokenSigner(Settings(data_dir=tmp_path, jwt_leeway_seconds=0))
    token = signer.mint(uuid.uuid4(), lifetime=1)
    first = signer.decode(token)
    assert signer.decode(token) is first  # verified once, then remembered
    time.sleep(1.1)
    with pytest.raises(errors.ExpiredTokenError):
        signer.decode(token)


def test_the_token_memory_is_bounded(tmp_path: Path) -> None:
    signer = TokenSigner(Settings(data_dir=tmp_path))
    signer._cache_size = 3
    tokens = [signer.mint(uuid.uuid4()) for _ in range(5)]
    for token in tokens:
        signer.decode(token)
    assert list(signer._verified) == tokens[-3:]
