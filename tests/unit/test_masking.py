"""Secret masking of rendered fields: sensitive names, registered secrets, patterns."""

from __future__ import annotations

import base64
import copy
import json
import time

import pytest

from taskexec.wire.masking import (
    DEFAULT_SENSITIVE_WORDS,
    MASK,
    MAX_DEPTH,
    MIN_SECRET_LENGTH,
    SecretsMasker,
    default_masker,
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt() -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": "1234567890", "name": "Ada", "iat": 1516239022}).encode())
    signature = _b64url(bytes(range(32)))
    return f"{header}.{payload}.{signature}"


def _strings(value: object) -> list[str]:
    """Every string (keys too) in a nested structure, without recursion."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)


def test_default_words_are_airflows() -> None:
    assert {
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
    } == DEFAULT_SENSITIVE_WORDS
    assert MASK == "***"
    assert MIN_SECRET_LENGTH == 5


@pytest.mark.parametrize("word", sorted(DEFAULT_SENSITIVE_WORDS))
def test_each_default_word_hides_case_insensitive_substring(word: str) -> None:
    masker = SecretsMasker()
    for name in (word, word.upper(), f"my_{word}_2", f"X{word.title()}Y"):
        assert masker.should_hide_name(name), name
        assert masker.redact("visible-value", name) == MASK
    assert masker.redact({word.upper(): "visible-value"}, "conf") == {word.upper(): MASK}


@pytest.mark.parametrize("name", ["DB_PASSWORD", "my_api_key_2", "Authorization", "x_Token"])
def test_examples_from_the_brief_are_hidden(name: str) -> None:
    assert SecretsMasker().redact("hunter2-long", name) == MASK


@pytest.mark.parametrize(
    "name", [None, "", "bash_command", "env", "op_kwargs", "sql", "passenger", "bypass"]
)
def test_innocent_names_keep_values(name: str | None) -> None:
    masker = SecretsMasker()
    assert not masker.should_hide_name(name)
    assert masker.redact("select 1 from users", name) == "select 1 from users"


def test_under_a_sensitive_name_strings_are_hidden_other_scalars_kept() -> None:
    # Airflow's redact (task SDK 1.3.2): strings are masked at any depth under a
    # sensitive name; numbers, booleans and null keep their value.
    masker = SecretsMasker()
    assert masker.redact(12345, "password") == 12345
    assert masker.redact(1.5, "token") == 1.5
    assert masker.redact(False, "secret") is False
    assert masker.redact(None, "password") is None
    assert masker.redact(object(), "password") == MASK
    assert masker.redact("", "password") == MASK
    nested = {"user": "ada", "pin": 1234, "hosts": ["a", None, ("b", 2)]}
    assert masker.redact(nested, "service_account") == {
        "user": MASK,
        "pin": 1234,
        "hosts": [MASK, None, [MASK, 2]],
    }
    assert masker.redact({"x": {"api_key": 7}, "Password": ["s", 3]}) == {
        "x": {"api_key": 7},
        "Password": [MASK, 3],
    }


def test_sensitive_keys_nested_under_innocent_names() -> None:
    masker = SecretsMasker()
    value = {
        "conn": {"host": "db.local", "port": 5432, "Password": "hunter2-long"},
        "items": [{"api_key": ["k1-long", {"deep": "k2-long"}], "x": 1}, "plain"],
        3: "int key",
    }
    assert masker.redact(value, "op_kwargs") == {
        "conn": {"host": "db.local", "port": 5432, "Password": MASK},
        "items": [{"api_key": [MASK, {"deep": MASK}], "x": 1}, "plain"],
        3: "int key",
    }


def test_keys_are_kept_and_order_preserved() -> None:
    value = {"z": 1, "token": "abcdefgh", "a": 2}
    result = SecretsMasker().redact(value)
    assert isinstance(result, dict)
    assert list(result) == ["z", "token", "a"]


def test_registered_secret_inside_longer_strings_and_lists() -> None:
    masker = SecretsMasker()
    masker.add_secret("s3cr3t-value")
    value = ["echo s3cr3t-value | login", ["nested s3cr3t-value twice s3cr3t-value"], 7]
    assert masker.redact(value, "bash_command") == [
        "echo *** | login",
        ["nested *** twice ***"],
        7,
    ]
    assert masker.redact({"env": {"X": "pre-s3cr3t-value-post"}}) == {"env": {"X": "pre-***-post"}}


def test_add_secret_registers_every_string_leaf() -> None:
    masker = SecretsMasker()
    masker.add_secret(
        {"a": ["first-secret", ("second-secret", 123456)], "b": {"c": "third-secret"}}
    )
    result = masker.redact("first-secret second-secret third-secret 123456")
    assert result == "*** *** *** 123456"


def test_non_string_secrets_are_not_registered() -> None:
    masker = SecretsMasker()
    masker.add_secret(1234567)
    masker.add_secret(None)
    assert masker.redact("pin 1234567") == "pin 1234567"


def test_short_secrets_are_ignored() -> None:
    masker = SecretsMasker()
    masker.add_secret("abcd")  # 4 < MIN_SECRET_LENGTH
    masker.add_secret("vwxyz")  # exactly MIN_SECRET_LENGTH
    assert masker.redact("abcd vwxyz") == "abcd ***"


def test_secret_containing_another_is_fully_masked() -> None:
    masker = SecretsMasker()
    masker.add_secret("word1")
    masker.add_secret("password123!")
    assert masker.redact("x=password123! y=word1") == "x=*** y=***"


def test_partially_overlapping_secrets_leave_no_tail() -> None:
    masker = SecretsMasker()
    masker.add_secret(["abcdef", "defghi"])
    assert masker.redact("xxabcdefghixx") == "xx***xx"
    masker.add_secret("aaaaa")
    assert masker.redact("-aaaaaaa-") == "-***-"


def test_url_encoded_form_of_a_secret_is_masked() -> None:
    masker = SecretsMasker()
    masker.add_secret("p@ss w/rd")
    assert masker.redact("x p%40ss%20w%2Frd y") == "x *** y"


def test_pem_block_in_multiline_string() -> None:
    text = f"key follows:\n{PEM}\nand then more text"
    assert SecretsMasker().redact(text, "templates_dict") == "key follows:\n***\nand then more text"


@pytest.mark.parametrize("kind", ["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED ", "DSA "])
def test_pem_any_key_type(kind: str) -> None:
    block = f"-----BEGIN {kind}PRIVATE KEY-----\nAAAAbody\n=\n-----END {kind}PRIVATE KEY-----"
    assert SecretsMasker().redact(f"a {block} b") == "a *** b"


def test_pem_without_end_masks_to_the_end() -> None:
    text = "cert ok\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nMIIE"
    assert SecretsMasker().redact(text) == "cert ok\n***"


def test_public_key_and_certificate_are_kept() -> None:
    text = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert SecretsMasker().redact(text) == text


def test_jwt_is_masked() -> None:
    token = _jwt()
    assert token.startswith("eyJ")
    masker = SecretsMasker()
    assert masker.redact(f"curl -H 'Authorization: Bearer {token}' x") == (
        "curl -H 'Authorization: Bearer ***' x"
    )
    assert masker.redact({"cmd": [f"jwt={token}&a=1"]}) == {"cmd": ["jwt=***&a=1"]}


@pytest.mark.parametrize("key_id", ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"])
def test_aws_access_key_id_is_masked(key_id: str) -> None:
    assert SecretsMasker().redact(f"aws_key={key_id} region=eu") == "aws_key=*** region=eu"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://loader:s3cret@db/x", "postgresql://loader:***@db/x"),
        ("postgresql+psycopg://u:p4ss:w0rd@db:5432/x", "postgresql+psycopg://u:***@db:5432/x"),
        ("redis://:only-pass@cache:6379/0", "redis://:***@cache:6379/0"),
        ("see https://bob:pw@example.com/a?b=c now", "see https://bob:***@example.com/a?b=c now"),
        ("amqp://a:b@h1 and sftp://c:d@h2/p", "amqp://a:***@h1 and sftp://c:***@h2/p"),
    ],
)
def test_url_password_is_masked_user_and_host_kept(url: str, expected: str) -> None:
    assert SecretsMasker().redact(url, "bash_command") == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://example.com:8080/path?q=1",
        "https://user@example.com/path",
        "mail me at bob@example.com, http://x.org:80",
        "eyJ is not a token",
        "eyJhbGciOiJIUzI1NiJ9 without dots",
        "AKIA1234 too short",
        "xAKIAIOSFODNN7EXAMPLEx glued to words",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        "plain text, nothing to see: 12:30 @ home / office",
        "",
    ],
)
def test_innocent_strings_are_unchanged(text: str) -> None:
    assert SecretsMasker().redact(text, "bash_command") == text


def test_patterns_can_be_disabled() -> None:
    text = "postgresql://loader:s3cret@db/x AKIAIOSFODNN7EXAMPLE"
    assert SecretsMasker(patterns=False).redact(text) == text
    assert SecretsMasker().redact(text) == "postgresql://loader:***@db/x ***"


def test_secrets_then_patterns() -> None:
    masker = SecretsMasker()
    masker.add_secret("registered-one")
    result = masker.redact("registered-one mysql://u:pw@h AKIAIOSFODNN7EXAMPLE")
    assert result == "*** mysql://u:***@h ***"


def test_input_is_not_mutated() -> None:
    masker = SecretsMasker()
    masker.add_secret("s3cr3t-value")
    value = {
        "password": "x-long-value",
        "list": ["s3cr3t-value", {"token": [1, 2]}],
        "tuple": ("s3cr3t-value",),
    }
    before = copy.deepcopy(value)
    result = masker.redact(value)
    assert value == before
    assert result != value
    assert isinstance(result, dict)
    assert result["list"] is not value["list"]


def test_tuples_and_sets_come_back_as_lists() -> None:
    masker = SecretsMasker()
    assert masker.redact(("a", ("b", 1))) == ["a", ["b", 1]]
    assert masker.redact(("a", "b"), "password") == [MASK, MASK]
    assert masker.redact(frozenset({"only"})) == ["only"]


def test_other_scalars_are_returned_unchanged() -> None:
    marker = object()
    masker = SecretsMasker()
    assert masker.redact(marker) is marker
    assert masker.redact(3.5) == 3.5
    assert masker.redact(None) is None


def test_2000_deep_lists_and_dicts_do_not_raise_and_leak_nothing() -> None:
    masker = SecretsMasker()
    masker.add_secret("deep-secret")
    assert MAX_DEPTH >= 2000
    nested_list: object = "x deep-secret x"
    nested_dict: object = {"password": "plain-but-hidden"}
    for _ in range(2000):
        nested_list = [nested_list]
        nested_dict = {"a": nested_dict}
    result_list = masker.redact(nested_list)
    result_dict = masker.redact(nested_dict, "op_kwargs")
    for _ in range(2000):
        assert isinstance(result_list, list) and len(result_list) == 1
        result_list = result_list[0]
        assert isinstance(result_dict, dict) and list(result_dict) == ["a"]
        result_dict = result_dict["a"]
    assert result_list == "x *** x"
    assert result_dict == {"password": MASK}


def test_deeper_than_the_limit_is_masked_not_leaked() -> None:
    masker = SecretsMasker()
    masker.add_secret("deep-secret")
    value: object = {"token": "hidden-by-name", "other": "deep-secret plain-visible"}
    for _ in range(10_000):
        value = [value, "top-level-visible"]
    result = masker.redact(value)
    strings = _strings(result)
    assert "top-level-visible" in strings
    assert MASK in strings
    assert not any("deep-secret" in s or "hidden-by-name" in s for s in strings)
    assert not any("plain-visible" in s for s in strings)


def test_cycles_do_not_hang_or_raise() -> None:
    loop: list[object] = ["ok"]
    loop.append(loop)
    loop.append(loop)
    result = SecretsMasker().redact(loop)
    assert isinstance(result, list)
    assert result[0] == "ok"


def test_extra_words_are_configurable() -> None:
    masker = SecretsMasker(extra_words=["Pin", "  iban "])
    assert masker.redact({"user_PIN": "1234", "IBAN_x": "DE00", "password": "p"}) == {
        "user_PIN": MASK,
        "IBAN_x": MASK,
        "password": MASK,
    }
    assert not SecretsMasker().should_hide_name("user_pin")
    assert SecretsMasker(extra_words="pin").should_hide_name("x_pin")
    assert not SecretsMasker(extra_words="pin").should_hide_name("p_i_n")


def test_sensitive_words_replace_the_defaults() -> None:
    masker = SecretsMasker(["custom"])
    assert masker.sensitive_words == frozenset({"custom"})
    assert masker.redact({"password": "visible", "my_CUSTOM": "v"}) == {
        "password": "visible",
        "my_CUSTOM": MASK,
    }
    nothing = SecretsMasker([], patterns=False)
    assert nothing.redact({"password": "visible"}) == {"password": "visible"}


def test_redact_fields_uses_field_names() -> None:
    masker = SecretsMasker()
    masker.add_secret("registered-1")
    fields = {"bash_command": "echo registered-1", "api_key": "abc", "env": {"TOKEN": "5"}}
    assert masker.redact_fields(fields) == {
        "bash_command": "echo ***",
        "api_key": MASK,
        "env": {"TOKEN": MASK},
    }
    assert fields["api_key"] == "abc"


def test_default_masker_is_shared_and_has_no_secrets() -> None:
    masker = default_masker()
    assert masker is default_masker()
    assert masker.sensitive_words == DEFAULT_SENSITIVE_WORDS
    assert masker.redact("registered-1 AKIAIOSFODNN7EXAMPLE") == "registered-1 ***"


@pytest.mark.parametrize(
    "text",
    [
        "eyJ" * 200_000 + " u://a:b@c",
        "A" * 300_000 + " x://u:" + "p" * 300_000 + " AKIA",
        "-----BEGIN PRIVATE KEY-----" * 20_000,
        "a://b:" * 100_000 + "@",
        _b64url(bytes(range(256)) * 2000) + " s3://k:v@bucket",
    ],
)
def test_patterns_stay_linear_on_large_inputs(text: str) -> None:
    masker = SecretsMasker()
    start = time.perf_counter()
    result = masker.redact(text)
    # Linear takes well under a second here; a quadratic pattern on inputs this size
    # takes minutes. The bound is loose so that a loaded machine does not fail it.
    assert time.perf_counter() - start < 10.0
    assert isinstance(result, str)
