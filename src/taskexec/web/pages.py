"""``/ui``: the web page. Runs → one run's task instances → one task instance's fields.

Routes stay thin, as in the API: parse, call services through the transaction owner,
render a template. This module is the /ui address table: the page routes, the sign-in
routes (handled in ``signin``), static files and the HTML 404 for any other address, all
on ``routing.PageRoute``, which turns errors into HTML pages.
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from taskexec import errors
from taskexec.api import deps
from taskexec.services import dags, rendered_fields, task_instances
from taskexec.web import highlight, paging, routing, signin, templating
from taskexec.wire import protocol
from taskexec.wire.schemas import INT32_MAX
from taskexec.wire.states import DagRunState

_STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "pygments.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

DAG_LIST_LIMIT = 100

RunsLimit = Annotated[int, Query(ge=1, le=200, description="runs per page")]
TaskLimit = Annotated[int, Query(ge=1, le=500, description="task instances per page")]
Offset = Annotated[int, Query(ge=0, le=INT32_MAX, description="items to skip")]

router = APIRouter(include_in_schema=False)
ui = APIRouter(prefix="/ui", route_class=routing.PageRoute, include_in_schema=False)


@ui.get("/", response_class=HTMLResponse, dependencies=[deps.ReaderDep])
async def runs_page(
    request: Request,
    db: deps.DbDep,
    dag_id: str | None = None,
    state: DagRunState | None = None,
    limit: RunsLimit = 25,
    offset: Offset = 0,
) -> HTMLResponse:
    """Runs of every dag (or of one, in one state), newest first, with their state, start
    and end and their task instances by state, beside the dags and their run counts."""
    dag_page, runs = await db.read(
        dags.list_dags_and_runs,
        dags_limit=DAG_LIST_LIMIT,
        dag_id=dag_id or None,
        state=state,
        limit=limit,
        offset=offset,
    )
    return templating.render(
        request,
        "runs.html",
        dags=dag_page,
        runs=runs.items,
        paging=paging.Pager.of(runs),
        dag_id=dag_id or None,
        state=state.value if state else None,
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
    run, tis = await db.read(
        task_instances.run_with_task_instances,
        dag_id=dag_id,
        run_id=run_id,
        limit=limit,
        offset=offset,
    )
    return templating.render(
        request,
        "run.html",
        dag_id=dag_id,
        run_id=run_id,
        run=run,
        tis=tis.items,
        paging=paging.Pager.of(tis),
    )


# The web page shows at most this much of a log: its end, where the outcome is.
LOG_TAIL_CHARS = 1_000_000


def _read_log(path: Path) -> tuple[str | None, bool]:
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - LOG_TAIL_CHARS))
            return log.read().decode("utf-8", "replace"), size > LOG_TAIL_CHARS
    except OSError:
        return None, False


@ui.get(
    "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/log",
    response_class=HTMLResponse,
    dependencies=[deps.ReaderDep],
)
async def log_page(
    request: Request,
    dag_id: str,
    run_id: str,
    task_id: str,
    db: deps.DbDep,
    map_index: deps.MapIndex = -1,
    try_number: Annotated[int | None, Query(alias="try", ge=1, le=10_000)] = None,
) -> HTMLResponse:
    """A try's log, as the worker wrote it on this machine (the latest try by default)."""
    current = await db.read(
        task_instances.get_try_number,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
    )
    chosen = try_number or current
    logs_dir = request.app.state.settings.effective_logs_dir
    path = protocol.log_path(logs_dir, dag_id, run_id, task_id, map_index, chosen)
    text, cut = await run_in_threadpool(_read_log, path)
    return templating.render(
        request,
        "log.html",
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        try_number=chosen,
        tries=list(range(1, current + 1)),
        text=text,
        cut=cut,
        where=str(logs_dir),
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
    map_index: deps.MapIndex = -1,
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
        back = (templating.ui_url(request, "dags", dag_id, "runs", run_id), "Back to the run")
        return templating.error_page(request, 404, "No rendered fields", exc.message, back)
    indexes = view.map_indexes
    position = indexes.index(map_index)
    # Highlighting a large field takes a while: off the event loop, so the workers'
    # requests this process serves meanwhile do not wait for it.
    shown = await run_in_threadpool(
        lambda: [highlight.show_value(f.value, f.renderer) for f in view.fields]
    )
    return templating.render(
        request,
        "fields.html",
        view=view,
        fields=list(zip(view.fields, shown, strict=True)),
        previous_index=indexes[position - 1] if position > 0 else None,
        next_index=indexes[position + 1] if position + 1 < len(indexes) else None,
    )


# The sign-in handlers live in ``signin``; they are added here, not on a router of their
# own, because a route's class is fixed where it is declared and ``routing`` already
# imports ``signin`` (for the form a missing token leads to).
ui.add_api_route("/login", signin.login_form, methods=["GET"], response_class=HTMLResponse)
ui.add_api_route("/login", signin.login, methods=["POST"], response_class=HTMLResponse)
ui.add_api_route("/logout", signin.logout, methods=["POST"])


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
    return RedirectResponse(templating.ui_url(request))


router.include_router(ui)
