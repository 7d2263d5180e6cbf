"""HTTP hardening: CORS only for listed origins, a bound on request bodies, security headers on
every answer, docs that can be switched off, and the fuzzer's findings (a 405's Allow lists
every method of the path; an integral float is a valid integer timeout)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError

from api._hardening import API_CSP, DOCS_CSP, cors_origins
from api.models import SubmitTask
from events import create_consumer
from tests.api._support import error_fields, serve
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

ALLOWED = "https://app.example.com"
SMALL_LIMIT = 4_096


@pytest.fixture
async def anonymous(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no credential: what an attacker on the network sees."""
    async with serve(settings) as client:
        yield client


async def _published(settings: Settings) -> int:
    """How many records wrench.events holds (end offsets; 0 on an untouched partition)."""
    consumer = create_consumer(settings)
    await consumer.start()
    try:
        topic = settings.topic("events")
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()


# -- CORS -------------------------------------------------------------------------------


async def test_cors_is_off_by_default(anonymous: httpx.AsyncClient) -> None:
    """With WRENCH_CORS_ORIGINS empty no answer carries Access-Control-Allow-Origin, and a
    preflight is not answered as one."""
    simple = await anonymous.get("/health", headers={"Origin": ALLOWED})
    preflight = await anonymous.options(
        "/tasks",
        headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
    )

    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 405


async def test_cors_allows_exactly_the_listed_origins(settings: Settings) -> None:
    """A listed origin gets its own origin back with credentials, the API's methods and its
    credential headers on a preflight; another origin gets nothing."""
    configured = settings.model_copy(update={"cors_origins": f"{ALLOWED}/, http://localhost:5173"})
    async with serve(configured) as client:
        preflight = await client.options(
            "/tasks",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, x-api-key, content-type",
            },
        )
        simple = await client.get("/health", headers={"Origin": ALLOWED})
        other = await client.get("/health", headers={"Origin": "https://evil.example.com"})
        other_preflight = await client.options(
            "/tasks",
            headers={
                "Origin": "https://evil.example.com",
                "Access-Control-Request-Method": "POST",
            },
        )

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert preflight.headers["access-control-allow-credentials"] == "true"
    allowed_methods = preflight.headers["access-control-allow-methods"]
    assert {"GET", "POST", "PUT", "DELETE"} <= {m.strip() for m in allowed_methods.split(",")}
    allowed_headers = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "x-api-key" in allowed_headers
    assert simple.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in other.headers
    assert other_preflight.status_code == 400
    assert "access-control-allow-origin" not in other_preflight.headers


def test_cors_origins_refuse_a_wildcard_and_what_is_not_an_origin() -> None:
    """'*' (any site acting as the signed-in user) and a URL with a path are configuration
    errors that say what to write instead; an empty list is CORS off."""
    assert cors_origins("") == []
    assert cors_origins(" https://A.example.com/ ,http://localhost:3000") == [
        "https://a.example.com",
        "http://localhost:3000",
    ]
    with pytest.raises(ConfigurationError, match="cannot be '\\*'"):
        cors_origins("https://a.example.com,*")
    with pytest.raises(ConfigurationError, match="scheme://host"):
        cors_origins("https://a.example.com/app")
    with pytest.raises(ConfigurationError, match="scheme://host"):
        cors_origins("a.example.com")


# -- request body limit -----------------------------------------------------------------


@pytest.mark.usefixtures("db")
async def test_an_oversized_body_is_413_by_its_content_length_before_authentication(
    settings: Settings, topics: dict[str, int]
) -> None:
    """A body whose Content-Length is over WRENCH_MAX_BODY_BYTES is refused with 413 in the
    standard error body, before credentials are looked at; nothing reaches the log."""
    limited = settings.model_copy(update={"max_body_bytes": SMALL_LIMIT})
    body = b'{"description": "' + b"x" * SMALL_LIMIT + b'"}'
    async with serve(limited) as client:
        response = await client.post(
            "/tasks", content=body, headers={"content-type": "application/json"}
        )

    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "code": "PAYLOAD_TOO_LARGE",
            "message": response.json()["error"]["message"],
            "details": {"max_body_bytes": SMALL_LIMIT},
        }
    }
    assert str(SMALL_LIMIT) in response.json()["error"]["message"]
    assert response.headers["x-request-id"]
    assert await _published(limited) == 0


async def test_an_oversized_streamed_body_is_413_and_publishes_nothing(
    settings: Settings, client: httpx.AsyncClient, topics: dict[str, int]
) -> None:
    """A chunked body with no Content-Length is cut off once it passes the limit: an
    authenticated POST /tasks answers 413 PAYLOAD_TOO_LARGE and writes no event."""
    limited = settings.model_copy(update={"max_body_bytes": SMALL_LIMIT})
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"description": "'
        for _ in range(64):
            sent += 1
            yield b"x" * 1_024
        yield b'"}'

    async with serve(limited, api_key=client.headers["x-api-key"]) as limited_client:
        response = await limited_client.post(
            "/tasks", content=chunks(), headers={"content-type": "application/json"}
        )

    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert response.json()["error"]["details"] == {"max_body_bytes": SMALL_LIMIT}
    assert await _published(limited) == 0


async def test_a_body_within_the_limit_is_served(
    settings: Settings, client: httpx.AsyncClient, topics: dict[str, int]
) -> None:
    """Just under the limit, streamed or not, a task is accepted as usual."""
    limited = settings.model_copy(update={"max_body_bytes": SMALL_LIMIT})
    body = b'{"description": "' + b"x" * (SMALL_LIMIT - 100) + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1_000):
            yield body[start : start + 1_000]

    async with serve(limited, api_key=client.headers["x-api-key"]) as limited_client:
        declared = await limited_client.post(
            "/tasks", content=body, headers={"content-type": "application/json"}
        )
        streamed = await limited_client.post(
            "/tasks", content=chunks(), headers={"content-type": "application/json"}
        )

    assert declared.status_code == 202
    assert streamed.status_code == 202


# -- security headers -------------------------------------------------------------------

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


async def test_every_answer_carries_the_security_headers(anonymous: httpx.AsyncClient) -> None:
    """Health, a 401, a 404, a 405 and a 413 all carry nosniff, DENY, no-referrer, no-store
    and the API's CSP; no HSTS over plain http."""
    answers = [
        await anonymous.get("/health"),
        await anonymous.get("/tasks"),
        await anonymous.get("/no-such-route"),
        await anonymous.put("/tasks"),
        await anonymous.post("/tasks", content=b"x" * 2_000_000),
    ]

    assert [a.status_code for a in answers][1:] == [401, 404, 405, 413]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (answer.url, name)
        assert answer.headers["content-security-policy"] == API_CSP
        assert "strict-transport-security" not in answer.headers


async def test_hsts_is_sent_only_over_https(settings: Settings) -> None:
    """A request that arrived over https (the scheme uvicorn sets, from a trusted proxy's
    X-Forwarded-Proto too) gets Strict-Transport-Security."""
    async with serve(settings) as client:
        secure = await client.get("https://api.test/health")

    assert secure.headers["strict-transport-security"].startswith("max-age=")


async def test_the_docs_pages_get_a_csp_that_lets_them_load(
    anonymous: httpx.AsyncClient,
) -> None:
    """/docs and /redoc load Swagger UI and ReDoc from their CDN with an inline start-up
    script; their CSP allows exactly that and still forbids framing. The schema itself gets
    the API's CSP."""
    docs = await anonymous.get("/docs")
    redoc = await anonymous.get("/redoc")
    schema = await anonymous.get("/openapi.json")

    assert docs.status_code == redoc.status_code == schema.status_code == 200
    assert "https://cdn.jsdelivr.net" in docs.text
    for page in (docs, redoc):
        assert page.headers["content-security-policy"] == DOCS_CSP
        assert page.headers["x-frame-options"] == "DENY"
    assert "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net" in DOCS_CSP
    assert "frame-ancestors 'none'" in DOCS_CSP
    assert schema.headers["content-security-policy"] == API_CSP


# -- docs switch --------------------------------------------------------------------------


async def test_docs_can_be_switched_off(settings: Settings) -> None:
    """WRENCH_DOCS_ENABLED=false: /docs, /redoc and /openapi.json are 404 in the standard
    error body; the API itself still answers."""
    hidden = settings.model_copy(update={"docs_enabled": False})
    async with serve(hidden) as client:
        answers = [await client.get(p) for p in ("/docs", "/redoc", "/openapi.json")]
        health = await client.get("/health")

    for answer in answers:
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "NOT_FOUND"
    assert health.status_code in (200, 503)


# -- fuzzer findings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/tasks", "GET, POST"),
        ("DELETE", "/tasks", "GET, POST"),
        ("PUT", "/tasks/00000000-0000-0000-0000-000000000001", "GET"),
        ("DELETE", "/tasks/00000000-0000-0000-0000-000000000001", "GET"),
        ("PUT", "/alerts", "GET"),
        ("DELETE", "/alerts", "GET"),
    ],
)
async def test_a_405_allows_every_method_of_the_path(
    anonymous: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    """The Allow header of a 405 names every method some route serves at the path, not just
    the first route's (POST alone on /tasks was the fuzzer's finding)."""
    response = await anonymous.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_an_integral_float_is_an_integer_timeout() -> None:
    """1.0 is an integer to JSON Schema, so the timeout takes it (as 1); 1.5, "60" and true
    stay refused, and the schema still says integer."""
    assert SubmitTask.model_validate({"description": "x", "timeout": 1.0}).timeout == 1
    assert SubmitTask.model_validate_json('{"description": "x", "timeout": 60.0}').timeout == 60
    for wrong in (1.5, "60", True, float("inf")):
        with pytest.raises(ValidationError):
            SubmitTask.model_validate({"description": "x", "timeout": wrong})
    assert SubmitTask.model_json_schema()["properties"]["timeout"]["type"] == "integer"


@pytest.mark.usefixtures("db", "topics")
@pytest.mark.parametrize(
    ("seconds", "status"), [(1.0, 202), (3600.0, 202), (1.5, 422), ("60", 422), (True, 422)]
)
async def test_post_tasks_takes_timeout_1_0_and_refuses_1_5_and_a_string(
    client: httpx.AsyncClient, seconds: Any, status: int
) -> None:
    """Through the API: an integral float is accepted, anything else that is not an integer
    is a 422 naming body.timeout."""
    response = await client.post("/tasks", json={"description": "x", "timeout": seconds})

    assert response.status_code == status
    if status == 422:
        assert "body.timeout" in error_fields(response.json())
