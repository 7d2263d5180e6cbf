"""The planning events: roles.assigned, tools.allocated, plan.created, thought.recorded and
usage.recorded round-trip through the codec, keep user content encrypted, match their
exported schemas, and accept the JSON the planning models produce."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from events import (
    Codec,
    Event,
    FernetCipher,
    PlanCreated,
    RolesAssigned,
    ThoughtRecorded,
    ToolsAllocated,
    UsageRecorded,
    catalog,
    generate_key,
)
from events.schema import event_schema
from tests.events import schema_check
from tests.events.planning_samples import AGENT, PLAN, PLANNING_PAYLOADS, PLANNING_SECRETS
from tests.events.samples import TENANT

PLANNING_TYPES = sorted(PLANNING_PAYLOADS)


def keyed_codec() -> Codec:
    return Codec(FernetCipher([generate_key()]))


def sample_event(event_type: str) -> Event:
    """A planning event of ``event_type`` for a new task, at a fixed instant."""
    return Event.new(
        PLANNING_PAYLOADS[event_type],
        tenant_id=TENANT,
        actor=AGENT,
        task_id=uuid.uuid4(),
        occurred_at=datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
    )


def test_the_planning_types_are_in_the_catalog_at_their_versions() -> None:
    for event_type in PLANNING_TYPES:
        # usage.recorded gained prices and whose work it was at v2.
        assert catalog.latest(event_type) == (2 if event_type == "usage.recorded" else 1)


@pytest.mark.parametrize("event_type", PLANNING_TYPES)
@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
def test_every_planning_type_round_trips_through_the_codec(
    event_type: str, encrypted: bool
) -> None:
    codec = keyed_codec() if encrypted else Codec()
    event = sample_event(event_type)
    record = codec.encode(event)
    assert codec.decode(record.value, record.headers) == event


@pytest.mark.parametrize("event_type", PLANNING_TYPES)
def test_user_content_never_reaches_the_bytes_in_clear_when_a_key_is_set(
    event_type: str,
) -> None:
    value = keyed_codec().encode(sample_event(event_type)).value
    assert not [s for s in PLANNING_SECRETS if s.encode() in value]


def test_the_sensitive_fields_are_the_stages_and_the_thought_text() -> None:
    """A stage's tool_input may quote the task and a thought may quote anything: both are
    encrypted; the rest stays readable for audits without a key."""
    assert PlanCreated.sensitive_fields() == ("stages",)
    assert ThoughtRecorded.sensitive_fields() == ("text",)
    assert RolesAssigned.sensitive_fields() == ()
    assert ToolsAllocated.sensitive_fields() == ()
    assert UsageRecorded.sensitive_fields() == ()


@pytest.mark.parametrize("event_type", PLANNING_TYPES)
@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
def test_encoded_planning_events_match_their_schema(event_type: str, encrypted: bool) -> None:
    event = sample_event(event_type)
    codec = keyed_codec() if encrypted else Codec()
    envelope: dict[str, Any] = orjson.loads(codec.encode(event).value)
    schema = event_schema(type(event.payload))
    assert schema_check.keywords(schema) <= schema_check.SUPPORTED
    assert schema_check.errors(envelope, schema) == []


def test_a_plan_with_a_repeated_stage_id_is_refused() -> None:
    data = PLAN.model_dump(mode="json")
    data["stages"][1]["id"] = data["stages"][0]["id"]
    with pytest.raises(ValidationError, match="repeated: search"):
        PlanCreated.model_validate(data)


def test_an_unknown_reasoner_or_operation_is_refused() -> None:
    with pytest.raises(ValidationError):
        RolesAssigned.model_validate({"roles": [{"name": "writer"}], "reasoner": "oracle"})
    with pytest.raises(ValidationError):
        ThoughtRecorded.model_validate({"operation": "guess", "number": 1, "text": "hm"})


def test_the_plan_model_of_the_planner_builds_a_plan_created_as_is() -> None:
    """The planner's Plan, dumped to JSON, is a valid payload: the two shapes stay in step."""
    from processors.shared.fallbacks import Fallback
    from processors.shared.planning import Estimate, Plan, Stage

    stage = Stage(
        id="search",
        role="researcher",
        tools=["web.search"],
        tool_version="1.2.0",
        depends_on=[],
        inputs=[],
        tool_input={"query": "churn"},
        success_criteria=["sources"],
        optional=False,
        timeout=60,
        retry=1,
        estimate=Estimate(seconds=2.0),
        fallbacks=[Fallback(kind="retry", detail="once", attempts=1, backoff_s=1.0)],
    )
    plan = Plan(playbook=None, stages=[stage], total=Estimate(seconds=2.0), critical_path_seconds=2)
    payload = PlanCreated.model_validate(plan.model_dump(mode="json"))
    assert payload.model_dump(mode="json") == plan.model_dump(mode="json")


def test_the_allocation_model_builds_a_tools_allocated_as_is() -> None:
    from processors.tools.allocation import Allocation, RoleAllocation, ToolChoice

    allocation = Allocation(
        roles=[
            RoleAllocation(
                role="researcher",
                tools=[
                    ToolChoice(
                        tool="web.search",
                        version="1.2.0",
                        need="capability:search",
                        reliability=0.5,
                        score=0.4,
                        alternatives=["docs.search"],
                    )
                ],
            )
        ],
        offline_only=True,
    )
    payload = ToolsAllocated.model_validate(allocation.model_dump(mode="json"))
    assert payload.model_dump(mode="json", exclude={"sampling"}) == allocation.model_dump(
        mode="json"
    )
