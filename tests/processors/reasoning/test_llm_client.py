"""The LLM client against a local server that speaks the OpenAI chat completions API:
structured output, repair, retries, Retry-After, fallback models, timeouts, usage."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import BaseModel

from processors.reasoning import (
    LLMClient,
    LLMInvalidOutput,
    LLMNotConfigured,
    LLMUnavailable,
    ReasoningError,
    Usage,
)
from processors.reasoning._wire import strict_schema
from tests.processors.openai_server import OpenAIServer
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

MESSAGES = [{"role": "user", "content": "Which roles does this task need?"}]


class Verdict(BaseModel):
    """A small result model for the tests."""

    roles: list[str]
    confident: bool


GOOD = Verdict(roles=["researcher", "writer"], confident=True)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as instance:
        yield instance


@pytest.fixture
def llm_server(server: OpenAIServer) -> OpenAIServer:
    server.reset()
    return server


class Sleeps:
    """An injected sleep that records each requested delay instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_settings(server: OpenAIServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "llm_base_url": server.base_url,
        "llm_model": "model-a",
        "llm_fallback_models": "",
        "llm_timeout_s": 2.0,
        "llm_max_retries": 2,
        "llm_max_thoughts": 4,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def client(server: OpenAIServer, sleeps: Sleeps, **overrides: object) -> LLMClient:
    return LLMClient(make_settings(server, **overrides), sleep=sleeps, rng=random.Random(7))


async def test_structured_answer_is_validated_and_reports_usage(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A valid answer comes back as the result model, with the usage the server reported."""
    llm_server.answer(GOOD, prompt_tokens=12, completion_tokens=7, model="model-a-2026")
    async with client(llm_server, sleeps) as llm:
        result, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert usage == [
        Usage(model="model-a-2026", prompt_tokens=12, completion_tokens=7, total_tokens=19)
    ]
    [request] = llm_server.requests
    assert request.model == "model-a"
    assert request.messages == MESSAGES
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "verdict",
            "schema": strict_schema(Verdict.model_json_schema()),
            "strict": True,
        },
    }
    assert sleeps.delays == []


async def test_api_key_is_sent_as_bearer_token(llm_server: OpenAIServer, sleeps: Sleeps) -> None:
    """WRENCH_LLM_API_KEY goes out as ``Authorization: Bearer``; without it, no header."""
    llm_server.answer(GOOD)
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps, llm_api_key="sk-test-123") as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    async with client(llm_server, sleeps) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    with_key, without_key = llm_server.requests
    assert with_key.headers["Authorization"] == "Bearer sk-test-123"
    assert "Authorization" not in without_key.headers


async def test_429_is_retried_after_the_retry_after_seconds(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A 429 with ``Retry-After: 3`` waits exactly 3 s, then the retry succeeds."""
    llm_server.error(429, "rate limited", retry_after="3")
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps) as llm:
        result, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert sleeps.delays == [3.0]
    assert len(llm_server.requests) == 2
    assert len(usage) == 1, "only the request that succeeded reports usage"


async def test_retry_after_as_an_http_date_is_honoured(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """Retry-After may be an HTTP date; the client waits until then (about 20 s here)."""
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    llm_server.error(503, "overloaded", retry_after=when)
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    [delay] = sleeps.delays
    assert 17 <= delay <= 20


async def test_backoff_is_exponential_with_full_jitter(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """Without Retry-After, the n-th retry waits a random time in [0, 0.5 s * 2**n]."""
    llm_server.error(500)
    llm_server.error(502)
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    first, second = sleeps.delays
    assert 0 <= first <= 0.5
    assert 0 <= second <= 1.0
    assert first != second


async def test_5xx_exhausting_retries_falls_back_to_the_next_model(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """After 1 + llm_max_retries failures the next fallback model is asked, and answers."""
    for _ in range(3):
        llm_server.error(500)
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps, llm_fallback_models="model-b, model-c") as llm:
        result, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert [r.model for r in llm_server.requests] == ["model-a"] * 3 + ["model-b"]
    assert [u.model for u in usage] == ["model-b"]
    assert len(sleeps.delays) == 2


async def test_every_model_failing_is_llm_unavailable_naming_them(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """When every model fails, LLMUnavailable names each model tried and the last error."""
    for _ in range(4):
        llm_server.error(503, "overloaded")
    async with client(llm_server, sleeps, llm_max_retries=1, llm_fallback_models="model-b") as llm:
        with pytest.raises(LLMUnavailable) as caught:
            await llm.structured(MESSAGES, Verdict, name="verdict")
    error = caught.value
    assert isinstance(error, ReasoningError) and isinstance(error, WrenchError)
    assert error.code == "LLM_UNAVAILABLE"
    assert error.details["models"] == ["model-a", "model-b"]
    assert "model-a, model-b" in str(error)
    assert "HTTP 503" in str(error)
    assert not isinstance(error.__cause__, httpx.HTTPError)
    assert [r.model for r in llm_server.requests] == ["model-a", "model-a", "model-b", "model-b"]


async def test_timeout_is_retried_then_llm_unavailable(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A request slower than llm_timeout_s is abandoned and retried; when every attempt times
    out the error is LLMUnavailable saying so, never an httpx exception."""
    llm_server.slow(2.0)
    llm_server.slow(2.0)
    async with client(llm_server, sleeps, llm_timeout_s=0.2, llm_max_retries=1) as llm:
        with pytest.raises(LLMUnavailable, match=r"timed out after 0\.2s"):
            await llm.structured(MESSAGES, Verdict, name="verdict")
    assert len(llm_server.requests) == 2
    assert len(sleeps.delays) == 1


async def test_timeout_then_success(llm_server: OpenAIServer, sleeps: Sleeps) -> None:
    """One slow answer does not fail the call: the retry gets the answer."""
    llm_server.slow(2.0)
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps, llm_timeout_s=0.2) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD


async def test_connection_refused_is_llm_unavailable(sleeps: Sleeps) -> None:
    """Nothing listening at the base URL: retried, then LLMUnavailable (no httpx error)."""
    settings = Settings(
        llm_base_url="http://127.0.0.1:9/v1", llm_model="model-a", llm_max_retries=1
    )
    async with LLMClient(settings, sleep=sleeps) as llm:
        with pytest.raises(LLMUnavailable, match="connection failed"):
            await llm.structured(MESSAGES, Verdict, name="verdict")
    assert len(sleeps.delays) == 1


async def test_malformed_json_is_repaired_on_the_second_call(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """Invalid JSON gets one repair request carrying the bad output and the errors."""
    llm_server.answer('{"roles": ["researcher"', prompt_tokens=10, completion_tokens=3)
    llm_server.answer(GOOD, prompt_tokens=30, completion_tokens=8)
    async with client(llm_server, sleeps) as llm:
        result, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert [u.total_tokens for u in usage] == [13, 38], "one Usage per successful request"
    _, repair = llm_server.requests
    assert repair.messages[: len(MESSAGES)] == MESSAGES
    assert repair.messages[-2] == {"role": "assistant", "content": '{"roles": ["researcher"'}
    assert repair.messages[-1]["role"] == "user"
    assert "not valid for the schema verdict" in repair.messages[-1]["content"]


async def test_schema_violation_is_repaired(llm_server: OpenAIServer, sleeps: Sleeps) -> None:
    """Valid JSON that breaks the schema is repaired too; the errors name the field."""
    llm_server.answer({"roles": "researcher"})
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    feedback = llm_server.requests[1].messages[-1]["content"]
    assert "- roles:" in feedback and "- confident: Field required" in feedback


async def test_invalid_twice_is_llm_invalid_output(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """Exactly one repair attempt: a second invalid answer is LLMInvalidOutput, and the
    tokens both requests spent are still reported in its details."""
    llm_server.answer("not json at all")
    llm_server.answer({"roles": ["writer"]})
    llm_server.answer(GOOD)  # never asked for
    async with client(llm_server, sleeps) as llm:
        with pytest.raises(LLMInvalidOutput) as caught:
            await llm.structured(MESSAGES, Verdict, name="verdict")
    assert caught.value.code == "LLM_INVALID_OUTPUT"
    assert "confident" in str(caught.value)
    assert len(caught.value.details["usage"]) == 2
    assert len(llm_server.requests) == 2


async def test_code_fenced_json_is_accepted(llm_server: OpenAIServer, sleeps: Sleeps) -> None:
    """Some models wrap JSON in a markdown fence; that alone needs no repair."""
    llm_server.answer("```json\n" + GOOD.model_dump_json() + "\n```")
    async with client(llm_server, sleeps) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert len(llm_server.requests) == 1


async def test_unsupported_response_format_falls_back_to_json_object(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A 400 about response_format switches the client to json_object mode (with the schema
    in a system message), at once and for the rest of its life, without using a retry."""
    llm_server.error(400, "response_format json_schema is not supported by this server")
    llm_server.answer(GOOD)
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
        await llm.structured(MESSAGES, Verdict, name="verdict")
    assert [r.response_format for r in llm_server.requests] == [
        "json_schema",
        "json_object",
        "json_object",
    ]
    system = llm_server.requests[1].messages[0]
    assert system["role"] == "system" and '"confident"' in system["content"]
    assert llm_server.requests[1].messages[1:] == MESSAGES
    assert sleeps.delays == []


async def test_a_server_refusing_response_format_gets_the_schema_in_the_prompt(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A server that refuses json_object too is asked without response_format; the schema
    request in the system message remains, and validation still applies."""
    llm_server.error(400, "response_format json_schema is not supported")
    llm_server.error(400, "unknown field: response_format")
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    formats = [r.response_format for r in llm_server.requests]
    assert formats == ["json_schema", "json_object", "None"]
    assert "response_format" not in llm_server.requests[2].body
    assert '"confident"' in llm_server.requests[2].messages[0]["content"]


async def test_other_4xx_is_not_retried_but_falls_back(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A 404 (unknown model) is not worth repeating: the next model is asked at once."""
    llm_server.error(404, "model not found")
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps, llm_fallback_models="model-b") as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    assert [r.model for r in llm_server.requests] == ["model-a", "model-b"]
    assert sleeps.delays == []


async def test_a_client_error_names_the_servers_message(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A 401 is not retried; LLMUnavailable quotes the server's error message, so the fix
    (a key) is obvious."""
    llm_server.error(401, "Incorrect API key provided")
    async with client(llm_server, sleeps) as llm:
        with pytest.raises(LLMUnavailable, match="HTTP 401: Incorrect API key provided"):
            await llm.structured(MESSAGES, Verdict, name="verdict")
    assert len(llm_server.requests) == 1


async def test_an_answer_that_is_not_a_chat_completion_is_retried(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A 200 whose body is not a chat completion (a proxy's HTML page) is retried."""
    llm_server.raw(200, "<html>gateway</html>")
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert len(sleeps.delays) == 1


async def test_retry_after_beyond_the_cap_waits_the_cap(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A Retry-After of ten minutes is capped at the longest backoff (60 s): a reasoning call
    must stay bounded; the retry then meets the server's answer or its next 429."""
    llm_server.error(429, retry_after="600")
    llm_server.answer(GOOD)
    async with client(llm_server, sleeps) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    assert sleeps.delays == [60.0]


async def test_an_answer_without_usage_counts_zero_tokens(
    llm_server: OpenAIServer, sleeps: Sleeps
) -> None:
    """A server that reports no usage still yields one Usage for the request, with zeros."""
    llm_server.answer(GOOD, usage=False)
    async with client(llm_server, sleeps) as llm:
        _, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert usage == [Usage(model="model-a", prompt_tokens=0, completion_tokens=0, total_tokens=0)]


def test_no_base_url_is_llm_not_configured() -> None:
    """Without WRENCH_LLM_BASE_URL there is no LLM client; the error says which knob to set."""
    with pytest.raises(LLMNotConfigured, match="WRENCH_LLM_BASE_URL") as caught:
        LLMClient(Settings(llm_base_url=None))
    assert caught.value.code == "LLM_NOT_CONFIGURED"


async def test_a_shared_http_client_is_left_open(llm_server: OpenAIServer, sleeps: Sleeps) -> None:
    """A caller's connection pool is used as is and not closed by the LLM client."""
    llm_server.answer(GOOD)
    async with httpx.AsyncClient() as http:
        llm = LLMClient(make_settings(llm_server), http, sleep=sleeps)
        async with llm:
            await llm.structured(MESSAGES, Verdict, name="verdict")
        assert not http.is_closed


def test_strict_schema_closes_every_object_and_requires_every_property() -> None:
    """OpenAI's strict mode wants closed objects, every property required and no defaults;
    nested models (in $defs) get the same treatment, and nullable fields stay nullable."""

    class Inner(BaseModel):
        name: str
        note: str | None = None

    class Outer(BaseModel):
        inner: Inner
        items: list[Inner] = []
        default: int = 3  # a field named "default" is a property, not the keyword

    schema = strict_schema(Outer.model_json_schema())
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["inner", "items", "default"]
    assert "default" in schema["properties"]
    assert "default" not in schema["properties"]["default"]
    inner = schema["$defs"]["Inner"]
    assert inner["additionalProperties"] is False
    assert inner["required"] == ["name", "note"]
    assert {"type": "null"} in inner["properties"]["note"]["anyOf"]
    assert "default" not in inner["properties"]["note"]
