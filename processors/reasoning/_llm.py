"""A client of the OpenAI-compatible chat completions API: structured output and thinking.

Any server that speaks ``POST {base_url}/chat/completions`` works (hosted APIs, vLLM,
Ollama, llama.cpp). The official ``openai`` SDK carries each request: the connection pool,
the timeout (``llm_timeout_s``), and the retries of timeouts, broken connections, 408, 409,
429 and 5xx with its own backoff, honouring Retry-After (``llm_max_retries``). This module
adds what the SDK lacks: the fallback through the configured models, the json_schema →
json_object → prompt fallback for servers that cannot enforce a schema, one repair attempt
for an invalid answer, sequential thinking, and a :class:`Usage` for every answer. openai
errors stop here and leave as the reasoning layer's errors. Prompts and completions are
user content: they are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar, cast

import openai
import structlog
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, ValidationError

from processors.reasoning import _prompts, _wire
from processors.reasoning._errors import (
    LLMInvalidOutput,
    LLMNotConfigured,
    LLMUnavailable,
    ReasoningError,
)
from processors.reasoning._prompts import Message
from processors.reasoning._types import Reasoned, Thought, Usage
from wrenchai.metrics import observe_llm_request
from wrenchai.settings import Settings

T = TypeVar("T", bound=BaseModel)
OnThought = Callable[[Thought], Awaitable[None]]

log = structlog.get_logger(__name__)

_Format = Literal["json_schema", "json_object", "prompt"]
_WEAKER_FORMAT: dict[_Format, _Format] = {"json_schema": "json_object", "json_object": "prompt"}

# The SDK insists on a key; without one it is given this and told to send no Authorization
# header at all (local servers need none, and a made-up token only confuses a proxy).
_NO_KEY = "unused"


class _ModelFailed(Exception):
    """One model gave up (the SDK's retries spent, or an answer not worth repeating);
    ``format_refused`` when it was a 400 naming response_format."""

    def __init__(self, reason: str, *, format_refused: bool = False) -> None:
        super().__init__(reason)
        self.format_refused = format_refused


class LLMClient:
    """Structured answers and sequential thinking from an OpenAI-compatible server."""

    def __init__(self, settings: Settings) -> None:
        if settings.llm_base_url is None:
            raise LLMNotConfigured(
                "No LLM server is configured. Set WRENCH_LLM_BASE_URL to an OpenAI-compatible "
                "API (for example http://127.0.0.1:11434/v1), or use the rule reasoner."
            )
        self._settings = settings
        self._base_url = settings.llm_base_url
        self._provider = _wire.provider(settings.llm_base_url)
        self._models = settings.llm_models()
        key = settings.llm_api_key
        self._openai = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=key.get_secret_value() if key else _NO_KEY,
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
        self._headers: dict[str, Any] = {} if key else {"Authorization": openai.omit}
        # Servers without json_schema support (older vLLM, llama.cpp, some proxies) say so
        # with a 400 once; from then on this client asks them for a plain JSON object, and
        # a server that refuses response_format altogether gets the schema in the prompt only.
        self._format: _Format = "json_schema"

    @property
    def models(self) -> list[str]:
        """The models asked, in order: the configured model, then each fallback."""
        return list(self._models)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._openai.close()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- structured output ---------------------------------------------------------------

    async def structured(
        self, messages: list[Message], result_model: type[T], *, name: str
    ) -> tuple[T, list[Usage]]:
        """An answer validated by ``result_model``, and the usage of each request it took.

        Invalid JSON or a schema violation gets exactly one repair attempt (the bad output and
        the validation errors are sent back); a second failure is :class:`LLMInvalidOutput`,
        whose ``details["usage"]`` still counts the tokens spent.
        """
        content, first = await self._complete(messages, result_model, name)
        usage = [first]
        try:
            return _wire.parse_content(content, result_model), usage
        except ValidationError as exc:
            log.info("llm.output_invalid", name=name, errors=exc.error_count(), repair=True)
            repaired = _prompts.repair(messages, content, name, exc)
        content, second = await self._complete(repaired, result_model, name)
        usage.append(second)
        try:
            return _wire.parse_content(content, result_model), usage
        except ValidationError as exc:
            log.warning("llm.output_invalid", name=name, errors=exc.error_count(), repair=False)
            raise LLMInvalidOutput(
                f"The model's answer for {name} is not valid for {result_model.__name__} "
                f"even after one repair attempt:\n{_prompts.describe(exc)}",
                name=name,
                usage=usage,
            ) from exc

    # -- sequential thinking -------------------------------------------------------------

    async def think(
        self,
        task_prompt: str,
        result_model: type[T],
        *,
        name: str,
        on_thought: OnThought | None = None,
        instructions: str | None = None,
    ) -> Reasoned[T]:
        """Numbered thoughts (at most ``llm_max_thoughts``), then the final structured answer.

        ``instructions`` (who is reasoning, and to what end) lead every system message.
        ``on_thought`` is awaited with each thought as it arrives, in order. On a
        :class:`ReasoningError` the usage of every request made so far is in
        ``details["usage"]``, so the tokens are accounted for even when the call fails.
        """
        limit = self._settings.llm_max_thoughts
        thoughts: list[Thought] = []
        usage: list[Usage] = []
        try:
            for number in range(1, limit + 1):
                messages = _prompts.next_thought(task_prompt, thoughts, number, limit, instructions)
                raw, used = await self.structured(messages, Thought, name=f"{name}.thought")
                usage += used
                thought = _normalise(raw, number, limit)
                thoughts.append(thought)
                if on_thought is not None:
                    await on_thought(thought)
                if not thought.next_thought_needed:
                    break
            messages = _prompts.final_answer(
                task_prompt, thoughts, result_model, name, instructions
            )
            result, used = await self.structured(messages, result_model, name=name)
        except ReasoningError as exc:
            exc.details["usage"] = usage + list(exc.details.get("usage", []))
            raise
        return Reasoned(result=result, thoughts=thoughts, usage=usage + used)

    # -- plain completions ---------------------------------------------------------------

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        name: str = "complete",
    ) -> tuple[str, Usage]:
        """Free text for ``messages``, and the usage of the request that produced it.

        ``model`` asks that model alone; without it the configured model and then each
        fallback are tried, each with the same retries as structured calls.
        Raises :class:`LLMUnavailable` when no model answers.
        """
        options = {"max_tokens": max_tokens, "temperature": temperature}
        sampling = {key: value for key, value in options.items() if value is not None}
        return await self._first_answer(
            [model] if model else self._models,
            name,
            lambda asked: self._create(asked, messages, sampling),
        )

    # -- models, formats, requests -------------------------------------------------------

    async def _complete(
        self, messages: list[Message], result_model: type[BaseModel], name: str
    ) -> tuple[str, Usage]:
        """The content of one structured answer: each model in turn."""
        return await self._first_answer(
            self._models, name, lambda model: self._structured(model, messages, result_model, name)
        )

    async def _first_answer(
        self, models: list[str], name: str, request: Callable[[str], Awaitable[tuple[str, Usage]]]
    ) -> tuple[str, Usage]:
        """``request`` for each model in turn (each with the SDK's retries) until one answers."""
        errors: list[str] = []
        last: _ModelFailed | None = None
        for model in models:
            try:
                return await request(model)
            except _ModelFailed as exc:
                errors.append(f"{model}: {exc}")
                last = exc
                log.warning("llm.model_failed", name=name, model=model, error=str(exc))
        raise LLMUnavailable(
            f"No LLM answered {name}: tried {', '.join(models)} at {self._base_url}. "
            f"Last error: {errors[-1]}. Check that the server is up and WRENCH_LLM_MODEL / "
            "WRENCH_LLM_FALLBACK_MODELS name models it serves.",
            name=name,
            models=list(models),
            errors=errors,
        ) from last

    async def _structured(
        self, model: str, messages: list[Message], result_model: type[BaseModel], name: str
    ) -> tuple[str, Usage]:
        """One structured request in the strongest format the server takes; a 400 about
        response_format weakens the format at once, for this client's life, without a retry."""
        while True:
            asked_format = self._format
            sent, options = _request(asked_format, messages, result_model, name)
            try:
                return await self._create(model, sent, options)
            except _ModelFailed as exc:
                if not exc.format_refused or asked_format not in _WEAKER_FORMAT:
                    raise
                if self._format == asked_format:  # a concurrent call may have weakened it
                    self._format = _WEAKER_FORMAT[asked_format]
                log.info(
                    "llm.response_format_unsupported", name=name, model=model, now=self._format
                )

    async def _create(
        self, model: str, messages: list[Message], options: Mapping[str, Any]
    ) -> tuple[str, Usage]:
        """One chat completion through the SDK, its retries included: the content and usage,
        or the reason this model failed. Its duration, answered or not, goes to the metrics."""
        started = time.monotonic()
        try:
            completion = await self._openai.chat.completions.create(
                model=model,
                # _prompts builds plain {role, content} dicts: the shape the SDK's types spell out.
                messages=cast("list[ChatCompletionMessageParam]", messages),
                extra_headers=self._headers,
                **options,
            )
            content = _wire.read_content(completion)
        except openai.APITimeoutError as exc:
            raise _ModelFailed(f"timed out after {self._settings.llm_timeout_s}s") from exc
        except openai.APIConnectionError as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else type(exc).__name__
            raise _ModelFailed(f"connection failed ({cause})") from exc
        except openai.APIStatusError as exc:
            raise _status_failure(exc) from exc
        except (openai.APIError, ValueError) as exc:
            # A body the SDK cannot read as JSON, or JSON that is no chat completion.
            raise _ModelFailed("answer is not a chat completion") from exc
        finally:
            observe_llm_request(model, time.monotonic() - started)
        usage = _wire.read_usage(
            completion,
            asked=model,
            provider=self._provider,
            messages=messages,
            response_format=options.get("response_format"),
            content=content,
        )
        return content, usage


def _request(
    response_format: _Format, messages: list[Message], result_model: type[BaseModel], name: str
) -> tuple[list[Message], dict[str, Any]]:
    """The messages and options of a structured request: the schema enforced by the server
    if it can, else asked for in words."""
    schema = result_model.model_json_schema()
    if response_format == "json_schema":
        json_schema = {
            "name": _wire.schema_name(name),
            "schema": _wire.strict_schema(schema),
            "strict": True,
        }
        return messages, {"response_format": {"type": "json_schema", "json_schema": json_schema}}
    messages = _prompts.with_json_only(messages, name, schema)
    if response_format == "json_object":
        return messages, {"response_format": {"type": "json_object"}}
    return messages, {}


def _status_failure(error: openai.APIStatusError) -> _ModelFailed:
    """An HTTP error the SDK gave up on. The server's words are quoted for a client error
    (401: the key; 404: the model), never for a transient one, whose body may echo a prompt."""
    status = error.status_code
    if status in (408, 409, 429) or status >= 500:
        return _ModelFailed(f"HTTP {status}")
    refused = status == 400 and "response_format" in error.response.text
    return _ModelFailed(f"HTTP {status}: {_wire.error_message(error)}", format_refused=refused)


def _normalise(thought: Thought, number: int, limit: int) -> Thought:
    """The thought as this call counts it: its true number, a revision of an earlier thought
    only, and no further thought requested once the budget is spent."""
    revises = thought.revises if thought.revises is not None and thought.revises < number else None
    needed = thought.next_thought_needed and number < limit
    return thought.model_copy(
        update={"number": number, "revises": revises, "next_thought_needed": needed}
    )
