"""PUT/GET /execution/task-instances/{id}/rtif on every backend, through a live server."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest
import sqlalchemy as sa

from taskexec.api import bodies
from taskexec.config import Settings
from taskexec.security import TokenSigner
from taskexec.wire import protocol

from helpers import auth, rtif_rows, seed

RTIF_MESSAGE = {"message": "Rendered task instance fields successfully set"}


def _url(ti_id: object) -> str:
    return f"/execution/task-instances/{ti_id}/rtif"


def _assert_error(resp: httpx.Response, status: int, reason: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    detail = resp.json()["detail"]
    assert detail["reason"] == reason
    assert isinstance(detail["message"], str) and detail["message"]
    return detail


@pytest.mark.parametrize(
    "fields",
    [
        {"bash_command": "echo hello", "env": None},
        {"sql": "SELECT 1", "params": {"a": [1, 2.5, True, None], "b": {"c": "d"}}},
        {},
        {"unicode": "naïve ✓ 🚀 \u0000 end", "big": 2**62, "neg": -1.5e300},
    ],
    ids=["bash", "nested", "empty", "unicode"],
)
def test_put_rtif_stores_fields(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine, fields: dict[str, object]
) -> None:
    ti = seed(settings).task_instances[0]
    resp = client.put(_url(ti.id), json=fields, headers=auth(ti.token))
    assert resp.status_code == 201, resp.text
    assert resp.json() == RTIF_MESSAGE
    rows = rtif_rows(sync_engine)
    assert len(rows) == 1
    assert rows[0]["rendered_fields"] == fields
    assert rows[0]["try_number"] == 1
    assert (rows[0]["task_id"], rows[0]["map_index"]) == (ti.task_id, ti.map_index)


def test_second_write_updates_the_row(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    first = client.put(_url(ti.id), json={"cmd": "first"}, headers=auth(ti.token))
    before = rtif_rows(sync_engine)[0]["updated_at"]
    second = client.put(_url(ti.id), json={"cmd": "second", "x": 1}, headers=auth(ti.token))
    assert (first.status_code, second.status_code) == (201, 201)
    rows = rtif_rows(sync_engine)
    assert len(rows) == 1
    assert rows[0]["rendered_fields"] == {"cmd": "second", "x": 1}
    assert rows[0]["updated_at"] >= before


def test_identical_repeat_is_2xx(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    codes = [
        client.put(_url(ti.id), json={"a": 1}, headers=auth(ti.token)).status_code for _ in range(3)
    ]
    assert codes == [201, 201, 201]
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"a": 1}]


def test_mapped_task_instances_get_their_own_rows(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    run = seed(settings, tasks=1, map_count=3)
    for ti in run.task_instances:
        resp = client.put(_url(ti.id), json={"i": ti.map_index}, headers=auth(ti.token))
        assert resp.status_code == 201
    rows = sorted(rtif_rows(sync_engine), key=lambda r: r["map_index"])
    assert [(r["map_index"], r["rendered_fields"]) for r in rows] == [
        (0, {"i": 0}),
        (1, {"i": 1}),
        (2, {"i": 2}),
    ]


def test_get_rtif_returns_stored_fields(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    missing = client.get(_url(ti.id), headers=auth(ti.token))
    _assert_error(missing, 404, "not_found")
    client.put(_url(ti.id), json={"bash_command": "ls"}, headers=auth(ti.token))
    resp = client.get(_url(ti.id), headers=auth(ti.token))
    assert resp.status_code == 200
    body = resp.json()
    assert body["rendered_fields"] == {"bash_command": "ls"}
    assert body["try_number"] == 1
    assert body["task_instance_id"] == str(ti.id)
    assert body["updated_at"].endswith(("Z", "+00:00"))


def test_unknown_id_is_404(client: httpx.Client, settings: Settings) -> None:
    ghost = uuid.uuid4()
    token = TokenSigner(settings).mint(ghost)
    resp = client.put(_url(ghost), json={"a": 1}, headers=auth(token))
    _assert_error(resp, 404, "not_found")


def test_missing_token_is_401(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    resp = client.put(_url(ti.id), json={"a": 1})
    _assert_error(resp, 401, "missing_token")
    assert resp.headers["www-authenticate"] == "Bearer"


def test_expired_token_is_401(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    now = int(time.time())
    claims = {
        "sub": str(ti.id),
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now - 1000,
        "nbf": now - 1000,
        "exp": now - 100,
    }
    token = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
    _assert_error(client.put(_url(ti.id), json={}, headers=auth(token)), 401, "token_expired")


@pytest.mark.parametrize("problem", ["signature", "audience", "garbage"])
def test_invalid_token_is_403(client: httpx.Client, settings: Settings, problem: str) -> None:
    ti = seed(settings).task_instances[0]
    now = int(time.time())
    claims = {
        "sub": str(ti.id),
        "aud": "someone-else" if problem == "audience" else settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    }
    secret = "wrong-secret-" * 4 if problem == "signature" else settings.jwt_secret
    key = secret if isinstance(secret, str) else secret.get_secret_value()
    token = "not.a.jwt" if problem == "garbage" else jwt.encode(claims, key, algorithm="HS256")
    _assert_error(client.put(_url(ti.id), json={}, headers=auth(token)), 403, "invalid_token")


def test_token_for_another_ti_is_403_and_writes_nothing(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    a, b = seed(settings, tasks=2).task_instances
    resp = client.put(_url(b.id), json={"evil": True}, headers=auth(a.token))
    _assert_error(resp, 403, "token_subject_mismatch")
    assert rtif_rows(sync_engine) == []


def test_cross_ti_check_needs_no_database(live_server: object, settings: Settings) -> None:
    """The subject check happens before any database access: it holds with the DB gone."""
    from conftest import LiveServer

    assert isinstance(live_server, LiveServer)
    a, b = seed(settings, tasks=2).task_instances
    db = live_server.app.state.db

    async def no_db(*args: object, **kwargs: object) -> None:
        raise AssertionError("the database was touched")

    original_write, db.write = db.write, no_db
    try:
        with live_server.client() as c:
            resp = c.put(_url(b.id), json={}, headers=auth(a.token))
    finally:
        db.write = original_write
    _assert_error(resp, 403, "token_subject_mismatch")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_body"),
        (b"[1, 2, 3]", "invalid_body"),
        (b'"a string"', "invalid_body"),
        (b"", "invalid_body"),
        (b'{"n": NaN}', "invalid_body"),
        (b'{"deep": ' + b"[" * 300 + b"]" * 300 + b"}", "invalid_body"),
    ],
)
def test_bad_body_is_422(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine, body: bytes, reason: str
) -> None:
    ti = seed(settings).task_instances[0]
    resp = client.put(
        _url(ti.id),
        content=body,
        headers={**auth(ti.token), "content-type": "application/json"},
    )
    _assert_error(resp, 422, reason)
    assert rtif_rows(sync_engine) == []


def test_non_uuid_id_is_422(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    resp = client.put(_url("not-a-uuid"), json={}, headers=auth(ti.token))
    detail = _assert_error(resp, 422, "validation_error")
    assert "not-a-uuid" not in resp.text or "errors" in detail


def test_oversized_body_is_413_by_content_length(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    big = {"blob": "x" * (settings.max_request_body_bytes + 10)}
    resp = client.put(_url(ti.id), json=big, headers=auth(ti.token))
    _assert_error(resp, 413, "payload_too_large")
    assert rtif_rows(sync_engine) == []


def test_oversized_chunked_body_is_413(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    chunk = b"x" * 65536
    count = settings.max_request_body_bytes // len(chunk) + 2

    def body() -> object:
        yield b'{"blob": "'
        for _ in range(count):
            yield chunk
        yield b'"}'

    resp = client.put(
        _url(ti.id),
        content=body(),  # type: ignore[arg-type]
        headers={**auth(ti.token), "content-type": "application/json"},
    )
    _assert_error(resp, 413, "payload_too_large")
    assert rtif_rows(sync_engine) == []


def test_body_just_under_limit_is_accepted(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    blob = "y" * (settings.max_request_body_bytes - 100)
    resp = client.put(_url(ti.id), json={"b": blob}, headers=auth(ti.token))
    assert resp.status_code == 201, resp.text


def test_refreshed_token_near_expiry(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    signer = TokenSigner(settings)
    fresh = client.put(_url(ti.id), json={}, headers=auth(ti.token))
    assert "refreshed-api-token" not in fresh.headers
    short = signer.mint(ti.id, lifetime=20)
    resp = client.put(_url(ti.id), json={}, headers=auth(short))
    assert resp.status_code == 201
    new_token = resp.headers["refreshed-api-token"]
    claims = signer.decode(new_token)
    assert claims["sub"] == str(ti.id)
    assert claims["exp"] - time.time() > 500
    again = client.put(_url(ti.id), json={}, headers=auth(new_token))
    assert again.status_code == 201


def test_correlation_id_is_echoed(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    resp = client.put(_url(ti.id), json={}, headers={**auth(ti.token), "correlation-id": "abc-123"})
    assert resp.headers["correlation-id"] == "abc-123"


def test_unknown_route_is_structured_404(client: httpx.Client) -> None:
    resp = client.get("/execution/nope")
    _assert_error(resp, 404, "not_found")


def test_openapi_documents_put_rtif(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/execution/task-instances/{task_instance_id}/rtif"]["put"]
    assert op["operationId"] == "put_rtif"
    assert "201" in op["responses"]
    assert client.get("/docs").status_code == 200


def test_no_refreshed_token_for_an_ended_stale_or_unknown_try(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    first, second = seed(settings, tasks=2, max_tries=1).task_instances
    signer = TokenSigner(settings)
    runner = {"hostname": "w", "pid": 1}
    state = f"/execution/task-instances/{first.id}/state"
    short = signer.mint(first.id, lifetime=20)  # near expiry: would be refreshed
    assert (
        client.patch(
            f"/execution/task-instances/{first.id}/run", json=runner, headers=auth(short)
        ).status_code
        == 200
    )
    assert client.put(_url(first.id), json={"v": "ran"}, headers=auth(short)).status_code == 201
    ended = client.patch(state, json={"state": "success"}, headers=auth(short))
    assert ended.status_code == 204 and "refreshed-api-token" not in ended.headers
    # The ended try's token can no longer write: 409, and the fields stay as they were.
    late = client.put(_url(first.id), json={"v": "late"}, headers=auth(short))
    assert late.status_code == 409 and "refreshed-api-token" not in late.headers
    assert late.json()["detail"] == {
        "reason": "try_ended",
        "message": "This try has ended: what it stored stays as it was.",
        "current_state": "success",
    }
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [{"v": "ran"}]
    # An earlier try's token (replaced by a retry) gets 410 and no new token.
    client.patch(
        f"/execution/task-instances/{second.id}/run", json=runner, headers=auth(second.token)
    )
    client.patch(
        f"/execution/task-instances/{second.id}/state",
        json={"state": "up_for_retry"},
        headers=auth(second.token),
    )
    stale = client.put(_url(second.id), json={}, headers=auth(signer.mint(second.id, lifetime=20)))
    assert stale.status_code == 410 and "refreshed-api-token" not in stale.headers
    # A valid token for a task instance that does not exist: 404, no new token.
    unknown = uuid.uuid4()
    missing = client.put(_url(unknown), json={}, headers=auth(signer.mint(unknown, lifetime=20)))
    assert missing.status_code == 404 and "refreshed-api-token" not in missing.headers


def test_a_large_body_is_masked_and_stored_off_the_event_loop(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    """A body over bodies.OFFLOAD_BYTES is parsed and masked in a worker process and
    stored from its JSON text: the same answers and the same stored value as inline."""
    ti = seed(settings).task_instances[0]
    rows = [{"id": n, "dsn": f"postgres://u:pw-{n}@h/db"} for n in range(3000)]
    body = {"rows": rows, "password": "hunter2", "note": "x" * 10}
    raw = json.dumps(body).encode()
    assert len(raw) > bodies.OFFLOAD_BYTES
    resp = client.put(
        _url(ti.id), content=raw, headers={**auth(ti.token), "content-type": "application/json"}
    )
    assert resp.status_code == 201, resp.text
    (stored,) = [r["rendered_fields"] for r in rtif_rows(sync_engine)]
    assert stored["password"] == "***" and stored["note"] == "x" * 10
    assert stored["rows"][7] == {"id": 7, "dsn": "***"}
    assert "pw-7" not in json.dumps(stored)
    got = client.get(_url(ti.id), headers=auth(ti.token)).json()
    assert got["rendered_fields"] == stored
    # Refusals from the worker process are the same 422s.
    bad = client.put(_url(ti.id), content=b"[" + b"1," * 40000 + b"1]", headers=auth(ti.token))
    assert bad.status_code == 422 and bad.json()["detail"]["reason"] == "invalid_body"
    deep = b'{"a":' + b"[" * 300 + b"1" + b"]" * 300 + b"," + b'"pad":"' + b"y" * 70000 + b'"}'
    too_deep = client.put(_url(ti.id), content=deep, headers=auth(ti.token))
    assert too_deep.status_code == 422, too_deep.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_is_415(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine, content_type: str
) -> None:
    ti = seed(settings).task_instances[0]
    resp = client.put(
        _url(ti.id), content=b'{"a": 1}', headers={**auth(ti.token), "content-type": content_type}
    )
    _assert_error(resp, 415, "unsupported_media_type")
    assert rtif_rows(sync_engine) == []
    # JSON with parameters, a +json type, and no Content-Type at all (read as JSON).
    for headers in (
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "application/vnd.api+json"},
        {},
    ):
        ok = client.put(_url(ti.id), content=b'{"a": 1}', headers={**auth(ti.token), **headers})
        assert ok.status_code == 201, (headers, ok.text)


def test_one_nesting_limit_on_every_database(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    """At the limit (the body's object counts as one level) stored and read back alike;
    one level past it a 422, before anything is stored."""
    ti = seed(settings).task_instances[0]

    def nested(levels: int) -> dict[str, object]:
        value: object = 1
        for _ in range(levels - 1):
            value = [value]
        return {"a": value}

    at_limit = nested(protocol.MAX_NESTING_DEPTH)
    resp = client.put(_url(ti.id), json=at_limit, headers=auth(ti.token))
    assert resp.status_code == 201, resp.text
    assert client.get(_url(ti.id), headers=auth(ti.token)).json()["rendered_fields"] == at_limit
    past = client.put(
        _url(ti.id), json=nested(protocol.MAX_NESTING_DEPTH + 1), headers=auth(ti.token)
    )
    _assert_error(past, 422, "invalid_body")
    assert [r["rendered_fields"] for r in rtif_rows(sync_engine)] == [at_limit]
