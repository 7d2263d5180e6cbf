"""A client of the OpenAI-compatible chat completions API: structured output and thinking.

Any server that speaks ``POST {base_url}/chat/completions`` works (hosted APIs, vLLM,
Ollama, llama.cpp). httpx errors stop here and leave as the reasoning layer's errors.
Prompts and completions are user content: they are never logged.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import httpx
import structlog
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
from wrenchai.settings import Settings

T = TypeVar("T", bound=BaseModel)
Sleep = Callable[[float], Awaitable[None]]
OnThought = Callable[[Thought], Awaitable[None]]

log = structlog.get_logger(__name__)

_Format = Literal["json_schema", "json_object", "prompt"]
_WEAKER_FORMAT: dict[_Format, _Format] = {"json_schema": "json_object", "json_object": "prompt"}

# 408 and 409 are what some gateways answer under load; the rest is the list.
_RETRYABLE = frozenset({408, 409, 429})


class _ModelFailed(Exception):
    """One model gave up (retries spent, or an answer not worth repeating); try the next."""


class _Retryable(Exception):
    """A failure worth another attempt, with the server's Retry-After if it sent one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class LLMClient:
    """Structured answers and sequential thinking from an OpenAI-compatible server.

    ``http`` lets the caller share a connection pool (the client then leaves it open);
    ``sleep`` and ``rng`` make backoff testable without waiting.
    """

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
    ) -> None:
        if settings.llm_base_url is None:
            raise LLMNotConfigured(
                "No LLM server is configured. Set WRENCH_LLM_BASE_URL to an OpenAI-compatible "
                "API (for example http://127.0.0.1:11434/v1), or use the rule reasoner."
            )
        self._settings = settings
        self._url = settings.llm_base_url.rstrip("/") + "/chat/completions"
        self._models = settings.llm_models()
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient()
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        # Servers without json_schema support (older vLLM, llama.cpp, some proxies) say so
        # with a 400 once; from then on this client asks them for a plain JSON object, and
        # a server that refuses response_format altogether gets the schema in the prompt only.
        self._format: _Format = "json_schema"

    @property
    def models(self) -> list[str]:
        """The models asked, in order: the configured model, then each fallback."""
        return list(self._models)

    async def aclose(self) -> None:
        """Close the connection pool, if this client opened it."""
        if self._owns_http:
            await self._http.aclose()

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
        fallback are tried, each with the same retries and backoff as structured calls.
        Raises :class:`LLMUnavailable` when no model answers.
        """
        options: dict[str, Any] = {}
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature

        async def request(asked: str) -> tuple[str, Usage]:
            body = {"model": asked, "messages": messages, **options}
            return self._answer(await self._post(body), asked)

        return await self._first_answer([model] if model else self._models, name, request)

    # -- transport -----------------------------------------------------------------------

    async def _complete(
        self, messages: list[Message], result_model: type[BaseModel], name: str
    ) -> tuple[str, Usage]:
        """The content of one answer: each model in turn, each with its retries."""
        return await self._first_answer(
            self._models, name, lambda model: self._request(model, messages, result_model, name)
        )

    async def _first_answer(
        self, models: list[str], name: str, request: Callable[[str], Awaitable[tuple[str, Usage]]]
    ) -> tuple[str, Usage]:
        """``request`` for each model in turn, each with its retries, until one answers."""
        errors: list[str] = []
        for model in models:
            try:
                return await self._ask(model, name, functools.partial(request, model))
            except _ModelFailed as exc:
                errors.append(f"{model}: {exc}")
                log.warning("llm.model_failed", name=name, model=model, error=str(exc))
        raise LLMUnavailable(
            f"No LLM answered {name}: tried {', '.join(models)} at {self._url}. "
            f"Last error: {errors[-1]}. Check that the server is up and WRENCH_LLM_MODEL / "
            "WRENCH_LLM_FALLBACK_MODELS name models it serves.",
            name=name,
            models=list(models),
            errors=errors,
        )

    async def _ask(
        self, model: str, name: str, request: Callable[[], Awaitable[tuple[str, Usage]]]
    ) -> tuple[str, Usage]:
        """One model, retried with exponential backoff and full jitter."""
        attempt = 0
        while True:
            try:
                return await request()
            except _Retryable as exc:
                if attempt >= self._settings.llm_max_retries:
                    raise _ModelFailed(f"{exc} (after {attempt + 1} attempts)") from exc
                delay = self._delay(attempt, exc.retry_after)
                log.info(
                    "llm.retry",
                    name=name,
                    model=model,
                    error=str(exc),
                    attempt=attempt + 1,
                    delay_s=round(delay, 3),
                )
                await self._sleep(delay)
                attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server sent one; otherwise full jitter over 2**attempt."""
        if retry_after is not None:
            return min(retry_after, self._backoff_max_s)
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2**attempt)
        return self._rng.uniform(0, ceiling)

    async def _request(
        self, model: str, messages: list[Message], result_model: type[BaseModel], name: str
    ) -> tuple[str, Usage]:
        body = self._body(model, messages, result_model, name)
        response = await self._post(body)
        if response.status_code == 400 and self._format_unsupported(response):
            self._format = _WEAKER_FORMAT[self._format]
            log.info("llm.response_format_unsupported", name=name, model=model, now=self._format)
            return await self._request(model, messages, result_model, name)
        return self._answer(response, model)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        """One POST; a timeout or a broken connection is worth another attempt."""
        try:
            return await self._http.post(
                self._url,
                json=body,
                headers=self._headers(),
                timeout=self._settings.llm_timeout_s,
            )
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self._settings.llm_timeout_s}s") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from exc

    def _answer(self, response: httpx.Response, model: str) -> tuple[str, Usage]:
        """The content and usage of a response, or the reason to retry or give up."""
        if response.status_code in _RETRYABLE or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}", _wire.retry_after(response))
        if response.status_code != 200:
            raise _ModelFailed(f"HTTP {response.status_code}: {_wire.error_message(response)}")
        try:
            return _wire.read_completion(response, model)
        except _wire.NotACompletion as exc:
            raise _Retryable(str(exc)) from exc

    def _body(
        self, model: str, messages: list[Message], result_model: type[BaseModel], name: str
    ) -> dict[str, Any]:
        """The request: the schema enforced by the server if it can, else asked for in words."""
        schema = result_model.model_json_schema()
        body: dict[str, Any] = {"model": model}
        if self._format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": _wire.schema_name(name),
                    "schema": _wire.strict_schema(schema),
                    "strict": True,
                },
            }
        else:
            messages = _prompts.with_json_only(messages, name, schema)
            if self._format == "json_object":
                body["response_format"] = {"type": "json_object"}
        body["messages"] = messages
        return body

    def _headers(self) -> dict[str, str]:
        key = self._settings.llm_api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def _format_unsupported(self, response: httpx.Response) -> bool:
        return self._format in _WEAKER_FORMAT and "response_format" in response.text


def _normalise(thought: Thought, number: int, limit: int) -> Thought:
    """The thought as this call counts it: its true number, a revision of an earlier thought
    only, and no further thought requested once the budget is spent."""
    revises = thought.revises if thought.revises is not None and thought.revises < number else None
    needed = thought.next_thought_needed and number < limit
    return thought.model_copy(
        update={"number": number, "revises": revises, "next_thought_needed": needed}
    )
