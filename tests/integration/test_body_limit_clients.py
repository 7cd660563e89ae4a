"""The 413 reaches every ordinary client: blocking clients that write the whole body
before reading the answer (urllib, http.client) get the 413 every time, never a broken
pipe or a reset, on every database."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

from taskexec.config import Settings

from conftest import LiveServer
from helpers import auth, report, seed

TRIES = 30


def _body(settings: Settings) -> bytes:
    return json.dumps({"blob": "z" * (2 * settings.max_request_body_bytes)}).encode()


def test_urllib_and_http_client_always_read_the_413(
    live_server: LiveServer, settings: Settings, backend: str
) -> None:
    ti = seed(settings).task_instances[0]
    path = f"/execution/task-instances/{ti.id}/rtif"
    headers = {**auth(ti.token), "content-type": "application/json"}
    body = _body(settings)
    url = live_server.base_url + path
    statuses: list[object] = []
    for _ in range(TRIES):
        request = urllib.request.Request(url, data=body, headers=headers, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                statuses.append(resp.status)
        except urllib.error.HTTPError as exc:
            reason = json.loads(exc.read())["detail"]["reason"]
            statuses.append((exc.code, reason))
        except OSError as exc:
            statuses.append(type(exc).__name__)
    parsed = urllib.parse.urlsplit(live_server.base_url)
    for _ in range(TRIES):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        try:
            conn.request("PUT", path, body=body, headers=headers)
            resp = conn.getresponse()
            statuses.append((resp.status, json.loads(resp.read())["detail"]["reason"]))
        except OSError as exc:
            statuses.append(type(exc).__name__)
        finally:
            conn.close()
    wanted = (413, "payload_too_large")
    report(
        f"[{backend}] oversized body from urllib and http.client: "
        f"{statuses.count(wanted)} of {2 * TRIES} got the 413"
    )
    assert statuses == [wanted] * (2 * TRIES), statuses
