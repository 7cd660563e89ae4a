"""The web page in a real Chromium (Debian's ``chromium``, driven by Playwright; no
browser download): click from the runs list to a task instance's fields, check the
highlighting, the truncation marker and that a ``<script>`` value stays text, read it
with JavaScript off, and save a screenshot of each page.

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

import httpx
import pytest

from taskexec import schemas
from taskexec.sdk import serialization
from taskexec.wire import protocol

from conftest import IN_CI, LiveServer
from helpers import auth, only, seed_run

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

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
    """A plain run with SQL, bash, JSON and a script payload, and a mapped run."""
    settings = live_server.app.state.settings
    plain = _create_run(settings, "warehouse_load", None)
    sql = serialization.truncate_rendered_value(LONG_SQL, TRUNCATED_AT)
    _put(
        client,
        plain.task_instances[0],
        {
            "sql": sql,
            "bash_command": 'psql "$DSN" -f load.sql | tee -a /var/log/load.log',
            "params": {"region": "eu", "days": [1, 2, 3]},
            "doc": XSS,
        },
        {
            "sql": {"renderer": "sql", "truncated_at": TRUNCATED_AT},
            "bash_command": {"renderer": "bash"},
            "params": {"renderer": "json"},
            "doc": {"renderer": "text"},
        },
    )
    mapped = _create_run(settings, "fan_out", 4)
    for ti in mapped.task_instances[:3]:
        _put(
            client,
            ti,
            {"sql": f"SELECT * FROM shard_{ti.map_index} WHERE day = '2026-11-24'"},
            {"sql": {"renderer": "sql"}},
        )
    return plain, mapped


def _new_page(browser: Browser, *, javascript: bool = True) -> Page:
    context = browser.new_context(
        java_script_enabled=javascript, viewport={"width": 1280, "height": 800}
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
    sql = page.locator("section.field", has=page.locator("h2", has_text="sql"))
    keyword = sql.locator(".highlight span.k", has_text="SELECT").first
    assert keyword.is_visible()
    # Pygments' stylesheet is applied (from 'self', allowed by the CSP): keywords are bold.
    assert keyword.evaluate("el => getComputedStyle(el).fontWeight") == "700"
    marker = sql.locator(".truncated")
    assert marker.is_visible()
    assert f"truncated by the worker at {TRUNCATED_AT} characters" in marker.inner_text()
    # The whole stored value is on the page, exactly; the copy button copies this text.
    stored = serialization.truncate_rendered_value(LONG_SQL, TRUNCATED_AT)
    assert sql.locator("#field-1-value").evaluate("el => el.textContent") == stored
    assert sql.locator("button.copy").is_visible()

    assert XSS in page.locator("body").inner_text()
    assert page.evaluate("typeof window.__xss") == "undefined"
    page.screenshot(path=shots / "fields.png", full_page=True)
    assert problems == []


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
    run_path = f"/ui/dags/warehouse_load/runs/{plain.run_id}/tasks/task_0"
    off.goto(f"{live_server.base_url}{run_path}")
    assert off.locator(".highlight span.k", has_text="SELECT").first.is_visible()
    assert off.get_by_text("truncated by the worker at").is_visible()
    assert XSS in off.locator("body").inner_text()
    # Copying needs JavaScript; reading does not.
    assert off.locator("button.copy").first.is_hidden()
    off.screenshot(path=shots / "fields_no_javascript.png", full_page=False)
    off.get_by_role("link", name=plain.run_id).click()
    assert off.locator("tbody tr").count() == 1
