"""How a rendered field is shown: Pygments highlighting chosen by the field's renderer."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import BashLexer, JsonLexer, PythonLexer, SqlLexer, YamlLexer

from taskexec.wire import protocol

# The renderers workers send that get highlighting; any other renderer is plain text.
LEXERS: dict[str, type[Lexer]] = {
    "bash": BashLexer,
    "sql": SqlLexer,
    "json": JsonLexer,
    "yaml": YamlLexer,
    "py": PythonLexer,
}

# Beyond this size a value is still shown in full, but as plain text: lexing megabytes
# on every page view would make the page slow for everyone.
HIGHLIGHT_MAX_CHARS = 200_000

_FORMATTER = HtmlFormatter(cssclass="highlight")


@dataclasses.dataclass(frozen=True)
class ShownValue:
    """A field's value as the page shows it."""

    # The value's text, after ``notice`` where there is one.
    text: str
    # Pygments' markup (it escapes its input), or None: the page shows ``text`` escaped.
    html: Markup | None
    language: str
    # Airflow's truncation notice the value starts with, shown apart from the text.
    notice: str = ""
    # Why the value is not shown in the renderer's language, when it is not.
    note: str = ""
    # A mapping under a renderer that names a language: each key with its value.
    items: tuple[ShownItem, ...] = ()


@dataclasses.dataclass(frozen=True)
class ShownItem:
    """One key of a mapping and its value, as the page shows them."""

    key: str
    value: ShownValue


def value_text(value: Any) -> str:
    """The text of a value: a string as it is, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an empty mapping" if not value else "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true or false"
    return "null" if value is None else "a number"


def show_value(value: Any, renderer: str | None) -> ShownValue:
    """Highlight ``value`` by its renderer, or leave it plain for text and unknown ones.

    A string is shown in the renderer's language, unless the worker cut it (then it is
    no longer whole code: plain text after the notice). A mapping under a language other
    than JSON is shown key by key, each string value in that language, as Airflow does
    (``templates_dict`` with ``sql``); any other non-string value is shown as its JSON.
    """
    language = renderer if renderer in LEXERS else "text"
    if isinstance(value, str) or language in ("text", "json"):
        return _show_text(value_text(value), language)
    text = value_text(value)
    if isinstance(value, dict) and value:
        if len(text) > HIGHLIGHT_MAX_CHARS:
            return ShownValue(text, None, "text", note="Shown as JSON: too large to highlight.")
        items = tuple(ShownItem(key, _show_item(item, language)) for key, item in value.items())
        return ShownValue(text=text, html=None, language=language, items=items)
    note = f"Shown as JSON: the value is {_kind(value)}, not {language} text."
    return dataclasses.replace(_show_text(text, "json"), note=note)


def _show_item(item: Any, language: str) -> ShownValue:
    # A string in the renderer's language; a number, list or mapping as its JSON.
    return _show_text(value_text(item), language if isinstance(item, str) else "json")


def _show_text(text: str, language: str) -> ShownValue:
    if protocol.is_truncated(text):
        note = (
            f"Shown as plain text: the worker cut the value, so it is not whole {language}."
            if language != "text"
            else ""
        )
        rest = text[len(protocol.TRUNCATION_PREFIX) :]
        return ShownValue(
            text=rest, html=None, language="text", notice=protocol.TRUNCATION_PREFIX, note=note
        )
    if language == "text" or len(text) > HIGHLIGHT_MAX_CHARS:
        return ShownValue(text=text, html=None, language="text")
    # stripnl/ensurenl off: the page shows exactly the stored text, leading and
    # trailing newlines included, and the copy button copies exactly that.
    lexer = LEXERS[language](stripnl=False, ensurenl=False)
    html = highlight(text, lexer, _FORMATTER).removesuffix("\n")
    if not text.endswith("\n") and html.endswith("\n</pre></div>"):
        # The formatter ends the last line with a newline the value does not have.
        html = html.removesuffix("\n</pre></div>") + "</pre></div>"
    return ShownValue(text=text, html=Markup(html), language=language)


@functools.cache
def pygments_css() -> str:
    """The stylesheet for Pygments' markup, generated once per process."""
    # types-pygments leaves this one untyped.
    return str(_FORMATTER.get_style_defs(".highlight"))  # type: ignore[no-untyped-call]
