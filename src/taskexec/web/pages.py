"""``/ui``: the web page. Runs → one run's task instances → one task instance's fields.

Routes stay thin, as in the API: parse, call services through the transaction owner,
render a template. Errors become HTML pages here (``PageRoute``) rather than the JSON
of the app's handler table, and every response carries a strict Content-Security-Policy:
no inline script or style, nothing from another origin.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hmac
import importlib.resources
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from taskexec import errors, schemas
from taskexec.api import deps
from taskexec.db import models
from taskexec.services import dags, rendered_fields, task_instances
from taskexec.web import highlight

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

_STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "pygments.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

KNOWN_STATES = frozenset({*models.TaskInstanceState, *models.DagRunState})
DAG_LIST_LIMIT = 100

RunsLimit = Annotated[int, Query(ge=1, le=200, description="runs per page")]
TaskLimit = Annotated[int, Query(ge=1, le=500, description="task instances per page")]
Offset = Annotated[int, Query(ge=0, description="items to skip")]


def _when(moment: dt.datetime | None, zone: bool = True) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S" + (" UTC" if zone else ""))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _state_class(state: str) -> str:
    # Only known states become class names; anything else gets the neutral badge.
    return f"state-{state}" if state in KNOWN_STATES else "state-other"


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


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + "/ui"


def _href(base: str, *segments: object, **query: object) -> str:
    """A /ui address from path segments (each quoted whole) and query values."""
    path = "/".join([base, *(quote(str(s), safe="") for s in segments)]) if segments else base + "/"
    params = {k: v for k, v in query.items() if v is not None}
    return f"{path}?{urlencode(params)}" if params else path


def _configured_token(request: Request) -> str:
    configured = request.app.state.settings.api_token
    return configured.get_secret_value() if configured is not None else ""


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(
        href=functools.partial(_href, _base(request)),
        # The sign-out button, for a browser that signed in (HttpOnly: JS cannot clear it).
        signed_in=bool(_configured_token(request)) and deps.READ_TOKEN_COOKIE in request.cookies,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


def _error(
    request: Request, status: int, title: str, message: str, back: tuple[str, str] | None = None
) -> HTMLResponse:
    back_href, back_label = back or (_href(_base(request)), "All runs")
    return _page(
        request,
        "error.html",
        status,
        title=title,
        message=message,
        back_href=back_href,
        back_label=back_label,
    )


def _same_origin(request: Request) -> bool:
    """Whether a form POST came from this server's own pages (a cross-site form could
    otherwise sign a browser in with another token, or out)."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"
    # No Origin (older browsers, tools): fall back on Fetch Metadata when it is sent.
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _safe_next(request: Request, target: str) -> str:
    """Where to go after signing in: a /ui address of this server, never elsewhere."""
    home = _href(_base(request))
    if target.startswith(home) and "//" not in target and "\\" not in target:
        return target
    return home


def _sign_in(request: Request, status: int, error: str | None, next_path: str) -> HTMLResponse:
    response = _page(
        request, "login.html", status, error=error, next_path=_safe_next(request, next_path)
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _error_page(request: Request, exc: errors.TaskExecError) -> Response:
    """The HTML page for a domain error; errors a page cannot cause go to the JSON table."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if isinstance(exc, errors.NotFoundError):
        return _error(request, 404, "Not found", exc.message)
    if isinstance(exc, errors.MissingTokenError):
        return _sign_in(request, 401, None, here)
    if isinstance(exc, errors.InvalidTokenError | errors.ExpiredTokenError):
        message = "The saved token is not this server's token (any more). Sign in again."
        return _sign_in(request, 401, message, here)
    if isinstance(exc, errors.ReadAccessDeniedError):
        return _error(
            request,
            403,
            "Read token required",
            "This server has no TASKEXEC_API_TOKEN, so it shows its pages to loopback "
            "clients only. To read them from another machine, set TASKEXEC_API_TOKEN on "
            "the server and sign in with it.",
        )
    if isinstance(exc, errors.DatabaseUnavailableError | errors.SchemaOutdatedError):
        response = _error(request, 503, "Unavailable", exc.message)
        response.headers["Retry-After"] = str(request.app.state.settings.db_retry_after_seconds)
        return response
    raise exc


def _invalid_request_page(request: Request, exc: RequestValidationError) -> Response:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in err.get('loc', ())[1:])}: {err.get('msg', '')}"
        for err in exc.errors()
    )
    return _error(request, 400, "Bad address", f"This address is not valid ({problems}).")


class PageRoute(APIRoute):
    """A /ui route: domain errors become HTML pages; every response gets the page headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler (dependencies included) with the HTML error pages."""
        handle = super().get_route_handler()

        async def handle_page(request: Request) -> Response:
            try:
                response = await handle(request)
            except errors.TaskExecError as exc:
                response = _error_page(request, exc)
            except RequestValidationError as exc:
                response = _invalid_request_page(request, exc)
            response.headers.update(SECURITY_HEADERS)
            return response

        return handle_page


@dataclasses.dataclass(frozen=True)
class Pager:
    """Where one page of a list sits in the whole, for the previous/next links."""

    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, page: schemas.Page[Any]) -> Pager:
        """The pager of a service's page."""
        return cls(total=page.total, limit=page.limit, offset=page.offset)

    @property
    def first(self) -> int:
        """The 1-based position of the page's first item (0 when there is none)."""
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        """The 1-based position of the page's last item."""
        return min(self.offset + self.limit, self.total)

    @property
    def previous(self) -> int | None:
        """The offset of the page before, if any."""
        return max(self.offset - self.limit, 0) if self.offset > 0 else None

    @property
    def next(self) -> int | None:
        """The offset of the page after, if any."""
        return self.offset + self.limit if self.offset + self.limit < self.total else None


router = APIRouter(include_in_schema=False)
ui = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)


@ui.get("/", response_class=HTMLResponse, dependencies=[deps.ReaderDep])
async def runs_page(
    request: Request,
    db: deps.DbDep,
    dag_id: str | None = None,
    limit: RunsLimit = 25,
    offset: Offset = 0,
) -> HTMLResponse:
    """Runs of every dag (or of one), newest first, beside the dags and their run counts."""
    dag_page, runs = await db.read(
        dags.list_dags_and_runs,
        dags_limit=DAG_LIST_LIMIT,
        dag_id=dag_id or None,
        limit=limit,
        offset=offset,
    )
    return _page(
        request,
        "runs.html",
        dags=dag_page,
        runs=runs.items,
        paging=Pager.of(runs),
        dag_id=dag_id or None,
    )


@ui.get("/dags/{dag_id}/runs/{run_id}", response_class=HTMLResponse, dependencies=[deps.ReaderDep])
async def run_page(
    request: Request,
    dag_id: str,
    run_id: str,
    db: deps.DbDep,
    limit: TaskLimit = 100,
    offset: Offset = 0,
) -> HTMLResponse:
    """The run's task instances: task, map index, state, try, and a link to their fields."""
    tis = await db.read(
        task_instances.list_task_instances,
        dag_id=dag_id,
        run_id=run_id,
        state=None,
        task_id=None,
        limit=limit,
        offset=offset,
    )
    return _page(
        request, "run.html", dag_id=dag_id, run_id=run_id, tis=tis.items, paging=Pager.of(tis)
    )


@ui.get(
    "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
    response_class=HTMLResponse,
    dependencies=[deps.ReaderDep],
)
async def fields_page(
    request: Request,
    dag_id: str,
    run_id: str,
    task_id: str,
    db: deps.DbDep,
    map_index: Annotated[int, Query(ge=-1)] = -1,
) -> HTMLResponse:
    """One task instance's rendered fields, each in full and highlighted by its renderer."""
    try:
        view = await db.read(
            rendered_fields.get_rendered_fields_view,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
        )
    except errors.RenderedFieldsNotFoundError as exc:
        back = (_href(_base(request), "dags", dag_id, "runs", run_id), "Back to the run")
        return _error(request, 404, "No rendered fields", exc.message, back)
    indexes = view.map_indexes
    position = indexes.index(map_index)
    # Highlighting a large field takes a while: off the event loop, so the workers'
    # requests this process serves meanwhile do not wait for it.
    shown = await run_in_threadpool(
        lambda: [highlight.show_value(f.value, f.renderer) for f in view.fields]
    )
    return _page(
        request,
        "fields.html",
        view=view,
        fields=list(zip(view.fields, shown, strict=True)),
        previous_index=indexes[position - 1] if position > 0 else None,
        next_index=indexes[position + 1] if position + 1 < len(indexes) else None,
    )


@ui.get("/login", response_class=HTMLResponse)
async def login_form(
    request: Request, next_path: Annotated[str, Query(alias="next")] = ""
) -> Response:
    """The sign-in form; without a configured token there is nothing to sign in to."""
    if not _configured_token(request):
        return RedirectResponse(_href(_base(request)), status_code=303)
    return _sign_in(request, 200, None, next_path)


@ui.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the form's token; if it is right, keep it in an HttpOnly cookie and go on."""
    if not _same_origin(request):
        return _error(request, 403, "Refused", "This form must be sent from this server's pages.")
    # A plain urlencoded form: parsed here rather than adding python-multipart for it.
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = form.get("token", [""])[0].strip()
    next_path = _safe_next(request, form.get("next", [""])[0])
    expected = _configured_token(request)
    if not expected:
        if not deps.is_loopback(request.client.host if request.client else None):
            raise errors.ReadAccessDeniedError()
        return RedirectResponse(next_path, status_code=303)
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        return _sign_in(request, 401, "That is not this server's token.", next_path)
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


@ui.post("/logout")
async def logout(request: Request) -> Response:
    """Forget the token this browser saved."""
    if not _same_origin(request):
        return _error(request, 403, "Refused", "This form must be sent from this server's pages.")
    response = RedirectResponse(_href(_base(request), "login"), status_code=303)
    response.delete_cookie(deps.READ_TOKEN_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@functools.cache
def _static_bytes(name: str) -> bytes:
    if name == "pygments.css":
        return highlight.pygments_css().encode()
    return importlib.resources.files("taskexec.web").joinpath("static", name).read_bytes()


@ui.get("/static/{name}")
async def static_file(name: str) -> Response:
    """The page's stylesheets and script (no build step; Pygments' CSS generated once)."""
    media_type = _STATIC_TYPES.get(name)
    if media_type is None:
        raise errors.NotFoundError("There is no such file.")
    return Response(
        _static_bytes(name), media_type=media_type, headers={"Cache-Control": "max-age=300"}
    )


# Last: every other /ui address gets the HTML 404 rather than the API's JSON one.
@ui.get("/{path:path}", response_class=HTMLResponse)
async def unknown_page(path: str) -> Response:
    """Any other /ui address: an HTML 404."""
    raise errors.NotFoundError("There is no page at this address.")


@router.get("/")
async def root(request: Request) -> RedirectResponse:
    """The server's root leads to the web page."""
    return RedirectResponse(_href(_base(request)))


router.include_router(ui)
