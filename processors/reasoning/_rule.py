"""The offline reasoner: deterministic rules, no network, no LLM, and thoughts that say why.

- Roles: each catalog role is scored by the capability keywords the task mentions and by
  the TF-IDF cosine similarity of the task with the role's name, description and
  capabilities; the roles at or above :data:`ROLE_THRESHOLD` are proposed (the best one
  at least). Their dependencies are added later, by ``validate_role_assignment``.
- Plans: the task's own ``constraints.playbook`` when it has one; otherwise the shipped
  template closest to the task, among those whose every tool works offline.
- Evaluation: the output is not empty, fits in an event, and mentions each criterion.
- Errors: classified by patterns in the error's code and message.

The same input always gives the same :class:`Reasoned` answer; ``usage`` is always empty.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from processors.reasoning import _tfidf
from processors.reasoning._llm import OnThought
from processors.reasoning._protocol import (
    CriterionFinding,
    ErrorAnalysis,
    ErrorCategory,
    Evaluation,
    PlanProposal,
    RoleProposal,
    RoleScore,
    TaskBrief,
    proposed_playbook,
)
from processors.reasoning._types import Reasoned, Thought
from processors.shared.playbook import Playbook, PlaybookError, load_playbook, playbook_roles
from processors.shared.roles import RoleCatalog, RoleSpec
from processors.tools.registry import PlanningError, ToolRegistry

T = TypeVar("T", bound=BaseModel)

ROLE_THRESHOLD = 0.25
"""A role whose score reaches this is proposed."""
KEYWORD_WEIGHT = 0.5
"""Share of a role's score that comes from capability keywords; the rest is TF-IDF."""
KEYWORDS_FOR_FULL_MATCH = 2
"""Distinct capability keywords a task must mention for the keyword part to be full."""
ROLE_FIT_WEIGHT = 0.25
"""Weight of the share of a playbook's roles that the task was given."""
MAX_OUTPUT_CHARS = 200_000
"""Longest output (as text) that passes evaluation: it must still fit in an event."""

# First category with a matching pattern wins, so the order matters: an over-budget 429
# is a budget problem, and a timeout inside a tool is transient, not a tool error.
_ERROR_PATTERNS: tuple[tuple[ErrorCategory, tuple[str, ...]], ...] = (
    ("budget", (r"budget", r"insufficient_quota", r"cost.limit", r"spend.limit")),
    (
        "transient",
        (
            r"time(d)?.?out",
            r"\b429\b",
            r"rate.limit",
            r"\b50[234]\b",
            r"connection",
            r"temporar",
            r"unavailable",
            r"overloaded",
            r"try again",
        ),
    ),
    (
        "invalid_output",
        (r"invalid.output", r"validation", r"schema", r"malformed", r"invalid json", r"jsondecode"),
    ),
    (
        "fatal",
        (
            r"permission denied",
            r"forbidden",
            r"unauthori[sz]ed",
            r"\b40[13]\b",
            r"not.found",
            r"unknown.tool",
            r"invalid.input",
            r"cycle",
        ),
    ),
    ("tool_error", (r"exit.code", r"traceback", r"exception", r"tool.error", r"stderr")),
)
_ADVICE: dict[ErrorCategory, tuple[bool, str]] = {
    "transient": (True, "retry after an exponential backoff; the failure is likely to pass"),
    "tool_error": (True, "retry once, then fall back to an alternate tool for the stage"),
    "invalid_output": (
        True,
        "retry with the validation errors in the prompt, or fall back to an alternate model",
    ),
    "budget": (False, "stop the stage or raise the task's budget; a retry spends more"),
    "fatal": (False, "do not retry; escalate to the user with the error"),
}


async def _reasoned(result: T, texts: Sequence[str], on_thought: OnThought | None) -> Reasoned[T]:
    """``result`` with ``texts`` as thoughts numbered from 1, each handed to ``on_thought``."""
    thoughts = [
        Thought(number=n, text=text, next_thought_needed=n < len(texts))
        for n, text in enumerate(texts, start=1)
    ]
    if on_thought is not None:
        for thought in thoughts:
            await on_thought(thought)
    return Reasoned(result=result, thoughts=thoughts, usage=[])


def _quoted(items: Sequence[str]) -> str:
    return ", ".join(f"'{item}'" for item in items)


def score_roles(description: str, catalog: RoleCatalog) -> list[tuple[RoleScore, float]]:
    """Every catalog role scored against ``description``, with its TF-IDF part, by name."""
    documents = {
        role.name: " ".join([role.name, role.description, *role.capabilities])
        for role in catalog.roles.values()
    }
    similarity = _tfidf.similarities(description, documents)
    task_stems = set(_tfidf.stems(description))
    scored: list[tuple[RoleScore, float]] = []
    for name in catalog.names():
        role = catalog.roles[name]
        matched: list[str] = []
        matched_stems: set[str] = set()
        for keyword in [role.name, *role.capabilities]:
            keyword_stems = set(_tfidf.stems(keyword))
            if keyword_stems and keyword_stems <= task_stems:
                matched.append(keyword)
                matched_stems |= keyword_stems
        keywords = min(1.0, len(matched_stems) / KEYWORDS_FOR_FULL_MATCH)
        cosine = similarity[name]
        score = round(KEYWORD_WEIGHT * keywords + (1 - KEYWORD_WEIGHT) * cosine, 4)
        why = f"matched {_quoted(matched)}" if matched else "no capability keyword matched"
        reason = f"tf-idf {cosine:.2f}, {why}"
        scored.append((RoleScore(role=name, score=score, reason=reason), cosine))
    return scored


def _playbook_document(playbook: Playbook) -> str:
    parts = [playbook.name, playbook.description]
    for step in playbook.steps:
        parts += [step.id, step.tool, step.role or "", *step.success_criteria]
    return " ".join(parts)


def _online_tools(playbook: Playbook, registry: ToolRegistry) -> list[str]:
    """The steps' tools that need a network or an LLM, or are not registered at all."""
    found: list[str] = []
    for step in playbook.steps:
        try:
            spec = registry.get(step.tool)
        except PlanningError:
            found.append(f"{step.tool} (not registered)")
            continue
        if not spec.offline or spec.uses_llm:
            found.append(step.tool)
    return found


def classify_error(error: Mapping[str, Any]) -> tuple[ErrorCategory, str | None]:
    """The category of ``error`` and the text that decided it (None: nothing matched)."""
    text = json.dumps(error, sort_keys=True, default=str).lower()
    for category, patterns in _ERROR_PATTERNS:
        for pattern in patterns:
            match = re.search(pattern, text)
            if match:
                return category, match.group(0)
    return "fatal", None


def check_output(criteria: Sequence[str], output: Any) -> list[CriterionFinding]:
    """The rule reasoner's findings on an output: it is not empty, it fits in an event, and
    at least half of each criterion's content words (by stem) appear in it."""
    text = output if isinstance(output, str) else json.dumps(output, sort_keys=True, default=str)
    empty = output is None or not text.strip() or output in ({}, [])
    findings = [
        CriterionFinding(
            criterion="the output is not empty",
            met=not empty,
            detail="empty output" if empty else f"{len(text)} characters",
        ),
        CriterionFinding(
            criterion=f"the output is at most {MAX_OUTPUT_CHARS} characters",
            met=len(text) <= MAX_OUTPUT_CHARS,
            detail=f"{len(text)} characters",
        ),
    ]
    present = set(_tfidf.stems(text))
    for criterion in criteria:
        keywords = list(dict.fromkeys(_tfidf.words(criterion)))
        found = [word for word in keywords if _tfidf.stem(word) in present]
        missing = [word for word in keywords if word not in found]
        needed = math.ceil(len(keywords) / 2)
        detail = (
            f"found {_quoted(found) or 'none'}; missing {_quoted(missing) or 'none'}"
            if keywords
            else "no keywords to check"
        )
        findings.append(
            CriterionFinding(criterion=criterion, met=len(found) >= needed, detail=detail)
        )
    return findings


class RuleReasoner:
    """The offline :class:`~processors.reasoning.Reasoner`: deterministic, no network."""

    async def assign_roles(
        self, task: TaskBrief, catalog: RoleCatalog, *, on_thought: OnThought | None = None
    ) -> Reasoned[RoleProposal]:
        """Roles at or above ROLE_THRESHOLD (the best one at least), best first."""
        scored = score_roles(task.description, catalog)
        texts = [f"{item.role}: {item.score:.2f} — {item.reason}" for item, _ in scored]
        ranked = sorted((item for item, _ in scored), key=lambda i: (-i.score, i.role))
        chosen = [item for item in ranked if item.score >= ROLE_THRESHOLD] or ranked[:1]
        names = ", ".join(item.role for item in chosen)
        if chosen[0].score >= ROLE_THRESHOLD:
            texts.append(
                f"Proposing {names}: score {ROLE_THRESHOLD:.2f} or more; the roles they depend "
                "on are added when the assignment is validated."
            )
        else:
            texts.append(f"No role reaches {ROLE_THRESHOLD:.2f}; proposing the best one, {names}.")
        return await _reasoned(RoleProposal(roles=chosen), texts, on_thought)

    async def plan(
        self,
        task: TaskBrief,
        roles: list[RoleSpec],
        registry: ToolRegistry,
        playbooks: Mapping[str, Playbook],
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[PlanProposal]:
        """The task's constraints.playbook, or the closest offline template."""
        own = task.constraints.get("playbook")
        inputs = task.constraints.get("playbook_inputs") or {}
        if not isinstance(inputs, Mapping):
            raise PlaybookError(
                "INVALID_PLAYBOOK",
                f"constraints.playbook_inputs must be an object, not {type(inputs).__name__}",
            )
        if isinstance(own, str):
            proposal = PlanProposal(
                playbook=own, inputs=dict(inputs), reason="the task's constraints.playbook"
            )
            proposed_playbook(proposal, playbooks)  # an unknown name fails here, clearly
            text = f"The task names playbook {own} in constraints.playbook; using it."
            return await _reasoned(proposal, [text], on_thought)
        if own is not None:
            inline = load_playbook(own, inputs=inputs)
            proposal = PlanProposal(inline=inline, reason="the task's own inline playbook")
            text = (
                f"The task brings its own playbook {inline.name} with {len(inline.steps)} "
                "steps in constraints.playbook; using it."
            )
            return await _reasoned(proposal, [text], on_thought)
        return await self._choose_template(task, roles, registry, playbooks, on_thought)

    async def _choose_template(
        self,
        task: TaskBrief,
        roles: list[RoleSpec],
        registry: ToolRegistry,
        playbooks: Mapping[str, Playbook],
        on_thought: OnThought | None,
    ) -> Reasoned[PlanProposal]:
        texts: list[str] = []
        offline: dict[str, Playbook] = {}
        for name in sorted(playbooks):
            online = _online_tools(playbooks[name], registry)
            if online:
                texts.append(f"{name}: left out, it needs {', '.join(online)}.")
            else:
                offline[name] = playbooks[name]
        if not offline:
            raise PlaybookError(
                "PLAYBOOK_NOT_FOUND",
                "no playbook template runs with offline tools only; give the task a "
                "constraints.playbook or configure an LLM reasoner",
                playbooks=sorted(playbooks),
            )
        documents = {name: _playbook_document(pb) for name, pb in offline.items()}
        similarity = _tfidf.similarities(task.description, documents)
        given = {role.name for role in roles}
        scores: dict[str, float] = {}
        for name, playbook in offline.items():
            needed = playbook_roles(playbook)
            fit = len(given & set(needed)) / len(needed) if needed else 0.0
            scores[name] = round(similarity[name] + ROLE_FIT_WEIGHT * fit, 4)
            texts.append(
                f"{name}: {scores[name]:.2f} — tf-idf {similarity[name]:.2f}, the task has "
                f"{len(given & set(needed))} of its {len(needed)} roles"
            )
        best = min(scores, key=lambda name: (-scores[name], name))
        reason = f"closest offline template to the task (score {scores[best]:.2f})"
        texts.append(f"Choosing {best}: the {reason}, with its default inputs.")
        return await _reasoned(PlanProposal(playbook=best, reason=reason), texts, on_thought)

    async def evaluate(
        self,
        task: TaskBrief,
        stage_id: str,
        criteria: list[str],
        output: Any,
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[Evaluation]:
        """Not empty, fits in an event, and at least half of each criterion's words present."""
        findings = check_output(criteria, output)
        met = [finding for finding in findings if finding.met]
        suggestions = [
            f"address: {finding.criterion} ({finding.detail})"
            for finding in findings
            if not finding.met
        ]
        evaluation = Evaluation(
            passed=len(met) == len(findings),
            score=round(len(met) / len(findings), 4),
            findings=findings,
            suggestions=suggestions,
        )
        texts = [
            f"{'met' if finding.met else 'not met'}: {finding.criterion} — {finding.detail}"
            for finding in findings
        ]
        verdict = "passes" if evaluation.passed else "fails"
        texts.append(
            f"Stage {stage_id} {verdict}: {len(met)} of {len(findings)} checks met "
            f"(score {evaluation.score:.2f})."
        )
        return await _reasoned(evaluation, texts, on_thought)

    async def analyse_error(
        self,
        task: TaskBrief,
        stage_id: str,
        error: Mapping[str, Any],
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[ErrorAnalysis]:
        """The category whose pattern the error matches first; fatal when none does."""
        category, evidence = classify_error(error)
        retryable, suggestion = _ADVICE[category]
        code = error.get("code") or error.get("reason") or "no code"
        texts = [
            f"Stage {stage_id} failed with {code}.",
            f"The error mentions {evidence!r}: {category}."
            if evidence is not None
            else f"The error matches no known pattern: {category}.",
            f"{'Retryable' if retryable else 'Not retryable'}: {suggestion}.",
        ]
        analysis = ErrorAnalysis(category=category, retryable=retryable, suggestion=suggestion)
        return await _reasoned(analysis, texts, on_thought)
