"""``/docs`` (Swagger UI) and ``/redoc``, served with no internet.

FastAPI's own pages load Swagger UI and Redoc from a CDN, so they are blank on a machine
without one. Here their script and stylesheet come from the ``fastapi-offline`` package
(Swagger UI 5 and Redoc 2, unmodified), served by this app under ``/docs/assets``.

Each page gets a Content-Security-Policy of its own: everything from 'self', the one
inline script FastAPI writes (which starts Swagger UI) allowed by its hash, and the
inline styles, ``data:`` images and ``blob:`` workers the two viewers need.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
# The package and its folder holding swagger-ui-bundle.js, swagger-ui.css and
# redoc.standalone.js.
ASSETS_PACKAGE = ("fastapi_offline", "static")

# For ``FastAPI(...)``: turn off its own /docs and /redoc (the CDN ones).
FASTAPI_OPTIONS: dict[str, Any] = {"docs_url": None, "redoc_url": None}

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Add /docs, /redoc and the viewers' files (under ``ASSETS_PATH``) to ``app``."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")


def _digest(script: str) -> str:
    return base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def content_security_policy(html: str) -> str:
    """The policy for a docs page: its inline scripts by hash, all else from 'self'."""
    hashes = " ".join(f"'sha256-{_digest(s)}'" for s in _INLINE_SCRIPT.findall(html))
    return (
        f"default-src 'none'; script-src 'self' {hashes}".rstrip()
        # Swagger UI and Redoc set style attributes and inject <style> elements; their
        # icons are data: URIs; Redoc's search runs in a worker made from a blob. Redoc's
        # footer logo, the one thing it fetches from elsewhere, is refused here.
        + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
        "connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    html = bytes(response.body).decode()
    response.headers["Content-Security-Policy"] = content_security_policy(html)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """The API's operations in Swagger UI, from this server's own copy."""
    root = _root(request)
    return _page(
        get_swagger_ui_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} · API docs",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}/ui/static/favicon.svg",
            oauth2_redirect_url=None,
        )
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """The API's reference in Redoc, from this server's own copy."""
    root = _root(request)
    return _page(
        get_redoc_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} · API reference",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}/ui/static/favicon.svg",
            with_google_fonts=False,
        )
    )
