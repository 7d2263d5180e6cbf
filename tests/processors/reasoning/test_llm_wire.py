"""The chat completions wire format, as pure functions: schema names, content, usage."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from processors.reasoning._wire import (
    NotACompletion,
    parse_content,
    read_content,
    read_usage,
    schema_name,
)
from processors.shared.tokens import count_chat_tokens

MESSAGES = [{"role": "user", "content": "What is Kafka?"}]


class Point(BaseModel):
    x: int
    y: int


def completion(**fields: Any) -> ChatCompletion:
    """An answer as the SDK hands it over: read without validation, fields may be missing."""
    return ChatCompletion.construct(**fields)


def answer(content: str | None) -> dict[str, Any]:
    return {"index": 0, "message": {"role": "assistant", "content": content}}


def test_schema_names_keep_to_the_allowed_characters() -> None:
    """OpenAI accepts [a-zA-Z0-9_-]{1,64}; anything else becomes an underscore."""
    assert schema_name("plan.thought") == "plan_thought"
    assert schema_name("x" * 80) == "x" * 64
    assert schema_name("") == "result"


def test_content_may_come_in_a_code_fence() -> None:
    """JSON inside a markdown fence (with or without a language) is read as JSON."""
    assert parse_content('```json\n{"x": 1, "y": 2}\n```', Point) == Point(x=1, y=2)
    assert parse_content('```\n{"x": 1, "y": 2}```', Point) == Point(x=1, y=2)
    with pytest.raises(ValidationError):
        parse_content("```", Point)


def test_a_body_that_is_not_a_completion_is_named_so() -> None:
    """JSON without choices, or choices without a message, is NotACompletion rather than an
    IndexError or AttributeError."""
    with pytest.raises(NotACompletion):
        read_content(completion(choices=[]))
    with pytest.raises(NotACompletion):
        read_content(completion())
    with pytest.raises(NotACompletion):
        read_content(completion(choices=[{"index": 0}]))


def test_content_is_read_from_the_first_choice() -> None:
    """The first choice's message content; a message without content is empty text."""
    assert read_content(ChatCompletion.model_validate(_full("hello"))) == "hello"
    assert read_content(ChatCompletion.model_validate(_full(None))) == ""


def test_reported_usage_is_taken_with_its_details() -> None:
    """prompt/completion tokens become input/output tokens; cached and reasoning tokens come
    from OpenAI's details; the model is the one the server says answered."""
    body = _full(
        "hi",
        usage={
            "prompt_tokens": 50,
            "completion_tokens": 9,
            "total_tokens": 59,
            "prompt_tokens_details": {"cached_tokens": 32},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    )
    usage = read_usage(
        ChatCompletion.model_validate(body),
        asked="m",
        provider="api.openai.com",
        messages=MESSAGES,
        response_format=None,
        content="hi",
    )
    assert usage.model_dump() == {
        "model": "gpt-x-2026",
        "provider": "api.openai.com",
        "input_tokens": 50,
        "output_tokens": 9,
        "cached_tokens": 32,
        "reasoning_tokens": 4,
        "source": "provider",
    }


@pytest.mark.parametrize("reported", [None, {}, {"completion_tokens": 3}])
def test_usage_missing_or_without_prompt_tokens_is_estimated(
    reported: dict[str, Any] | None,
) -> None:
    """No usage, or usage without its prompt tokens, is counted here from the request and
    the content; the model falls back to the one asked when the answer names none."""
    fields: dict[str, Any] = {"choices": [answer("Kafka is a log.")]}
    if reported is not None:
        fields["usage"] = reported
    usage = read_usage(
        completion(**fields),
        asked="small",
        provider="127.0.0.1:8000",
        messages=MESSAGES,
        response_format=None,
        content="Kafka is a log.",
    )
    counted = count_chat_tokens(MESSAGES, completion="Kafka is a log.")
    assert (usage.model, usage.source) == ("small", "estimated")
    assert (usage.input_tokens, usage.output_tokens) == (
        counted.prompt_tokens,
        counted.completion_tokens,
    )
    # 1 + 4 + 3 + 3 for the prompt; K|afka| is| a| log|. for the answer
    assert (usage.input_tokens, usage.output_tokens) == (11, 6)


def _full(content: str | None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-x-2026",
        "choices": [{**answer(content), "finish_reason": "stop"}],
    }
    if usage is not None:
        body["usage"] = usage
    return body
