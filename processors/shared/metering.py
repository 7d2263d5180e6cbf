"""One LLM request's usage as the usage.recorded event every agent emits: its tokens, what
they cost under the price table, and whose work it was."""

from __future__ import annotations

from dataclasses import dataclass

from events import Event, Operation, TaskSubmitted, UsageRecorded, submitted_playbook
from processors.reasoning import Usage
from processors.shared.pricing import PriceTable

_KEY_ACTOR = "apikey:"


@dataclass(frozen=True)
class Payer:
    """Whose budgets a task's usage counts against: from its task.submitted."""

    user_id: str | None = None
    key_id: str | None = None
    playbook: str | None = None

    @classmethod
    def of(cls, submitted: Event | None) -> Payer:
        """The payer of the task ``submitted`` started (nobody known without it)."""
        if submitted is None or not isinstance(submitted.payload, TaskSubmitted):
            return cls()
        payload, actor = submitted.payload, submitted.actor
        key_id = payload.key_id
        user_id: str | None = actor.id if actor.kind == "user" else None
        if user_id is not None and user_id.startswith(_KEY_ACTOR):
            # A key no user owns acts as itself: it is the payer, no user is.
            key_id, user_id = key_id or user_id.removeprefix(_KEY_ACTOR), None
        return cls(user_id=user_id, key_id=key_id, playbook=submitted_playbook(payload.constraints))


def usage_recorded(
    usage: Usage,
    operation: Operation,
    prices: PriceTable,
    payer: Payer,
    *,
    stage_id: str | None = None,
    role: str | None = None,
    tool: str | None = None,
    playbook: str | None = None,
) -> UsageRecorded:
    """The event for one request; its cost is None when ``prices`` has no price for the
    model (the CostGuard then says so once per model)."""
    return UsageRecorded(
        operation=operation,
        model=usage.model,
        provider=usage.provider,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        total_tokens=usage.total_tokens,
        source=usage.source,
        cost_usd=prices.cost(
            usage.model,
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.reasoning_tokens,
        ),
        price_version=prices.version,
        stage_id=stage_id,
        role=role,
        tool=tool,
        user_id=payer.user_id,
        key_id=payer.key_id,
        playbook=playbook or payer.playbook,
    )
