"""The OpenAI chat completions wire format: the schema sent, the answer and errors read back.

Pure functions of JSON and HTTP responses; the client in ``_llm`` decides what to do.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from processors.reasoning._types import Usage

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


def read_completion(response: httpx.Response, model: str) -> tuple[str, Usage]:
    """The message content and the reported usage of a 200 answer."""
    try:
        payload = response.json()
        content = payload["choices"][0]["message"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise NotACompletion("answer is not a chat completion") from exc
    reported = payload.get("usage") or {}
    usage = Usage(
        model=str(payload.get("model") or model),
        prompt_tokens=int(reported.get("prompt_tokens") or 0),
        completion_tokens=int(reported.get("completion_tokens") or 0),
        total_tokens=int(reported.get("total_tokens") or 0),
    )
    return str(content), usage


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def schema_name(name: str) -> str:
    """OpenAI accepts ``[a-zA-Z0-9_-]{1,64}`` as a schema name."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return cleaned[:64] or "result"


def error_message(response: httpx.Response, limit: int = 200) -> str:
    """The server's own words for an error (OpenAI's ``error.message``), cut short: enough
    to diagnose, never a whole echoed request."""
    try:
        text = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text
    return text if len(text) <= limit else text[:limit] + "…"
