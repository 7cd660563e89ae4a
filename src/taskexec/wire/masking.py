"""Masking secrets in rendered template fields, after Airflow's ``SecretsMasker``.

A value is hidden when its *name* (a field name or a dict key) contains a sensitive
word; inside other strings and dict keys, registered secrets and values that look like
credentials (PEM private keys, JWTs, AWS access key ids, passwords in URLs and query
strings, secret-named settings, GitHub/Slack/OpenAI/Stripe/Google tokens, Authorization
credentials) are replaced.
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

# Airflow 3.3's default sensitive names: a name containing one is hidden. A name is
# compared in lower case with its non-word characters made "_" (so "API-Key" and
# "api key" are "api_key"), as Airflow does.
DEFAULT_SENSITIVE_WORDS: frozenset[str] = frozenset(
    {
        "access_key",
        "access_token",
        "api_key",
        "apikey",
        "auth_header",
        "authorization",
        "bearer",
        "connection_string",
        "dsn",
        "keyfile_dict",
        "passphrase",
        "passwd",
        "password",
        "private_key",
        "proxy",
        "proxy_password",
        "proxies",
        "secret",
        "service_account",
        "service_key",
        "token",
        "webhook_url",
    }
)
# Short words hidden only as a whole part of a name ("db_pass", "pwd"), never inside
# another word ("passenger", "compass").
SENSITIVE_NAME_PARTS: frozenset[str] = frozenset({"pass", "pwd"})
MASK = "***"
MIN_SECRET_LENGTH = 5
# Values nested deeper are replaced by MASK as a whole.
MAX_DEPTH = protocol.MASKING_MAX_DEPTH

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
#   The password is any run of non-space characters ("/", "@", ":" included) up to the
#   last "@" within 256 of them: masking a little too much is safe, too little is not.
# - query: a secret-named query parameter's value (``?password=…``, ``&token=…``).
# - assign: a secret-named setting in text (``PASSWORD=…``, ``"client_secret": "…"``,
#   ``--token=…``, ``Pwd=…;``); ``flag``: ``--password value``.
# - tokens with a known shape: GitHub, Slack, OpenAI/Stripe-style, Google API keys, AWS
#   access key ids (which carry a digit: "ASIAPACIFICSOUTHEAST" is a word), and the
#   credentials of an HTTP Authorization header.
# Secret-named settings. A long key may be glued to a prefix ("PGPASSWORD"); a short
# one needs a boundary ("db_pass", not "bypass"); either may end in "_key" or "_token"
# ("SECRET_KEY"). The match starts at the key itself (a prefix is left as it is), so
# no alternative starts by scanning letters it may have to give back.
_LONG_KEY = (
    r"(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key)"
)
_SHORT_KEY = r"(?:pass|pwd|auth)"
_KEY = rf"(?:(?<![A-Za-z0-9]){_SHORT_KEY}|{_LONG_KEY})(?:[_-]?(?:key|token))?"
# A setting's value: quoted (up to its closing quote, spaces and commas included) or bare.
_VALUE = r"""(?:"[^"\r\n]{1,500}"|'[^'\r\n]{1,500}'|(?!\*\*\*)["']?[^\s"';,]+)"""
_PATTERN = re.compile(
    rf"""
    (?P<pem>-----BEGIN\ [A-Z0-9 ]{{0,40}}PRIVATE\ KEY[A-Z0-9 ]{{0,10}}-----
        (?s:.*?)
        (?:-----END\ [A-Z0-9 ]{{0,40}}PRIVATE\ KEY[A-Z0-9 ]{{0,10}}-----|\Z))
    |(?P<jwt>eyJ[A-Za-z0-9_-]{{5,}}+\.[A-Za-z0-9_-]{{5,}}+\.[A-Za-z0-9_-]{{5,}}+)
    |(?P<skip>eyJ[A-Za-z0-9_-]*+)
    |(?P<akid>\b(?:AKIA|ASIA)(?=[A-Z]{{0,15}}[0-9])[A-Z0-9]{{16}}\b)
    |(?<=[A-Za-z0-9+.-])://(?P<user>[^:/@\s]*+):\S{{1,256}}(?=@)
    |(?P<query>[?&](?i:[a-z0-9_-]{{0,30}}?{_KEY})=)[^&#\s]+
    |(?P<authz>(?i:(?:proxy-)?authorization)["']?\s{{0,3}}[:=]\s{{0,3}}(?:[A-Za-z]{{1,20}}\ +)?)
        [^"'\s][^"'\r\n]{{0,500}}
    |(?P<assign>(?i:{_KEY})["']?\s{{0,3}}[=:]\s{{0,3}})(?!(?i:bearer|basic)\ ){_VALUE}
    |(?P<flag>--(?i:[a-z0-9]{{1,20}}-){{0,4}}(?i:{_LONG_KEY}|{_SHORT_KEY})\ +)[^\s-]\S*
    |\b(?:gh[pousr]_[A-Za-z0-9]{{30,}}|github_pat_[A-Za-z0-9_]{{22,}})
    |\bxox[abposr]-[A-Za-z0-9-]{{10,}}
    |\bsk-(?:proj-)?[A-Za-z0-9_-]{{20,}}
    |\b[sr]k_(?:live|test)_[A-Za-z0-9]{{16,}}
    |\bAIza[0-9A-Za-z_-]{{35}}
    |(?P<scheme>\b(?i:bearer|basic)\ +)(?=[A-Za-z0-9._~+/=-]{{0,500}}[0-9=])[A-Za-z0-9._~+/=-]{{8,}}
    """,
    re.VERBOSE,
)
# Cheap tests that a string may hold something ``_PATTERN`` finds: most strings hold
# none of these, and then the pattern is not run at all. Each is a scan of the whole
# string, so none is listed that another implies ("PRIVATE KEY" and "Bearer" are found
# by "key" and "bearer" in lower case).
_TRIGGERS = (
    "://",
    "eyJ",
    "AKIA",
    "ASIA",
    "gh",  # ghp_ gho_ ghu_ ghs_ ghr_ github_pat_
    "xox",
    "sk-",
    "sk_",
    "rk_",
    "AIza",
)
_LOWER_TRIGGERS = ("pass", "pwd", "secret", "token", "key", "auth", "bearer", "basic")
_GITHUB_PREFIX = re.compile(r"gh[pousr]_|github_pat_")


def _masked() -> str:
    return MASK


def _replace_match(match: re.Match[str]) -> str:
    if match.group("skip") is not None:
        return match.group()
    user = match.group("user")
    if user is not None:
        return f"://{user}:{MASK}"
    for kept in ("query", "authz", "assign", "flag", "scheme"):
        prefix = match.group(kept)
        if prefix is not None:
            value = match.group()[len(prefix) :]
            quote = value[0] if value[:1] in ("'", '"') and value[-1:] == value[0] else ""
            return f"{prefix}{quote}{MASK}{quote}"
    return MASK


def normalized_name(name: str) -> str:
    """A name as sensitive words are looked up in it: lower case, non-word characters
    made "_" (Airflow's rule)."""
    return re.sub(r"\W", "_", name.lower())


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


# What a sensitive name does not hide (Airflow's ``_redact_all`` keeps every non-string).
_KEPT_SCALARS = frozenset({bool, int, float})


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
            normal = normalized_name(name)
            hidden = self._name_re.search(
                normal
            ) is not None or not SENSITIVE_NAME_PARTS.isdisjoint(normal.split("_"))
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
            children = [
                (self._redact_key(key), child, hidden or (type(key) is str and hide(key)))
                for key, child in item.items()
            ]
            keys = [key for key, _, _ in children]
            if len(set(keys)) < len(keys):
                # Two keys masked alike: number the repeats rather than lose a value.
                seen: dict[object, int] = {}
                for n, (key, child, hide_child) in enumerate(children):
                    seen[key] = seen.get(key, 0) + 1
                    if seen[key] > 1:
                        children[n] = (f"{key} ({seen[key]})", child, hide_child)
            return dict.fromkeys(key for key, _, _ in children), children
        return [None] * len(item), zip(count(), tuple(item), repeat(hidden))

    def _redact_leaf(self, value: object, hidden: bool) -> object:
        if hidden:
            # As Airflow's redact: under a sensitive name strings are hidden, JSON's
            # other scalars (numbers, booleans, null) keep their value.
            return value if value is None or type(value) in _KEPT_SCALARS else MASK
        if isinstance(value, str):
            return self._redact_str(value)
        return value

    def _redact_key(self, key: object) -> object:
        """A dict key, with what looks like a secret in it masked (keys are not hidden
        by name: a name hides the value under it)."""
        return self._redact_str(key) if type(key) is str else key

    def _redact_str(self, text: str) -> str:
        secrets = self._secrets
        if secrets:
            text = _mask_secrets(text, secrets)
        if self._patterns and _may_hold_secret(text):
            text = _PATTERN.sub(_replace_match, text)
        return text


def _may_hold_secret(text: str) -> bool:
    if len(text) < 5:  # shorter than anything the pattern masks ("pwd=x")
        return False
    for trigger in _TRIGGERS:
        if trigger in text and (trigger != "gh" or _GITHUB_PREFIX.search(text)):
            return True
    lowered = text.lower()
    return any(trigger in lowered for trigger in _LOWER_TRIGGERS)


@functools.cache
def default_masker() -> SecretsMasker:
    """The process-wide masker: default sensitive words and patterns, no secrets."""
    return SecretsMasker()
