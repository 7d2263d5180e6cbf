"""Sequential thinking against the local chat completions server: numbered thoughts with
revisions and branches, a budget from settings, each thought handed over as it arrives,
then the final structured answer, with the usage of every request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import structlog.testing
from pydantic import BaseModel

from processors.reasoning import LLMClient, LLMInvalidOutput, LLMUnavailable, Reasoned, Thought
from processors.reasoning._wire import strict_schema
from tests.processors.openai_server import OpenAIServer
from wrenchai.settings import Settings

TASK = "Write a short market report on solar inverters."


class Plan(BaseModel):
    """A small result model for the tests."""

    stages: list[str]


PLAN = Plan(stages=["research", "analyse", "write"])


def thought(
    number: int,
    text: str,
    *,
    more: bool = True,
    revises: int | None = None,
    branch: str | None = None,
) -> Thought:
    return Thought(
        number=number, text=text, revises=revises, branch=branch, next_thought_needed=more
    )


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as instance:
        yield instance


@pytest.fixture
async def llm(server: OpenAIServer) -> AsyncIterator[LLMClient]:
    server.reset()
    settings = Settings(
        llm_base_url=server.base_url,
        llm_model="model-a",
        llm_max_thoughts=4,
        llm_max_retries=1,
        llm_timeout_s=2.0,
    )

    async with LLMClient(settings) as client:
        yield client


class Recorder:
    """An on_thought callback that keeps what it was given, in order."""

    def __init__(self) -> None:
        self.thoughts: list[Thought] = []

    async def __call__(self, item: Thought) -> None:
        self.thoughts.append(item)


async def test_thoughts_with_a_revision_and_a_branch_then_the_answer(
    server: OpenAIServer, llm: LLMClient
) -> None:
    """Thoughts arrive numbered, may revise an earlier one or open a branch; on_thought sees
    each in order; the final answer is validated; every request reports its usage."""
    script = [
        thought(1, "Stages: research, write."),
        thought(2, "An analysis stage is missing.", revises=1),
        thought(3, "Alternatively, skip research and reuse a report.", branch="reuse"),
        thought(4, "Research is needed after all.", more=False),
    ]
    for index, item in enumerate(script):
        server.answer(item, prompt_tokens=100 + index, completion_tokens=20)
    server.answer(PLAN, prompt_tokens=200, completion_tokens=30)
    seen = Recorder()

    reasoned = await llm.think(TASK, Plan, name="plan", on_thought=seen)

    assert reasoned.result == PLAN
    assert reasoned.thoughts == script
    assert seen.thoughts == script
    assert reasoned.thoughts[1].revises == 1
    assert reasoned.thoughts[2].branch == "reuse"
    assert [u.input_tokens for u in reasoned.usage] == [100, 101, 102, 103, 200]
    assert all(u.model == "model-a" for u in reasoned.usage)


async def test_requests_carry_the_task_and_the_thoughts_so_far(
    server: OpenAIServer, llm: LLMClient
) -> None:
    """Each thought request sees the task and every earlier thought; the final request sees
    all of them and asks for the result's schema."""
    server.answer(thought(1, "first"))
    server.answer(thought(2, "second", more=False))
    server.answer(PLAN)

    await llm.think(TASK, Plan, name="plan")

    first, second, final = server.requests
    for request in (first, second, final):
        assert {"role": "user", "content": TASK} in request.messages
    assert first.body["response_format"]["json_schema"]["name"] == "plan_thought"
    assert first.body["response_format"]["json_schema"]["schema"] == strict_schema(
        Thought.model_json_schema()
    )
    assert second.messages[-1]["content"] == "Thought 2 of at most 4."
    earlier = [m for m in second.messages if m["role"] == "assistant"]
    assert [json.loads(m["content"])["text"] for m in earlier] == ["first"]
    told = [json.loads(m["content"])["text"] for m in final.messages if m["role"] == "assistant"]
    assert told == ["first", "second"]
    assert final.body["response_format"]["json_schema"]["name"] == "plan"
    assert final.body["response_format"]["json_schema"]["schema"] == strict_schema(
        Plan.model_json_schema()
    )


async def test_thinking_stops_at_llm_max_thoughts(server: OpenAIServer, llm: LLMClient) -> None:
    """A model that always wants another thought is cut off at llm_max_thoughts (4); the last
    thought is marked final and the answer is asked for."""
    for number in range(1, 5):
        server.answer(thought(number, f"thought {number}"))
    server.answer(PLAN)
    server.answer(thought(5, "never asked for"))

    reasoned = await llm.think(TASK, Plan, name="plan")

    assert [t.number for t in reasoned.thoughts] == [1, 2, 3, 4]
    assert reasoned.thoughts[-1].next_thought_needed is False
    assert reasoned.result == PLAN
    assert len(server.requests) == 5


async def test_thought_numbers_and_revisions_are_normalised(
    server: OpenAIServer, llm: LLMClient
) -> None:
    """The client numbers thoughts itself, and a revision of a thought not yet made (or of
    itself) is dropped: the recorded sequence is always consistent."""
    server.answer(thought(7, "misnumbered", revises=3))
    server.answer(thought(1, "also misnumbered", revises=2, more=False))
    server.answer(PLAN)

    reasoned = await llm.think(TASK, Plan, name="plan")

    assert [(t.number, t.revises) for t in reasoned.thoughts] == [(1, None), (2, None)]


async def test_an_invalid_thought_is_repaired(server: OpenAIServer, llm: LLMClient) -> None:
    """A thought that breaks its schema gets the same one repair attempt as any answer; the
    usage of the failed request is still counted."""
    server.answer({"number": 1, "text": "no flag"})
    server.answer(thought(1, "fixed", more=False))
    server.answer(PLAN)

    reasoned = await llm.think(TASK, Plan, name="plan")

    assert [t.text for t in reasoned.thoughts] == ["fixed"]
    assert len(reasoned.usage) == 3


async def test_an_invalid_final_answer_fails_with_the_usage_spent(
    server: OpenAIServer, llm: LLMClient
) -> None:
    """When the final answer stays invalid after its repair, LLMInvalidOutput carries the
    usage of every request the call made, thoughts included, for usage.recorded events."""
    server.answer(thought(1, "only thought", more=False))
    server.answer({"stages": "research"})
    server.answer({"stages": None})
    seen = Recorder()

    with pytest.raises(LLMInvalidOutput) as caught:
        await llm.think(TASK, Plan, name="plan", on_thought=seen)

    assert len(caught.value.details["usage"]) == 3
    assert [t.text for t in seen.thoughts] == ["only thought"]


async def test_an_unavailable_server_mid_thinking_keeps_the_usage_spent(
    server: OpenAIServer, llm: LLMClient
) -> None:
    """If the server goes away between thoughts, LLMUnavailable carries the earlier usage."""
    server.answer(thought(1, "first"), prompt_tokens=50)
    server.error(500)
    server.error(500)

    with pytest.raises(LLMUnavailable) as caught:
        await llm.think(TASK, Plan, name="plan")

    assert [u.input_tokens for u in caught.value.details["usage"]] == [50]


async def test_instructions_lead_every_system_message(server: OpenAIServer, llm: LLMClient) -> None:
    """The caller's instructions (the agent's role) open the system message of each thought
    request and of the final request."""
    server.answer(thought(1, "only", more=False))
    server.answer(PLAN)

    await llm.think(TASK, Plan, name="plan", instructions="You are WrenchAI's planner.")

    for request in server.requests:
        [system] = [m for m in request.messages if m["role"] == "system"]
        assert system["content"].startswith("You are WrenchAI's planner.\n\n")


async def test_json_object_mode_keeps_a_single_system_message(
    server: OpenAIServer, llm: LLMClient
) -> None:
    """On a server without json_schema support the schema request joins the existing system
    message: some chat templates reject a second one."""
    server.error(400, "Unsupported parameter: response_format.json_schema")
    server.answer(thought(1, "only", more=False))
    server.answer(PLAN)

    reasoned = await llm.think(TASK, Plan, name="plan")

    assert reasoned.result == PLAN
    for request in server.requests[1:]:
        assert request.response_format == "json_object"
        systems = [m for m in request.messages if m["role"] == "system"]
        assert len(systems) == 1 and "JSON Schema" in systems[0]["content"]
    assert "step by step" in server.requests[1].messages[0]["content"]


async def test_prompts_and_completions_are_never_logged(
    server: OpenAIServer, llm: LLMClient
) -> None:
    """Prompts and answers are user content: even a call that needs repairs, retries and
    fails logs neither (only names, models, counts and delays)."""
    secret_task = "Summarise the contract of ACME-SECRET-4471."
    server.answer(thought(1, "The contract ACME-SECRET-4471 says...", more=False))
    server.answer('{"stages": "ACME-SECRET-4471"')
    server.error(500, "upstream echoed ACME-SECRET-4471")
    server.error(500)

    with structlog.testing.capture_logs() as logs, pytest.raises(LLMUnavailable):
        await llm.think(secret_task, Plan, name="plan")

    assert logs, "the failure was logged"
    assert "ACME-SECRET-4471" not in repr(logs)


async def test_a_reasoned_result_round_trips_through_json(
    server: OpenAIServer, llm: LLMClient
) -> None:
    """What think() returns serialises and reads back as Reasoned[Plan], so it can travel in
    events and be replayed instead of asking the LLM again."""
    server.answer(thought(1, "only", more=False))
    server.answer(PLAN)

    reasoned = await llm.think(TASK, Plan, name="plan")

    again = Reasoned[Plan].model_validate_json(reasoned.model_dump_json())
    assert again.result == PLAN
    assert again.thoughts == reasoned.thoughts
    assert again.usage == reasoned.usage
