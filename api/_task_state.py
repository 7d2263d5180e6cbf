"""Time travel: a task's state as of a point of its log, folded from the archive.

The task's archived records up to the point are decoded as its history is (decrypted and
upcast by the codec) and folded by :func:`processors.task_state.fold`, the agents' own pure
functions; nothing is read from the read models. The answer is shaped as the read models'
routes answer (``GET /tasks/{id}``, ``/steps``, ``/evaluations``), so the two can be
compared field by field.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from api.audit_models import (
    AgentViews,
    AsOf,
    AttemptState,
    AwaitedVerdict,
    InspectorView,
    JourneyView,
    PlannerView,
    StageView,
    TaskSnapshot,
    TaskState,
    Usage,
)
from api.inspection_models import Check, Evaluation, Prior
from api.models import (
    Plan,
    PlanStage,
    Progress,
    Recovery,
    RoleTool,
    Step,
    StepDetail,
    StepError,
    TaskRole,
    ToolCall,
)
from events import (
    Codec,
    PlanCreated,
    Position,
    RolesAssigned,
    TaskSubmitted,
    ToolsAllocated,
    submitted_playbook,
)
from projections import headers_from_json

# The tasks read model's own rule for a task's playbook, so the two cannot drift apart.
from wrenchai.errors import WrenchError

if TYPE_CHECKING:
    from processors import task_state as fold_module


@dataclass(frozen=True)
class AsOfPoint:
    """Where to stop folding: a log position of the task's partition, or a time (the
    longest run of the task's events, in log order, that occurred at or before it)."""

    position: Position | None = None
    at: datetime | None = None

    def __str__(self) -> str:
        return str(self.position) if self.position is not None else f"{self.at:%Y-%m-%dT%H:%M:%S%z}"

    @classmethod
    def parse(cls, text: str) -> AsOfPoint:
        """``PARTITION:OFFSET`` or an ISO 8601 time (UTC when it names no offset);
        ValueError says what was wrong."""
        if ":" in text and text.replace(":", "").isdigit():
            return cls(position=Position.parse(text))
        try:
            at = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(
                f"as_of is a log position (PARTITION:OFFSET, e.g. 2:41) or an ISO 8601 time "
                f"(e.g. 2026-03-01T12:00:00Z), not {text!r}"
            ) from exc
        return cls(at=at if at.tzinfo is not None else at.replace(tzinfo=UTC))


@dataclass(frozen=True)
class TaskRecords:
    """The task's archived records up to the point asked, and its first record's place."""

    records: list[asyncpg.Record]
    partition: int | None
    first: asyncpg.Record | None


async def fetch_task_records(
    conn: asyncpg.Connection,
    topic: str,
    tenant_id: str | None,
    task_id: uuid.UUID,
    as_of: AsOfPoint | None,
) -> TaskRecords:
    """The task's applied records in log order (a task's events share one partition), up
    to ``as_of``; ``partition`` and ``first`` describe all of them, also those after it.
    ``tenant_id`` None reads any tenant's (the admin commands, as the owner)."""
    rows = await conn.fetch(
        """SELECT partition, "offset", occurred_at, raw_value, raw_headers FROM event_log
           WHERE task_id = $1 AND ($2::text IS NULL OR tenant_id = $2) AND topic = $3
             AND status = 'applied'
           ORDER BY partition, "offset"
        """,
        task_id,
        tenant_id,
        topic,
    )
    if not rows:
        return TaskRecords([], None, None)
    kept = list(rows)
    if as_of is not None and as_of.position is not None:
        kept = [r for r in rows if (r["partition"], r["offset"]) <= _key(as_of.position)]
    elif as_of is not None and as_of.at is not None:
        later = next((i for i, r in enumerate(rows) if r["occurred_at"] > as_of.at), len(rows))
        kept = kept[:later]
    return TaskRecords(kept, rows[0]["partition"], rows[0])


def _key(position: Position) -> tuple[int, int]:
    return position.partition, position.offset


async def fold_records(codec: Codec, records: Sequence[asyncpg.Record]) -> fold_module.TaskState:
    """The records decoded as the history is, folded by the agents' functions."""
    # Imported here: the agents' cores bring the quality model's numerics along, which the
    # API needs only when someone travels in time.
    from processors.task_state import Logged, fold

    await codec.prepare_records(r["raw_value"] for r in records)
    return fold(
        Logged(
            codec.decode(r["raw_value"], headers_from_json(list(r["raw_headers"]))),
            Position(r["partition"], r["offset"]),
        )
        for r in records
    )


def task_state_body(state: fold_module.TaskState) -> TaskState | None:
    """The answer for a folded state; None when no task.submitted was folded (the task
    did not exist yet as of that point)."""
    if state.submitted is None or state.last is None:
        return None
    submitted = state.submitted.payload
    assert isinstance(submitted, TaskSubmitted)
    last = state.last
    steps = _steps(state)
    plan = _plan(state)
    snapshot = TaskSnapshot(
        task_id=state.submitted.task_id,
        tenant_id=state.submitted.tenant_id,
        description=submitted.description,
        constraints=submitted.constraints,
        timeout=submitted.timeout,
        status=state.status,
        created_at=state.submitted.occurred_at,
        playbook=(plan.playbook if plan is not None else None)
        or submitted_playbook(submitted.constraints),
        roles=_roles(state),
        plan=plan,
        steps=[
            Step.model_validate(s.model_dump(exclude={"tool_calls", "recoveries"})) for s in steps
        ],
        progress=_progress(state),
        summary=state.summary,
        output=state.output if state.status == "completed" else None,
    )
    return TaskState(
        task_id=snapshot.task_id,
        tenant_id=snapshot.tenant_id,
        as_of=AsOf(
            position=str(last.position),
            event_id=last.event.id,
            type=last.event.type,
            occurred_at=last.event.occurred_at,
            events=state.events,
        ),
        task=snapshot,
        steps=steps,
        evaluations=_evaluations(state),
        attempts=_attempts(state),
        usage=Usage(
            tokens=state.inspection.watch.tokens if state.inspection.watch else 0,
            execution_tokens=state.journey.tokens,
            cost_usd=state.journey.cost_usd,
        ),
        agents=_agents(state),
    )


def _roles(state: fold_module.TaskState) -> list[TaskRole]:
    if state.roles is None:
        return []
    assigned = state.roles.payload
    assert isinstance(assigned, RolesAssigned)
    # As the read model keys them: (role, ordinal) within the first tools.allocated.
    tools: dict[tuple[str, int], RoleTool] = {}
    allocation = state.allocation.payload if state.allocation is not None else None
    if isinstance(allocation, ToolsAllocated):
        for role in allocation.roles:
            for i, t in enumerate(role.tools):
                tools.setdefault(
                    (role.role, i),
                    RoleTool(
                        tool=t.tool,
                        version=t.version,
                        need=t.need,
                        reliability=t.reliability,
                        score=t.score,
                        alternatives=list(t.alternatives),
                    ),
                )
    return [
        TaskRole(
            name=r.name,
            reason=r.reason,
            score=r.score,
            depends_on=list(r.depends_on),
            tools=[tool for (role, _), tool in sorted(tools.items()) if role == r.name],
        )
        for r in assigned.roles
    ]


def _plan(state: fold_module.TaskState) -> Plan | None:
    event = state.journey.plan
    if event is None:
        return None
    plan = event.payload
    assert isinstance(plan, PlanCreated)
    return Plan(
        playbook=plan.playbook,
        stages=[
            PlanStage(
                **stage.model_dump(exclude={"estimate", "fallbacks"}),
                estimate=stage.estimate,
                fallbacks=list(stage.fallbacks),
                status=state.stage_status(stage.id),
            )
            for stage in plan.stages
        ],
        total=plan.total,
        critical_path_seconds=plan.critical_path_seconds,
        created_at=event.occurred_at,
    )


def _steps(state: fold_module.TaskState) -> list[StepDetail]:
    steps = []
    for sid, run in state.journey.stages.items():
        current = state.attempt(sid, run.attempt)
        completed = state.last_completed(sid)
        failed = state.last_failed(sid)
        error = failed.error if failed is not None else None
        steps.append(
            StepDetail(
                stage_id=sid,
                role=run.stage.role,
                optional=run.stage.optional,
                status=state.stage_status(sid),
                attempts=run.attempt,
                tool=current.tool if current else None,
                tool_version=current.tool_version if current else None,
                model=current.model if current else None,
                started_at=run.started_at,
                completed_at=completed.ended_at if completed else None,
                duration_s=completed.duration_s if completed else None,
                error=StepError(code=error.code, message=error.message, category=error.category)
                if error is not None
                else None,
                tool_calls=[
                    ToolCall(
                        attempt=c.payload.attempt,
                        tool=c.payload.tool,
                        version=c.payload.version,
                        outcome=c.payload.outcome,
                        duration_s=c.payload.duration_s,
                        cached=c.payload.cached,
                        error_code=c.payload.error.code if c.payload.error else None,
                        cost_usd=c.payload.cost_usd,
                        occurred_at=c.occurred_at,
                        position=str(c.position),
                    )
                    for c in state.tool_calls
                    if c.payload.stage_id == sid
                ],
                recoveries=[
                    Recovery(
                        attempt=r.planned.attempt,
                        category=r.planned.category,
                        action=r.planned.action,
                        reason=r.planned.reason,
                        delay_s=r.planned.delay_s,
                        tool=r.planned.tool,
                        model=r.planned.model,
                        suggestion=r.planned.suggestion,
                        planned_at=r.planned_at,
                        executed=r.executed_at is not None,
                        executed_at=r.executed_at,
                        next_attempt=r.executed.next_attempt if r.executed else None,
                    )
                    for (stage, _), r in sorted(state.recoveries.items())
                    if stage == sid
                ],
            )
        )
    return steps


def _progress(state: fold_module.TaskState) -> Progress | None:
    if state.progress is None:
        return None
    p = state.progress.payload
    return Progress(
        stages_done=p.stages_done,
        stages_total=p.stages_total,
        elapsed_s=p.elapsed_s,
        estimated_s=p.estimated_s,
        tokens=p.tokens,
        cost_usd=p.cost_usd,
    )


def _evaluations(state: fold_module.TaskState) -> list[Evaluation]:
    return [
        Evaluation(
            stage_id=e.payload.stage_id,
            attempt=e.payload.attempt,
            role=e.payload.role,
            tool=e.payload.tool,
            model=e.payload.model,
            checks=[Check(name=c.name, passed=c.passed, detail=c.detail) for c in e.payload.checks],
            prior=Prior(
                alpha=e.payload.prior_alpha,
                beta=e.payload.prior_beta,
                source=e.payload.prior_source,
            ),
            quality_score=e.payload.quality_score,
            interval=list(e.payload.interval),
            confidence=e.payload.confidence,
            threshold=e.payload.threshold,
            decision=e.payload.decision,
            reason=e.payload.reason,
            suggestions=list(e.payload.suggestions),
            occurred_at=e.occurred_at,
            position=str(e.position),
        )
        for e in state.evaluations
    ]


def _attempts(state: fold_module.TaskState) -> list[AttemptState]:
    cost: dict[tuple[str, int], float] = {}
    for call in state.tool_calls:
        key = (call.payload.stage_id, call.payload.attempt)
        cost[key] = cost.get(key, 0.0) + call.payload.cost_usd
    return [
        AttemptState(
            stage_id=a.stage_id,
            attempt=a.attempt,
            tool=a.tool,
            tool_version=a.tool_version,
            model=a.model,
            suggestions=list(a.suggestions),
            started_at=a.started_at,
            outcome=a.outcome,
            ended_at=a.ended_at,
            duration_s=a.duration_s,
            error_code=a.error.code if a.error else None,
            error=a.error.message if a.error else None,
            decision=a.decision,
            quality_score=a.quality_score,
            cost_usd=cost.get((a.stage_id, a.attempt), 0.0),
            position=str(a.position),
        )
        for a in state.attempts.values()
    ]


def _agents(state: fold_module.TaskState) -> AgentViews:
    journey, inspection = state.journey, state.inspection
    watch = inspection.watch
    return AgentViews(
        planner=PlannerView(planned=state.planner.planned, closed=state.planner.closed),
        journey=JourneyView(
            stages=[
                StageView(
                    stage_id=sid,
                    status=run.status,
                    attempt=run.attempt,
                    tool=run.tool,
                    model=run.model,
                    accepted=run.accepted,
                    retries=run.retries,
                    recovery=run.recovery.action if run.recovery is not None else None,
                )
                for sid, run in journey.stages.items()
            ],
            settled=journey.settled,
            reported=journey.reported,
        ),
        inspector=InspectorView(
            awaiting=[
                AwaitedVerdict(stage_id=s, attempt=a) for s, a in sorted(inspection.completed)
            ],
            judged=len(inspection.judged),
            open_alerts=dict(watch.alerts.open) if watch else {},
            failed_attempts=len(watch.failed_attempts) if watch else 0,
            retries=len(watch.retries) if watch else 0,
            tokens=watch.tokens if watch else 0,
            last_event_at=watch.last_event_at if watch else None,
        ),
    )


class NoTaskState(WrenchError):
    """The archive holds no event of the task (in the caller's tenant), or none up to the
    point asked: the task did not exist then."""

    code = "TASK_NOT_FOUND"


async def task_state(
    found: TaskRecords, codec: Codec, task_id: uuid.UUID, as_of: AsOfPoint | None
) -> TaskState:
    """The state of the task whose records were ``found`` as of ``as_of``. ValueError for a
    position off the task's partition; NoTaskState when there is no state to give."""
    if found.first is None:
        raise NoTaskState(f"no task {task_id} in the archive", task_id=str(task_id))
    if as_of is not None and as_of.position is not None:
        if as_of.position.partition != found.partition:
            raise ValueError(
                f"task {task_id} is on partition {found.partition}, not "
                f"{as_of.position.partition}: pass a position of its history"
            )
    state = task_state_body(await fold_records(codec, found.records))
    if state is None:
        first = found.first
        raise NoTaskState(
            f"task {task_id} had not been submitted as of {as_of}; its log starts at "
            f"{Position(first['partition'], first['offset'])}, "
            f"{first['occurred_at'].isoformat()}",
            task_id=str(task_id),
            first_position=str(Position(first["partition"], first["offset"])),
            first_occurred_at=first["occurred_at"].isoformat(),
        )
    return state
