"""Signing in to the web page with the read token, and out again.

The browser keeps the token in an HttpOnly cookie (``deps.READ_TOKEN_COOKIE``), since it
cannot send a Bearer header when following a link. The handlers here are registered on
the /ui router in ``pages`` (GET /ui/login, POST /ui/login, POST /ui/logout): they need
``routing.PageRoute``, which itself shows this module's form when a token is missing.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from taskexec import errors
from taskexec.api import deps
from taskexec.web import templating


def same_origin(request: Request) -> bool:
    """Whether a form POST came from this server's own pages (a cross-site form could
    otherwise sign a browser in with another token, or out)."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"
    # No Origin (older browsers, tools): fall back on Fetch Metadata when it is sent.
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def safe_next(request: Request, target: str) -> str:
    """Where to go after signing in: a /ui address of this server, never elsewhere."""
    home = templating.ui_url(request)
    if target.startswith(home) and "//" not in target and "\\" not in target:
        return target
    return home


def sign_in_page(request: Request, status: int, error: str | None, next_path: str) -> HTMLResponse:
    """The sign-in form; as a 401 it also asks for the token with WWW-Authenticate."""
    response = templating.render(
        request, "login.html", status, error=error, next_path=safe_next(request, next_path)
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _refused(request: Request) -> HTMLResponse:
    return templating.error_page(
        request, 403, "Refused", "This form must be sent from this server's pages."
    )


async def login_form(
    request: Request, next_path: Annotated[str, Query(alias="next")] = ""
) -> Response:
    """The sign-in form; without a configured token there is nothing to sign in to."""
    if not templating.configured_token(request):
        return RedirectResponse(templating.ui_url(request), status_code=303)
    return sign_in_page(request, 200, None, next_path)


async def login(request: Request) -> Response:
    """Check the form's token; if it is right, keep it in an HttpOnly cookie and go on."""
    if not same_origin(request):
        return _refused(request)
    # A plain urlencoded form: parsed here rather than adding python-multipart for it.
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = form.get("token", [""])[0].strip()
    next_path = safe_next(request, form.get("next", [""])[0])
    expected = templating.configured_token(request)
    if not expected:
        if not deps.is_loopback(request.client.host if request.client else None):
            raise errors.ReadAccessDeniedError()
        return RedirectResponse(next_path, status_code=303)
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        return sign_in_page(request, 401, "That is not this server's token.", next_path)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        deps.READ_TOKEN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    """Forget the token this browser saved."""
    if not same_origin(request):
        return _refused(request)
    response = RedirectResponse(templating.ui_url(request, "login"), status_code=303)
    response.delete_cookie(deps.READ_TOKEN_COOKIE, path="/", httponly=True, samesite="strict")
    return response
