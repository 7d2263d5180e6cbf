"""The envelope: type and version agree with the payload, derived ids are deterministic,
times are UTC, and positions read and print as PARTITION:OFFSET."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from events import (
    SYSTEM,
    Actor,
    Codec,
    Event,
    Position,
    TaskCancelled,
    TaskCompleted,
    TaskSubmitted,
    derive_id,
)
from tests.events.samples import TENANT, USER, sample_event

AGENT = Actor(kind="agent", id="super-agent")


def test_new_takes_type_and_version_from_the_payload() -> None:
    event = sample_event("task.submitted")
    assert (event.type, event.schema_version) == ("task.submitted", 2)


@pytest.mark.parametrize(
    ("event_type", "schema_version"),
    [("task.cancelled", 2), ("task.submitted", 1), ("task.failed", 2)],
)
def test_envelope_type_and_version_must_match_the_payload(
    event_type: str, schema_version: int
) -> None:
    with pytest.raises(ValidationError, match="but the envelope says"):
        Event(
            id=uuid.uuid4(),
            type=event_type,
            schema_version=schema_version,
            task_id=uuid.uuid4(),
            tenant_id=TENANT,
            actor=USER,
            occurred_at=datetime.now(UTC),
            payload=TaskSubmitted(description="x"),
        )


def test_events_are_immutable() -> None:
    event = sample_event("task.cancelled")
    with pytest.raises(ValidationError):
        event.tenant_id = "someone-else"  # type: ignore[misc]


def test_naive_times_are_refused() -> None:
    """occurred_at must say which instant it is; a naive datetime does not."""
    with pytest.raises(ValidationError):
        Event.new(TaskCancelled(), tenant_id=TENANT, actor=USER, occurred_at=datetime(2026, 1, 1))


def test_occurred_at_is_stored_in_utc_whatever_offset_it_came_with() -> None:
    """One instant has one byte form, so canonical JSON stays deterministic."""
    instant = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    task_id, event_id = uuid.uuid4(), uuid.uuid4()
    in_paris = instant.astimezone(timezone(timedelta(hours=1)))
    events_ = [
        Event.new(
            TaskCancelled(),
            tenant_id=TENANT,
            actor=USER,
            task_id=task_id,
            event_id=event_id,
            occurred_at=when,
        )
        for when in (instant, in_paris)
    ]
    assert events_[1].occurred_at.utcoffset() == timedelta(0)
    assert Codec().encode(events_[0]).value == Codec().encode(events_[1]).value
    assert b'"occurred_at":"2026-03-01T12:00:00Z"' in Codec().encode(events_[1]).value


def test_derive_gives_the_same_id_for_the_same_cause_and_step() -> None:
    """Re-processing a cause after a crash emits the same ids, so consumers can drop repeats."""
    cause = sample_event("task.submitted")
    first = cause.derive(TaskCancelled(reason="budget"), step="cost-guard.halt", actor=AGENT)
    again = cause.derive(TaskCancelled(reason="budget"), step="cost-guard.halt", actor=AGENT)
    assert first.id == again.id == uuid.uuid5(cause.id, "cost-guard.halt")
    assert first.id == derive_id(cause.id, "cost-guard.halt")
    assert first.id.version == 5


def test_derive_gives_different_ids_for_different_steps_or_causes() -> None:
    cause, other = sample_event("task.submitted"), sample_event("task.submitted")
    payload = TaskCompleted(summary="done")
    ids = {
        cause.derive(payload, step="a", actor=AGENT).id,
        cause.derive(payload, step="b", actor=AGENT).id,
        other.derive(payload, step="a", actor=AGENT).id,
    }
    assert len(ids) == 3


def test_derive_survives_a_round_trip_through_the_log() -> None:
    """A cause decoded from its bytes derives the ids the original derived."""
    codec = Codec()
    cause = sample_event("task.submitted")
    replayed = codec.decode(codec.encode(cause).value)
    step = "super-agent.plan"
    assert (
        replayed.derive(TaskCancelled(), step=step, actor=AGENT).id
        == cause.derive(TaskCancelled(), step=step, actor=AGENT).id
    )


def test_derive_links_the_chain_and_keeps_task_and_tenant() -> None:
    root = sample_event("task.submitted")
    child = root.derive(TaskCompleted(summary="ok"), step="one", actor=AGENT)
    grandchild = child.derive(TaskCancelled(), step="two", actor=SYSTEM)
    assert (child.causation_id, child.correlation_id) == (root.id, root.id)
    assert (grandchild.causation_id, grandchild.correlation_id) == (child.id, root.id)
    assert grandchild.task_id == root.task_id and grandchild.tenant_id == root.tenant_id
    assert grandchild.actor == SYSTEM


def test_the_key_is_the_task_id_or_else_the_tenant() -> None:
    task_event = sample_event("task.submitted")
    tenant_event = Event.new(TaskCancelled(), tenant_id=TENANT, actor=USER)
    assert task_event.key == str(task_event.task_id).encode()
    assert tenant_event.key == TENANT.encode()


def test_position_prints_and_parses_as_partition_colon_offset() -> None:
    position = Position(2, 41)
    assert str(position) == "2:41"
    assert Position.parse("2:41") == position
    assert Position(0, 9) < Position(1, 0) < Position(1, 1)


@pytest.mark.parametrize("text", ["", "3", "a:1", "1:-2", "1:2:3", ":4"])
def test_position_parse_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="PARTITION:OFFSET"):
        Position.parse(text)
