"""The pure mapping from a task's events to OpenTelemetry spans (processors.tracing.spans)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from events import Event, TaskFailed
from processors.tracing.spans import Traces, nanos, span_id, trace_id
from tests.processors.tracing.story import SECRET, SUPER, at, task_events

RESOURCE = Resource({"service.name": "wrenchai"})


def fold(events: Iterable[Event], traces: Traces | None = None) -> list[ReadableSpan]:
    traces = traces or Traces(RESOURCE)
    return [span for event in events for span in traces.fold(event)]


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    """Each name's first span."""
    named: dict[str, ReadableSpan] = {}
    for span in spans:
        named.setdefault(span.name, span)
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def own_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_a_task_is_one_trace_of_its_task_id_with_the_root_ending_at_its_end() -> None:
    """Every span of a task carries the task id's 128 bits as trace id; the root runs from
    task.submitted to task.completed and is the only span without a parent."""
    events = task_events()
    task_id = events[0].task_id
    assert task_id is not None
    spans = fold(events)
    assert {span.context.trace_id for span in spans if span.context} == {task_id.int}
    assert trace_id(task_id) == task_id.int
    root = by_name(spans)["task"]
    assert [s.name for s in spans if s.parent is None] == ["task"]
    assert (root.start_time, root.end_time) == (nanos(events[0].occurred_at), nanos(at(9.0)))
    assert root.attributes is not None
    assert root.attributes["wrench.status"] == "completed"
    assert root.attributes["wrench.task_id"] == str(task_id)
    assert root.attributes["wrench.tenant_id"] == "acme"
    assert [e.name for e in root.events] == ["alert.raised"]


def test_planning_stages_steps_and_tools_nest_as_the_task_ran() -> None:
    """planning and each stage hang under the task, each attempt under its stage, each tool
    call under its attempt; times are the events' own."""
    every = fold(task_events())
    spans = by_name(every)
    root = own_id(spans["task"])
    assert parent_of(spans["planning"]) == root
    assert [e.name for e in spans["planning"].events] == ["roles.assigned"]
    assert (spans["planning"].start_time, spans["planning"].end_time) == (
        nanos(at(0)),
        nanos(at(2)),
    )
    for stage in ("draft", "polish"):
        assert parent_of(spans[f"stage {stage}"]) == root
    draft = own_id(spans["stage draft"])
    assert parent_of(spans["step draft #1"]) == draft
    assert parent_of(spans["step draft #2"]) == draft
    # The draft stage runs from its first attempt to the end of its last.
    assert spans["stage draft"].start_time == nanos(at(3.0))
    assert spans["stage draft"].end_time == nanos(at(6.6))
    step = spans["step draft #1"]
    assert (step.start_time, step.end_time) == (nanos(at(3.0)), nanos(at(4.2)))
    tools = [s for s in every if s.name == "tool llm.complete"]
    assert [parent_of(t) for t in tools] == [
        own_id(spans["step draft #1"]),
        own_id(spans["step draft #2"]),
    ]
    assert (tools[0].start_time, tools[0].end_time) == (nanos(at(3.1)), nanos(at(4.0)))
    assert parent_of(spans["tool text.format"]) == own_id(spans["step polish #1"])


def test_failures_are_errors_and_a_skipped_stage_says_so() -> None:
    """A failed attempt and its tool call have status ERROR with the error code; the stage
    whose failure was skipped ends as skipped, its recovery as span events."""
    spans = fold(task_events())
    named = {s.name: s for s in spans}
    failed = named["step draft #2"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "TOOL_TIMEOUT"
    assert failed.attributes is not None and failed.attributes["error.type"] == "TOOL_TIMEOUT"
    failed_tool = [s for s in spans if s.name == "tool llm.complete"][1]
    assert failed_tool.status.status_code is StatusCode.ERROR
    stage = named["stage draft"]
    assert stage.attributes is not None and stage.attributes["wrench.outcome"] == "skipped"
    assert stage.attributes["wrench.attempts"] == 2
    assert [e.name for e in stage.events] == ["recovery.planned", "recovery.executed"]
    assert named["step draft #1"].status.status_code is StatusCode.UNSET


def test_llm_calls_carry_model_tokens_cost_and_hang_under_what_made_them() -> None:
    """usage.recorded is a CLIENT span with the model, provider, tokens by kind, cost and
    source: a tool's call takes the tool call's bounds, under it; planning's and the
    judge's are instants under the planning and the evaluation."""
    spans = fold(task_events())
    named = by_name(spans)
    chats = [s for s in spans if s.name.startswith("chat ")]
    planning_call, execute_call, judge_call = chats
    tool = next(s for s in spans if s.name == "tool llm.complete")
    assert parent_of(planning_call) == own_id(named["planning"])
    assert planning_call.start_time == planning_call.end_time == nanos(at(1.0))
    assert parent_of(execute_call) == own_id(tool)
    assert (execute_call.start_time, execute_call.end_time) == (tool.start_time, tool.end_time)
    assert parent_of(judge_call) == own_id(named["evaluation draft #1"])
    assert judge_call.name == "chat judge-y"
    attributes = execute_call.attributes
    assert attributes is not None
    assert execute_call.kind is SpanKind.CLIENT
    assert attributes["gen_ai.request.model"] == "gpt-x"
    assert attributes["gen_ai.provider.name"] == "api.example.test"
    assert attributes["gen_ai.usage.input_tokens"] == 120
    assert attributes["gen_ai.usage.output_tokens"] == 30
    assert attributes["wrench.usage.cached_tokens"] == 20
    assert attributes["wrench.usage.reasoning_tokens"] == 5
    assert attributes["wrench.cost_usd"] == 0.0042
    assert attributes["wrench.usage.source"] == "provider"
    assert attributes["wrench.timing"] == "tool_call"


def test_an_evaluation_spans_from_the_attempt_it_judged_to_its_verdict() -> None:
    """evaluation.recorded runs from the judged attempt's end, under the stage, with the
    verdict's figures."""
    named = {s.name: s for s in fold(task_events())}
    verdict = named["evaluation draft #1"]
    assert parent_of(verdict) == own_id(named["stage draft"])
    assert (verdict.start_time, verdict.end_time) == (nanos(at(4.2)), nanos(at(5.0)))
    assert verdict.attributes is not None
    assert verdict.attributes["wrench.decision"] == "retry"
    assert verdict.attributes["wrench.quality_score"] == 0.5
    assert verdict.attributes["wrench.checks.failed"] == 1


def test_span_ids_are_the_same_on_a_replay_and_a_repeat_ends_nothing() -> None:
    """Folding the same log again gives the same ids and times (a receiver can drop the
    repeats); an event read twice while its task is in flight makes no second span."""
    events = task_events()
    first = fold(events)
    again = fold(events)
    assert [(own_id(s), s.start_time, s.end_time) for s in first] == [
        (own_id(s), s.start_time, s.end_time) for s in again
    ]
    doubled = [e for event in events for e in (event, event)]
    assert len(fold(doubled)) == len(first)
    assert len({own_id(s) for s in first}) == len(first)
    task_id = events[0].task_id
    assert task_id is not None
    assert own_id(by_name(first)["task"]) == span_id(task_id, "task")


def test_no_span_carries_user_content() -> None:
    """Prompts, tool inputs, results and outputs never reach a span, even unencrypted."""
    for span in fold(task_events()):
        values = [*(span.attributes or {}).values()]
        values += [v for e in span.events for v in (e.attributes or {}).values()]
        assert not any(SECRET in str(value) for value in values), span.name


def test_a_task_ended_in_planning_closes_its_planning_span_as_an_error() -> None:
    """task.failed before any plan: the planning span ends with the task, both ERROR with
    the failure's reason."""
    submitted = task_events()[0]
    failed = submitted.derive(
        TaskFailed(reason="PLANNING_FAILED", message="no role fits"),
        step="task.failed",
        actor=SUPER,
        occurred_at=at(1.5),
    )
    spans = by_name(fold([submitted, failed]))
    assert set(spans) == {"task", "planning"}
    for span in spans.values():
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "PLANNING_FAILED"
        assert span.end_time == nanos(at(1.5))


def test_without_the_submission_only_whole_spans_come_out() -> None:
    """Events of a task whose task.submitted was never read still give their steps, tool
    and LLM calls, timed by their durations; no root, planning or stage span."""
    events = task_events()[4:]  # from step.started of draft #1 on
    traces = Traces(RESOURCE)
    spans = fold(events, traces)
    names = {s.name for s in spans}
    assert "task" not in names and not any(n.startswith("stage") for n in names)
    assert {"step draft #1", "tool llm.complete", "chat gpt-x"} <= names
    assert traces.tasks == {}


def test_tasks_in_flight_are_bounded_and_ended_tasks_leave_memory() -> None:
    """Past max_open the oldest task in flight is let go; a task that ends is forgotten,
    and a late repeat of its task.submitted does not bring it back."""
    traces = Traces(RESOURCE, max_open=2)
    firsts = [task_events(uuid.uuid4())[0] for _ in range(3)]
    for event in firsts:
        traces.fold(event)
    assert list(traces.tasks) == [e.task_id for e in firsts[1:]]
    assert traces.dropped == 1
    whole = task_events()
    fold(whole, traces)
    assert whole[0].task_id not in traces.tasks
    traces.fold(whole[0])
    assert whole[0].task_id not in traces.tasks
