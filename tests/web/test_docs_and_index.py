"""/docs and /redoc from the app's own copy of Swagger UI and Redoc (no CDN), the
``/api/v1`` index, and the read API's 403 message. In-process: no database is read."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi import FastAPI

from taskexec.config import Settings
from taskexec.server.app import create_app

from helpers import get_as, only

pytestmark = only("sqlite")


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


def _sha256(script: str) -> str:
    return base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def test_docs_page_loads_swagger_ui_from_this_server(app: FastAPI) -> None:
    resp = get_as(app, "/docs", "127.0.0.1")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    # Every address in the page is this server's: no CDN.
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == [
        "/docs/assets/swagger-ui.css",
        "/ui/static/favicon.svg",
        "/docs/assets/swagger-ui-bundle.js",
    ]
    assert "http" not in page and "cdn" not in page
    assert "url: '/openapi.json'" in page
    # The inline script that starts Swagger UI is allowed by its hash, and nothing else
    # inline: no 'unsafe-inline' for scripts, nothing from another origin.
    (inline,) = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    csp = resp.headers["content-security-policy"]
    assert f"script-src 'self' 'sha256-{_sha256(inline)}';" in csp
    assert csp.startswith("default-src 'none';") and "connect-src 'self';" in csp
    assert "http" not in csp and "*" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_redoc_page_loads_redoc_from_this_server(app: FastAPI) -> None:
    resp = get_as(app, "/redoc", "127.0.0.1")
    assert resp.status_code == 200
    assert re.findall(r'(?:src|href)="([^"]*)"', resp.text) == [
        "/ui/static/favicon.svg",
        "/docs/assets/redoc.standalone.js",
    ]
    assert '<redoc spec-url="/openapi.json">' in resp.text
    assert "fonts.googleapis" not in resp.text
    assert "script-src 'self';" in resp.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("name", "media_type", "start"),
    [
        ("swagger-ui-bundle.js", "text/javascript", b"/*! For license information"),
        ("swagger-ui.css", "text/css", b".swagger-ui"),
        ("redoc.standalone.js", "text/javascript", b"/*! For license information"),
    ],
)
def test_docs_assets_are_served(app: FastAPI, name: str, media_type: str, start: bytes) -> None:
    resp = get_as(app, f"/docs/assets/{name}", "127.0.0.1")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(media_type)
    assert resp.content.startswith(start) and len(resp.content) > 100_000


def test_unknown_docs_asset_is_404(app: FastAPI) -> None:
    assert get_as(app, "/docs/assets/nope.js", "127.0.0.1").status_code == 404


@pytest.mark.parametrize("path", ["/api/v1", "/api/v1/"])
def test_api_index_lists_every_operation(app: FastAPI, path: str) -> None:
    resp = get_as(app, path, "127.0.0.1")
    assert resp.status_code == 200, resp.text
    index = resp.json()
    assert (index["docs"], index["openapi"]) == ("/docs", "/openapi.json")
    listed = {(r["method"], r["path"]): r["description"] for r in index["resources"]}
    spec = get_as(app, "/openapi.json", "127.0.0.1").json()
    expected = {
        (method.upper(), p)
        for p, operations in spec["paths"].items()
        if p.startswith("/api/v1/")
        for method in operations
    }
    assert set(listed) == expected and len(listed) == len(index["resources"]) >= 7
    assert listed[("GET", "/api/v1/dags")] == (
        "The dags seen (those with at least one run), with their run counts."
    )
    assert ("PATCH", "/api/v1/dags/{dag_id}/runs/{run_id}") in listed
    # One line each: a sentence, no reStructuredText marks, no newline.
    for description in listed.values():
        assert description.endswith(".") and "\n" not in description
        assert "``" not in description and "  " not in description


def test_api_index_has_the_read_api_auth(app: FastAPI) -> None:
    resp = get_as(app, "/api/v1", "10.1.2.3")
    assert resp.status_code == 403 and resp.json()["detail"]["reason"] == "read_token_required"


def test_read_token_required_message_is_one_line(app: FastAPI) -> None:
    resp = get_as(app, "/api/v1/dags", "10.1.2.3")
    assert resp.status_code == 403
    assert resp.json() == {
        "detail": {
            "reason": "read_token_required",
            "message": "The read API answers only loopback clients (asking for localhost or "
            "a loopback address) unless TASKEXEC_API_TOKEN is set.",
        }
    }
