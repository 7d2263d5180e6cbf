"""The chat completions wire format: the schema sent, the answer, its usage and errors read back.

Pure functions of JSON and of the openai SDK's objects; the client in ``_llm`` decides what
to do with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from processors.reasoning._types import Usage
from processors.shared.tokens import count_chat_tokens

T = TypeVar("T", bound=BaseModel)


class NotACompletion(ValueError):
    """A 200 answer whose body is not a chat completion (a proxy's error page, say)."""


def strict_schema(node: Any) -> Any:
    """``node`` as OpenAI's strict structured outputs accept it: every object closed
    (``additionalProperties: false``) with every property required, and no ``default``.

    A field with a default becomes one the model must fill (with null where its type allows
    it); the result model still validates the answer with its own rules.
    """
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "default":
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        else:
            out[key] = strict_schema(value)
    if isinstance(out.get("properties"), dict):
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out


def parse_content(content: str, result_model: type[T]) -> T:
    """``content`` as ``result_model``; tolerates a markdown code fence around the JSON."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return result_model.model_validate_json(text)


def read_content(completion: ChatCompletion) -> str:
    """The message content of an answer. The SDK reads answers without validating them
    (missing fields are None), so JSON that is no chat completion is named so here."""
    try:
        return str(completion.choices[0].message.content or "")
    except (AttributeError, IndexError, TypeError) as exc:
        raise NotACompletion("answer is not a chat completion") from exc


def read_usage(
    completion: ChatCompletion,
    *,
    asked: str,
    provider: str,
    messages: Sequence[Mapping[str, Any]],
    response_format: Mapping[str, Any] | None,
    content: str,
) -> Usage:
    """The usage of one answer: as the server reported it, with its cached and reasoning
    details; counted with tiktoken from the request as sent and ``content`` when the server
    reported none (``source="estimated"``)."""
    model = completion.model or asked
    reported = completion.usage
    if reported is None or not isinstance(reported.prompt_tokens, int):
        counted = count_chat_tokens(messages, response_format=response_format, completion=content)
        return Usage(
            model=model,
            provider=provider,
            input_tokens=counted.prompt_tokens,
            output_tokens=counted.completion_tokens,
            source="estimated",
        )
    prompt, answer = reported.prompt_tokens_details, reported.completion_tokens_details
    return Usage(
        model=model,
        provider=provider,
        input_tokens=reported.prompt_tokens,
        output_tokens=reported.completion_tokens or 0,
        cached_tokens=(prompt.cached_tokens if prompt else None) or 0,
        reasoning_tokens=(answer.reasoning_tokens if answer else None) or 0,
    )


def provider(base_url: str) -> str:
    """Who serves ``base_url``: its host and port as written (credentials left out)."""
    return urlsplit(base_url).netloc.rpartition("@")[2] or base_url


def schema_name(name: str) -> str:
    """OpenAI accepts ``[a-zA-Z0-9_-]{1,64}`` as a schema name."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return cleaned[:64] or "result"


def error_message(error: openai.APIStatusError, limit: int = 200) -> str:
    """The server's own words for an error (OpenAI's ``error.message``), cut short: enough
    to diagnose, never a whole echoed request."""
    body = error.body
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message) if message is not None else error.response.text
    return text if len(text) <= limit else text[:limit] + "…"
