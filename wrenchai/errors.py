"""The root of every error WrenchAI raises on purpose.

Each package hangs its own family under :class:`WrenchError`; adapters map driver errors
(aiokafka, asyncpg, HTTP) to the most specific of these at the boundary, so a caller never
has to know which driver sat underneath.
"""

from __future__ import annotations

from typing import Any


class WrenchError(Exception):
    """Something WrenchAI knows how to name. ``code`` is stable; ``details`` carries the ids."""

    code = "WRENCH_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigurationError(WrenchError):
    """The settings or the environment cannot work; the message says which knob to turn."""

    code = "CONFIGURATION_ERROR"
