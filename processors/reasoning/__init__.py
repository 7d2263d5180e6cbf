"""The reasoning layer: one protocol, an LLM over the OpenAI-compatible API, an offline reasoner.

Every reasoning call returns a :class:`Reasoned` result: the typed answer, the numbered
:class:`Thought` s that led to it and the :class:`Usage` of every LLM request it made.
"""

from processors.reasoning._errors import (
    LLMInvalidOutput,
    LLMNotConfigured,
    LLMUnavailable,
    ReasoningError,
)
from processors.reasoning._llm import LLMClient, OnThought
from processors.reasoning._types import Reasoned, Thought, Usage

__all__ = [
    "LLMClient",
    "LLMInvalidOutput",
    "LLMNotConfigured",
    "LLMUnavailable",
    "OnThought",
    "Reasoned",
    "ReasoningError",
    "Thought",
    "Usage",
]
