"""The web page (/ui) through a live server on every backend: the three pages, the
highlighting and escaping of fields, map-index navigation, HTML error pages, the
security headers and the sign-in flow. Fields are written through the real PUT /rtif."""

from __future__ import annotations

import html
import json
import re

import httpx
import pytest

from taskexec import schemas
from taskexec.api import deps
from taskexec.config import Settings
from taskexec.sdk import serialization
from taskexec.server.app import create_app
from taskexec.wire import protocol

from conftest import LiveServer
from helpers import auth, get_as, only, seed, seed_run

XSS = "<script>window.__xss=1</script>"
SQL = "SELECT id, name\nFROM users\nWHERE id = 42"
# The demo's report.templates_dict: over max_templated_field_length, so the worker sends
# the notice and the start of its JSON text, cut mid-string.
CUT_JSON = serialization.serialize_and_truncate({"inputs": "s3://raw/part-1 " * 400}, 600)
FIELDS = {
    "sql": SQL,
    "bash_command": "echo 'hello' | wc -c",
    "payload": XSS,
    "env": {"A": "1", "B": [1, 2]},
    "legacy": serialization.TRUNCATION_PREFIX + "'abc'... ",
    "note": "<b>not bold</b>",
    "templates_dict": {"query": "SELECT 1 FROM t", "<i>limit</i>": 5},
    "report": CUT_JSON,
}
META = {
    "sql": {"renderer": "sql", "truncated_at": 4096},
    "bash_command": {"renderer": "bash"},
    "payload": {"renderer": "text"},
    "env": {"renderer": "json"},
    "note": {"renderer": "markdown"},
    "templates_dict": {"renderer": "sql"},
    "report": {"renderer": "json", "truncated_at": 600},
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _put(
    client: httpx.Client,
    ti: schemas.CreatedTaskInstance,
    fields: dict[str, object],
    meta: dict[str, object] | None = None,
) -> None:
    headers = auth(ti.token)
    if meta is not None:
        headers[protocol.FIELD_META_HEADER] = json.dumps(meta)
    resp = client.put(f"/execution/task-instances/{ti.id}/rtif", json=fields, headers=headers)
    assert resp.status_code == 201, resp.text


def _start(client: httpx.Client, ti: schemas.CreatedTaskInstance) -> None:
    body = {"state": "running", "hostname": "h", "unixname": "u", "pid": 1}
    resp = client.patch(f"/execution/task-instances/{ti.id}/run", json=body, headers=auth(ti.token))
    assert resp.status_code == 200, resp.text


def _html(resp: httpx.Response, status: int = 200) -> str:
    """The page, without the ``<wbr>`` break hints inside ids (so that they read whole)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["content-security-policy"] == CSP
    assert resp.headers["x-content-type-options"] == "nosniff"
    return resp.text.replace("<wbr>", "")


def _run_url(run: schemas.CreatedDagRun) -> str:
    return f"/ui/dags/{run.dag_id}/runs/{run.run_id}"


def _fields_url(run: schemas.CreatedDagRun, task_id: str = "task_0") -> str:
    return f"{_run_url(run)}/tasks/{task_id}"


@pytest.fixture
def mapped_run(client: httpx.Client, settings: Settings) -> schemas.CreatedDagRun:
    """task_0 and task_1, three map indexes each; task_0 [0] and [1] have fields."""
    run = seed(settings, tasks=2, map_count=3)
    _put(client, run.task_instances[0], FIELDS, META)
    _put(client, run.task_instances[1], {"sql": "SELECT 2"}, {"sql": {"renderer": "sql"}})
    return run


def test_runs_page_lists_runs_newest_first(client: httpx.Client, settings: Settings) -> None:
    older = seed(settings)
    newer = seed_run(settings, dag_id="other_dag", tasks=1)

    page = _html(client.get("/ui/"))
    assert older.run_id in page and newer.run_id in page
    assert page.index(newer.run_id) < page.index(older.run_id)
    assert 'href="/ui/?dag_id=test_dag"' in page and 'href="/ui/?dag_id=other_dag"' in page
    assert page.count("1 run<") == 2
    assert 'class="badge state-queued">queued<' in page

    only_other = _html(client.get("/ui/", params={"dag_id": "other_dag"}))
    assert newer.run_id in only_other and older.run_id not in only_other

    first = _html(client.get("/ui/", params={"limit": 1}))
    assert newer.run_id in first and older.run_id not in first
    assert "1\u20131 of 2 runs" in first
    assert 'rel="next" href="/ui/?limit=1&amp;offset=1"' in first
    second = _html(client.get("/ui/", params={"limit": 1, "offset": 1}))
    assert older.run_id in second and newer.run_id not in second
    assert 'rel="prev" href="/ui/?limit=1&amp;offset=0"' in second

    root = client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"


def test_run_page_shows_task_instances(
    client: httpx.Client, mapped_run: schemas.CreatedDagRun
) -> None:
    _start(client, mapped_run.task_instances[4])
    page = _html(client.get(_run_url(mapped_run)))
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)[1:]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S) for row in rows]
    assert [(c[0], c[1]) for c in cells] == [
        (f"task_{t}", str(m)) for t in (0, 1) for m in range(3)
    ]
    assert 'class="badge state-running">running<' in cells[4][2]
    assert all('class="badge state-queued">queued<' in c[2] for i, c in enumerate(cells) if i != 4)
    assert all(c[3].strip() == "1" for c in cells)
    links = re.findall(r'href="([^"]*/tasks/[^"]*)"', page)
    fields_links = [link for link in links if "/log?" not in link]
    assert fields_links == [
        f"{_fields_url(mapped_run).replace(':', '%3A').replace('+', '%2B')}?map_index={m}"
        for m in (0, 1)
    ]
    assert page.count("none yet") == 4
    # The one started try links to its log.
    log_links = [link for link in links if "/log?" in link]
    assert log_links == [
        f"{_fields_url(mapped_run).replace(':', '%3A').replace('+', '%2B')}".replace(
            "/tasks/task_0", "/tasks/task_1"
        )
        + "/log?map_index=1&amp;try=1"
    ]
    # The run's state, and its task instances by state.
    assert 'class="badge state-queued">queued<' in page.split("<table>")[0]
    assert "running</span> 1" in page and "queued</span> 5" in page


def test_fields_page_highlights_marks_and_escapes(
    client: httpx.Client, mapped_run: schemas.CreatedDagRun
) -> None:
    page = _html(client.get(_fields_url(mapped_run), params={"map_index": 0}))
    assert "Written by try 1 at" in page

    sections = dict(re.findall(r"<h2>(.*?)</h2>(.*?)</section>", page, flags=re.S))
    assert list(sections) == list(FIELDS)
    sql = sections["sql"]
    assert '<div class="highlight">' in sql
    assert '<span class="k">SELECT</span>' in sql and '<span class="k">WHERE</span>' in sql
    assert "truncated by the worker at 4096 characters" in sql
    assert '<span class="nb">echo</span>' in sections["bash_command"]
    # Non-string JSON is pretty-printed (indent 2) and highlighted.
    assert '\n<span class="w">  </span><span class="nt">"A"</span>' in sections["env"]
    # Only the notice tells: truncated, length unknown.
    assert "truncated by the worker." in sections["legacy"]
    assert "truncated by the worker" not in sections["payload"]
    # Unknown renderers and text are plain, escaped text.
    assert "&lt;b&gt;not bold&lt;/b&gt;" in sections["note"] and "highlight" not in sections["note"]
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in sections["payload"]
    assert "<script>window.__xss" not in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/ui/static/app.js" defer>']
    # Copy buttons ship hidden: app.js shows them, and the page reads fine without it.
    # A mapping shown key by key has one per key instead of one for the field.
    buttons = len(FIELDS) - 1 + len(FIELDS["templates_dict"])
    assert page.count('class="copy" data-copy-target=') == buttons
    assert page.count("hidden>Copy</button>") == buttons


def test_fields_page_shows_a_truncated_value_as_plain_text(
    client: httpx.Client, mapped_run: schemas.CreatedDagRun
) -> None:
    page = _html(client.get(_fields_url(mapped_run), params={"map_index": 0}))
    report = dict(re.findall(r"<h2>(.*?)</h2>(.*?)</section>", page, flags=re.S))["report"]
    assert "truncated by the worker at 600 characters" in report
    assert "Shown as plain text: the worker cut the value, so it is not whole json." in report
    # Never lexed as JSON: no highlighting at all, so no Pygments error token (red boxes).
    assert 'class="err"' not in page and "highlight" not in report
    notice = html.escape(protocol.TRUNCATION_PREFIX, quote=False)
    assert f'<span class="truncation-notice">{notice}</span>' in report
    (pre,) = re.findall(r'<pre class="plain" id="field-\d+-value">\n(.*?)</pre>', report, re.S)
    assert html.unescape(re.sub(r"<[^>]+>", "", pre)) == CUT_JSON


def test_fields_page_shows_a_mapping_under_sql_key_by_key(
    client: httpx.Client, mapped_run: schemas.CreatedDagRun
) -> None:
    page = _html(client.get(_fields_url(mapped_run), params={"map_index": 0}))
    section = dict(re.findall(r"<h2>(.*?)</h2>(.*?)</section>", page, flags=re.S))
    shown = section["templates_dict"]
    assert '<span class="renderer" title="renderer">sql</span>' in shown
    items = re.findall(
        r'<div class="item">\s*<header>\s*<h3>(.*?)</h3>(.*?)</div>\s*</div>', shown, re.S
    )
    assert [key for key, _ in items] == ["query", "&lt;i&gt;limit&lt;/i&gt;"]
    query, limit = (body for _, body in items)
    assert 'title="shown as">sql<' in query and '<span class="k">SELECT</span>' in query
    assert 'title="shown as">json<' in limit and '<span class="mi">5</span>' in limit
    assert 'data-copy-target="field-7-value-1"' in query and 'id="field-7-value-1"' in query


def test_mapped_navigation(client: httpx.Client, mapped_run: schemas.CreatedDagRun) -> None:
    base = _fields_url(mapped_run).replace(":", "%3A").replace("+", "%2B")
    middle = _html(client.get(_fields_url(mapped_run), params={"map_index": 1}))
    assert f'rel="prev" href="{base}?map_index=0"' in middle
    assert f'rel="next" href="{base}?map_index=2"' in middle
    assert '<span class="current" aria-current="page">1</span>' in middle
    assert all(f'href="{base}?map_index={m}">{m}</a>' in middle for m in (0, 2))

    first = _html(client.get(_fields_url(mapped_run), params={"map_index": 0}))
    assert 'rel="prev"' not in first and f'rel="next" href="{base}?map_index=1"' in first


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/ui/dags/nope/runs/r", {}, "No run of this dag is known."),
        ("/ui/dags/test_dag/runs/nope", {}, "This dag has no run with that id."),
        ("{run}/tasks/nope", {}, "This run has no task instance with that task id"),
        ("{run}/tasks/task_0", {"map_index": 7}, "This run has no task instance with that"),
        ("{run}/tasks/task_0", {}, "This run has no task instance with that task id"),
        ("{run}/tasks/task_0", {"map_index": 2}, "No rendered fields are stored"),
        ("/ui/no/such/page", {}, "There is no page at this address."),
        ("/ui/static/nope.js", {}, "There is no such file."),
    ],
)
def test_not_found_pages(
    client: httpx.Client,
    mapped_run: schemas.CreatedDagRun,
    path: str,
    params: dict[str, object],
    message: str,
) -> None:
    url = path.replace("{run}", _run_url(mapped_run))
    page = _html(client.get(url, params=params), 404)
    assert "<h1>" in page and message in page


@only("sqlite")
def test_bad_query_is_an_html_400(client: httpx.Client) -> None:
    page = _html(client.get("/ui/dags/d/runs/r/tasks/t", params={"map_index": "x"}), 400)
    assert "map_index" in page
    _html(client.get("/ui/", params={"limit": 0}), 400)


@only("sqlite")
def test_static_files(client: httpx.Client) -> None:
    css = client.get("/ui/static/pygments.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert ".highlight .k {" in css.text
    js = client.get("/ui/static/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "navigator.clipboard" in js.text
    assert "white-space: pre-wrap" in client.get("/ui/static/style.css").text
    assert js.headers["content-security-policy"] == CSP


@only("sqlite")
def test_sign_in_flow(token_server: LiveServer, settings: Settings) -> None:
    run = seed(settings)
    with token_server.client() as c:
        form = _html(c.get("/ui/"), 401)
        assert 'action="/ui/login"' in form and 'name="token"' in form
        assert 'name="next" value="/ui/"' in form and "Sign out" not in form
        # The sign-in page needs its stylesheet without a token.
        assert c.get("/ui/static/style.css").status_code == 200

        wrong = c.post("/ui/login", data={"token": "wrong", "next": "/ui/"})
        assert "That is not this server&#39;s token." in _html(wrong, 401)
        assert "set-cookie" not in wrong.headers

        ok = c.post("/ui/login", data={"token": "s3cret-token"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(f"{deps.READ_TOKEN_COOKIE}=s3cret-token;")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        signed_in = _html(c.get("/ui/"))
        assert run.run_id in signed_in and "Sign out" in signed_in

        # Back to the page that asked; never to another site.
        deep = c.post("/ui/login", data={"token": "s3cret-token", "next": _run_url(run)})
        assert deep.headers["location"] == _run_url(run)
        away = c.post("/ui/login", data={"token": "s3cret-token", "next": "//evil.example/ui/"})
        assert away.headers["location"] == "/ui/"

        out = c.post("/ui/logout")
        assert out.status_code == 303 and f"{deps.READ_TOKEN_COOKIE}=" in out.headers["set-cookie"]
        assert deps.READ_TOKEN_COOKIE not in c.cookies
        _html(c.get("/ui/"), 401)

        c.cookies.set(deps.READ_TOKEN_COOKIE, "stale")
        assert "Sign in again" in _html(c.get("/ui/"), 401)
    with token_server.client() as c:
        # A form on another site cannot sign this browser in (or out): no cookie is set.
        for path in ("/ui/login", "/ui/logout"):
            for header in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
                forged = c.post(path, data={"token": "s3cret-token"}, headers=header)
                assert "Refused" in _html(forged, 403)
                assert "set-cookie" not in forged.headers
        own = f"http://{c.base_url.host}:{c.base_url.port}"
        same = c.post("/ui/login", data={"token": "s3cret-token"}, headers={"Origin": own})
        assert same.status_code == 303 and deps.READ_TOKEN_COOKIE in same.headers["set-cookie"]
    with token_server.client() as c:
        # Tools may send the Bearer header instead of the cookie.
        assert run.run_id in _html(c.get("/ui/", headers=auth("s3cret-token")))


@only("sqlite")
def test_without_token_only_loopback_clients_are_served(settings: Settings) -> None:
    app = create_app(settings)
    assert get_as(app, "/ui/", "127.0.0.1").status_code == 200
    page = _html(get_as(app, "/ui/", "10.1.2.3"), 403)
    assert "TASKEXEC_API_TOKEN" in page


def test_runs_filter_by_state_and_show_counts(client: httpx.Client, settings: Settings) -> None:
    first, second = seed(settings), seed(settings)
    _start(client, first.task_instances[0])
    client.patch(f"/api/v1/dags/test_dag/runs/{second.run_id}", json={"state": "failed"})
    failed = _html(client.get("/ui/", params={"state": "failed"}))
    assert second.run_id in failed and first.run_id not in failed
    assert "skipped</span> 1" in failed  # the cancelled run's task instance
    everything = _html(client.get("/ui/"))
    assert first.run_id in everything and "running</span> 1" in everything
    assert 'href="/ui/?state=failed"' in everything
    none = _html(client.get("/ui/", params={"state": "success"}))
    assert "No success runs." in none


def test_log_page_shows_a_try_log_escaped(client: httpx.Client, settings: Settings) -> None:
    run = seed(settings)
    ti = run.task_instances[0]
    _start(client, ti)
    path = protocol.log_path(settings.effective_logs_dir, "test_dag", run.run_id, "task_0", -1, 1)
    path.parent.mkdir(parents=True)
    path.write_text("[taskexec] try 1\n<script>alert(1)</script>\n")
    page = _html(client.get(f"{_fields_url(run)}/log"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    missing = _html(client.get(f"{_fields_url(run)}/log", params={"try": 2}))
    assert "No log of this try on this server" in missing
    unknown = client.get(f"{_run_url(run)}/tasks/nope/log")
    assert unknown.status_code == 404


@only("sqlite")
def test_ids_may_wrap_only_after_separators(client: httpx.Client, settings: Settings) -> None:
    run = seed_run(
        settings, dag_id="nightly.orders-load", tasks=1, run_id="manual__2026-11-24T10:00:00+00:00"
    )
    raw = client.get("/ui/").text
    hinted_run = "manual__<wbr>2026-<wbr>11-<wbr>24T10:<wbr>00:<wbr>00+<wbr>00:<wbr>00"
    assert f">{hinted_run}</a>" in raw
    assert ">nightly.<wbr>orders-<wbr>load</a>" in raw
    # Only the text is hinted: links and the title keep the id as it is.
    assert 'href="/ui/?dag_id=nightly.orders-load"' in raw
    run_page = client.get(_run_url(run)).text
    assert f"<h1>Run <code>{hinted_run}</code></h1>" in run_page
    assert f"<title>{run.run_id} · taskexec</title>" in run_page
    # Short ids stay whole.
    assert '<td class="id">task_0</td>' in run_page
