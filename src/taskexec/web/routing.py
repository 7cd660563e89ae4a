"""The /ui route class: domain errors, invalid requests and failures become HTML pages here,
rather than the JSON of the app's handler table, and every response gets the page's
security headers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from taskexec import errors
from taskexec.api import middleware
from taskexec.web import signin, templating

log = logging.getLogger(__name__)


def _domain_error_page(request: Request, exc: errors.TaskExecError) -> Response:
    """The HTML page for a domain error; errors a page cannot cause go to the JSON table."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if isinstance(exc, errors.NotFoundError):
        return templating.error_page(request, 404, "Not found", exc.message)
    if isinstance(exc, errors.MissingTokenError):
        return signin.sign_in_page(request, 401, None, here)
    if isinstance(exc, errors.InvalidTokenError | errors.ExpiredTokenError):
        message = "The saved token is not this server's token (any more). Sign in again."
        return signin.sign_in_page(request, 401, message, here)
    if isinstance(exc, errors.ReadAccessDeniedError):
        return templating.error_page(
            request,
            403,
            "Read token required",
            "This server has no TASKEXEC_API_TOKEN, so it shows its pages to loopback "
            "clients only. To read them from another machine, set TASKEXEC_API_TOKEN on "
            "the server and sign in with it.",
        )
    if isinstance(exc, errors.DatabaseUnavailableError | errors.SchemaOutdatedError):
        response = templating.error_page(request, 503, "Unavailable", exc.message)
        response.headers["Retry-After"] = str(request.app.state.settings.db_retry_after_seconds)
        return response
    raise exc


def _invalid_request_page(request: Request, exc: RequestValidationError) -> Response:
    """The 400 page for an address whose path or query values do not validate."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in err.get('loc', ())[1:])}: {err.get('msg', '')}"
        for err in exc.errors()
    )
    return templating.error_page(
        request, 400, "Bad address", f"This address is not valid ({problems})."
    )


def _internal_error_page(request: Request, exc: Exception) -> Response:
    """The 500 page: a correlation id to quote; the details go to the log only."""
    cid = middleware.correlation_id(request.scope)
    log.error("page failed [correlation_id=%s]", cid, exc_info=exc)
    return templating.error_page(
        request,
        500,
        "Something went wrong",
        f"The server failed to show this page; quote correlation id {cid}.",
    )


class PageRoute(APIRoute):
    """A /ui route: domain errors become HTML pages; every response gets the page headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler (dependencies included) with the HTML error pages."""
        handle = super().get_route_handler()

        async def handle_page(request: Request) -> Response:
            try:
                response = await handle(request)
            except errors.TaskExecError as exc:
                response = _domain_error_page(request, exc)
            except RequestValidationError as exc:
                response = _invalid_request_page(request, exc)
            except Exception as exc:  # a bug or an outage not understood: still a page
                response = _internal_error_page(request, exc)
            response.headers.update(templating.SECURITY_HEADERS)
            return response

        return handle_page
