"""How a field's value is shown: lexer by renderer, JSON for non-strings, exact text."""

from __future__ import annotations

import html
import re

import pytest

from taskexec.web import highlight


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
    # A list where bash was expected is still shown (and highlighted) as its JSON.
    argv = highlight.show_value(["ls", "-l"], "bash")
    assert argv.language == "json" and argv.text == '[\n  "ls",\n  "-l"\n]'
    assert highlight.show_value(5, None).text == "5"


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
