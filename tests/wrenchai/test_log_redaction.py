"""No log line carries a secret: the configured secrets wherever they appear, Authorization
and X-API-Key values, API keys, JWTs and credential-named fields are replaced by a marker,
in structlog's lines and the standard library's, JSON and console, tracebacks included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from wrenchai.logging import REDACTED, configure_logging, redact_text, secret_values
from wrenchai.settings import Settings

DB_PASSWORD = "pg-Canary-Pass-41"
DSN = f"postgresql://wrenchai:{DB_PASSWORD}@db.internal:5432/wrenchai"
JWT_SECRET = "jwt-canary-secret-0123456789-abcdefghij"
LLM_KEY = "sk-llm-canary-9f8e7d"
WEBHOOK_SECRET = "webhook-canary-5c4b"
PEPPER = "pepper-canary-3a2b"
MASTER_KEYS = ("master-canary-new-key", "master-canary-old-key")
API_KEY = "wr_abcdefghij23_ApiKeyCanarySecret-Value_1"
ACCESS_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZS1jYW5hcnkifQ.U2lnbmF0dXJlQ2FuYXJ5"
BASIC = "YWxpY2U6aHVudGVyMi1jYW5hcnk="  # alice:hunter2-canary
USER_PASSWORD = "hunter2-canary"
FORM_TOKEN = "refreshCanary77"

CANARIES = (
    DB_PASSWORD,
    DSN,
    JWT_SECRET,
    LLM_KEY,
    WEBHOOK_SECRET,
    PEPPER,
    *MASTER_KEYS,
    API_KEY,
    "ApiKeyCanarySecret",
    ACCESS_JWT,
    "eyJzdWIiOiJhbGljZS1jYW5hcnkifQ",
    BASIC,
    USER_PASSWORD,
    FORM_TOKEN,
)


def _settings(log_format: str) -> Settings:
    return Settings(
        database_url=SecretStr(DSN),
        jwt_secret=SecretStr(JWT_SECRET),
        llm_api_key=SecretStr(LLM_KEY),
        alert_webhook_secret=SecretStr(WEBHOOK_SECRET),
        api_key_pepper=SecretStr(PEPPER),
        master_keys=SecretStr(",".join(MASTER_KEYS)),
        log_format=log_format,  # type: ignore[arg-type]
        log_level="debug",
    )


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Give the next test the logging set-up this one found (handlers hold captured streams)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def _log_a_request_carrying_every_secret() -> None:
    log = structlog.get_logger("tests.redaction")
    log.info(
        "request received",
        method="POST",
        path="/auth/token",
        headers={
            "Authorization": f"Bearer {ACCESS_JWT}",
            "X-API-Key": API_KEY,
            "content-type": "application/x-www-form-urlencoded",
        },
        raw_headers=[
            (b"authorization", f"Basic {BASIC}".encode()),
            (b"x-api-key", API_KEY.encode()),
            (b"accept", b"application/json"),
        ],
        body=f"grant_type=refresh_token&refresh_token={FORM_TOKEN}&username=alice",
        form={"username": "alice", "password": USER_PASSWORD},
        target=DSN,
        upstream=f"POST https://llm.example/v1/chat with key {LLM_KEY}",
        signing=f"signed with {WEBHOOK_SECRET} and peppered with {PEPPER}",
        keys=list(MASTER_KEYS),
        jwt_secret=JWT_SECRET,
    )
    log.warning(f"api key {API_KEY} used by a token {ACCESS_JWT}")
    logging.getLogger("uvicorn.error").warning(
        "upstream said: Authorization: Basic %s (database %s)", BASIC, DSN
    )
    try:
        raise ConnectionError(f"cannot connect to {DSN} with secret {JWT_SECRET}")
    except ConnectionError:
        log.exception("database unreachable")


def test_json_lines_carry_no_secret_of_a_request_and_say_what_was_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the real configure_logging, JSON output: the request's Authorization (Bearer
    JWT and Basic), X-API-Key, form password and refresh token, the configured secrets (under
    any field, inside URLs, messages, lists and a traceback) never appear; the marker does,
    and what is not a secret is kept."""
    configure_logging(_settings("json"), process="api")

    _log_a_request_carrying_every_secret()

    err = capsys.readouterr().err
    for canary in CANARIES:
        assert canary not in err, canary
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(lines) == 4
    request = lines[0]
    assert request["headers"]["Authorization"] == REDACTED
    assert request["headers"]["X-API-Key"] == REDACTED
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert request["form"] == {"username": "alice", "password": REDACTED}
    assert request["target"] == REDACTED
    assert request["jwt_secret"] == REDACTED
    assert request["keys"] == [REDACTED, REDACTED]
    assert request["path"] == "/auth/token"
    assert "username=alice" in request["body"]
    assert REDACTED in lines[1]["event"]
    assert lines[2]["event"].startswith("upstream said: Authorization: ")  # the stdlib's line
    assert REDACTED in lines[2]["event"]
    assert "ConnectionError" in lines[3]["exception"]
    assert REDACTED in lines[3]["exception"]


def test_console_lines_carry_no_secret_either(capsys: pytest.CaptureFixture[str]) -> None:
    """The console renderer (dev) gets the same scrubbed fields and a scrubbed traceback."""
    configure_logging(_settings("console"))

    _log_a_request_carrying_every_secret()

    err = capsys.readouterr().err
    for canary in CANARIES:
        assert canary not in err, canary
    assert REDACTED in err
    assert "ConnectionError" in err


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Authorization: Bearer abc.def-ghi", "Authorization: "),
        ("authorization=Basic dXNlcjpwYXNz", "authorization="),
        ("{'x-api-key': 'not-even-a-wr-key'}", "{'x-api-key': '"),
        ("X-API-Key: wr_zzzzzzzzzzzz_Secret", "X-API-Key: "),
        ("redis://:hunter2@cache:6379/0", "redis://:"),
        ("https://bob:pa%24%24@example.com/x", "https://bob:"),
        ('{"password": "p@ss word"}', '{"password": "'),
        ("client_secret=abc123&next=1", "client_secret="),
        ("alg none eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end", "alg none "),
    ],
)
def test_credential_shapes_are_redacted_without_configuration(text: str, kept: str) -> None:
    """Credentials recognised by their shape alone: Authorization values (any scheme), X-API-Key
    values, wr_ API keys, URL passwords, password and secret fields in text, unsigned JWTs."""
    redacted = redact_text(text)
    assert redacted.startswith(kept)
    assert REDACTED in redacted
    secret = text[len(kept) :].split()[0].strip("'\"}")
    assert secret not in redacted


def test_ordinary_text_is_left_alone() -> None:
    """Words that merely mention credentials, ids and token counts are not redacted."""
    text = "login failed: wrong password for task 1f0c; prompt_tokens=512 tokens: 40"
    assert redact_text(text) == text


def test_secret_values_cover_parts_of_composite_secrets() -> None:
    """Each key of a key list, the URL's password (plain and percent-encoded) and the body of a
    PEM key are searched for on their own, so a fragment in a log line is caught too."""
    settings = Settings(
        database_url=SecretStr("postgresql://u:p%40ss-word@h/db"),
        encryption_keys=SecretStr("first-key-aaaa, second-key-bbbb"),
        jwt_private_key=SecretStr(
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----"
        ),
    )
    values: list[Any] = secret_values(settings)
    for part in ("first-key-aaaa", "second-key-bbbb", "p@ss-word", "p%40ss-word"):
        assert part in values
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEF" in values
    assert not any("-----" in v and "\n" not in v for v in values)
