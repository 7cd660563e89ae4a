"""Database URLs in messages: the password never shows, whatever it holds, and a URL's
problems are named in one line."""

from __future__ import annotations

import pytest

from taskexec.config import database_url_problem, redacted_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:1234/abcd@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg://u:pa/ss@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("mysql://u:p#ss?x@h/db", "mysql://u:***@h/db"),
        ("postgresql://u:a:b@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("mysql+pymysql://root@127.0.0.1:3306/test", "mysql+pymysql://root@127.0.0.1:3306/test"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_the_password_never_shows(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
    # A URL SQLAlchemy accepts is not refused for its password's characters.
    assert database_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("notaurl", "is not a database URL"),
        ("foo://bar", "unsupported database 'foo'"),
        ("postgres://u:secret@h/db", "use postgresql:// rather than postgres://"),
        ("postgresql://u@h:99999/db", "bad port '99999'"),
        ("postgresql://u:secret@h:abc/db", "bad port 'abc'"),
    ],
)
def test_problems_are_named_without_the_password(url: str, problem: str) -> None:
    message = database_url_problem(url)
    assert message is not None and problem in message
    assert "secret" not in message
