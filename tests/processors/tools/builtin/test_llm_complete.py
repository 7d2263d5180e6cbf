"""llm.complete against a local server that speaks the OpenAI chat completions API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from processors.shared.tokens import count_chat_tokens
from processors.tools.builtin import (
    LLMComplete,
    ToolLLMNotConfigured,
    ToolLLMUnavailable,
    build_tools,
)
from tests.processors.openai_server import OpenAIServer
from wrenchai.embedded import free_port
from wrenchai.settings import Settings


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as instance:
        yield instance


@pytest.fixture
async def tool(server: OpenAIServer) -> AsyncIterator[LLMComplete]:
    server.reset()
    instance = LLMComplete(
        Settings(llm_base_url=server.base_url, llm_model="small", llm_max_retries=0)
    )
    yield instance
    await instance.aclose()


async def test_returns_text_model_and_usage(tool: LLMComplete, server: OpenAIServer) -> None:
    """The text, the model that answered, and the usage the server reported, with the
    server's host as the provider."""
    server.answer("Kafka is a log.", prompt_tokens=12, completion_tokens=4, cached_tokens=8)
    result = await tool.call({"prompt": "What is Kafka?"})
    assert result == {
        "text": "Kafka is a log.",
        "model": "small",
        "usage": {
            "provider": f"127.0.0.1:{server.port}",
            "input_tokens": 12,
            "output_tokens": 4,
            "cached_tokens": 8,
            "reasoning_tokens": 0,
            "source": "provider",
        },
    }
    sent = server.requests[-1]
    assert sent.messages == [{"role": "user", "content": "What is Kafka?"}]
    assert "response_format" not in sent.body, "a plain completion asks for no JSON"


async def test_usage_is_counted_when_the_server_reports_none(
    tool: LLMComplete, server: OpenAIServer
) -> None:
    """A server without a usage report: the tokens of the messages sent and of the text,
    counted with tiktoken, marked estimated."""
    server.answer("Kafka is a log.", usage=False)
    result = await tool.call({"prompt": "What is Kafka?", "system": "Be brief."})
    counted = count_chat_tokens(server.requests[-1].messages, completion="Kafka is a log.")
    usage = result["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        counted.prompt_tokens,
        counted.completion_tokens,
    )
    # system: 1 + 'Be brief.' 3; user: 1 + 'What is Kafka?' 4; 2 x 3 framing; 3 priming
    assert usage["input_tokens"] == 18
    assert usage["source"] == "estimated"


async def test_sends_system_model_and_sampling_options(
    tool: LLMComplete, server: OpenAIServer
) -> None:
    server.answer("ok", model="big-2")
    result = await tool.call(
        {
            "prompt": "p",
            "system": "Be brief.",
            "model": "big",
            "max_tokens": 64,
            "temperature": 0.2,
        }
    )
    assert result["model"] == "big-2", "the model the server says answered"
    body = server.requests[-1].body
    assert body["model"] == "big"
    assert body["max_tokens"] == 64 and body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_a_failing_server_is_transient_llm_unavailable(
    tool: LLMComplete, server: OpenAIServer
) -> None:
    server.error(503)
    with pytest.raises(ToolLLMUnavailable) as caught:
        await tool.call({"prompt": "p"})
    assert caught.value.code == "LLM_UNAVAILABLE" and caught.value.transient
    assert caught.value.details["tool"] == "llm.complete"


async def test_health_reaches_the_server(tool: LLMComplete) -> None:
    health = await tool.health()
    assert health.ok, health.detail
    assert "answers" in health.detail


async def test_without_a_server_it_is_listed_but_not_configured() -> None:
    tool = build_tools(Settings())["llm.complete"]
    with pytest.raises(ToolLLMNotConfigured) as caught:
        await tool.call({"prompt": "p"})
    assert caught.value.code == "LLM_NOT_CONFIGURED" and not caught.value.transient
    assert "WRENCH_LLM_BASE_URL" in caught.value.message
    health = await tool.health()
    assert not health.ok and "WRENCH_LLM_BASE_URL" in health.detail


async def test_an_unreachable_server_is_unhealthy() -> None:
    tool = LLMComplete(Settings(llm_base_url=f"http://127.0.0.1:{free_port()}/v1"))
    health = await tool.health()
    assert not health.ok and "unreachable" in health.detail
