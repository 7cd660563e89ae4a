"""Masking secrets in rendered template fields, after Airflow's ``SecretsMasker``.

A value is hidden when its *name* (a field name or a dict key) contains a sensitive
word; inside other strings, registered secrets and values that look like credentials
(PEM private keys, JWTs, AWS access key ids, passwords in URLs) are replaced.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from itertools import count, repeat
from typing import Any

from taskexec.wire import jsontree, protocol

DEFAULT_SENSITIVE_WORDS: frozenset[str] = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "authorization",
        "passphrase",
        "passwd",
        "password",
        "private_key",
        "proxies",
        "secret",
        "token",
        "keyfile_dict",
        "service_account",
    }
)
MASK = "***"
MIN_SECRET_LENGTH = 5
# Values nested more than this many containers deep are replaced by MASK as a whole:
# walking them is possible, but nothing downstream (repr, json, orjson) could handle the
# result, and masking the whole subtree can never leak what is inside it. Far deeper than
# the wire allows: the masker also guards values that never crossed it.
MAX_DEPTH = 10 * protocol.MAX_NESTING_DEPTH

_NAME_CACHE_SIZE = 4096

# Each alternative starts with a literal or is bounded, so matching stays linear even on
# large inputs (a quadratic pattern here would stall every rendered-fields write):
# - pem: a missing END line masks to the end of the string rather than leak the key body.
# - skip: an "eyJ" run that is not a JWT is consumed unchanged; otherwise every "eyJ"
#   inside a long run would rescan the run. No JWT can start later in the same run, so
#   this loses nothing (only a key id or PEM header glued to such a run, with no
#   separator, goes undetected).
# - url: anchored on "://" with a one-character look-behind for the scheme instead of
#   matching the scheme itself, which would rescan long base64 runs from every letter.
#   The password runs to the last "@" before the next "/" or whitespace.
_PATTERN = re.compile(
    r"""
    (?P<pem>-----BEGIN\ [A-Z0-9 ]{0,40}PRIVATE\ KEY[A-Z0-9 ]{0,10}-----
        (?s:.*?)
        (?:-----END\ [A-Z0-9 ]{0,40}PRIVATE\ KEY[A-Z0-9 ]{0,10}-----|\Z))
    |(?P<jwt>eyJ[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]{5,}+)
    |(?P<skip>eyJ[A-Za-z0-9_-]*+)
    |(?P<akid>\b(?:AKIA|ASIA)[A-Z0-9]{16}\b)
    |(?<=[A-Za-z0-9+.-])://(?P<user>[^:/@\s]*+):[^/\s]+(?=@)
    """,
    re.VERBOSE,
)


def _masked() -> str:
    return MASK


def _replace_match(match: re.Match[str]) -> str:
    if match.group("skip") is not None:
        return match.group()
    user = match.group("user")
    if user is not None:
        return f"://{user}:{MASK}"
    return MASK


def _words(words: Iterable[str]) -> set[str]:
    # A bare string is one word, not an iterable of one-letter words that would hide
    # almost every name.
    if isinstance(words, str):
        words = (words,)
    return {w.strip().lower() for w in words} - {""}


def _mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    found = [secret for secret in secrets if secret in text]
    if not found:
        return text
    # Mask the union of every (possibly overlapping) occurrence: replacing one secret at
    # a time would leave the tail of a secret that overlaps an already masked one.
    spans: list[tuple[int, int]] = []
    for secret in found:
        start = text.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    spans.sort()
    parts: list[str] = []
    position = 0
    span_start, span_end = spans[0]
    for start, end in spans[1:]:
        if start <= span_end:
            span_end = max(span_end, end)
            continue
        parts += (text[position:span_start], MASK)
        position = span_end
        span_start, span_end = start, end
    parts += (text[position:span_start], MASK, text[span_end:])
    return "".join(parts)


def _collect_secret(value: object, found: set[str]) -> None:
    if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
        found.add(value)
        # Passwords usually appear percent-encoded inside URLs.
        found.add(urllib.parse.quote(value, safe=""))


def _nothing() -> None:
    return None


# Collects every string leaf of a value to register as secrets: each container once
# (a value shared many times over is not walked many times), at any depth.
_SECRET_STRINGS: jsontree.TreeCopy[set[str], object] = jsontree.TreeCopy(
    leaf=_collect_secret,
    open=jsontree.open_unkept,
    max_depth=sys.maxsize,
    too_deep=_nothing,
    circular=_nothing,
    revisit=False,
)


class SecretsMasker:
    """Replaces sensitive values in (nested) rendered fields with ``***``."""

    def __init__(
        self,
        sensitive_words: Iterable[str] | None = None,
        *,
        extra_words: Iterable[str] = (),
        patterns: bool = True,
    ) -> None:
        base = DEFAULT_SENSITIVE_WORDS if sensitive_words is None else sensitive_words
        self._words = frozenset(_words(base) | _words(extra_words))
        # An empty alternation would match every name.
        self._name_re = (
            re.compile("|".join(re.escape(w) for w in sorted(self._words))) if self._words else None
        )
        self._patterns = patterns
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._name_cache: dict[str, bool] = {}
        # A cycle is masked whole, like a subtree past MAX_DEPTH: neither can leak.
        self._tree: jsontree.TreeCopy[bool, object] = jsontree.TreeCopy(
            leaf=self._redact_leaf,
            open=self._open,
            max_depth=MAX_DEPTH,
            too_deep=_masked,
            circular=_masked,
        )

    @property
    def sensitive_words(self) -> frozenset[str]:
        """The lower-case words whose presence in a name hides its value."""
        return self._words

    def add_secret(self, value: object) -> None:
        """Register a secret string, or every string leaf of a dict, list or tuple."""
        new: set[str] = set()
        _SECRET_STRINGS.copy(value, new)
        if not new:
            return
        with self._lock:
            merged = new.union(self._secrets)
            self._secrets = tuple(sorted(merged, key=lambda s: (-len(s), s)))

    def should_hide_name(self, name: str | None) -> bool:
        """Whether ``name`` contains a sensitive word (case-insensitive)."""
        if not name or self._name_re is None:
            return False
        hidden = self._name_cache.get(name)
        if hidden is None:
            hidden = self._name_re.search(name.lower()) is not None
            if len(self._name_cache) >= _NAME_CACHE_SIZE:
                self._name_cache.clear()
            self._name_cache[name] = hidden
        return hidden

    def redact(self, value: object, name: str | None = None) -> object:
        """A masked copy of ``value`` (tuples and sets become lists); never mutates it."""
        hidden = self.should_hide_name(name)
        if type(value) is str:
            return MASK if hidden else self._redact_str(value)
        return self._tree.copy(value, hidden)

    def redact_fields(self, fields: Mapping[str, object]) -> dict[str, object]:
        """Redact each field's value, using the field name as its name."""
        return {name: self.redact(value, name) for name, value in fields.items()}

    def _open(self, item: Any, hidden: bool) -> tuple[object, Iterable[jsontree.Child[bool]]]:
        # Tuples and sets become lists; dict keys are kept as they are, in order. A tuple
        # of types, not a union: a union here would be rebuilt for every container.
        if isinstance(item, (dict, Mapping)):
            hide = self.should_hide_name
            return dict.fromkeys(item), [
                (key, child, hidden or (type(key) is str and hide(key)))
                for key, child in item.items()
            ]
        return [None] * len(item), zip(count(), tuple(item), repeat(hidden))

    def _redact_leaf(self, value: object, hidden: bool) -> object:
        if hidden:
            return None if value is None else MASK
        if isinstance(value, str):
            return self._redact_str(value)
        return value

    def _redact_str(self, text: str) -> str:
        secrets = self._secrets
        if secrets:
            text = _mask_secrets(text, secrets)
        if self._patterns and (
            "://" in text
            or "eyJ" in text
            or "AKIA" in text
            or "ASIA" in text
            or "PRIVATE KEY" in text
        ):
            text = _PATTERN.sub(_replace_match, text)
        return text


@functools.cache
def default_masker() -> SecretsMasker:
    """The process-wide masker: default sensitive words and patterns, no secrets."""
    return SecretsMasker()
