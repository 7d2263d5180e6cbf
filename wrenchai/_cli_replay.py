"""``wrenchai replay``: a task's state as of a point of its log, folded from the archive.

The same state as ``GET /audit/tasks/{task_id}/state`` answers, read from Postgres directly
as the other admin commands read it (no API, no tenant scope): the task's archived events
decoded, decrypted and upcast, folded by the agents' own functions. Nothing is called again.
"""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING

import click

from wrenchai._cli_common import command_settings, run
from wrenchai.settings import Settings

if TYPE_CHECKING:  # the API's modules load when the command runs, not with every command
    from api._task_state import AsOfPoint
    from api.audit_models import TaskState


async def replay_task(settings: Settings, task_id: uuid.UUID, as_of: AsOfPoint | None) -> TaskState:
    """The task's state as of ``as_of`` (its last event when None), whatever its tenant."""
    from api._task_state import fetch_task_records, task_state
    from events import codec_from_settings
    from projections import connect

    conn = await connect(settings)
    try:
        found = await fetch_task_records(conn, settings.topic("events"), None, task_id, as_of)
    finally:
        await conn.close()
    return await task_state(found, codec_from_settings(settings), task_id, as_of)


@click.command()
@click.option("--task", "task_id", type=click.UUID, required=True, help="The task's id.")
@click.option(
    "--as-of",
    "as_of",
    default=None,
    metavar="TIMESTAMP|POSITION",
    help="A log position of the task (PARTITION:OFFSET) or an ISO 8601 time; its last event "
    "when absent.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON (as the API does).")
def replay(task_id: uuid.UUID, as_of: str | None, as_json: bool) -> None:
    """Print a task's state as of a point of its log, folded from the archive."""
    from api._task_state import AsOfPoint

    try:
        point = AsOfPoint.parse(as_of) if as_of is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from exc
    settings = command_settings("replay")

    async def main() -> TaskState:
        try:
            return await replay_task(settings, task_id, point)
        except ValueError as exc:  # a position off the task's partition
            raise click.BadParameter(str(exc), param_hint="--as-of") from exc

    state = run(main)
    if as_json:
        sys.stdout.write(state.model_dump_json(indent=2) + "\n")
    else:
        click.echo(render(state), nl=False)


def render(state: TaskState) -> str:
    """The state as a person reads it: the task, its stages with every attempt, the
    evaluations and what it cost."""
    task, at = state.task, state.as_of
    lines = [
        f"task {state.task_id} (tenant {state.tenant_id})",
        f"as of {at.position}: {at.type} at {at.occurred_at.isoformat()} "
        f"({at.events} event{'s' if at.events != 1 else ''})",
        f"status: {task.status}" + (f"   playbook: {task.playbook}" if task.playbook else ""),
        f"description: {task.description}",
    ]
    if task.roles:
        roles = ", ".join(
            f"{r.name} ({', '.join(t.tool for t in r.tools) or 'no tools'})" for r in task.roles
        )
        lines.append(f"roles: {roles}")
    if task.plan is None:
        lines.append("plan: none yet")
    else:
        lines.append(f"stages ({len(task.plan.stages)}):")
    attempts_of: dict[str, list[str]] = {}
    for a in state.attempts:
        verdict = f"  verdict {a.decision} ({a.quality_score:.2f})" if a.decision else ""
        error = f"  {a.error_code}: {a.error}" if a.error_code else ""
        attempts_of.setdefault(a.stage_id, []).append(
            f"    attempt {a.attempt}  {a.outcome:<9} {a.tool} {a.tool_version}{error}{verdict}"
        )
    for step in state.steps:
        lines.append(f"  {step.stage_id:<16} {step.status:<10} {step.attempts} attempt(s)")
        lines += attempts_of.get(step.stage_id, [])
        lines += [
            f"    recovery of attempt {r.attempt}: {r.action} ({r.category})"
            + (f", carried out as attempt {r.next_attempt}" if r.next_attempt else "")
            for r in step.recoveries
        ]
    if state.evaluations:
        decisions = [e.decision for e in state.evaluations]
        counted = ", ".join(f"{d} {decisions.count(d)}" for d in sorted(set(decisions)))
        lines.append(f"evaluations: {len(decisions)} ({counted})")
    if task.progress is not None:
        p = task.progress
        lines.append(f"progress: {p.stages_done}/{p.stages_total} stages, {p.elapsed_s:.1f} s")
    usage = state.usage
    lines.append(
        f"usage: {usage.tokens} tokens ({usage.execution_tokens} in stages), "
        f"${usage.cost_usd:.4f} in tool calls"
    )
    if task.summary:
        lines.append(f"summary: {task.summary}")
    return "\n".join(lines) + "\n"
