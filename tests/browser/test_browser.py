"""The web page in a real Chromium (Debian's ``chromium``, driven by Playwright; no
browser download): click from the runs list to a task instance's fields, check the
highlighting, the truncation marker and that a ``<script>`` value stays text, read it
with JavaScript off, check where ids wrap on a narrow screen and that the map-index grid
stays put, open /docs and /redoc with the network blocked, and save a screenshot of each
page.

Skipped when ``/usr/bin/chromium`` or Playwright is missing, except with ``CI=true``,
where that fails the run (as the database fixtures do).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from taskexec import schemas
from taskexec.sdk import serialization
from taskexec.wire import protocol

from conftest import IN_CI, LiveServer
from helpers import auth, only, seed_run

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
# The flags DEVELOPERS.md documents: headless, no sandbox (containers, root), and
# nothing that reaches the network on its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
XSS = "<script>window.__xss=1</script>"
LONG_SQL = "\n".join(
    [
        "SELECT o.id, o.customer_id, c.name, SUM(l.amount) AS total",
        "FROM orders AS o",
        "JOIN customers AS c ON c.id = o.customer_id",
        "JOIN order_lines AS l ON l.order_id = o.id",
        "WHERE o.created_at >= '2026-11-01' AND o.created_at < '2026-12-01'",
        "GROUP BY o.id, o.customer_id, c.name",
        "ORDER BY total DESC;",
    ]
    * 4
)
TRUNCATED_AT = 600
# The demo's report.templates_dict: over max_templated_field_length, so the worker sends
# Airflow's notice and the start of its JSON text.
CUT_JSON = serialization.serialize_and_truncate(
    {"inputs": " ".join(f"s3://raw-bucket/events/part-{i}" for i in range(60))}, TRUNCATED_AT
)
# The README's templates_dict with renderer sql.
QUERIES = {"query": "SELECT count(*) FROM dw.events WHERE ds = '2026-11-24'", "shards": 200}
MAP_COUNT = 40
# Where an id may wrap (the page puts <wbr> after these).
SEPARATORS = set("_-:+./")

pytestmark = [pytest.mark.browser, only("sqlite")]


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the browser test must run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, launched by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    """Where screenshots go: $TASKEXEC_ARTIFACTS_DIR, else artifacts/screenshots."""
    env = os.environ.get("TASKEXEC_ARTIFACTS_DIR")
    path = Path(env) if env else REPO_ROOT / "artifacts" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _create_run(settings: Any, dag_id: str, map_count: int | None) -> schemas.CreatedDagRun:
    # Playwright's sync API runs an event loop in this thread, so asyncio.run needs another.
    created: list[schemas.CreatedDagRun] = []
    worker = threading.Thread(
        target=lambda: created.append(
            seed_run(settings, dag_id=dag_id, tasks=1, map_count=map_count)
        )
    )
    worker.start()
    worker.join()
    (run,) = created
    return run


def _put(
    client: httpx.Client,
    ti: schemas.CreatedTaskInstance,
    fields: dict[str, object],
    meta: dict[str, object],
) -> None:
    headers = {**auth(ti.token), protocol.FIELD_META_HEADER: json.dumps(meta)}
    resp = client.put(f"/execution/task-instances/{ti.id}/rtif", json=fields, headers=headers)
    assert resp.status_code == 201, resp.text


@pytest.fixture
def runs(
    live_server: LiveServer, client: httpx.Client
) -> tuple[schemas.CreatedDagRun, schemas.CreatedDagRun]:
    """A plain run with SQL, bash, JSON, a truncated value, a mapping of SQL and a script
    payload, and a mapped run."""
    settings = live_server.app.state.settings
    plain = _create_run(settings, "warehouse_load.nightly-orders", None)
    _put(
        client,
        plain.task_instances[0],
        {
            "sql": LONG_SQL,
            "bash_command": 'psql "$DSN" -f load.sql | tee -a /var/log/load.log',
            "params": {"region": "eu", "days": [1, 2, 3]},
            "templates_dict": CUT_JSON,
            "queries": QUERIES,
            "doc": XSS,
        },
        {
            "sql": {"renderer": "sql"},
            "bash_command": {"renderer": "bash"},
            "params": {"renderer": "json"},
            "templates_dict": {"renderer": "json", "truncated_at": TRUNCATED_AT},
            "queries": {"renderer": "sql"},
            "doc": {"renderer": "text"},
        },
    )
    mapped = _create_run(settings, "fan_out", MAP_COUNT)
    for ti in mapped.task_instances[:3]:
        _put(
            client,
            ti,
            {"sql": f"SELECT * FROM shard_{ti.map_index} WHERE day = '2026-11-24'"},
            {"sql": {"renderer": "sql"}},
        )
    return plain, mapped


def _new_page(browser: Browser, *, javascript: bool = True, width: int = 1280) -> Page:
    context = browser.new_context(
        java_script_enabled=javascript, viewport={"width": width, "height": 800}
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def test_click_through_to_highlighted_fields(
    browser: Browser,
    live_server: LiveServer,
    runs: tuple[schemas.CreatedDagRun, schemas.CreatedDagRun],
    shots: Path,
) -> None:
    plain, mapped = runs
    page = _new_page(browser)
    problems: list[str] = []
    page.on(
        "console",
        lambda msg: problems.append(f"{msg.text} {msg.location}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    page.goto(f"{live_server.base_url}/ui/")
    assert page.get_by_role("link", name=mapped.run_id).is_visible()
    page.screenshot(path=shots / "runs.png", full_page=True)

    page.get_by_role("link", name=plain.run_id).click()
    page.wait_for_url(f"**/runs/{plain.run_id.replace(':', '%3A').replace('+', '%2B')}")
    row = page.locator("tbody tr").first
    assert row.locator(".badge").inner_text() == "queued"
    page.screenshot(path=shots / "run.png", full_page=True)

    page.get_by_role("link", name="View fields").click()
    page.wait_for_url("**/tasks/task_0")
    sql = _field(page, "sql")
    keyword = sql.locator(".highlight span.k", has_text="SELECT").first
    assert keyword.is_visible()
    # Pygments' stylesheet is applied (from 'self', allowed by the CSP): keywords are bold.
    assert keyword.evaluate("el => getComputedStyle(el).fontWeight") == "700"
    # The whole stored value is on the page, exactly; the copy button copies this text.
    assert sql.locator("#field-1-value").evaluate("el => el.textContent") == LONG_SQL
    assert sql.locator("button.copy").is_visible()

    _check_truncated_field(_field(page, "templates_dict"), shots)
    _check_mapping_of_sql(_field(page, "queries"))

    assert XSS in page.locator("body").inner_text()
    assert page.evaluate("typeof window.__xss") == "undefined"
    page.screenshot(path=shots / "fields.png", full_page=True)
    assert problems == []


def _field(page: Page, name: str) -> Locator:
    return page.locator(
        "section.field", has=page.get_by_role("heading", level=2, name=name, exact=True)
    )


def _check_truncated_field(field: Locator, shots: Path) -> None:
    marker = field.locator(".truncated")
    assert marker.is_visible()
    assert f"truncated by the worker at {TRUNCATED_AT} characters" in marker.inner_text()
    # Plain text with Airflow's notice set apart: never lexed as JSON, so no Pygments
    # error tokens (the red boxes a cut JSON text gets).
    assert field.locator(".highlight").count() == 0 and field.locator(".err").count() == 0
    notice = field.locator(".truncation-notice")
    assert notice.is_visible() and notice.text_content() == protocol.TRUNCATION_PREFIX
    assert "not whole json" in field.locator("p.note").inner_text()
    # The copy button copies the stored value, notice included.
    value = field.locator("pre.plain")
    assert value.evaluate("el => el.textContent") == CUT_JSON
    assert field.locator("button.copy").is_visible()
    field.screenshot(path=shots / "truncated_field.png")


def _check_mapping_of_sql(field: Locator) -> None:
    assert field.locator(".renderer").first.inner_text() == "sql"
    assert field.locator(".item h3").all_inner_texts() == list(QUERIES)
    query = field.locator(".item").nth(0)
    assert query.locator(".highlight span.k", has_text="SELECT").first.is_visible()
    assert query.locator(".highlight").evaluate("el => el.textContent") == QUERIES["query"]
    assert query.locator("button.copy").is_visible()
    shards = field.locator(".item").nth(1)
    assert shards.locator(".renderer").inner_text() == "json"
    assert shards.locator(".highlight").inner_text() == "200"


def test_mapped_navigation_and_javascript_off(
    browser: Browser,
    live_server: LiveServer,
    runs: tuple[schemas.CreatedDagRun, schemas.CreatedDagRun],
    shots: Path,
) -> None:
    plain, mapped = runs
    page = _new_page(browser)
    page.goto(f"{live_server.base_url}/ui/?dag_id=fan_out")
    page.get_by_role("link", name=mapped.run_id).click()
    page.get_by_role("link", name="View fields").first.click()
    page.wait_for_url("**/tasks/task_0?map_index=0")
    page.get_by_role("link", name="Next (map index 1) →").click()
    page.wait_for_url("**/tasks/task_0?map_index=1")
    assert page.locator("[aria-current=page]", has_text="1").count() == 2
    assert "shard_1" in page.locator(".highlight").inner_text()
    page.screenshot(path=shots / "mapped_fields.png", full_page=True)

    off = _new_page(browser, javascript=False)
    run_path = f"/ui/dags/{plain.dag_id}/runs/{plain.run_id}/tasks/task_0"
    off.goto(f"{live_server.base_url}{run_path}")
    assert off.locator(".highlight span.k", has_text="SELECT").first.is_visible()
    assert off.get_by_text("truncated by the worker at").is_visible()
    assert off.locator(".truncation-notice").is_visible()
    assert XSS in off.locator("body").inner_text()
    # Copying needs JavaScript; reading does not.
    assert off.locator("button.copy").first.is_hidden()
    off.screenshot(path=shots / "fields_no_javascript.png", full_page=False)
    off.get_by_role("link", name=plain.run_id).click()
    assert off.locator("tbody tr").count() == 1


def test_map_index_grid_stays_put(
    browser: Browser,
    live_server: LiveServer,
    runs: tuple[schemas.CreatedDagRun, schemas.CreatedDagRun],
    shots: Path,
) -> None:
    _, mapped = runs
    page = _new_page(browser)
    base = f"{live_server.base_url}/ui/dags/fan_out/runs/{mapped.run_id}/tasks/task_0"
    boxes = []
    # At index 0 "← Previous" is short and disabled; at 1 and 2 both links name an index.
    for index in (0, 1, 2):
        page.goto(f"{base}?map_index={index}")
        boxes.append(
            page.locator("ul.indexes li").evaluate_all(
                "items => items.map(li => { const r = li.getBoundingClientRect();"
                " return [r.x, r.y, r.width]; })"
            )
        )
    assert len(boxes[0]) == MAP_COUNT
    assert boxes[0] == boxes[1] == boxes[2]
    # A grid of equal columns over more than one row.
    rows = sorted({round(y) for _, y, _ in boxes[0]})
    columns = sorted({round(x) for x, _, _ in boxes[0]})
    assert len(rows) > 1 and len(columns) * (len(rows) - 1) < MAP_COUNT <= len(columns) * len(rows)
    assert len({round(w) for _, _, w in boxes[0]}) == 1
    page.screenshot(path=shots / "mapped_fields.png", full_page=True)


# The positions in an element's text where a new line starts (Chromium's layout, read
# character by character), and the text itself.
_LINE_BREAKS = """el => {
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  let text = "", top = null;
  const breaks = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getClientRects()[0];
      if (!rect) continue;
      if (top !== null && rect.top > top + 2) breaks.push(text.length);
      top = rect.top;
      text += node.data[i];
    }
  }
  return [text, breaks];
}"""


def _breaks_only_after_separators(ids: Locator) -> int:
    """Check each element's line breaks come right after a separator; the number of breaks."""
    seen = 0
    for text, breaks in ids.evaluate_all(f"els => els.map({_LINE_BREAKS})"):
        assert all(text[i - 1] in SEPARATORS for i in breaks), (text, breaks)
        seen += len(breaks)
    return seen


def test_ids_wrap_only_at_separators(
    browser: Browser,
    live_server: LiveServer,
    runs: tuple[schemas.CreatedDagRun, schemas.CreatedDagRun],
    shots: Path,
) -> None:
    plain, _ = runs
    page = _new_page(browser, width=360)
    page.goto(f"{live_server.base_url}/ui/")
    run_links = page.locator("td.id a")
    assert run_links.count() == 2
    # On a phone-sized screen the run ids do wrap, and only after _ - : + .
    assert _breaks_only_after_separators(run_links) >= 2
    _breaks_only_after_separators(page.locator("tbody td:first-child a, aside.dags li a"))
    page.screenshot(path=shots / "runs_narrow.png", full_page=True)

    page.get_by_role("link", name=plain.run_id).click()
    page.wait_for_url("**/runs/**")
    assert _breaks_only_after_separators(page.locator("h1 code, nav.crumbs a")) >= 1
    page.screenshot(path=shots / "run_narrow.png", full_page=True)


def _offline_page(browser: Browser, base_url: str) -> tuple[Page, list[str], list[str]]:
    """A page whose requests to any host but the test server fail (as with no internet),
    with the addresses it tried and its console errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    own = urlsplit(base_url).netloc
    tried: list[str] = []

    def only_own(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            tried.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_own)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, tried, errors


def test_api_docs_work_offline(browser: Browser, live_server: LiveServer, shots: Path) -> None:
    spec = httpx.get(f"{live_server.base_url}/openapi.json").json()
    operations = sum(len(ops) for ops in spec["paths"].values())
    rtif = "/execution/task-instances/{task_instance_id}/rtif"

    page, tried, errors = _offline_page(browser, live_server.base_url)
    page.goto(f"{live_server.base_url}/docs")
    # Waits for Swagger UI to fetch /openapi.json and render it.
    page.locator(f'.opblock-put [data-path="{rtif}"]').wait_for(state="visible")
    assert page.locator(".opblock").count() == operations
    assert page.get_by_role("heading", name="taskexec").is_visible()
    page.screenshot(path=shots / "docs.png", full_page=False)
    assert tried == [] and errors == []

    page, tried, errors = _offline_page(browser, live_server.base_url)
    page.goto(f"{live_server.base_url}/redoc")
    page.get_by_text(rtif).first.wait_for(state="visible")
    assert page.get_by_role("heading", name="Put Rtif").is_visible()
    page.screenshot(path=shots / "redoc.png", full_page=False)
    assert tried == []
    # Redoc's footer logo is its one address elsewhere: refused by the page's CSP.
    assert all("cdn.redoc.ly" in error for error in errors), errors
