"""Planning payloads shared by the events, projections and API tests: a two-stage plan for a
researcher and a writer, with user content in every sensitive field."""

from __future__ import annotations

from events import (
    Actor,
    AllocatedTool,
    AssignedRole,
    Event,
    EventPayload,
    PlanCreated,
    PlanEstimate,
    PlanStage,
    RolesAssigned,
    RoleTools,
    StageFallback,
    ThoughtRecorded,
    ToolsAllocated,
    UsageRecorded,
)

AGENT = Actor(kind="agent", id="super_agent")

# Distinctive strings that must never show up in clear once a key is configured.
PLANNING_SECRETS = ("quarterly churn of ACME-7", "the board minutes say churn doubled")

ROLES = RolesAssigned(
    roles=[
        AssignedRole(name="researcher", reason="the task asks to find figures", score=0.82),
        AssignedRole(
            name="writer",
            reason="the task asks for a report",
            score=0.64,
            depends_on=["researcher"],
        ),
    ],
    reasoner="rule",
)

TOOLS = ToolsAllocated(
    roles=[
        RoleTools(
            role="researcher",
            tools=[
                AllocatedTool(
                    tool="web.search",
                    version="1.2.0",
                    need="capability:search",
                    reliability=0.5,
                    score=0.41,
                    alternatives=["docs.search"],
                )
            ],
        ),
        RoleTools(
            role="writer",
            tools=[
                AllocatedTool(
                    tool="llm.generate",
                    version="1.0.0",
                    need="required_tool",
                    reliability=0.5,
                    score=0.3,
                )
            ],
        ),
    ],
)

SEARCH = PlanStage(
    id="search",
    role="researcher",
    tools=["web.search", "docs.search"],
    tool_version="1.2.0",
    tool_input={"query": "quarterly churn of ACME-7"},
    success_criteria=["at least three sources"],
    timeout=120,
    retry=2,
    estimate=PlanEstimate(seconds=5.0, cost_usd=0.001),
    fallbacks=[
        StageFallback(
            kind="retry",
            detail="retry twice",
            attempts=2,
            backoff_s=1.0,
            backoff_factor=2.0,
            max_backoff_s=30.0,
        ),
        StageFallback(kind="alternate_tool", detail="use docs.search", tool="docs.search"),
    ],
)
WRITE = PlanStage(
    id="write",
    role="writer",
    tools=["llm.generate"],
    tool_version="1.0.0",
    model="gpt-4o-mini",
    depends_on=["search"],
    inputs=["search"],
    tool_input={"prompt": "summarise: {{search.output}}"},
    success_criteria=["one page", "cites its sources"],
    optional=True,
    timeout=300,
    estimate=PlanEstimate(
        tokens=900, prompt_tokens=400, completion_tokens=500, seconds=20.0, cost_usd=0.002
    ),
    fallbacks=[StageFallback(kind="skip", detail="the stage is optional")],
)
PLAN = PlanCreated(
    playbook="research_report",
    stages=[SEARCH, WRITE],
    total=PlanEstimate(
        tokens=900, prompt_tokens=400, completion_tokens=500, seconds=25.0, cost_usd=0.003
    ),
    critical_path_seconds=25.0,
)

THOUGHTS = [
    ThoughtRecorded(operation="assign_roles", number=1, text="the task asks for figures"),
    ThoughtRecorded(operation="plan", number=1, text="the board minutes say churn doubled"),
    ThoughtRecorded(operation="plan", number=2, text="search before writing", revises=1),
    ThoughtRecorded(
        operation="plan",
        number=3,
        text="or write from memory",
        branch="no-search",
        stage_id="write",
    ),
]

USAGE = UsageRecorded(
    operation="plan",
    model="gpt-4o-mini",
    provider="api.openai.com",
    input_tokens=120,
    output_tokens=80,
    cached_tokens=20,
    total_tokens=200,
    cost_usd=0.0000645,
    price_version="2026-11",
)

PLANNING_PAYLOADS: dict[str, EventPayload] = {
    "roles.assigned": ROLES,
    "tools.allocated": TOOLS,
    "plan.created": PLAN,
    "thought.recorded": THOUGHTS[1],
    "usage.recorded": USAGE,
}


def planning_events(submitted: Event) -> list[Event]:
    """What the SuperAgent derives from ``submitted``, in log order, with deterministic ids:
    thoughts first, then roles, tools and the plan."""
    thoughts = [
        submitted.derive(t, step=f"thought:{t.operation}:{t.number}", actor=AGENT) for t in THOUGHTS
    ]
    return [
        *thoughts,
        submitted.derive(ROLES, step="roles", actor=AGENT),
        submitted.derive(TOOLS, step="tools", actor=AGENT),
        submitted.derive(USAGE, step="usage:plan:1", actor=AGENT),
        submitted.derive(PLAN, step="plan", actor=AGENT),
    ]
