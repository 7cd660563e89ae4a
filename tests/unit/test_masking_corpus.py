"""A corpus for the masker: secret forms that must never be stored in clear (in values,
in dict keys, behind sensitive names), and ordinary strings that must be stored as they
are. Each secret is a made-up value, never a real credential."""

from __future__ import annotations

import pytest

from taskexec.wire.masking import MASK, SecretsMasker

PEM_ESCAPED = (
    "-----BEGIN RSA PRIVATE KEY-----\\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgO\\n"
    "EePzNm0tRgeLezV6ffAt0gun\\n-----END RSA PRIVATE KEY-----"
)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

# (the text, the secret part that must not survive masking)
SECRETS: list[tuple[str, str]] = [
    ("postgres://u:hunter2@h/db", "hunter2"),
    ("postgres://u:hunter2/slash@h/db", "hunter2/slash"),
    ("postgresql+psycopg://app:p%40ss%2Fword@db.example.com:5432/prod", "p%40ss%2Fword"),
    ("mysql://root:s3cr3t!#$@127.0.0.1:3306/x", "s3cr3t!#$"),
    ("redis://:r3dis-pass@cache:6379/0", "r3dis-pass"),
    ("amqp://guest:gu3st-pw@rabbit:5672//", "gu3st-pw"),
    ("mongodb+srv://admin:Mongo:Pw@cluster0.example.net/db", "Mongo:Pw"),
    ("https://user:p@ss#w?rd@host/path", "p@ss#w?rd"),
    ("sftp://deploy:d3pl0y@files.example.com/upload", "d3pl0y"),
    ("connect with postgres://u:inline-pw@h/db now", "inline-pw"),
    ("https://h/path?password=qwerty123", "qwerty123"),
    ("https://h/login?user=a&passwd=letmein99&x=1", "letmein99"),
    ("https://api.example.com/v1?api_key=abcd1234efgh", "abcd1234efgh"),
    ("https://api.example.com/v1?token=tok_98765zyx", "tok_98765zyx"),
    ("https://h/cb?access_token=ya29.a0AfH6SMBx", "ya29.a0AfH6SMBx"),
    ("https://hooks.example.com/x?secret=sh-h00k-s3cret", "sh-h00k-s3cret"),
    ("ghp_1234567890abcdefghijABCDEFGHIJ123456", "ghp_1234567890abcdefghijABCDEFGHIJ123456"),
    ("gho_abcdefghijklmnopqrstuvwxyz0123456789", "gho_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("ghs_ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210", "ghs_ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"),
    (
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    ),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp", "xoxb-123456789012-1234567890123"),
    ("xoxp-2222222222-3333333333-abcdefabcdef", "xoxp-2222222222-3333333333"),
    ("sk-proj-AbCdEf0123456789GhIjKlMnOpQrSt", "sk-proj-AbCdEf0123456789GhIjKlMnOpQrSt"),
    ("sk-AbCdEf0123456789GhIjKlMnOpQrStUvWx", "sk-AbCdEf0123456789GhIjKlMnOpQrStUvWx"),
    ("sk_live_51Habcdefghijklmnopqrstuv", "sk_live_51Habcdefghijklmnopqrstuv"),
    ("rk_live_51Habcdefghijklmnopqrstuv", "rk_live_51Habcdefghijklmnopqrstuv"),
    ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws key ASIA2EXAMPLE3KEY4ID5 here", "ASIA2EXAMPLE3KEY4ID5"),
    (PEM_ESCAPED, "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgO"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAA",
    ),
    (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF0abcdef\n-----END PGP PRIVATE KEY BLOCK-----",
        "lQOYBF0abcdef",
    ),
    (JWT, "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    ("Authorization: Bearer abcDEF123456ghiJKL", "abcDEF123456ghiJKL"),
    ("curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='", "dXNlcjpwYXNzd29yZA=="),
    ("Server=db;Database=x;User Id=sa;Password=Pa55w0rd!;", "Pa55w0rd!"),
    ("Driver={ODBC};Server=h;Uid=u;Pwd=0dbcPw;", "0dbcPw"),
    ("password=hunter22", "hunter22"),
    ("PASSWORD: Tr0ub4dor&3", "Tr0ub4dor&3"),
    ("export DB_PASSWORD=s3cretvalue", "s3cretvalue"),
    ("api_key = 'k-1234567890'", "k-1234567890"),
    ('"client_secret": "cs-abcdef123456"', "cs-abcdef123456"),
    ("--token=tkn-0987654321", "tkn-0987654321"),
    ("--password s3cr3tArg", "s3cr3tArg"),
    ("PGPASSWORD=hunter2pg", "hunter2pg"),
    ("JWT_SECRET_KEY=zzz999jwt", "zzz999jwt"),
    ("Authorization: Token 9944b09199c62bcf9418ad846dd0e4bb", "9944b09199c62bcf9418ad846dd0e4bb"),
    ("authorization: bearer abcDEF123456", "abcDEF123456"),
    ("--conn-password hunter2conn", "hunter2conn"),
    ('"password": "correct horse battery"', "correct horse battery"),
    ('password="ab,cd-secret"', "ab,cd-secret"),
]

# (a dict holding a secret, the secret part)
SECRETS_IN_STRUCTURES: list[tuple[object, str]] = [
    ({"postgres://u:keyed-pw@h/db": 1}, "keyed-pw"),
    ({"postgres://u:slash/pw@h/db": "x"}, "slash/pw"),
    ({"db_pass": "plain-pass-1"}, "plain-pass-1"),
    ({"webhook_url": "https://hooks.slack.com/services/T0/B0/XyZ"}, "XyZ"),
    ({"dsn": "user=u password=q host=h"}, "password=q"),
    ({"connection_string": "Server=h;Uid=u"}, "Uid=u"),
    ({"access_key": "AK-plain-value"}, "AK-plain-value"),
    ({"service_key": "svc-plain-value"}, "svc-plain-value"),
    ({"auth_header": "Digest xyz-value"}, "xyz-value"),
    ({"bearer": "opaque-token-value"}, "opaque-token-value"),
    ({"proxy": "http://proxy.internal:3128"}, "proxy.internal"),
    ({"api-key": "dashed-name-value"}, "dashed-name-value"),
    ({"Api Key": "spaced-name-value"}, "spaced-name-value"),
    ({"nested": [{"pwd": "nested-pwd-value"}]}, "nested-pwd-value"),
    ({"headers": {"X-API-Key": "hdr-key-value"}}, "hdr-key-value"),
]

ORDINARY: list[str] = [
    "ASIAPACIFICSOUTHEAST",
    "AKIAKIAKIAKIAKIAKIAK",
    "EUROPE WEST",
    "NORTHAMERICA",
    "São Paulo",
    "Zürich",
    "Reykjavík",
    "New York",
    "SELECT id, name FROM users WHERE id = 42",
    "echo 'hello' | wc -c",
    "/var/lib/data/2026/11/25/part-0001.parquet",
    "s3://bucket/prefix/key.csv",
    "gs://bucket/path/file.json",
    "https://example.com/path?page=2&sort=asc",
    "https://docs.example.com/guide#passwords",
    "http://localhost:8080/ui/",
    "file:///tmp/report.html",
    "550e8400-e29b-41d4-a716-446655440000",
    "01a21265-b880-7600-8eae-68808b6d74c6",
    "d41d8cd98f00b204e9800998ecf8427e",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "2026-11-25T12:00:00+00:00",
    "ds=2026-11-25",
    "HELLO WORLD",
    "IMPORTANT NOTICE",
    "The password policy requires 12 characters.",
    "Reset your password from the settings page.",
    "token bucket rate limiting",
    "passenger manifest",
    "compass heading 270",
    "bypass the cache",
    "skill-based routing",
    "task-1234567890",
    "run_id=manual__2026-11-25T12:00:00",
    "user@example.com",
    "mailto:ops@example.com",
    "git@github.com:org/repo.git",
    "ghost protocol",
    "xoxo gossip",
    "sk-1",
    "AIzu",
    "eyJ",
    "key=value",
    "primary_key=id",
    "monkey=banana",
    "tokenizer=whitespace",
    "BEGIN TRANSACTION; COMMIT;",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b",
    "v1.2.3-rc.4+build.5",
    "Bearer",
]

# Names that are not secrets although they contain a sensitive-looking word.
ORDINARY_NAMES = ["passenger_count", "compass", "keyboard", "monkey", "bypass_cache"]


@pytest.fixture(scope="module")
def masker() -> SecretsMasker:
    return SecretsMasker()


def test_the_corpus_is_large_enough() -> None:
    assert len(SECRETS) + len(SECRETS_IN_STRUCTURES) >= 50 and len(ORDINARY) >= 50


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_secret_forms_are_masked(masker: SecretsMasker, text: str, secret: str) -> None:
    masked = masker.redact(text)
    assert isinstance(masked, str) and secret not in masked and MASK in masked, masked


@pytest.mark.parametrize(("value", "secret"), SECRETS_IN_STRUCTURES)
def test_secrets_in_keys_and_under_names_are_masked(
    masker: SecretsMasker, value: object, secret: str
) -> None:
    masked = repr(masker.redact_fields({"field": value}))
    assert secret not in masked and MASK in masked, masked


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_strings_are_kept(masker: SecretsMasker, text: str) -> None:
    assert masker.redact(text) == text


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_names_are_not_hidden(masker: SecretsMasker, name: str) -> None:
    assert masker.redact_fields({name: "visible"}) == {name: "visible"}
