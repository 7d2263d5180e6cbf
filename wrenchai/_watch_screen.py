"""The screen of ``wrenchai watch``: a rich renderable drawn from a folded
:class:`~wrenchai._watch_view.WatchView` (pure: the same view draws the same screen, so it is
tested by printing to a recording console)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from wrenchai._watch_view import Stage, WatchView

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "recovering": "yellow",
    "skipped": "dim",
    "pending": "dim",
}


def render(view: WatchView, connection: str | None = None) -> RenderableType:
    """The watch screen for ``view`` (pure: the same view draws the same screen)."""
    status = Text(view.status, style=_STATUS_STYLE.get(view.status, "bold"))
    header = Text.assemble(("task ", "bold"), view.task_id, "  ", status)
    if view.playbook:
        header.append(f"  playbook {view.playbook}", style="dim")
    parts: list[RenderableType] = [header]
    if view.description:
        parts.append(Text(_short(view.description, 200), style="italic"))
    parts.append(_stages(view.stages) if view.stages else Text("waiting for a plan…", "dim"))
    running = view.running
    if running:
        now = ", ".join(f"{s.id} → {s.tool} (attempt {s.attempt})" for s in running)
        parts.append(Text(f"now: {now}"))
    parts.append(Text(_totals(view)))
    if view.evaluations:
        parts.append(_evaluations(view))
    for alert in view.alerts:
        style = "dim" if alert.cleared else "red" if alert.level == "critical" else "yellow"
        state = " (cleared)" if alert.cleared else " (acknowledged)" if alert.acknowledged else ""
        parts.append(Text(f"alert {alert.level} {alert.code}{state}: {alert.message}", style))
    if view.outcome and view.exit_status is not None:
        parts.append(Text(f"{view.status}: {view.outcome}", _STATUS_STYLE[view.status]))
    if connection:
        parts.append(Text(connection, style="yellow"))
    return Group(*parts)


def _stages(stages: tuple[Stage, ...]) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("stage", "role", "tool", "progress", "status", "try", "quality"):
        table.add_column(column)
    for stage in stages:
        quality = ""
        if stage.score is not None and stage.interval is not None:
            low, high = stage.interval
            quality = f"{stage.score:.2f} [{low:.2f}, {high:.2f}] {stage.decision or ''}"
        status = stage.status + (f" ({stage.error})" if stage.error else "")
        table.add_row(
            stage.id,
            stage.role,
            stage.tool,
            ProgressBar(total=1.0, completed=stage.fraction, width=24),
            Text(status, style=_STATUS_STYLE.get(stage.status, "")),
            str(stage.attempt or ""),
            quality,
        )
    return table


def _totals(view: WatchView) -> str:
    tokens = f"tokens {view.tokens:,}"
    if view.estimated_tokens:
        tokens += f" of ~{view.estimated_tokens:,}"
    cost = f"cost ${view.cost_usd:.4f}"
    if view.estimated_cost_usd:
        cost += f" of ~${view.estimated_cost_usd:.4f}"
    elapsed = f"  elapsed {view.elapsed_s:.1f} s" if view.elapsed_s is not None else ""
    return f"{tokens}  {cost}  attempts {view.attempts}  events {view.events}{elapsed}"


def _evaluations(view: WatchView) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    for column in ("evaluated", "try", "score", "90% interval", "confidence", "decision"):
        table.add_column(column)
    for verdict in view.evaluations[-5:]:
        low, high = verdict.interval
        table.add_row(
            verdict.stage_id,
            str(verdict.attempt),
            f"{verdict.score:.2f}",
            f"[{low:.2f}, {high:.2f}]",
            f"{verdict.confidence:.2f}" if verdict.confidence is not None else "",
            verdict.decision,
        )
    return table


def _short(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
