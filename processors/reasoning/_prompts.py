"""The words the LLM reasoner sends, kept apart from the HTTP mechanics that carry them."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from processors.reasoning._types import Thought

Message = dict[str, str]

JSON_ONLY = (
    "Answer with one JSON object and nothing else. It must validate against this JSON "
    "Schema ({name}):\n{schema}"
)

REPAIR = (
    "Your previous answer is not valid for the schema {name}:\n{errors}\n"
    "Answer again with the corrected JSON object only."
)

THINKING = (
    "Think about the task step by step before answering, one numbered thought at a time, "
    "at most {limit} thoughts in all. Each thought is a JSON object: number, text, revises "
    "(the number of an earlier thought this one corrects, or null), branch (a short name "
    "when you explore an alternative, or null) and next_thought_needed (false once you "
    "are ready to give the final answer)."
)

ANSWER = (
    "You have thought about the task; your thoughts follow the task. Now give the final "
    "answer only, as the JSON object the schema {name} describes."
)


def json_only(name: str, schema: dict[str, Any]) -> Message:
    """The system message that asks for JSON when the server cannot enforce a schema."""
    return {"role": "system", "content": JSON_ONLY.format(name=name, schema=json.dumps(schema))}


def repair(
    messages: list[Message], bad_output: str, name: str, exc: ValidationError
) -> list[Message]:
    """The conversation again, with the invalid answer and what is wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": bad_output},
        {"role": "user", "content": REPAIR.format(name=name, errors=describe(exc))},
    ]


def describe(exc: ValidationError) -> str:
    """Validation errors as lines of ``location: message``, without the offending values."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "(root)"
        lines.append(f"- {location}: {error['msg']}")
    return "\n".join(lines)


def _with_thoughts(task_prompt: str, thoughts: list[Thought]) -> list[Message]:
    messages: list[Message] = [{"role": "user", "content": task_prompt}]
    for thought in thoughts:
        messages.append({"role": "assistant", "content": thought.model_dump_json()})
    return messages


def _system(text: str, instructions: str | None) -> Message:
    """The caller's instructions (the agent's role, say) first, then the step's own."""
    return {"role": "system", "content": f"{instructions}\n\n{text}" if instructions else text}


def next_thought(
    task_prompt: str,
    thoughts: list[Thought],
    number: int,
    limit: int,
    instructions: str | None = None,
) -> list[Message]:
    """Ask for thought ``number`` given the task and the thoughts so far."""
    return [
        _system(THINKING.format(limit=limit), instructions),
        *_with_thoughts(task_prompt, thoughts),
        {"role": "user", "content": f"Thought {number} of at most {limit}."},
    ]


def final_answer(
    task_prompt: str,
    thoughts: list[Thought],
    result_model: type[BaseModel],
    name: str,
    instructions: str | None = None,
) -> list[Message]:
    """Ask for the structured answer, given the task and every thought."""
    return [
        _system(ANSWER.format(name=name), instructions),
        *_with_thoughts(task_prompt, thoughts),
        {"role": "user", "content": f"Final answer ({result_model.__name__})."},
    ]


def with_json_only(messages: list[Message], name: str, schema: dict[str, Any]) -> list[Message]:
    """``messages`` asking for JSON in the system message; one system message, since some
    chat templates (llama.cpp, several Ollama models) reject a second one."""
    ask = json_only(name, schema)
    if messages and messages[0]["role"] == "system":
        merged = {"role": "system", "content": f"{messages[0]['content']}\n\n{ask['content']}"}
        return [merged, *messages[1:]]
    return [ask, *messages]
