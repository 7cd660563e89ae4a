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

    text: str
    # Pygments' markup (it escapes its input), or None: the page shows ``text`` escaped.
    html: Markup | None
    language: str


def value_text(value: Any) -> str:
    """The text of a value: a string as it is, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def show_value(value: Any, renderer: str | None) -> ShownValue:
    """Highlight ``value`` by its renderer, or leave it plain for text and unknown ones."""
    text = value_text(value)
    language = renderer if renderer in LEXERS else "text"
    if language != "text" and not isinstance(value, str):
        # A list or mapping where code was expected (e.g. a bash command as argv): its
        # JSON is what is shown, so highlight it as JSON.
        language = "json"
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
