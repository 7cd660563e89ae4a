"""/run, /heartbeat and /state on every backend: transitions, repeats, conflicts, stale tries."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.security import TokenSigner

from helpers import auth, history_rows, rtif_rows, seed, ti_row

RUNNER = {"hostname": "worker-1", "pid": 4242}


def _base(ti_id: object) -> str:
    return f"/execution/task-instances/{ti_id}"


def _detail(resp: httpx.Response, status: int, reason: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    detail: dict[str, object] = resp.json()["detail"]
    assert detail["reason"] == reason
    assert detail["message"]
    return detail


def _start(client: httpx.Client, ti_id: object, token: str, **payload: object) -> httpx.Response:
    return client.patch(f"{_base(ti_id)}/run", json={**RUNNER, **payload}, headers=auth(token))


def test_run_moves_queued_to_running(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    run = seed(settings, max_tries=2)
    ti = run.task_instances[0]
    resp = _start(client, ti.id, ti.token, start_date="2026-01-02T03:04:05Z")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["dag_run"]["run_id"] == run.run_id
    assert body["dag_run"]["dag_id"] == "test_dag"
    assert (body["try_number"], body["max_tries"], body["should_retry"]) == (1, 2, True)
    row = ti_row(sync_engine, id=ti.id)
    assert row is not None
    assert (row["state"], row["hostname"], row["pid"]) == ("running", "worker-1", 4242)
    assert row["start_date"].isoformat() == "2026-01-02T03:04:05+00:00"


def test_run_repeat_by_same_worker_is_200(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    assert _start(client, ti.id, ti.token).status_code == 200
    assert _start(client, ti.id, ti.token).status_code == 200


def test_run_by_another_worker_is_409(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    assert _start(client, ti.id, ti.token).status_code == 200
    detail = _detail(_start(client, ti.id, ti.token, pid=9999), 409, "invalid_state")
    assert detail["previous_state"] == "running"
    row = ti_row(sync_engine, id=ti.id)
    assert row is not None and row["pid"] == 4242


def test_run_on_finished_ti_is_409(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    _start(client, ti.id, ti.token)
    client.patch(f"{_base(ti.id)}/state", json={"state": "success"}, headers=auth(ti.token))
    detail = _detail(_start(client, ti.id, ti.token), 409, "invalid_state")
    assert detail["previous_state"] == "success"


def test_run_payload_is_validated(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    resp = client.patch(f"{_base(ti.id)}/run", json={"pid": "x"}, headers=auth(ti.token))
    detail = _detail(resp, 422, "validation_error")
    assert detail["errors"]


def test_heartbeat(client: httpx.Client, settings: Settings, sync_engine: sa.Engine) -> None:
    ti = seed(settings).task_instances[0]
    url = f"{_base(ti.id)}/heartbeat"
    detail = _detail(client.put(url, json=RUNNER, headers=auth(ti.token)), 409, "not_running")
    assert detail["current_state"] == "queued"
    _start(client, ti.id, ti.token)
    before = ti_row(sync_engine, id=ti.id)
    assert client.put(url, json=RUNNER, headers=auth(ti.token)).status_code == 204
    after = ti_row(sync_engine, id=ti.id)
    assert before and after and after["last_heartbeat_at"] >= before["last_heartbeat_at"]
    other = client.put(url, json={"hostname": "worker-2", "pid": 1}, headers=auth(ti.token))
    detail = _detail(other, 409, "running_elsewhere")
    assert (detail["current_hostname"], detail["current_pid"]) == ("worker-1", 4242)


def test_state_success_then_repeat(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings).task_instances[0]
    url = f"{_base(ti.id)}/state"
    _start(client, ti.id, ti.token)
    first = client.patch(url, json={"state": "success"}, headers=auth(ti.token))
    assert first.status_code == 204
    repeat = client.patch(url, json={"state": "success"}, headers=auth(ti.token))
    assert repeat.status_code == 200
    assert "success" in repeat.json()["message"]
    row = ti_row(sync_engine, id=ti.id)
    assert row is not None and row["state"] == "success" and row["end_date"] is not None


def test_state_conflict_is_409(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    url = f"{_base(ti.id)}/state"
    queued = client.patch(url, json={"state": "success"}, headers=auth(ti.token))
    assert _detail(queued, 409, "invalid_state")["previous_state"] == "queued"
    _start(client, ti.id, ti.token)
    client.patch(url, json={"state": "success"}, headers=auth(ti.token))
    failed = client.patch(url, json={"state": "failed"}, headers=auth(ti.token))
    assert _detail(failed, 409, "invalid_state")["previous_state"] == "success"


def test_state_rejects_unknown_state(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    resp = client.patch(f"{_base(ti.id)}/state", json={"state": "zombie"}, headers=auth(ti.token))
    _detail(resp, 422, "validation_error")


def test_up_for_retry_archives_try_and_queues_a_new_id(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings, max_tries=1).task_instances[0]
    base = _base(ti.id)
    _start(client, ti.id, ti.token)
    client.put(f"{base}/rtif", json={"try": 1}, headers=auth(ti.token))
    resp = client.patch(f"{base}/state", json={"state": "up_for_retry"}, headers=auth(ti.token))
    assert resp.status_code == 204, resp.text

    old = history_rows(sync_engine, ti.id)
    assert len(old) == 1
    assert (old[0]["state"], old[0]["try_number"], old[0]["pid"]) == ("up_for_retry", 1, 4242)
    assert ti_row(sync_engine, id=ti.id) is None
    new = ti_row(sync_engine, task_id=ti.task_id, map_index=ti.map_index)
    assert new is not None
    assert new["id"] != ti.id and new["id"].version == 7
    assert (new["state"], new["try_number"], new["pid"]) == ("queued", 2, None)

    # The retry repeated by the old worker is idempotent...
    again = client.patch(f"{base}/state", json={"state": "up_for_retry"}, headers=auth(ti.token))
    assert again.status_code == 200
    # ...but anything else from the old try is stale.
    _detail(client.put(f"{base}/rtif", json={"x": 1}, headers=auth(ti.token)), 410, "stale_try")
    _detail(_start(client, ti.id, ti.token), 410, "stale_try")
    hb = client.put(f"{base}/heartbeat", json=RUNNER, headers=auth(ti.token))
    _detail(hb, 410, "stale_try")
    done = client.patch(f"{base}/state", json={"state": "success"}, headers=auth(ti.token))
    _detail(done, 410, "stale_try")
    _detail(client.get(f"{base}/rtif", headers=auth(ti.token)), 410, "stale_try")

    # The new try runs with its own id and token.
    token2 = TokenSigner(settings).mint(new["id"])
    assert _start(client, new["id"], token2).json()["try_number"] == 2
    put2 = client.put(f"{_base(new['id'])}/rtif", json={"try": 2}, headers=auth(token2))
    assert put2.status_code == 201


def test_try_one_can_never_overwrite_try_two(
    client: httpx.Client, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings, max_tries=1).task_instances[0]
    _start(client, ti.id, ti.token)
    client.patch(f"{_base(ti.id)}/state", json={"state": "up_for_retry"}, headers=auth(ti.token))
    new = ti_row(sync_engine, task_id=ti.task_id)
    assert new is not None
    token2 = TokenSigner(settings).mint(new["id"])
    client.put(f"{_base(new['id'])}/rtif", json={"by": "try 2"}, headers=auth(token2))
    stale = client.put(f"{_base(ti.id)}/rtif", json={"by": "try 1"}, headers=auth(ti.token))
    assert stale.status_code == 410
    rows = rtif_rows(sync_engine)
    assert [(r["rendered_fields"], r["try_number"]) for r in rows] == [({"by": "try 2"}, 2)]


def test_unknown_id_is_404_everywhere(client: httpx.Client, settings: Settings) -> None:
    import uuid

    ghost = uuid.uuid4()
    token = TokenSigner(settings).mint(ghost)
    base = _base(ghost)
    _detail(_start(client, ghost, token), 404, "not_found")
    _detail(client.put(f"{base}/heartbeat", json=RUNNER, headers=auth(token)), 404, "not_found")
    state = client.patch(f"{base}/state", json={"state": "failed"}, headers=auth(token))
    _detail(state, 404, "not_found")
    _detail(client.get(f"{base}/rtif", headers=auth(token)), 404, "not_found")


def test_every_endpoint_checks_the_token_subject(client: httpx.Client, settings: Settings) -> None:
    a, b = seed(settings, tasks=2).task_instances
    base = _base(b.id)
    calls = [
        client.patch(f"{base}/run", json=RUNNER, headers=auth(a.token)),
        client.put(f"{base}/heartbeat", json=RUNNER, headers=auth(a.token)),
        client.patch(f"{base}/state", json={"state": "failed"}, headers=auth(a.token)),
        client.get(f"{base}/rtif", headers=auth(a.token)),
    ]
    for resp in calls:
        _detail(resp, 403, "token_subject_mismatch")
