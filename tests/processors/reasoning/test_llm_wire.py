"""The chat completions wire format, as pure functions: Retry-After, schema names, content."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from processors.reasoning._wire import (
    NotACompletion,
    error_message,
    parse_content,
    read_completion,
    retry_after,
    schema_name,
)


class Point(BaseModel):
    x: int
    y: int


def response(status: int = 200, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("1.5", 1.5), ("-3", 0.0), ("soon", None), ("", None)],
)
def test_retry_after_in_seconds(header: str, expected: float | None) -> None:
    """Delta-seconds are read as given (never negative); anything unreadable is ignored."""
    assert retry_after(response(429, headers={"Retry-After": header})) == expected


def test_retry_after_as_a_past_http_date_is_zero() -> None:
    """An HTTP date already past means: retry now."""
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert retry_after(response(503, headers={"Retry-After": past})) == 0.0


def test_no_retry_after_is_none() -> None:
    assert retry_after(response(500)) is None


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
    """HTML, or JSON without choices, is NotACompletion rather than a KeyError."""
    with pytest.raises(NotACompletion):
        read_completion(response(text="<html></html>"), "m")
    with pytest.raises(NotACompletion):
        read_completion(response(json={"choices": []}), "m")


def test_error_message_prefers_the_servers_words_and_stays_short() -> None:
    """OpenAI's error.message when present, otherwise the body, cut at 200 characters."""
    assert error_message(response(400, json={"error": {"message": "bad model"}})) == "bad model"
    long = error_message(response(502, text="x" * 500))
    assert len(long) == 201 and long.endswith("…")
