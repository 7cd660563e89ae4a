"""How a field's value is shown: lexer by renderer, JSON for non-strings, exact text."""

from __future__ import annotations

import html
import re

import pytest

from taskexec.sdk import serialization
from taskexec.web import highlight
from taskexec.wire import protocol


def _text_of(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


@pytest.mark.parametrize(
    ("renderer", "value", "token"),
    [
        ("sql", "SELECT 1", '<span class="k">SELECT</span>'),
        ("bash", "echo hi", '<span class="nb">echo</span>'),
        ("json", '{"a": 1}', '<span class="nt">"a"</span>'),
        ("yaml", "key: value", '<span class="nt">key</span>'),
        ("py", "def f(): pass", '<span class="k">def</span>'),
    ],
)
def test_known_renderers_are_highlighted(renderer: str, value: str, token: str) -> None:
    shown = highlight.show_value(value, renderer)
    assert shown.language == renderer
    assert shown.html is not None and shown.html.startswith('<div class="highlight"><pre>')
    assert token in shown.html
    assert _text_of(shown.html) == value


@pytest.mark.parametrize("renderer", [None, "text", "markdown", "doc_md", "rst"])
def test_other_renderers_are_plain_text(renderer: str | None) -> None:
    shown = highlight.show_value("<b>x</b>", renderer)
    assert (shown.html, shown.text, shown.language) == (None, "<b>x</b>", "text")


def test_non_strings_are_indented_json() -> None:
    value = {"b": [1, "two"], "a": None}
    pretty = '{\n  "b": [\n    1,\n    "two"\n  ],\n  "a": null\n}'
    assert highlight.show_value(value, "text").text == pretty
    assert highlight.show_value(value, None).html is None
    as_json = highlight.show_value(value, "json")
    assert as_json.html is not None and _text_of(as_json.html) == pretty
    # A list where bash was expected is still shown (and highlighted) as its JSON, and
    # the page says why.
    argv = highlight.show_value(["ls", "-l"], "bash")
    assert argv.language == "json" and argv.text == '[\n  "ls",\n  "-l"\n]'
    assert argv.note == "Shown as JSON: the value is a list, not bash text."
    assert highlight.show_value(5, None).text == "5"
    assert as_json.note == "" and as_json.items == ()


def test_a_mapping_under_a_language_is_shown_key_by_key() -> None:
    # The README's templates_dict with renderer sql: each string value is SQL.
    value = {"query": "SELECT count(*) FROM t WHERE ds = '2026-11-24'", "limit": 10, "tags": ["a"]}
    shown = highlight.show_value(value, "sql")
    assert shown.language == "sql" and shown.html is None and shown.note == ""
    assert [item.key for item in shown.items] == ["query", "limit", "tags"]
    query, limit, tags = (item.value for item in shown.items)
    assert query.language == "sql" and query.html is not None
    assert '<span class="k">SELECT</span>' in query.html
    assert _text_of(query.html) == value["query"]
    # Values that are not text are shown as their JSON.
    assert (limit.language, limit.text) == ("json", "10")
    assert tags.language == "json" and tags.text == '[\n  "a"\n]'
    # JSON text of the whole mapping stays the field's text.
    assert shown.text == highlight.value_text(value)


@pytest.mark.parametrize(
    ("value", "note"),
    [
        ({}, "Shown as JSON: the value is an empty mapping, not py text."),
        (None, "Shown as JSON: the value is null, not py text."),
        (True, "Shown as JSON: the value is true or false, not py text."),
        (2.5, "Shown as JSON: the value is a number, not py text."),
    ],
)
def test_other_non_strings_under_a_language_say_why_they_are_json(value: object, note: str) -> None:
    shown = highlight.show_value(value, "py")
    assert (shown.language, shown.note, shown.items) == ("json", note, ())


def test_a_huge_mapping_is_plain_json_saying_why() -> None:
    value = {"sql": "SELECT 1;" * (highlight.HIGHLIGHT_MAX_CHARS // 9 + 1)}
    shown = highlight.show_value(value, "sql")
    assert shown.html is None and shown.items == () and shown.text == highlight.value_text(value)
    assert shown.note == "Shown as JSON: too large to highlight."


@pytest.mark.parametrize("renderer", ["json", "sql", "bash", "py", "yaml", "text", None])
def test_a_truncated_value_is_plain_text_after_the_notice(renderer: str | None) -> None:
    # What the worker sends for a templates_dict over max_templated_field_length: the
    # notice, then the start of its JSON text, cut mid-string.
    cut = serialization.serialize_and_truncate({"inputs": "s3://raw/part-1 " * 400}, 300)
    assert isinstance(cut, str) and cut.startswith(protocol.TRUNCATION_PREFIX)
    shown = highlight.show_value(cut, renderer)
    assert shown.html is None and shown.language == "text"
    assert shown.notice == protocol.TRUNCATION_PREFIX
    assert shown.notice + shown.text == cut
    if renderer in ("json", "sql", "bash", "py", "yaml"):
        assert shown.note == (
            f"Shown as plain text: the worker cut the value, so it is not whole {renderer}."
        )
    else:
        assert shown.note == ""
    # Inside a mapping too.
    item = highlight.show_value({"query": cut}, "sql").items[0].value
    assert item.html is None and item.notice + item.text == cut


@pytest.mark.parametrize("value", ["", "\n", "SELECT 1", "\n\nSELECT 1\n\n", "a\tb\r\nc"])
def test_text_is_kept_exactly(value: str) -> None:
    shown = highlight.show_value(value, "sql")
    assert shown.html is not None
    assert _text_of(shown.html) == value.replace("\r\n", "\n")


def test_markup_is_escaped() -> None:
    shown = highlight.show_value("SELECT '<script>alert(1)</script>'", "sql")
    assert shown.html is not None
    assert "<script>" not in shown.html and "&lt;script&gt;" in shown.html


def test_huge_values_are_plain_but_whole() -> None:
    value = "SELECT 1;\n" * (highlight.HIGHLIGHT_MAX_CHARS // 10 + 1)
    shown = highlight.show_value(value, "sql")
    assert shown.html is None and shown.text == value


def test_pygments_css_scopes_the_classes() -> None:
    css = highlight.pygments_css()
    assert ".highlight .k {" in css and ".highlight .s {" in css
