"""GET /tools: every registered tool with its descriptor, the caller's tenant's statistics of
its calls from the log, and its health, probed concurrently and remembered for a while."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from api._tool_health import ToolHealthBoard
from events import EventProducer
from processors.tools import ToolRegistry, ToolSpec, builtin_registry
from processors.tools.builtin import Tool, ToolHealth
from tests.api._support import seed_api_key, serve
from tests.events.execution_samples import SEARCH_TIMEOUT, TASK_TYPE, Story
from tests.projections.conftest import submitted
from wrenchai.settings import Settings

TENANT = "default"  # the tenant of the test client's API key


def _descriptor(spec: ToolSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "capabilities": spec.capabilities,
        "offline": spec.offline,
        "uses_llm": spec.uses_llm,
        "side_effects": spec.side_effects,
        "idempotent": spec.idempotent,
        "cost": spec.cost.model_dump(),
    }


@pytest.mark.usefixtures("db", "topics")
async def test_every_registered_tool_is_listed_with_its_descriptor_and_health(
    client: httpx.AsyncClient,
) -> None:
    """Each tool of the registry by name, its descriptor as registered, no calls yet (a
    reliability of one half, rates null), and the answer of its health probe: the pure tools
    are ok, llm.complete is not when no LLM server is configured."""
    response = await client.get("/tools")

    assert response.status_code == 200
    tools = response.json()["tools"]
    specs = list(builtin_registry())
    assert [t["name"] for t in tools] == [s.name for s in specs]
    for tool, spec in zip(tools, specs, strict=True):
        assert {k: tool[k] for k in _descriptor(spec)} == _descriptor(spec)
        assert tool["observed"] == {
            "calls": 0,
            "successes": 0,
            "failures": 0,
            "cached": 0,
            "refused": 0,
            "success_rate": None,
            "mean_duration_s": None,
            "cost_usd": 0.0,
            "reliability": 0.5,
            "last_called_at": None,
            "by_task_type": [],
        }
        assert isinstance(tool["health"]["ok"], bool) and tool["health"]["detail"]
    health = {t["name"]: t["health"] for t in tools}
    assert health["text.summarize"]["ok"] and health["report.compile"]["ok"]
    assert not health["llm.complete"]["ok"]


@pytest.mark.usefixtures("db", "topics", "projector")
async def test_observed_statistics_are_the_callers_tenants_and_count_a_call_once(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """web.search's figures sum the caller's calls over task types, with the breakdown per
    task type; a redelivered tool.returned counts once, a reused result is counted apart
    from the calls, and another tenant's calls do not count at all."""
    ours, theirs = submitted(tenant_id=TENANT), submitted(tenant_id="globex")
    story, other = Story(ours), Story(theirs)
    story.call("search", 1, "web.search", "1.0.0", error=SEARCH_TIMEOUT, duration_s=4.0)
    again = story.call("search", 2, "web.search", "1.0.0", duration_s=1.0, cost_usd=0.002)
    story.call("search", 3, "web.search", "1.0.0", duration_s=2.0, task_type=None)
    story.call("search", 4, "web.search", "1.0.0", cached=True, duration_s=0.5)
    for attempt in (1, 2, 3):
        other.call("search", attempt, "web.search", "1.0.0", error=SEARCH_TIMEOUT)
    positions = await producer.publish_many([ours, theirs, *story.events, *other.events, again])

    response = await client.get("/tools", params={"wait_for": str(max(positions))})

    assert response.status_code == 200
    observed = {t["name"]: t["observed"] for t in response.json()["tools"]}
    search = observed["web.search"]
    assert {k: search[k] for k in ("calls", "successes", "failures", "cached", "refused")} == {
        "calls": 3,
        "successes": 2,
        "failures": 1,
        "cached": 1,
        "refused": 0,
    }
    assert search["success_rate"] == pytest.approx(2 / 3)
    assert search["mean_duration_s"] == pytest.approx(7.0 / 3)
    assert search["cost_usd"] == pytest.approx(0.002)
    assert search["reliability"] == pytest.approx((1 + 2) / (2 + 3))
    assert search["last_called_at"] == story.events[-1].occurred_at.isoformat().replace(
        "+00:00", "Z"
    )
    by_type = {b["task_type"]: b for b in search["by_task_type"]}
    assert set(by_type) == {None, TASK_TYPE}
    ours_typed = by_type[TASK_TYPE]
    assert (ours_typed["calls"], ours_typed["successes"], ours_typed["cached"]) == (2, 1, 1)
    assert ours_typed["reliability"] == pytest.approx(2 / 4)
    assert (by_type[None]["calls"], by_type[None]["success_rate"]) == (1, 1.0)
    assert observed["code.python"]["calls"] == 0


ECHO = ToolSpec(
    name="local.echo",
    version="0.1.0",
    description="Says back what it is given.",
    capabilities=["echo"],
    input_schema={"type": "object"},
    output_schema={"type": "object"},
)


def register(registry: ToolRegistry, tools: dict[str, Tool], settings: Settings) -> None:
    """This module is also a tool module (WRENCH_TOOL_MODULES): a descriptor with no
    implementation."""
    registry.register(ECHO)


@pytest.mark.usefixtures("topics")
async def test_tools_of_a_tool_module_are_listed_and_without_an_implementation_no_health(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """/tools lists the registry the agents load, WRENCH_TOOL_MODULES included; a descriptor
    with no implementation has a null health."""
    with_module = settings.model_copy(update={"tool_modules": __name__})
    async with serve(with_module, api_key=await seed_api_key(db, settings)) as client:
        tools = {t["name"]: t for t in (await client.get("/tools")).json()["tools"]}
    assert set(tools) == {*builtin_registry().names(), "local.echo"}
    assert tools["local.echo"]["health"] is None
    assert tools["local.echo"]["capabilities"] == ["echo"]
    assert tools["web.search"]["health"] is not None


@pytest.mark.usefixtures("db", "topics")
async def test_health_is_remembered_between_requests(client: httpx.AsyncClient) -> None:
    """Two requests within the time-to-live get the same probe answers."""
    first = (await client.get("/tools")).json()["tools"]
    second = (await client.get("/tools")).json()["tools"]
    assert [t["health"] for t in first] == [t["health"] for t in second]


@pytest.mark.usefixtures("db", "topics")
async def test_the_tools_route_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    route = spec["paths"]["/tools"]["get"]
    assert "wait_for" in {p["name"] for p in route["parameters"]}
    schemas = spec["components"]["schemas"]
    assert {"observed", "health", "cost"} <= set(schemas["ToolInfo"]["properties"])
    assert "by_task_type" in schemas["ObservedStats"]["properties"]


class _SlowTool:
    """A tool whose probe takes ``delay_s``: what the board does with a slow probe."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.probes = 0

    @property
    def spec(self) -> ToolSpec:
        return builtin_registry().get("web.search")

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return {}

    async def health(self) -> ToolHealth:
        self.probes += 1
        await asyncio.sleep(self.delay_s)
        return ToolHealth(ok=True, detail="slow but fine")


async def test_a_slow_probe_is_not_ok_now_and_its_late_answer_is_used_next() -> None:
    """A probe past the deadline reports not ok without holding the answer back; it keeps
    running, and the next refresh takes its answer instead of starting another probe. The
    fast tool's answer is not held back by the slow one."""
    slow, fast = _SlowTool(0.3), _SlowTool(0.0)
    board = ToolHealthBoard({"slow": slow, "fast": fast}, timeout_s=0.1, ttl_s=0.0)

    started = asyncio.get_running_loop().time()
    now = await board.current()
    assert asyncio.get_running_loop().time() - started < 0.25
    assert not now["slow"].ok and "within 0.1 s" in now["slow"].detail
    assert now["fast"].ok

    await asyncio.sleep(0.3)
    later = await board.current()
    assert later["slow"].ok and later["slow"].detail == "slow but fine"
    assert slow.probes == 1 and fast.probes == 2
    await board.close()
