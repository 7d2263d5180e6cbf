"""Cost arithmetic: each kind of token at its own rate, a table from a file replacing the
shipped one, an unknown model's usage unpriced (never guessed, never a crash) while its
estimate is never free, and the usage event carrying whose work it was."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from events import Actor, Event, TaskSubmitted
from processors.reasoning import Usage
from processors.shared.metering import Payer, usage_recorded
from processors.shared.pricing import (
    DEFAULT_PRICES,
    SHIPPED_TABLE,
    ModelPrice,
    load_price_table,
    price_table,
)
from processors.tools.registry import PlanningError


def test_each_kind_of_token_is_priced_at_its_own_rate() -> None:
    """1,000 input of which 400 cached, 500 output of which 200 reasoning, per million:
    600 x 2 + 400 x 0.5 + 300 x 8 + 200 x 12 = 6,200."""
    price = ModelPrice(
        input_per_million=2.0,
        cached_input_per_million=0.5,
        output_per_million=8.0,
        reasoning_per_million=12.0,
    )
    assert price.cost(1000, 500, cached_tokens=400, reasoning_tokens=200) == 0.0062


def test_cached_and_reasoning_tokens_default_to_the_input_and_output_rates() -> None:
    price = ModelPrice(input_per_million=2.0, output_per_million=8.0)
    assert price.cost(1000, 500, cached_tokens=400, reasoning_tokens=200) == 0.006


def test_the_shipped_table_is_versioned_and_prices_its_models() -> None:
    assert price_table() is DEFAULT_PRICES
    assert DEFAULT_PRICES.version == "2026-11"
    assert load_price_table(SHIPPED_TABLE) == DEFAULT_PRICES
    # gpt-4o-mini: 0.15 in, 0.075 cached, 0.60 out per million.
    assert DEFAULT_PRICES.cost("gpt-4o-mini", 1_000_000, 1_000_000, 500_000) == 0.7125


def test_a_table_from_a_file_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "contract.yaml"
    path.write_text(
        'version: "contract-7"\ndefault_model: house\n'
        "models:\n  house: {input_per_million: 1, output_per_million: 3}\n"
    )
    table = price_table(path)
    assert table.version == "contract-7"
    assert table.cost("house", 2000, 1000) == 0.005
    assert table.cost("gpt-4o-mini", 2000, 1000) is None  # not in this table


def test_an_unknown_model_is_unpriced_but_its_estimate_is_never_free() -> None:
    assert DEFAULT_PRICES.cost("a-model-nobody-priced", 100, 100) is None
    estimate = DEFAULT_PRICES.model_price("a-model-nobody-priced")
    assert estimate == DEFAULT_PRICES.models[DEFAULT_PRICES.default_model]
    assert estimate.cost(100, 100) > 0


@pytest.mark.parametrize(
    "text", ["version: x\ndefault_model: m\nmodels: {}\n", "models: [", "default_model: m\n"]
)
def test_a_broken_table_is_refused_with_its_path(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(PlanningError, match=r"broken\.yaml"):
        load_price_table(path)


def _submitted(actor: Actor, key_id: str | None = None) -> Event:
    return Event.new(
        TaskSubmitted(description="d", constraints={"playbook": "research_report"}, key_id=key_id),
        tenant_id="acme",
        actor=actor,
        task_id=uuid.uuid4(),
    )


def test_the_usage_event_prices_the_request_and_names_who_pays() -> None:
    usage = Usage(
        model="gpt-4o-mini", provider="api.openai.com", input_tokens=1000, output_tokens=200,
        cached_tokens=600, reasoning_tokens=0, source="provider",
    )  # fmt: skip
    payer = Payer.of(_submitted(Actor(kind="user", id="alice"), key_id="k-7"))
    event = usage_recorded(usage, "execute", DEFAULT_PRICES, payer, stage_id="s", role="writer")
    # 400 x 0.15 + 600 x 0.075 + 200 x 0.60 per million.
    assert event.cost_usd == 0.000225
    assert (event.price_version, event.total_tokens, event.source) == ("2026-11", 1200, "provider")
    assert (event.user_id, event.key_id, event.playbook) == ("alice", "k-7", "research_report")
    unknown = usage_recorded(
        usage.model_copy(update={"model": "house-llm"}), "plan", DEFAULT_PRICES, payer
    )
    assert unknown.cost_usd is None and unknown.total_tokens == 1200


def test_a_key_that_no_user_owns_pays_for_itself() -> None:
    payer = Payer.of(_submitted(Actor(kind="user", id="apikey:k-9")))
    assert (payer.user_id, payer.key_id) == (None, "k-9")
    assert Payer.of(None) == Payer()
