"""llm.complete: a prompt in, a completion out, through the configured LLM server.

The call goes through :class:`~processors.reasoning.LLMClient`, so it gets the same
retries, Retry-After handling, fallback models and usage (reported or counted) as the
reasoners. Without WRENCH_LLM_BASE_URL the tool still exists (the registry lists it), but a
call raises :class:`ToolLLMNotConfigured` and its health says why.
"""

from __future__ import annotations

from typing import Any

import httpx

from processors.reasoning import LLMClient, LLMUnavailable
from processors.reasoning._prompts import Message
from processors.tools.builtin._base import BuiltinTool, ToolLLMNotConfigured, ToolLLMUnavailable
from processors.tools.descriptors import LLM_COMPLETE
from wrenchai.settings import Settings

_NOT_CONFIGURED = (
    "llm.complete needs an LLM server: set WRENCH_LLM_BASE_URL to an OpenAI-compatible API "
    "(for example http://127.0.0.1:11434/v1 for Ollama), or plan without this tool."
)


class LLMComplete(BuiltinTool):
    """llm.complete over one shared :class:`LLMClient` (opened on first use)."""

    spec = LLM_COMPLETE

    def __init__(self, settings: Settings) -> None:
        super().__init__(max_result_bytes=settings.max_event_bytes)
        self._settings = settings
        self._client: LLMClient | None = None

    def _llm(self) -> LLMClient:
        if self._settings.llm_base_url is None:
            raise ToolLLMNotConfigured(_NOT_CONFIGURED, tool=self.spec.name)
        if self._client is None:
            self._client = LLMClient(self._settings)
        return self._client

    async def aclose(self) -> None:
        """Close the LLM client's connections, if it was opened."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        client = self._llm()
        messages: list[Message] = []
        if tool_input.get("system"):
            messages.append({"role": "system", "content": tool_input["system"]})
        messages.append({"role": "user", "content": tool_input["prompt"]})
        try:
            text, usage = await client.complete(
                messages,
                model=tool_input.get("model"),
                max_tokens=tool_input.get("max_tokens"),
                temperature=tool_input.get("temperature"),
                name=self.spec.name,
            )
        except LLMUnavailable as exc:
            raise ToolLLMUnavailable(exc.message, tool=self.spec.name, **exc.details) from exc
        return {
            "text": text,
            "model": usage.model,
            "usage": usage.model_dump(exclude={"model"}),
        }

    async def _probe(self) -> tuple[bool, str]:
        """``GET {base_url}/models``: is the server there, and does it take our key?"""
        base = self._settings.llm_base_url
        if base is None:
            return False, _NOT_CONFIGURED
        key = self._settings.llm_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        url = base.rstrip("/") + "/models"
        try:
            async with httpx.AsyncClient(timeout=min(self._settings.llm_timeout_s, 10.0)) as http:
                response = await http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            return False, f"LLM server at {base} unreachable ({type(exc).__name__})"
        if response.status_code == 200:
            return (
                True,
                f"LLM server at {base} answers; models: {', '.join(self._settings.llm_models())}",
            )
        if response.status_code in (404, 405):
            # Some OpenAI-compatible servers do not list models; they still answer.
            return True, f"LLM server at {base} answers (it does not list models)"
        if response.status_code in (401, 403):
            return False, f"LLM server at {base} refused the API key (WRENCH_LLM_API_KEY)"
        return False, f"LLM server at {base} answered HTTP {response.status_code} to {url}"
