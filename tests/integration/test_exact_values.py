"""Exact values on every database, property-based: Hypothesis generates JSON values
(integers of any size, negative ones, floats, unicode with astral characters and NUL,
nesting, many keys), each is PUT as rendered fields and read back with GET, and what
comes back is what was sent (after masking, which the server applies)."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from taskexec.config import Settings
from taskexec.wire import masking

from helpers import auth, seed

_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 5, max_value=2**200)
    | st.integers(min_value=-(2**200), max_value=-(2**63) + 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
)
_values = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)
_bodies = st.dictionaries(st.from_regex(r"f[0-9]{1,3}", fullmatch=True), _values, max_size=8)


def test_what_get_returns_is_what_put_sent(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    url = f"/execution/task-instances/{ti.id}/rtif"
    masker = masking.SecretsMasker(extra_words=settings.extra_sensitive_words)

    @hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_bodies)
    def round_trip(body: dict[str, Any]) -> None:
        put = client.put(url, json=body, headers=auth(ti.token))
        assert put.status_code == 201, put.text
        got = client.get(url, headers=auth(ti.token))
        assert got.status_code == 200, got.text
        assert got.json()["rendered_fields"] == masker.redact_fields(body)

    round_trip()


def test_integers_beyond_64_bits_stay_integers(client: httpx.Client, settings: Settings) -> None:
    ti = seed(settings).task_instances[0]
    url = f"/execution/task-instances/{ti.id}/rtif"
    raw = b'{"big": 18446744073709551616, "neg": -9223372036854775809, "huge": ' + b"9" * 60 + b"}"
    put = client.put(
        url, content=raw, headers={**auth(ti.token), "content-type": "application/json"}
    )
    assert put.status_code == 201, put.text
    got = client.get(url, headers=auth(ti.token))
    assert b'"big":18446744073709551616' in got.content.replace(b" ", b"")
    assert got.json()["rendered_fields"] == {
        "big": 2**64,
        "neg": -(2**63) - 1,
        "huge": int("9" * 60),
    }
