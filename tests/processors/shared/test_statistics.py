"""The agents' decision statistics come from the read models of every partition, on the real
broker, the real projector and real Postgres: two workers of a kind that own different
partitions see the same tool statistics, circuit breakers, evaluation counts and fit; a
refresh counts nothing twice, not even what a worker also saw live; the statistics cover
every tenant; a Postgres outage leaves the last numbers in place."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import structlog
from pydantic import SecretStr

from events import (
    Actor,
    CheckResult,
    Codec,
    EvaluationRecorded,
    Event,
    EventProducer,
    GroupPosterior,
    QualityFitted,
    StepError,
    ToolReturned,
)
from processors.inspector.agent import InspectorAgent
from processors.inspector.quality import Priors, Thresholds
from processors.inspector.quality_fit import GroupCounts
from processors.journey.agent import JourneyAgent
from processors.reasoning import RuleReasoner
from processors.shared.statistics import (
    Statistics,
    StatisticsReader,
    StatisticsUnavailable,
    keep_fresh,
)
from processors.shared.tool_usage import CircuitBreaker, Observed, Outcome
from processors.super.agent import SuperAgent
from processors.tools import builtin_registry
from projections import run_projector
from tests.processors.journey.test_execution import Backup, Broken, playbook, run_task, step, system
from wrenchai.settings import Settings

AGENT = Actor(kind="agent", id="journey-agent")
THRESHOLDS = Thresholds(threshold=0.6, accept_confidence=0.7, escalate_confidence=0.05, retries=2)
TOOL = "text.summarize"


Placed = dict[int, list[Event]]
"""Events by the partition they go to."""
Place = Callable[[Placed], Awaitable[None]]


@pytest.fixture
async def place(
    settings: Settings, producer: EventProducer, codec: Codec, db: asyncpg.Connection
) -> AsyncIterator[Place]:
    """The projector running; ``await place(events)`` appends each partition's events to it
    and returns once the projector has applied them."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop=stop))

    async def placed(at: Placed) -> None:
        await _place(producer, codec, settings, db, at)

    yield placed
    stop.set()
    await asyncio.wait_for(task, 30)


async def _place(
    producer: EventProducer, codec: Codec, settings: Settings, db: asyncpg.Connection, at: Placed
) -> None:
    """Append each partition's events to it, then wait until the projector applied them."""
    ends: dict[int, int] = {}
    for partition, events in at.items():
        await codec.prepare_events(events)
        records = [codec.encode(event) for event in events]
        positions = await producer.send_records(
            settings.topic("events"), records, partition=partition
        )
        ends[partition] = positions[-1].offset + 1
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        rows = await db.fetch(
            "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 "
            "AND topic = $2",
            settings.group("projector"),
            settings.topic("events"),
        )
        done = {row["partition"]: row["next_offset"] for row in rows}
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            return
        assert asyncio.get_running_loop().time() < deadline, f"not projected: {ends} {done}"
        await asyncio.sleep(0.05)


def returned(
    tool: str,
    ok: bool,
    *,
    at: datetime | None = None,
    tenant: str = "acme",
    code: str = "TOOL_FAILED",
    cached: bool = False,
    seconds: float = 1.0,
    cost: float = 0.01,
) -> Event:
    payload = ToolReturned(
        stage_id="s",
        attempt=1,
        tool=tool,
        version="1.0.0",
        outcome="ok" if ok else "error",
        duration_s=seconds,
        result={"text": "user content"} if ok else None,
        error=None if ok else StepError(code=code, category="tool_error"),
        cached=cached,
        input_hash="0" * 64,
        task_type="research_report",
        cost_usd=cost,
    )
    return Event.new(
        payload,
        tenant_id=tenant,
        actor=AGENT,
        task_id=uuid.uuid4(),
        occurred_at=at or datetime.now(UTC),
    )


def judged(role: str, tool: str, passed: int, failed: int, tenant: str = "acme") -> Event:
    checks = [CheckResult(name=f"p{n}", passed=True) for n in range(passed)] + [
        CheckResult(name=f"f{n}", passed=False, detail="quotes the output") for n in range(failed)
    ]
    payload = EvaluationRecorded(
        stage_id="s",
        attempt=1,
        role=role,
        tool=tool,
        model=None,
        checks=checks,
        prior_alpha=1.0,
        prior_beta=1.0,
        prior_source="default",
        quality_score=0.5,
        interval=[0.1, 0.9],
        confidence=0.5,
        threshold=0.6,
        decision="accept",
        reason="test",
    )
    return Event.new(payload, tenant_id=tenant, actor=AGENT, task_id=uuid.uuid4())


def fitted(fit_id: str, evaluations: int, means: dict[tuple[str, str], float]) -> QualityFitted:
    groups = [
        GroupPosterior(
            role=role,
            tool=tool,
            model=None,
            evaluations=evaluations,
            alpha=mean * 40 + 0.123456789,
            beta=(1 - mean) * 40 + 0.987654321,
            mean=mean,
            interval=[mean / 2, (1 + mean) / 2],
            r_hat=1.001,
            ess=812.5,
        )
        for (role, tool), mean in sorted(means.items())
    ]
    return QualityFitted(
        fit_id=fit_id,
        evaluations=evaluations,
        groups=groups,
        mu=0.61,
        kappa=7.3,
        r_hat_max=1.004,
        ess_min=640.0,
        converged=True,
        draws=500,
        chains=2,
        seconds=3.2,
    )


def broadcast(fit: QualityFitted, partitions: int, at: datetime) -> Placed:
    """The fit as the InspectorAgent publishes it: one copy per partition, one event id."""
    event = Event.new(
        fit,
        tenant_id="wrenchai",
        actor=Actor(kind="agent", id="inspector-agent"),
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"wrench:quality.fitted:{fit.fit_id}"),
        occurred_at=at,
    )
    return {p: [event] for p in range(partitions)}


def observe_own(agent: Any, placed: Placed, owned: Iterable[int]) -> None:
    """What a worker owning ``owned`` folds live: its partitions' events only."""
    for partition in owned:
        for event in placed.get(partition, []):
            agent.observe(event)


def journey_agent() -> JourneyAgent:
    return JourneyAgent(RuleReasoner(), builtin_registry(), {})


def inspector_agent() -> InspectorAgent:
    return InspectorAgent(RuleReasoner(), builtin_registry(), Priors(max_weight=10.0), THRESHOLDS)


def planner() -> SuperAgent:
    return SuperAgent.offline()


# -- tool statistics ---------------------------------------------------------------------------
async def test_two_workers_owning_different_partitions_see_the_same_tool_statistics(
    settings: Settings, place: Place
) -> None:
    """Calls of one tool on partitions 0, 1 and 2, of two tenants. The worker owning
    partition 0 and the one owning 1 and 2 each saw only theirs live, yet both rank with
    every call: 5 that ran (a reused result and a breaker's refusal are no calls), 3 of them
    good. Reading again adds nothing; new calls add exactly themselves."""
    placed: Placed = {
        0: [returned("web.search", True), returned("web.search", True, seconds=3.0)],
        1: [
            returned("web.search", True),
            returned("web.search", False),
            returned("web.search", True, cached=True),
            returned("web.search", False, code="CIRCUIT_OPEN"),
        ],
        2: [returned("web.search", False, tenant="globex")],
    }
    await place(placed)
    first, second = journey_agent(), journey_agent()
    observe_own(first, placed, [0])
    observe_own(second, placed, [1, 2])
    readers = [StatisticsReader(settings, tools=True, outcomes=True) for _ in range(2)]
    try:
        for agent, reader in zip((first, second), readers, strict=True):
            agent.use_statistics(await reader.read())

        expected = Observed(calls=5, successes=3, seconds=7.0, cost_usd=0.05)
        seen = [agent.stats.of("web.search", "research_report") for agent in (first, second)]
        assert [(s.calls, s.successes) for s in seen] == [(5, 3), (5, 3)]
        assert seen[0] == seen[1]
        assert seen[0].seconds == pytest.approx(expected.seconds)
        assert seen[0].cost_usd == pytest.approx(expected.cost_usd)

        for agent, reader in zip((first, second), readers, strict=True):
            agent.use_statistics(await reader.read())
        assert first.stats.of("web.search", "research_report").calls == 5

        more: Placed = {2: [returned("web.search", True)], 0: [returned("web.search", True)]}
        await place(more)
        observe_own(first, more, [0])
        for agent, reader in zip((first, second), readers, strict=True):
            agent.use_statistics(await reader.read())
        assert [(a.stats.of("web.search", "research_report").calls) for a in (first, second)] == [
            7,
            7,
        ]
    finally:
        for reader in readers:
            await reader.close()


async def test_the_next_task_calls_the_tool_with_the_better_record_first(
    settings: Settings, place: Place
) -> None:
    """A task in which test.broken failed three times, projected: loaded from the read
    models, the JourneyAgent's statistics put test.backup first, so the next task's stage
    starts with it and needs one attempt."""
    broken, backup = Broken(), Backup()
    driver, agent = system(broken, backup)
    book = {"playbook": playbook(step("fragile", "test.broken", "coder"))}
    await run_task(driver, book)
    assert agent.stats.of("test.broken", "own").calls == 0, "nothing counted from the live log"

    await place({0: list(driver.log)})
    reader = StatisticsReader(settings, tools=True, outcomes=True)
    try:
        agent.use_statistics(await reader.read())
    finally:
        await reader.close()
    assert agent.stats.of("test.broken", "own").calls == 3
    events = await run_task(driver, book)

    started = [e.payload for e in events if e.type == "step.started"]
    assert [(s.attempt, s.tool) for s in started] == [(1, "test.backup")]  # type: ignore[attr-defined]
    assert len(broken.keys) == 3 and len(backup.keys) == 2
    assert events[-1].type == "task.completed"


# -- circuit breakers --------------------------------------------------------------------------
async def test_a_circuit_opens_from_failures_on_a_partition_the_worker_does_not_own(
    settings: Settings, place: Place
) -> None:
    """Five straight failures of text.summarize on partition 1. The JourneyAgent and the
    SuperAgent owning partition 0 never see them live, yet once loaded its circuit is open
    for both. Another tool failed four times on partition 1, which the worker owning it saw
    live and loads again: still four failures, so its circuit stays closed. A success on
    partition 2 closes the first circuit everywhere."""
    now = datetime.now(UTC)
    placed: Placed = {
        1: [returned(TOOL, False, at=now - timedelta(seconds=5 - n)) for n in range(5)]
        + [returned("web.search", False, at=now - timedelta(seconds=4 - n)) for n in range(4)],
    }
    await place(placed)
    journey, super_agent, owner = journey_agent(), planner(), journey_agent()
    observe_own(owner, placed, [1])
    assert not journey.breaker.is_open(TOOL, now) and owner.breaker.is_open(TOOL, now)
    readers = [StatisticsReader(settings, outcomes=True, fits=True) for _ in range(3)]
    try:
        journey.use_statistics(await readers[0].read())
        super_agent.use_statistics(await readers[1].read())
        owner.use_statistics(await readers[2].read())
        for breaker in (journey.breaker, super_agent.breaker, owner.breaker):
            assert breaker.open_tools(now) == {TOOL}
            assert not breaker.is_open(TOOL, now + timedelta(seconds=30)), "cooled down"

        healed: Placed = {2: [returned(TOOL, True, at=now + timedelta(seconds=1))]}
        await place(healed)
        journey.use_statistics(await readers[0].read())
        super_agent.use_statistics(await readers[1].read())
        assert journey.breaker.open_tools(now) == super_agent.breaker.open_tools(now) == set()
    finally:
        for reader in readers:
            await reader.close()


def test_a_call_seen_live_and_loaded_again_counts_once_in_any_order() -> None:
    """The breaker keeps each tool's last calls by time: four failures recorded twice (live,
    then from Postgres) are four, so the circuit stays closed; a fifth opens it whichever
    order the calls arrive in."""
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    calls = [Outcome("t", uuid.uuid4(), at + timedelta(seconds=n), False) for n in range(5)]
    breaker = CircuitBreaker()
    breaker.record_all(calls[:4])
    breaker.record_all(calls[:4])
    assert not breaker.is_open("t", at + timedelta(seconds=5))
    breaker.record(calls[4])
    assert breaker.is_open("t", at + timedelta(seconds=5))

    shuffled = CircuitBreaker()
    success = Outcome("t", uuid.uuid4(), at + timedelta(seconds=6), True)
    shuffled.record_all([success, *reversed(calls)])
    assert not shuffled.is_open("t", at + timedelta(seconds=7))
    reordered = CircuitBreaker()
    reordered.record_all([calls[4], calls[0], calls[3], calls[1], calls[2]])
    assert reordered.is_open("t", at + timedelta(seconds=5))


# -- evaluation counts and fits ------------------------------------------------------------------
async def test_the_fit_runs_on_the_evaluations_of_every_partition(
    settings: Settings, place: Place
) -> None:
    """Evaluations on three partitions and of two tenants: the InspectorAgent owning partition
    0 (the one that fits) and the one owning 1 and 2 count every one, and fit on the same
    counts. Further evaluations add exactly themselves."""
    placed: Placed = {
        0: [judged("writer", "report.compile", 3, 1), judged("analyst", "text.summarize", 2, 0)],
        1: [judged("writer", "report.compile", 1, 2)],
        2: [judged("writer", "report.compile", 4, 0, tenant="globex")],
    }
    await place(placed)
    owner, other = inspector_agent(), inspector_agent()
    observe_own(owner, placed, [0])
    observe_own(other, placed, [1, 2])
    readers = [StatisticsReader(settings, evaluations=True, fits=True) for _ in range(2)]
    try:
        for agent, reader in zip((owner, other), readers, strict=True):
            agent.use_statistics(await reader.read())
        expected = [
            GroupCounts("analyst", "text.summarize", None, 1, 2, 0),
            GroupCounts("writer", "report.compile", None, 3, 8, 3),
        ]
        assert owner.fit_input() == other.fit_input() == expected
        assert owner.evaluations == other.evaluations == 4
        assert owner.fit_due(settings.model_copy(update={"fit_min_new": 4}), 0.0)

        for agent, reader in zip((owner, other), readers, strict=True):
            agent.use_statistics(await reader.read())
        assert owner.fit_input() == expected, "a second read adds nothing"

        more: Placed = {1: [judged("analyst", "text.summarize", 0, 3)]}
        await place(more)
        for agent, reader in zip((owner, other), readers, strict=True):
            agent.use_statistics(await reader.read())
        assert owner.fit_input()[0] == GroupCounts("analyst", "text.summarize", None, 2, 2, 3)
        assert owner.fit_input() == other.fit_input() and owner.evaluations == 5
    finally:
        for reader in readers:
            await reader.close()


async def test_the_newest_fit_comes_from_the_read_models_as_it_was_on_the_log(
    settings: Settings, place: Place
) -> None:
    """A converged fit broadcast to every partition, then an older one: loaded, both
    InspectorAgents and the SuperAgent use the newer, the very numbers on the log (so
    Thompson draws match to the bit); the fit's evaluations are not fitted again. A fit seen
    live first is not replaced by an older one read back."""
    now = datetime.now(UTC).replace(microsecond=0)
    newer = fitted("fit-b", 4, {("writer", "report.compile"): 0.8, ("analyst", TOOL): 0.3})
    older = fitted("fit-a", 2, {("writer", "report.compile"): 0.5})
    await place(broadcast(newer, 3, now))
    await place(broadcast(older, 3, now - timedelta(minutes=1)))

    judges, super_agent = [inspector_agent(), inspector_agent()], planner()
    agents: list[Any] = [*judges, super_agent]
    readers = [StatisticsReader(settings, evaluations=True, fits=True) for _ in range(3)]
    try:
        for agent, reader in zip(agents, readers, strict=True):
            agent.use_statistics(await reader.read())
    finally:
        for reader in readers:
            await reader.close()
    on_the_log = Priors(max_weight=10.0).with_fit(newer)
    for judge in judges:
        assert judge.priors.fit == newer
        assert judge.priors.prior("writer", "report.compile") == on_the_log.prior(
            "writer", "report.compile"
        )
        assert judge.fitted_at_evaluations == 4
        assert not judge.fit_due(settings, 1e9), "no new evaluations since the fit"
    assert super_agent.priors.tool_posteriors() == Priors().with_fit(newer).tool_posteriors()

    live = inspector_agent()
    latest = fitted("fit-c", 6, {("writer", "report.compile"): 0.9})
    live.observe(
        Event.new(latest, tenant_id="wrenchai", actor=AGENT, occurred_at=now + timedelta(hours=1))
    )
    reader = StatisticsReader(settings, fits=True)
    try:
        live.use_statistics(await reader.read())
    finally:
        await reader.close()
    assert live.priors.fit == latest


# -- tenants, roles and outages ------------------------------------------------------------------
async def test_a_role_that_row_level_security_confines_is_refused(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Connected as the API's role (wrench_api), every read model would look empty: the
    reader refuses, naming the row-level security and what to connect as."""
    confined = settings.model_copy(
        update={"database_url": SecretStr(f"{settings.database_dsn()}?role=wrench_api")}
    )
    reader = StatisticsReader(confined, tools=True)
    try:
        with pytest.raises(StatisticsUnavailable, match="row-level security") as raised:
            await reader.read()
    finally:
        await reader.close()
    assert "tool_stats" in raised.value.message and "owner" in raised.value.message


async def test_a_postgres_outage_keeps_the_last_numbers_and_is_logged_once(
    settings: Settings, db: asyncpg.Connection, postgres_url: str
) -> None:
    """The refresh loop loads numbers, then Postgres refuses connections for several
    refreshes: the agent keeps deciding with the last numbers, one warning says so, and
    once Postgres is back the next refresh brings the new numbers (logged once)."""
    await db.execute(
        """INSERT INTO tool_stats (tenant_id, tool, task_type, calls, successes, failures,
               cached, refused, total_duration_s, total_cost_usd, last_called_at)
           VALUES ('acme', 'web.search', 'research_report', 4, 3, 1, 0, 0, 2, 0, now())"""
    )
    agent = journey_agent()
    reader = StatisticsReader(settings, tools=True, outcomes=True)
    name = await db.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(postgres_url)
    with structlog.testing.capture_logs() as logs:
        refresh = asyncio.create_task(keep_fresh(reader, agent.use_statistics, 0.05))
        try:
            await _until(lambda: agent.stats.of("web.search", "research_report").calls == 4)
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> $2",
                name,
                db.get_server_pid(),
            )
            await db.execute("UPDATE tool_stats SET calls = 9")
            await _until(lambda: _warnings(logs) >= 1)
            await asyncio.sleep(0.5)  # ten refreshes that fail
            assert agent.stats.of("web.search", "research_report").calls == 4
            assert _warnings(logs) == 1

            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await _until(lambda: agent.stats.of("web.search", "research_report").calls == 9)
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)
    assert [e["event"] for e in logs if e["event"].startswith("statistics")] == [
        "statistics not refreshed; deciding with the last ones",
        "statistics refreshed again",
    ]


async def test_a_refresh_that_fails_in_an_unexpected_way_does_not_end_the_refreshes(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """An error nobody planned for (here in applying the numbers) is logged once with its
    traceback; the next refresh runs as usual."""
    applied: list[int] = []

    def apply(statistics: Statistics) -> None:
        applied.append(statistics.evaluations)
        if len(applied) == 1:
            raise ValueError("a bug")

    reader = StatisticsReader(settings, evaluations=True)
    with structlog.testing.capture_logs() as logs:
        refresh = asyncio.create_task(keep_fresh(reader, apply, 0.02))
        try:
            await _until(lambda: len(applied) >= 3)
        finally:
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)
    assert _warnings(logs) == 1
    assert any("ValueError" in str(e.get("reason")) for e in logs)


def _warnings(logs: Sequence[Mapping[str, Any]]) -> int:
    return sum(e["event"] == "statistics not refreshed; deciding with the last ones" for e in logs)


async def _until(check: Any, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.02)
