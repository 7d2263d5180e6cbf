"""What every built-in tool is: a descriptor, a validated ``call`` and a ``health`` probe.

A tool's contract is its :class:`~processors.tools.registry.ToolSpec`. :class:`BuiltinTool`
enforces it at both ends of every call: the input is checked against ``spec.input_schema``
(JSON Schema draft 2020-12) before anything runs, and the tool's own answer is checked
against ``spec.output_schema`` before it is returned, so a broken tool fails loudly here
instead of writing a malformed result into the log.

Failures leave as :class:`ToolError` subclasses with a stable ``code`` and a ``transient``
flag. The JourneyAgent's error recovery reads the flag: a transient failure (a timeout, a
429, a refused connection) is worth a retry of the same step, a permanent one (bad input, a
refused URL) is not.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from pydantic import BaseModel, ConfigDict, Field

from processors.tools.registry import ToolSpec
from wrenchai.errors import WrenchError

# ---------------------------------------------------------------------------- errors


class ToolError(WrenchError):
    """Root of what a tool call can fail with. ``transient`` says whether retrying the same
    call may succeed; ``details`` names the tool and what was involved."""

    code = "TOOL_ERROR"
    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if transient is not None:
            self.transient = transient


class InvalidToolInput(ToolError):
    """The input does not satisfy the tool's input schema; ``details["path"]`` says where."""

    code = "INVALID_INPUT"


class ToolTimeout(ToolError):
    """The call ran out of time. Transient: a retry, perhaps with a longer limit, may pass."""

    code = "TOOL_TIMEOUT"
    transient = True


class ToolFailed(ToolError):
    """The tool could not do its work, or broke its own output contract."""

    code = "TOOL_FAILED"


class ToolOutputInvalid(ToolFailed):
    """The tool returned a result that breaks its own output schema: a bug in the tool."""

    code = "INVALID_OUTPUT"


class ToolOutputTooLarge(ToolError):
    """The result is too big to record as an event; ask for less (a smaller limit)."""

    code = "OUTPUT_TOO_LARGE"


class FetchRefused(ToolError):
    """http.fetch will not fetch this: the SSRF guard or the content-type allow-list."""

    code = "FETCH_REFUSED"


class FetchFailed(ToolError):
    """http.fetch could not get an answer (DNS, connection, TLS, protocol)."""

    code = "FETCH_FAILED"
    transient = True


class ToolLLMNotConfigured(ToolError):
    """llm.complete was called but no LLM server is configured (WRENCH_LLM_BASE_URL)."""

    code = "LLM_NOT_CONFIGURED"


class ToolLLMUnavailable(ToolError):
    """The LLM server did not answer usefully, even after its retries."""

    code = "LLM_UNAVAILABLE"
    transient = True


class SearchUnavailable(ToolError):
    """The configured search API could not be reached or refused the query."""

    code = "SEARCH_UNAVAILABLE"
    transient = True


# ---------------------------------------------------------------------------- interface


class ToolHealth(BaseModel):
    """The answer of one health probe: whether the tool can work here, and why (not)."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    detail: str
    checked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@runtime_checkable
class Tool(Protocol):
    """What the JourneyAgent calls. ``call`` raises :class:`ToolError` and nothing else."""

    @property
    def spec(self) -> ToolSpec:
        """The descriptor this tool implements."""
        ...

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]: ...

    async def health(self) -> ToolHealth: ...


# Results travel in events on the log: the default is WRENCH_MAX_EVENT_BYTES's.
MAX_RESULT_BYTES = 524_288
_REMEMBERED_RESULTS = 256


class BuiltinTool(ABC):
    """The shared half of every built-in tool: schema checks, defaults, idempotency.

    ``max_result_bytes`` is the largest result (as UTF-8 JSON) the tool may return; results
    travel in events, so :func:`build_tools` sets it to WRENCH_MAX_EVENT_BYTES.

    A subclass sets ``spec`` and implements :meth:`_run` (the work, on valid input with
    top-level defaults filled in) and :meth:`_probe` (the health check).

    A call that repeats an idempotency key with the same input gets the remembered result
    instead of running again (the last 256 keys, in this process): a step retried after a
    lost acknowledgement does not pay twice. The same key with other input runs normally.
    """

    spec: ClassVar[ToolSpec]

    def __init__(self, *, max_result_bytes: int = MAX_RESULT_BYTES) -> None:
        self.max_result_bytes = max_result_bytes
        self._input_validator = Draft202012Validator(self.spec.input_schema)
        self._output_validator = Draft202012Validator(self.spec.output_schema)
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Validate ``tool_input``, run the tool, validate and return its result."""
        self._check_input(tool_input)
        memo = _memo_key(idempotency_key, tool_input) if idempotency_key else None
        if memo is not None and memo in self._results:
            self._results.move_to_end(memo)
            return dict(self._results[memo])
        try:
            result = await self._run(self._with_defaults(tool_input))
        except ToolError:
            raise
        except Exception as exc:
            # A bug or a driver error the tool did not map: still a ToolError for the caller,
            # with the original kept as the cause for the logs.
            raise ToolFailed(
                f"{self.spec.ref} failed unexpectedly: {type(exc).__name__}: {exc}",
                tool=self.spec.name,
                error=type(exc).__name__,
            ) from exc
        self._check_output(result)
        if memo is not None:
            self._results[memo] = dict(result)
            while len(self._results) > _REMEMBERED_RESULTS:
                self._results.popitem(last=False)
        return result

    async def health(self) -> ToolHealth:
        """Run the tool's probe; a probe that raises reports not ok with the reason."""
        try:
            ok, detail = await self._probe()
        except Exception as exc:  # a probe must answer, whatever broke underneath
            return ToolHealth(ok=False, detail=f"{self.spec.name} probe failed: {exc}")
        return ToolHealth(ok=ok, detail=detail)

    async def aclose(self) -> None:
        """Release what the tool holds open (connection pools); most tools hold nothing."""
        return None

    @abstractmethod
    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        """The tool's work on valid input; raises :class:`ToolError` on failure."""

    @abstractmethod
    async def _probe(self) -> tuple[bool, str]:
        """Whether the tool can work here, and a sentence that says why (not)."""

    def _check_input(self, tool_input: Any) -> None:
        error = _first_error(self._input_validator, tool_input)
        if error is not None:
            path = _json_path(error)
            raise InvalidToolInput(
                f"Input of {self.spec.name} is invalid at {path}: {error.message}. Fix that "
                f"field to match the tool's input schema ({self.spec.ref}).",
                tool=self.spec.name,
                path=path,
                validator=str(error.validator),
            )

    def _check_output(self, result: dict[str, Any]) -> None:
        error = _first_error(self._output_validator, result)
        if error is not None:
            path = _json_path(error)
            raise ToolOutputInvalid(
                f"{self.spec.ref} returned a result that breaks its output schema at {path}: "
                f"{error.message}. This is a bug in the tool, not in the input.",
                tool=self.spec.name,
                path=path,
            )
        size = len(json.dumps(result, ensure_ascii=False).encode())
        if size > self.max_result_bytes:
            raise ToolOutputTooLarge(
                f"{self.spec.name} produced a {size}-byte result, more than the "
                f"{self.max_result_bytes} an event may carry (WRENCH_MAX_EVENT_BYTES); ask "
                "for less (a lower limit or max_bytes).",
                tool=self.spec.name,
                size=size,
                limit=self.max_result_bytes,
            )

    def _with_defaults(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        """The input with the schema's top-level defaults filled in (JSON Schema validators
        check ``default`` but never apply it)."""
        filled = dict(tool_input)
        for name, schema in self.spec.input_schema.get("properties", {}).items():
            if name not in filled and isinstance(schema, dict) and "default" in schema:
                filled[name] = schema["default"]
        return filled


def _first_error(validator: Draft202012Validator, instance: Any) -> ValidationError | None:
    """The most relevant error (jsonschema's own ranking), or None when valid."""
    return best_match(validator.iter_errors(instance))


def _json_path(error: ValidationError) -> str:
    """``$.sections[0].body``: where in the document the error is."""
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _memo_key(idempotency_key: str, tool_input: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(tool_input, sort_keys=True, default=str).encode())
    return f"{idempotency_key}:{digest.hexdigest()}"
