"""The reasoning layer's errors. openai SDK errors are mapped to these at the client's edge."""

from __future__ import annotations

from wrenchai.errors import WrenchError


class ReasoningError(WrenchError):
    """A reasoning call could not produce a valid result."""

    code = "REASONING_ERROR"


class LLMNotConfigured(ReasoningError):
    """No LLM server is configured: set WRENCH_LLM_BASE_URL, or use the rule reasoner."""

    code = "LLM_NOT_CONFIGURED"


class LLMUnavailable(ReasoningError):
    """Every model stayed unreachable, overloaded or failing after its retries."""

    code = "LLM_UNAVAILABLE"


class LLMInvalidOutput(ReasoningError):
    """The model's answer was not valid JSON for the schema, even after one repair attempt."""

    code = "LLM_INVALID_OUTPUT"
