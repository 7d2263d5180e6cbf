"""A hard budget stops the next LLM call and its task, end to end: the SuperAgent, the
JourneyAgent and the CostGuard as processes, a local OpenAI-compatible server that reports
usage, the ledger and the budgets in Postgres.

A hard budget of 150 tokens on model-a: the first task plans (66 tokens) and drafts (100
tokens) and completes, and the CostGuard announces the budget spent. The second task plans,
then its draft is refused before the request is made: step.failed BUDGET_EXCEEDED and
task.failed with that reason, and the server never hears of the draft."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from events import BudgetSet, EventProducer, codec_from_settings
from processors.reasoning import PlanProposal, RoleProposal, RoleScore, Thought
from tests.processors.cost.test_cost_guard import set_budget
from tests.processors.journey.test_journey_agent_worker import Agents, finished, of, submitted
from tests.processors.openai_server import OpenAIServer
from tests.processors.super.test_super_agent_worker import Log
from wrenchai.settings import Settings

DRAFT = {
    "name": "draft_only",
    "steps": [
        {"id": "draft", "tool": "llm.complete", "role": "writer",
         "input": {"prompt": "Two sentences on: {{task.description}}", "max_tokens": 20}},
    ],
}  # fmt: skip
PLANNING_REQUESTS = 4


def _plan(server: OpenAIServer) -> None:
    """The answers of one task's planning: 66 tokens in four requests."""
    thought = Thought(number=1, text="A writer can do it.", next_thought_needed=False)
    server.answer(thought, prompt_tokens=11, completion_tokens=1)
    roles = RoleProposal(roles=[RoleScore(role="writer", score=0.9, reason="a report")])
    server.answer(roles, prompt_tokens=12, completion_tokens=5)
    server.answer(thought, prompt_tokens=21, completion_tokens=1)
    plan = PlanProposal.model_validate({"inline": DRAFT, "reason": "draft"})
    server.answer(plan, prompt_tokens=10, completion_tokens=5)


async def _ledger_tokens(db: asyncpg.Connection, at_least: int) -> int:
    deadline = time.monotonic() + 60
    while True:
        tokens = int(await db.fetchval("SELECT COALESCE(sum(total_tokens), 0) FROM cost_ledger"))
        if tokens >= at_least:
            return tokens
        assert time.monotonic() < deadline, f"the ledger holds {tokens} of {at_least} tokens"
        await asyncio.sleep(0.2)


async def test_a_hard_budget_stops_the_next_llm_call_and_its_task(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int], tmp_path: Path
) -> None:
    await set_budget(
        db, BudgetSet(scope="model", scope_id="model-a", window="day", limit_tokens=150)
    )
    async with OpenAIServer() as server:
        _plan(server)
        server.answer(
            "WrenchAI retries transient failures.", prompt_tokens=40, completion_tokens=60
        )
        _plan(server)
        server.answer("A draft the budget should never pay for.", prompt_tokens=40)
        stack = settings.model_copy(
            update={
                "llm_base_url": server.base_url,
                "llm_model": "model-a",
                "llm_max_retries": 0,
                "llm_max_thoughts": 1,
                "llm_timeout_s": 10.0,
                "require_acceptance": False,
            }
        )
        codec = codec_from_settings(stack)
        producer = EventProducer(stack, codec)
        log = Log(stack, codec)
        agents = Agents(stack, tmp_path)
        try:
            for name in ("super-agent", "journey-agent", "cost-guard"):
                agents.start(name)
            first = submitted("Explain how WrenchAI recovers from errors")
            await producer.publish(first)
            first_events = await finished(log, first.task_id)
            assert of(first_events, "task.completed"), [e.type for e in first_events]
            assert await _ledger_tokens(db, 166) == 166
            second = submitted("Explain it once more")
            await producer.publish(second)
            second_events = await finished(log, second.task_id)
            spent = [e for e in await log.events(first.task_id) if e.type.startswith("budget.")]
        finally:
            await producer.stop()
            agents.stop_all()

    # 66 tokens of planning, then the draft's 100 pass 50%, 80%, 95% and the limit at once.
    assert [(e.type, getattr(e.payload, "threshold", 1.0)) for e in spent] == [
        ("budget.threshold_crossed", 0.5),
        ("budget.threshold_crossed", 0.8),
        ("budget.threshold_crossed", 0.95),
        ("budget.exceeded", 1.0),
    ]
    [failure] = of(second_events, "step.failed")
    assert (failure.stage_id, failure.error.code) == ("draft", "BUDGET_EXCEEDED")
    assert "150 tokens" in failure.error.message
    [failed] = of(second_events, "task.failed")
    assert failed.reason == "BUDGET_EXCEEDED"
    assert of(second_events, "tool.called") == []
    assert len(server.requests) == 2 * PLANNING_REQUESTS + 1
