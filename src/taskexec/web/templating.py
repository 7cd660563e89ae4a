"""Rendering the web page: the Jinja environment and its filters, /ui addresses, and the
HTML responses (a page, an error page) with the headers every page carries.

Every response carries a strict Content-Security-Policy: no inline script or style,
nothing from another origin.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape

from taskexec.api import deps
from taskexec.wire import states

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

# The pages show what ran, so no shared cache may keep them.
_PAGE_HEADERS = {"Cache-Control": "no-store"}

KNOWN_STATES = frozenset({*states.TaskInstanceState, *states.DagRunState, "no_status"})


def _when(moment: dt.datetime | None, zone: bool = True) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S" + (" UTC" if zone else ""))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _state_class(state: str) -> str:
    # Only known states become class names; anything else gets the neutral badge.
    return f"state-{state}" if state in KNOWN_STATES else "state-other"


# Where a dag, run or task id may wrap: after these (``manual__2026-11-24T10:00:00+00:00``
# wraps after ``__``, ``-``, ``:``, ``+``). The stylesheet breaks ids nowhere else.
_ID_SEPARATORS = re.compile(r"([_\-:+./]+)")
# Ids this short stay whole: ``task_0`` over two lines reads worse than a wider column.
_SHORT_ID = 16


def _breakable(identifier: object) -> Markup:
    text = str(identifier)
    # Escaped first: the entities escaping writes (&amp; &lt; &#39;) hold no separator.
    escaped = str(escape(text))
    if len(text) <= _SHORT_ID:
        return Markup(escaped)
    return Markup(_ID_SEPARATORS.sub(r"\1<wbr>", escaped))


_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("taskexec.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["when"] = _when
_templates.filters["count"] = _count
_templates.filters["state_class"] = _state_class
_templates.filters["breakable"] = _breakable


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + "/ui"


def href(base: str, *segments: object, **query: object) -> str:
    """A /ui address from path segments (each quoted whole) and query values."""
    path = "/".join([base, *(quote(str(s), safe="") for s in segments)]) if segments else base + "/"
    params = {k: v for k, v in query.items() if v is not None}
    return f"{path}?{urlencode(params)}" if params else path


def ui_url(request: Request, *segments: object, **query: object) -> str:
    """A /ui address of this server, below the root path the request came through."""
    return href(_base(request), *segments, **query)


def configured_token(request: Request) -> str:
    """The server's read token (TASKEXEC_API_TOKEN), or "" when it has none."""
    configured = request.app.state.settings.api_token
    return configured.get_secret_value() if configured is not None else ""


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered as a page, with the page's cache header."""
    html = _templates.get_template(template).render(
        href=functools.partial(href, _base(request)),
        # The sign-out button, for a browser that signed in (HttpOnly: JS cannot clear it).
        signed_in=bool(configured_token(request)) and deps.READ_TOKEN_COOKIE in request.cookies,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


def error_page(
    request: Request, status: int, title: str, message: str, back: tuple[str, str] | None = None
) -> HTMLResponse:
    """An HTML error page with one link back (to all runs unless ``back`` says otherwise)."""
    back_href, back_label = back or (ui_url(request), "All runs")
    return render(
        request,
        "error.html",
        status,
        title=title,
        message=message,
        back_href=back_href,
        back_label=back_label,
    )
