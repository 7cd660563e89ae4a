"""The read API (/api/v1) on every backend, through a live server: pagination, filters,
404s with reasons, and its own auth (token, or loopback only)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from taskexec import errors, schemas
from taskexec.api.deps import is_loopback, open_read_warning
from taskexec.config import Settings
from taskexec.db import models
from taskexec.server.app import create_app
from taskexec.wire import protocol

from conftest import LiveServer
from helpers import auth, end_run, get_as, only, seed, seed_run

API = "/api/v1"


def _assert_error(resp: httpx.Response, status: int, reason: str) -> None:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert detail["reason"] == reason
    assert isinstance(detail["message"], str) and detail["message"]


def _put(
    client: httpx.Client, ti: schemas.CreatedTaskInstance, fields: object, meta: object = None
) -> None:
    headers = auth(ti.token)
    if meta is not None:
        headers[protocol.FIELD_META_HEADER] = json.dumps(meta)
    resp = client.put(f"/execution/task-instances/{ti.id}/rtif", json=fields, headers=headers)
    assert resp.status_code == 201, resp.text


def test_dags_runs_and_pagination(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    runs = [seed_run(settings, dag_id="alpha", tasks=1) for _ in range(5)]
    seed_run(settings, dag_id="beta", tasks=2)
    end_run(settings, sync_engine, runs[1].run_id, "success")
    end_run(settings, sync_engine, runs[3].run_id, "success")

    body = client.get(f"{API}/dags").json()
    assert body["total"] == 2
    assert [(d["dag_id"], d["run_count"]) for d in body["items"]] == [("alpha", 5), ("beta", 1)]
    page = client.get(f"{API}/dags", params={"limit": 1, "offset": 1}).json()
    assert [d["dag_id"] for d in page["items"]] == ["beta"]
    assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)

    # Newest first: the last created run comes first.
    newest_first = [r.run_id for r in reversed(runs)]
    body = client.get(f"{API}/dags/alpha/runs").json()
    assert body["total"] == 5
    assert [r["run_id"] for r in body["items"]] == newest_first
    pages = [
        client.get(f"{API}/dags/alpha/runs", params={"limit": 2, "offset": o}).json()
        for o in (0, 2, 4)
    ]
    assert [r["run_id"] for p in pages for r in p["items"]] == newest_first
    assert [len(p["items"]) for p in pages] == [2, 2, 1]

    done = client.get(f"{API}/dags/alpha/runs", params={"state": "success"}).json()
    assert done["total"] == 2
    assert [r["run_id"] for r in done["items"]] == [runs[3].run_id, runs[1].run_id]
    assert all(r["state"] == "success" for r in done["items"])


def test_task_instances_filters(client: httpx.Client, settings: Settings) -> None:
    run = seed(settings, tasks=2, map_count=3)
    first = run.task_instances[0]
    resp = client.patch(
        f"/execution/task-instances/{first.id}/run",
        json={
            "state": "running",
            "hostname": "h",
            "unixname": "u",
            "pid": 1,
            "start_date": "2026-11-24T00:00:00Z",
        },
        headers=auth(first.token),
    )
    assert resp.status_code == 200, resp.text
    _put(client, first, {"sql": "SELECT 1"})

    base = f"{API}/dags/test_dag/runs/{run.run_id}/task-instances"
    body = client.get(base).json()
    assert body["total"] == 6
    keys = [(t["task_id"], t["map_index"]) for t in body["items"]]
    assert keys == [(f"task_{n}", m) for n in range(2) for m in range(3)]
    assert {t["try_number"] for t in body["items"]} == {1}
    with_fields = [t for t in body["items"] if t["has_rendered_fields"]]
    assert [(t["task_id"], t["map_index"]) for t in with_fields] == [
        (first.task_id, first.map_index)
    ]

    running = client.get(base, params={"state": "running"}).json()
    assert running["total"] == 1
    assert running["items"][0]["id"] == str(first.id)
    assert running["items"][0]["state"] == "running"

    one_task = client.get(base, params={"task_id": "task_1", "limit": 2}).json()
    assert one_task["total"] == 3
    assert [t["map_index"] for t in one_task["items"]] == [0, 1]
    queued_task_1 = client.get(base, params={"task_id": "task_1", "state": "queued"}).json()
    assert queued_task_1["total"] == 3


def test_rendered_fields_view(client: httpx.Client, settings: Settings) -> None:
    run = seed(settings, tasks=1, map_count=3)
    ti = run.task_instances[1]
    notice = "Truncated. You can change this behaviour in max_templated_field_length. "
    _put(
        client,
        ti,
        {"sql": "SELECT 1", "env": {"A": "1"}, "long": notice + "'abc'... ", "other": None},
        meta={
            "sql": {"renderer": "sql"},
            "env": {"renderer": "json"},
            "long": {"truncated_at": 80},
        },
    )
    url = f"{API}/dags/test_dag/runs/{run.run_id}/task-instances/{ti.task_id}/rendered-fields"
    body = client.get(url, params={"map_index": ti.map_index}).json()
    assert (body["task_id"], body["map_index"], body["try_number"]) == (ti.task_id, 1, 1)
    assert body["map_indexes"] == [0, 1, 2]
    assert body["updated_at"]
    fields = {f["name"]: f for f in body["fields"]}
    assert fields["sql"] == {
        "name": "sql",
        "value": "SELECT 1",
        "renderer": "sql",
        "truncated": False,
        "truncated_at": None,
    }
    assert fields["env"]["value"] == {"A": "1"}
    assert fields["env"]["renderer"] == "json"
    assert fields["long"]["truncated"] is True
    assert fields["long"]["truncated_at"] == 80
    assert fields["other"]["renderer"] is None
    assert fields["other"]["truncated"] is False


def test_rendered_fields_without_meta_still_marks_truncation(
    client: httpx.Client, settings: Settings
) -> None:
    # An Airflow worker sends no meta header: the notice alone marks truncation.
    ti = seed(settings).task_instances[0]
    notice = "Truncated. You can change this behaviour in max_templated_field_length. "
    _put(client, ti, {"sql": notice + "'SELECT'... "})
    run_id = client.get(f"{API}/dags/test_dag/runs").json()["items"][0]["run_id"]
    url = f"{API}/dags/test_dag/runs/{run_id}/task-instances/{ti.task_id}/rendered-fields"
    (field,) = client.get(url).json()["fields"]
    assert (field["truncated"], field["truncated_at"], field["renderer"]) == (True, None, None)


def test_meta_header_for_fields_not_sent_is_dropped(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    _put(client, ti, {"a": "x"}, meta={"a": {"renderer": "bash"}, "ghost": {"renderer": "sql"}})
    with sync_engine.connect() as conn:
        meta = conn.scalar(sa.select(models.rendered_task_instance_fields.c.field_meta))
    assert meta == {"a": {"renderer": "bash"}}


@pytest.mark.parametrize(
    "meta",
    [
        "not json",
        '["a"]',
        '{"a": {"renderer": "Bad Name"}}',
        '{"a": {"truncated_at": 0}}',
        '{"a": {"colour": "red"}}',
        '{"a": {"truncated_at": 100000000000000000000000000}}',
        '{"a": {"truncated_at": 2147483648}}',
    ],
    ids=[
        "not-json",
        "not-object",
        "bad-renderer",
        "zero-length",
        "unknown-key",
        "beyond-64-bits",
        "beyond-32-bits",
    ],
)
def test_bad_meta_header_is_422(client: httpx.Client, settings: Settings, meta: str) -> None:
    ti = seed(settings).task_instances[0]
    headers = {**auth(ti.token), protocol.FIELD_META_HEADER: meta}
    resp = client.put(f"/execution/task-instances/{ti.id}/rtif", json={"a": "x"}, headers=headers)
    _assert_error(resp, 422, "invalid_body")


def test_404_reasons(client: httpx.Client, settings: Settings) -> None:
    run = seed(settings, tasks=1)
    ti = run.task_instances[0]
    runs = f"{API}/dags/test_dag/runs"
    _assert_error(client.get(f"{API}/dags/nope/runs"), 404, "dag_not_found")
    _assert_error(client.get(f"{API}/dags/nope/runs/x/task-instances"), 404, "dag_not_found")
    _assert_error(client.get(f"{runs}/nope/task-instances"), 404, "dag_run_not_found")
    fields = f"{runs}/{run.run_id}/task-instances/{ti.task_id}/rendered-fields"
    _assert_error(client.get(fields), 404, "rendered_fields_not_found")
    _assert_error(client.get(fields, params={"map_index": 3}), 404, "task_instance_not_found")
    missing = f"{runs}/{run.run_id}/task-instances/nope/rendered-fields"
    _assert_error(client.get(missing), 404, "task_instance_not_found")
    _assert_error(
        client.get(f"{runs}/nope/task-instances/{ti.task_id}/rendered-fields"),
        404,
        "dag_run_not_found",
    )


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/dags", {"limit": 0}),
        ("/dags", {"limit": 501}),
        ("/dags", {"offset": -1}),
        ("/dags/test_dag/runs", {"state": "nonsense"}),
        ("/dags/test_dag/runs/r/task-instances", {"state": "nonsense"}),
        ("/dags/test_dag/runs/r/task-instances/t/rendered-fields", {"map_index": "x"}),
    ],
)
def test_bad_query_is_422(client: httpx.Client, path: str, params: dict[str, object]) -> None:
    resp = client.get(API + path, params=params)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]["reason"] == "validation_error"


@only("sqlite")
def test_token_rules(token_server: LiveServer, settings: Settings) -> None:
    run = seed(settings)
    with token_server.client() as c:
        missing = c.get(f"{API}/dags")
        _assert_error(missing, 401, "missing_token")
        assert missing.headers["www-authenticate"] == "Bearer"
        _assert_error(c.get(f"{API}/dags", headers=auth("wrong")), 403, "invalid_token")
        # A worker's task token is not a read token.
        task_token = run.task_instances[0].token
        _assert_error(c.get(f"{API}/dags", headers=auth(task_token)), 403, "invalid_token")
        assert c.get(f"{API}/dags", headers=auth("s3cret-token")).status_code == 200
        c.cookies.set("taskexec_api_token", "s3cret-token")
        assert c.get(f"{API}/dags").status_code == 200


@only("sqlite")
def test_without_token_only_loopback_clients_are_served(settings: Settings) -> None:
    app = create_app(settings)
    dags = f"{API}/dags"
    assert get_as(app, dags, "127.0.0.1").status_code == 200
    assert get_as(app, dags, "::1", "[::1]:8080").status_code == 200
    assert get_as(app, dags, "::ffff:127.0.0.1", "localhost:8080").status_code == 200
    _assert_error(get_as(app, dags, "10.1.2.3"), 403, "read_token_required")
    # DNS rebinding: a loopback connection asking for another site's name.
    _assert_error(get_as(app, dags, "127.0.0.1", "evil.example"), 403, "read_token_required")


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1") and not is_loopback("::ffff:10.0.0.1")
    assert not is_loopback("10.0.0.1") and not is_loopback(None) and not is_loopback("host")
    assert not is_loopback(str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("host", "token", "warns"),
    [
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("0.0.0.0", None, True),
        ("192.168.1.5", None, True),
        ("0.0.0.0", "t0ken", False),
    ],
)
def test_serve_warns_when_exposed_without_token(
    host: str, token: str | None, warns: bool, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, api_token=SecretStr(token) if token else None)
    warning = open_read_warning(host, settings)
    assert (warning is not None) == warns
    if warning:
        assert "TASKEXEC_API_TOKEN" in warning and host in warning


def test_oversized_meta_header_is_413(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    meta = json.dumps({f"f{n}": {"renderer": "sql"} for n in range(4000)})
    assert len(meta) > 64 * 1024
    headers = {**auth(ti.token), protocol.FIELD_META_HEADER: meta}
    resp = client.put(f"/execution/task-instances/{ti.id}/rtif", json={"a": "x"}, headers=headers)
    _assert_error(resp, 413, "payload_too_large")


def test_nul_in_an_id_is_never_a_500(
    client: httpx.Client, settings: Settings, backend: str
) -> None:
    run = seed(settings)
    responses = [
        client.get(f"{API}/dags/a%00b/runs"),
        client.get(
            f"{API}/dags/test_dag/runs/{run.run_id}/task-instances", params={"task_id": "\0"}
        ),
    ]
    for resp in responses:
        if backend == "postgresql":
            # PostgreSQL text cannot hold NUL: the driver refuses the value.
            _assert_error(resp, 422, "invalid_value")
        else:
            assert resp.status_code in (200, 404), resp.text
    assert responses[0].status_code != 200


@pytest.mark.parametrize(
    ("dag_id", "run_id"),
    [("etl", "a/b"), ("etl", ".."), ("etl", "sp ace"), ("a/b", "r"), ("etl", "x" * 251)],
)
def test_ids_that_a_url_cannot_carry_are_refused(
    settings: Settings, dag_id: str, run_id: str
) -> None:
    with pytest.raises(errors.InvalidBodyError, match="must be 1-250 of the characters"):
        seed_run(settings, dag_id=dag_id, tasks=1, run_id=run_id)
