"""Error recovery: what kind of failure a stage met, and what to do about it.

:func:`classify` turns a tool's error into a category. :func:`handle_error` builds the
recovery from the stage's fallback strategies (made with the plan, in the order they should
be tried), the category, the reasoner's analysis and the tools whose circuit is open:

==================  ===================================================================
fallback            taken when
==================  ===================================================================
retry               the failure is transient or a tool error that the analysis calls
                    retryable, and the stage has retries left; exponential backoff with
                    "equal jitter" (half the delay fixed, half random), capped
alternate_model     an LLM stage whose failure was not fatal, with a model not yet tried
alternate_tool      a tool not yet tried whose circuit is closed, unless the failure is
                    fatal or the budget's
skip                the stage is optional
escalate            always possible, always last: the task fails with the chain of errors
==================  ===================================================================

The random part of a backoff is drawn here, once, and recorded in recovery.planned, so a
replay of the log reproduces the same delay.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from events import ErrorCategory, RecoveryPlanned, StepError
from processors.journey.execution import StageRun
from processors.reasoning import ErrorAnalysis

_CATEGORY_OF_CODE: dict[str, ErrorCategory] = {
    "INVALID_INPUT": "fatal",
    "BAD_REFERENCE": "fatal",
    "LLM_NOT_CONFIGURED": "fatal",
    "FETCH_REFUSED": "fatal",
    "UNKNOWN_TOOL": "fatal",
    "OUTPUT_TOO_LARGE": "invalid_output",
    "INVALID_OUTPUT": "invalid_output",
    "BUDGET_EXCEEDED": "budget",
}


def classify(code: str, transient: bool, *, output_schema: bool = False) -> ErrorCategory:
    """The category of a failure with ``code``: transient when the tool says a retry may
    pass, a known code's category, invalid_output for a result that broke its schema, and
    tool_error otherwise."""
    if transient:
        return "transient"
    if output_schema:
        return "invalid_output"
    return _CATEGORY_OF_CODE.get(code, "tool_error")


def _retry(
    run: StageRun, error: StepError, analysis: ErrorAnalysis | None, rng: random.Random
) -> RecoveryPlanned | None:
    fallback = next((f for f in run.stage.fallbacks if f.kind == "retry"), None)
    retryable = error.transient or (
        error.category == "tool_error" and (analysis is None or analysis.retryable)
    )
    if fallback is None or not retryable or run.retries >= (fallback.attempts or 0):
        return None
    base = (fallback.backoff_s or 1.0) * (fallback.backoff_factor or 2.0) ** run.retries
    cap = min(base, fallback.max_backoff_s or base)
    delay = round(cap / 2 + rng.uniform(0, cap / 2), 3)
    left = (fallback.attempts or 0) - run.retries - 1
    return _planned(
        run,
        error,
        "retry",
        f"{error.code} is {error.category}; retry {run.tool} in {delay:.1f} s "
        f"({left} retr{'y' if left == 1 else 'ies'} left after this one)",
        analysis,
        delay_s=delay,
        tool=run.tool,
        model=run.model,
    )


def _planned(
    run: StageRun,
    error: StepError,
    action: str,
    reason: str,
    analysis: ErrorAnalysis | None,
    **fields: object,
) -> RecoveryPlanned:
    return RecoveryPlanned.model_validate(
        {
            "stage_id": run.stage.id,
            "attempt": run.attempt,
            "category": error.category,
            "action": action,
            "reason": reason[:2_000],
            "suggestion": analysis.suggestion[:2_000] if analysis else None,
            **fields,
        }
    )


def handle_error(
    run: StageRun,
    error: StepError,
    analysis: ErrorAnalysis | None = None,
    open_tools: Collection[str] = (),
    rng: random.Random | None = None,
) -> RecoveryPlanned:
    """The recovery of ``run``'s failed attempt (see the module's docstring)."""
    rng = rng or random.Random()
    if error.category == "budget":
        # A spent budget stays spent for the task: no retry, other model or skip helps.
        return _planned(
            run,
            error,
            "escalate",
            f"{error.code}: the budget is spent, so the task halts",
            analysis,
        )
    retry = _retry(run, error, analysis, rng)
    if retry is not None:
        return retry
    recoverable = error.category not in ("fatal", "budget")
    for fallback in run.stage.fallbacks:
        if fallback.kind == "alternate_model" and recoverable and fallback.model:
            if (run.tool, fallback.model) not in run.tried:
                return _planned(
                    run,
                    error,
                    "alternate_model",
                    f"{error.code} from {run.model}; ask {fallback.model} instead",
                    analysis,
                    tool=run.tool,
                    model=fallback.model,
                )
        if fallback.kind == "alternate_tool" and recoverable and fallback.tool:
            tried = {tool for tool, _ in run.tried}
            if fallback.tool not in tried and fallback.tool not in open_tools:
                return _planned(
                    run,
                    error,
                    "alternate_tool",
                    f"{error.code} from {run.tool}; call {fallback.tool} instead",
                    analysis,
                    tool=fallback.tool,
                    model=run.model,
                )
        if fallback.kind == "skip" and run.stage.optional:
            return _planned(
                run,
                error,
                "skip",
                f"{error.code}: the stage is optional, so the task goes on without it",
                analysis,
            )
    attempts = len(run.errors)
    return _planned(
        run,
        error,
        "escalate",
        f"{error.code} ({error.category}) after {attempts} attempt"
        f"{'' if attempts == 1 else 's'} and no fallback left: the task fails",
        analysis,
    )
