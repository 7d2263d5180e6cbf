"""The LLM client against a local server that speaks the OpenAI chat completions API:
structured output, repair, retries, Retry-After, fallback models, timeouts, usage.

Retries and their waits are the openai SDK's: 0.5 s doubling per retry (less up to a quarter
of jitter), or the server's Retry-After up to two minutes. They really wait, so these tests
keep the waits short and check them from when the server saw each request.
"""

from __future__ import annotations

import email.utils
import itertools
import time
from collections.abc import AsyncIterator

import openai
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
from processors.reasoning._wire import provider, strict_schema
from processors.shared.tokens import count_chat_tokens
from tests.metrics_support import value
from tests.processors.openai_server import OpenAIServer
from wrenchai import metrics
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


def gaps(server: OpenAIServer) -> list[float]:
    """Seconds between consecutive requests the server received: the client's waits."""
    times = [r.received_at for r in server.requests]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


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


def causes(error: BaseException) -> list[type[BaseException]]:
    """The types along the ``raise ... from`` chain behind ``error``."""
    chain = []
    while error.__cause__ is not None:
        error = error.__cause__
        chain.append(type(error))
    return chain


def client(server: OpenAIServer, **overrides: object) -> LLMClient:
    return LLMClient(make_settings(server, **overrides))


def host(server: OpenAIServer) -> str:
    return f"127.0.0.1:{server.port}"


async def test_structured_answer_is_validated_and_reports_usage(llm_server: OpenAIServer) -> None:
    """A valid answer comes back as the result model, with the usage the server reported."""
    llm_server.answer(GOOD, prompt_tokens=12, completion_tokens=7, model="model-a-2026")
    async with client(llm_server) as llm:
        result, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert usage == [
        Usage(
            model="model-a-2026",
            provider=host(llm_server),
            input_tokens=12,
            output_tokens=7,
            source="provider",
        )
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


async def test_api_key_is_sent_as_bearer_token(llm_server: OpenAIServer) -> None:
    """WRENCH_LLM_API_KEY goes out as ``Authorization: Bearer``; without it, no header."""
    llm_server.answer(GOOD)
    llm_server.answer(GOOD)
    async with client(llm_server, llm_api_key="sk-test-123") as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    async with client(llm_server) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    with_key, without_key = llm_server.requests
    assert with_key.headers["Authorization"] == "Bearer sk-test-123"
    assert "Authorization" not in without_key.headers


async def test_429_is_retried_after_the_retry_after_seconds(llm_server: OpenAIServer) -> None:
    """A 429 with ``Retry-After: 1`` waits 1 s (twice the SDK's own first backoff), then
    the retry succeeds."""
    llm_server.error(429, "rate limited", retry_after="1")
    llm_server.answer(GOOD)
    async with client(llm_server) as llm:
        result, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    [waited] = gaps(llm_server)
    assert waited >= 1.0
    assert len(llm_server.requests) == 2
    assert len(usage) == 1, "only the request that succeeded reports usage"


async def test_retry_after_as_an_http_date_is_honoured(llm_server: OpenAIServer) -> None:
    """Retry-After may be an HTTP date; the client waits until then (an HTTP date counts
    whole seconds, so 2 s ahead is more than 1 s of waiting; the SDK's own backoff is 0.5 s)."""
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    llm_server.error(503, "overloaded", retry_after=when)
    llm_server.answer(GOOD)
    async with client(llm_server) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    [waited] = gaps(llm_server)
    assert waited > 0.9


async def test_backoff_doubles_between_retries(llm_server: OpenAIServer) -> None:
    """Without Retry-After the SDK waits 0.5 s * 2**n, less up to a quarter of jitter: at
    least 0.375 s before the first retry and 0.75 s before the second."""
    llm_server.error(500)
    llm_server.error(502)
    llm_server.answer(GOOD)
    async with client(llm_server) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    first, second = gaps(llm_server)
    assert first >= 0.375
    assert second >= 0.75


async def test_5xx_exhausting_retries_falls_back_to_the_next_model(
    llm_server: OpenAIServer,
) -> None:
    """After 1 + llm_max_retries failures the next fallback model is asked, and answers."""
    for _ in range(3):
        llm_server.error(500)
    llm_server.answer(GOOD)
    async with client(llm_server, llm_fallback_models="model-b, model-c") as llm:
        result, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert [r.model for r in llm_server.requests] == ["model-a"] * 3 + ["model-b"]
    assert [u.model for u in usage] == ["model-b"]


async def test_every_model_failing_is_llm_unavailable_naming_them(llm_server: OpenAIServer) -> None:
    """When every model fails, LLMUnavailable names each model tried and the last error."""
    for _ in range(4):
        llm_server.error(503, "overloaded")
    async with client(llm_server, llm_max_retries=1, llm_fallback_models="model-b") as llm:
        with pytest.raises(LLMUnavailable) as caught:
            await llm.structured(MESSAGES, Verdict, name="verdict")
    error = caught.value
    assert isinstance(error, ReasoningError) and isinstance(error, WrenchError)
    assert error.code == "LLM_UNAVAILABLE"
    assert error.details["models"] == ["model-a", "model-b"]
    assert "model-a, model-b" in str(error)
    assert "HTTP 503" in str(error)
    assert "overloaded" not in str(error), "a transient error's body is never quoted"
    assert not isinstance(error, openai.OpenAIError)
    assert openai.InternalServerError in causes(error), "the chain is kept for debugging"
    assert [r.model for r in llm_server.requests] == ["model-a", "model-a", "model-b", "model-b"]


async def test_timeout_is_retried_then_llm_unavailable(llm_server: OpenAIServer) -> None:
    """A request slower than llm_timeout_s is abandoned and retried; when every attempt times
    out the error is LLMUnavailable saying so, never an openai exception."""
    llm_server.slow(2.0)
    llm_server.slow(2.0)
    async with client(llm_server, llm_timeout_s=0.2, llm_max_retries=1) as llm:
        with pytest.raises(LLMUnavailable, match=r"timed out after 0\.2s"):
            await llm.structured(MESSAGES, Verdict, name="verdict")
    assert len(llm_server.requests) == 2


async def test_timeout_then_success(llm_server: OpenAIServer) -> None:
    """One slow answer does not fail the call: the retry gets the answer."""
    llm_server.slow(2.0)
    llm_server.answer(GOOD)
    async with client(llm_server, llm_timeout_s=0.2) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD


async def test_connection_refused_is_llm_unavailable() -> None:
    """Nothing listening at the base URL: retried, then LLMUnavailable (no openai error)."""
    settings = Settings(
        llm_base_url="http://127.0.0.1:9/v1", llm_model="model-a", llm_max_retries=1
    )
    async with LLMClient(settings) as llm:
        with pytest.raises(LLMUnavailable, match="connection failed") as caught:
            await llm.structured(MESSAGES, Verdict, name="verdict")
    assert openai.APIConnectionError in causes(caught.value)


async def test_malformed_json_is_repaired_on_the_second_call(llm_server: OpenAIServer) -> None:
    """Invalid JSON gets one repair request carrying the bad output and the errors."""
    llm_server.answer('{"roles": ["researcher"', prompt_tokens=10, completion_tokens=3)
    llm_server.answer(GOOD, prompt_tokens=30, completion_tokens=8)
    async with client(llm_server) as llm:
        result, usage = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert [u.total_tokens for u in usage] == [13, 38], "one Usage per successful request"
    _, repair = llm_server.requests
    assert repair.messages[: len(MESSAGES)] == MESSAGES
    assert repair.messages[-2] == {"role": "assistant", "content": '{"roles": ["researcher"'}
    assert repair.messages[-1]["role"] == "user"
    assert "not valid for the schema verdict" in repair.messages[-1]["content"]


async def test_schema_violation_is_repaired(llm_server: OpenAIServer) -> None:
    """Valid JSON that breaks the schema is repaired too; the errors name the field."""
    llm_server.answer({"roles": "researcher"})
    llm_server.answer(GOOD)
    async with client(llm_server) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    feedback = llm_server.requests[1].messages[-1]["content"]
    assert "- roles:" in feedback and "- confident: Field required" in feedback


async def test_invalid_twice_is_llm_invalid_output(llm_server: OpenAIServer) -> None:
    """Exactly one repair attempt: a second invalid answer is LLMInvalidOutput, and the
    tokens both requests spent are still reported in its details."""
    llm_server.answer("not json at all")
    llm_server.answer({"roles": ["writer"]})
    llm_server.answer(GOOD)  # never asked for
    async with client(llm_server) as llm:
        with pytest.raises(LLMInvalidOutput) as caught:
            await llm.structured(MESSAGES, Verdict, name="verdict")
    assert caught.value.code == "LLM_INVALID_OUTPUT"
    assert "confident" in str(caught.value)
    assert len(caught.value.details["usage"]) == 2
    assert len(llm_server.requests) == 2


async def test_code_fenced_json_is_accepted(llm_server: OpenAIServer) -> None:
    """Some models wrap JSON in a markdown fence; that alone needs no repair."""
    llm_server.answer("```json\n" + GOOD.model_dump_json() + "\n```")
    async with client(llm_server) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert len(llm_server.requests) == 1


async def test_unsupported_response_format_falls_back_to_json_object(
    llm_server: OpenAIServer,
) -> None:
    """A 400 about response_format switches the client to json_object mode (with the schema
    in a system message), at once and for the rest of its life, without using a retry."""
    llm_server.error(400, "response_format json_schema is not supported by this server")
    llm_server.answer(GOOD)
    llm_server.answer(GOOD)
    async with client(llm_server) as llm:
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
    assert gaps(llm_server)[0] < 0.375, "no retry's backoff before the weaker format"


async def test_a_server_refusing_response_format_gets_the_schema_in_the_prompt(
    llm_server: OpenAIServer,
) -> None:
    """A server that refuses json_object too is asked without response_format; the schema
    request in the system message remains, and validation still applies."""
    llm_server.error(400, "response_format json_schema is not supported")
    llm_server.error(400, "unknown field: response_format")
    llm_server.answer(GOOD)
    async with client(llm_server) as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    formats = [r.response_format for r in llm_server.requests]
    assert formats == ["json_schema", "json_object", "None"]
    assert "response_format" not in llm_server.requests[2].body
    assert '"confident"' in llm_server.requests[2].messages[0]["content"]


async def test_other_4xx_is_not_retried_but_falls_back(llm_server: OpenAIServer) -> None:
    """A 404 (unknown model) is not worth repeating: the next model is asked at once."""
    llm_server.error(404, "model not found")
    llm_server.answer(GOOD)
    async with client(llm_server, llm_fallback_models="model-b") as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    assert [r.model for r in llm_server.requests] == ["model-a", "model-b"]


async def test_a_client_error_names_the_servers_message(llm_server: OpenAIServer) -> None:
    """A 401 is not retried; LLMUnavailable quotes the server's error message, so the fix
    (a key) is obvious."""
    llm_server.error(401, "Incorrect API key provided")
    async with client(llm_server) as llm:
        with pytest.raises(LLMUnavailable, match="HTTP 401: Incorrect API key provided"):
            await llm.structured(MESSAGES, Verdict, name="verdict")
    assert len(llm_server.requests) == 1


async def test_a_long_error_message_is_cut_short(llm_server: OpenAIServer) -> None:
    """The server's words are quoted up to 200 characters: enough to diagnose, never a whole
    echoed request; a body that is not OpenAI's error shape is quoted as text."""
    llm_server.error(403, "x" * 500)
    llm_server.raw(404, "no such route " * 40)
    async with client(llm_server, llm_fallback_models="model-b") as llm:
        with pytest.raises(LLMUnavailable) as caught:
            await llm.structured(MESSAGES, Verdict, name="verdict")
    first, second = caught.value.details["errors"]
    assert first == "model-a: HTTP 403: " + "x" * 200 + "…"
    assert second.startswith("model-b: HTTP 404: no such route") and second.endswith("…")


@pytest.mark.parametrize("body", ["<html>gateway</html>", '{"choices": []}'])
async def test_an_answer_that_is_not_a_chat_completion_falls_back(
    llm_server: OpenAIServer, body: str
) -> None:
    """A 200 whose body is not a chat completion (a proxy's HTML page, JSON without choices)
    is not retried (the SDK retries HTTP failures only): the next model is asked."""
    llm_server.raw(200, body)
    llm_server.answer(GOOD)
    async with client(llm_server, llm_fallback_models="model-b") as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert [r.model for r in llm_server.requests] == ["model-a", "model-b"]


async def test_a_retry_after_beyond_two_minutes_falls_back_at_once(
    llm_server: OpenAIServer,
) -> None:
    """A Retry-After of ten minutes is not waited for (the SDK honours up to two minutes): a
    reasoning call must stay bounded, so the next model is asked at once."""
    llm_server.error(429, retry_after="600")
    llm_server.answer(GOOD)
    async with client(llm_server, llm_fallback_models="model-b") as llm:
        result, _ = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert result == GOOD
    assert [r.model for r in llm_server.requests] == ["model-a", "model-b"]


async def test_usage_carries_the_cached_and_reasoning_tokens_reported(
    llm_server: OpenAIServer,
) -> None:
    """OpenAI's usage details come through: cached prompt tokens, hidden reasoning tokens."""
    llm_server.answer(
        GOOD, prompt_tokens=120, completion_tokens=40, cached_tokens=64, reasoning_tokens=25
    )
    async with client(llm_server) as llm:
        _, [usage] = await llm.structured(MESSAGES, Verdict, name="verdict")
    assert (usage.input_tokens, usage.cached_tokens) == (120, 64)
    assert (usage.output_tokens, usage.reasoning_tokens) == (40, 25)
    assert usage.total_tokens == 160
    assert (usage.source, usage.provider) == ("provider", host(llm_server))


async def test_an_answer_without_usage_is_counted_from_the_request_sent(
    llm_server: OpenAIServer,
) -> None:
    """A server that reports no usage still yields one Usage per request, estimated with
    tiktoken from the request exactly as it went out (messages and response schema) and the
    answer's text."""
    llm_server.answer(GOOD, usage=False)
    async with client(llm_server) as llm:
        _, [usage] = await llm.structured(MESSAGES, Verdict, name="verdict")
    [sent] = llm_server.requests
    counted = count_chat_tokens(
        sent.messages,
        response_format=sent.body["response_format"],
        completion=GOOD.model_dump_json(),
    )
    assert usage == Usage(
        model="model-a",
        provider=host(llm_server),
        input_tokens=counted.prompt_tokens,
        output_tokens=counted.completion_tokens,
        source="estimated",
    )
    schema_tokens = counted.prompt_tokens - count_chat_tokens(sent.messages).prompt_tokens
    assert schema_tokens > 0, "the response schema sent is part of the prompt"


async def test_an_estimate_in_json_object_mode_counts_the_schema_in_the_prompt(
    llm_server: OpenAIServer,
) -> None:
    """After a fall back to json_object the schema travels in the system message: that is
    what is counted, the request that went out."""
    llm_server.error(400, "response_format json_schema is not supported")
    llm_server.answer(GOOD, usage=False)
    async with client(llm_server) as llm:
        _, [usage] = await llm.structured(MESSAGES, Verdict, name="verdict")
    sent = llm_server.requests[1]
    assert sent.response_format == "json_object"
    counted = count_chat_tokens(
        sent.messages,
        response_format=sent.body["response_format"],
        completion=GOOD.model_dump_json(),
    )
    assert (usage.input_tokens, usage.output_tokens) == (
        counted.prompt_tokens,
        counted.completion_tokens,
    )
    assert usage.source == "estimated"


async def test_each_completion_request_is_timed_in_the_metrics(
    llm_server: OpenAIServer,
) -> None:
    """One observation per request to a model, answered or failed, labelled with the model
    asked: here model a fails (404), b answers invalid JSON, and the repair asks a again."""

    def observed(model: str) -> float:
        text = metrics.exposition().decode()
        return value(text, "wrench_llm_request_seconds_count", model=model) or 0.0

    before = {model: observed(model) for model in ("metrics-a", "metrics-b")}
    llm_server.error(404, "model not found")
    llm_server.answer("not json")
    llm_server.answer(GOOD)
    settings = {"llm_model": "metrics-a", "llm_fallback_models": "metrics-b"}
    async with client(llm_server, **settings) as llm:
        await llm.structured(MESSAGES, Verdict, name="verdict")
    assert [r.model for r in llm_server.requests] == ["metrics-a", "metrics-b", "metrics-a"]
    assert observed("metrics-a") - before["metrics-a"] == 2
    assert observed("metrics-b") - before["metrics-b"] == 1


def test_the_provider_is_the_host_of_the_base_url() -> None:
    """Who served a request: host and port as configured, never credentials or the path."""
    assert provider("https://api.openai.com/v1") == "api.openai.com"
    assert provider("http://127.0.0.1:8123/v1") == "127.0.0.1:8123"
    assert provider("http://user:secret@llm.internal:8000/v1") == "llm.internal:8000"


def test_no_base_url_is_llm_not_configured() -> None:
    """Without WRENCH_LLM_BASE_URL there is no LLM client; the error says which knob to set."""
    with pytest.raises(LLMNotConfigured, match="WRENCH_LLM_BASE_URL") as caught:
        LLMClient(Settings(llm_base_url=None))
    assert caught.value.code == "LLM_NOT_CONFIGURED"


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
