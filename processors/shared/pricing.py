"""What tokens and tool calls cost.

The table ships with the project (``prices.yaml`` beside this module) and a deployment
replaces it with its own file of the same shape (``WRENCH_PRICE_TABLE``). Prices are per
million tokens, with their own rates for cached input and reasoning tokens where a provider
bills them apart. Every table has a ``version``, which each usage.recorded names.

Two questions get two answers: a plan's *estimate* for a model missing from the table uses
the default model's price, so an estimate is never silently free; the *cost* of usage that
happened for such a model is unknown (None), never a guess.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from processors.shared.tokens import ENCODING, count_tokens
from processors.tools.registry import PlanningError

SHIPPED_TABLE = Path(__file__).with_name("prices.yaml")
_PER = 1_000_000


class ModelPrice(BaseModel):
    """US dollars per million tokens of each kind; cached input costs the input rate and
    reasoning the output rate unless the table says otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    cached_input_per_million: float | None = Field(None, ge=0)
    reasoning_per_million: float | None = Field(None, ge=0)

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> float:
        """Dollars for one request's tokens (``cached_tokens`` are part of ``input_tokens``,
        ``reasoning_tokens`` part of ``output_tokens``), rounded to 1e-8."""
        cached_rate = self.cached_input_per_million
        reasoning_rate = self.reasoning_per_million
        dollars = (
            (input_tokens - cached_tokens) * self.input_per_million
            + cached_tokens * (self.input_per_million if cached_rate is None else cached_rate)
            + (output_tokens - reasoning_tokens) * self.output_per_million
            + reasoning_tokens
            * (self.output_per_million if reasoning_rate is None else reasoning_rate)
        )
        return round(dollars / _PER, 8)


class PriceTable(BaseModel):
    """Per-model token prices and per-call tool prices (which override a tool's own hint)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1, max_length=200)
    default_model: str
    models: dict[str, ModelPrice]
    tools: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_is_priced(self) -> PriceTable:
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} has no price in models")
        return self

    def model_price(self, model: str | None) -> ModelPrice:
        """The price to *estimate* with: ``model``'s, or the default model's when it is
        unknown or None."""
        return self.models.get(model or self.default_model, self.models[self.default_model])

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> float | None:
        """What a request to ``model`` cost, or None when the table has no price for it."""
        price = self.models.get(model)
        if price is None:
            return None
        return price.cost(input_tokens, output_tokens, cached_tokens, reasoning_tokens)

    def tool_price(self, tool: str, hint: float) -> float:
        """Dollars per call of ``tool``: the table's price when it has one, else ``hint``."""
        return self.tools.get(tool, hint)


def load_price_table(path: Path) -> PriceTable:
    """A price table from YAML: ``version``, ``default_model``, ``models: {name:
    {input_per_million, output_per_million, cached_input_per_million?,
    reasoning_per_million?}}`` and optionally ``tools: {name: usd_per_call}``."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return PriceTable.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise PlanningError(f"cannot use the price table {path}: {exc}", path=str(path)) from exc


@lru_cache(maxsize=8)
def price_table(path: Path | None = None) -> PriceTable:
    """The table at ``path``, or the shipped one; read once per path."""
    return load_price_table(path or SHIPPED_TABLE)


DEFAULT_PRICES = price_table()
"""The shipped price table, used when a deployment gives none."""

__all__ = [
    "DEFAULT_PRICES",
    "ENCODING",
    "SHIPPED_TABLE",
    "ModelPrice",
    "PriceTable",
    "count_tokens",
    "load_price_table",
    "price_table",
]
