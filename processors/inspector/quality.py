"""The quality model of inspection: checks on an output, the conjugate Beta update, the
decision, the priors that the hierarchical fit provides, and Thompson draws.

Everything here is pure and fast (no PyMC: that lives in :mod:`processors.inspector.quality_fit` and
runs in another process), so the InspectorAgent can judge every completed step on the
event loop:

1. :func:`check_agent_output` turns a stage's success criteria and its output into binary
   checks (:class:`~events.CheckResult`); :func:`evaluate_agent_output` adds the votes of
   the reasoner acting as a judge, the only part that awaits. Both live in
   :mod:`processors.inspector.checks` and are re-exported here.
2. :func:`posterior` is the exact conjugate update: a Beta(alpha, beta) prior and ``passed``
   successes and ``failed`` failures give Beta(alpha + passed, beta + failed).
3. :func:`summary` reads the posterior: its mean (the quality score), its central 90%
   credible interval, and the confidence P(quality > threshold).
4. :func:`decide` turns the confidence and the attempt into accept, retry or escalate.

See docs/quality.md for the model, its assumptions and how to tune it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from scipy import special

from events import QualityFitted
from events._inspection import Decision
from processors.inspector.checks import (
    Checked,
    check_agent_output,
    evaluate_agent_output,
    parse_test_summary,
)
from wrenchai.settings import Settings

INTERVAL_MASS = 0.90
"""Probability mass of the reported credible interval (central: 5% cut from each tail)."""

# -- the conjugate update ------------------------------------------------------------------


class Estimate(NamedTuple):
    """What a Beta posterior says about quality: its mean, central 90% interval, and
    P(quality > threshold)."""

    mean: float
    interval: tuple[float, float]
    confidence: float


def posterior(
    prior_alpha: float, prior_beta: float, passed: int, failed: int
) -> tuple[float, float]:
    """The Beta posterior of Bernoulli observations: Beta(alpha + passed, beta + failed)."""
    if prior_alpha <= 0 or prior_beta <= 0:
        raise ValueError(f"a Beta prior needs alpha, beta > 0, not {prior_alpha}, {prior_beta}")
    if passed < 0 or failed < 0:
        raise ValueError(f"counts cannot be negative: passed={passed}, failed={failed}")
    return prior_alpha + passed, prior_beta + failed


def summary(alpha: float, beta: float, threshold: float) -> Estimate:
    """Mean, central 90% credible interval and P(q > threshold) of Beta(alpha, beta).

    The confidence is the upper tail 1 - I_threshold(alpha, beta); betaincc computes it
    directly, which keeps precision when it is close to 1.
    """
    tail = (1.0 - INTERVAL_MASS) / 2
    low = float(special.betaincinv(alpha, beta, tail))
    high = float(special.betaincinv(alpha, beta, 1.0 - tail))
    confidence = float(special.betaincc(alpha, beta, threshold))
    return Estimate(alpha / (alpha + beta), (low, high), confidence)


def beta_from_moments(mean: float, variance: float) -> tuple[float, float]:
    """The Beta with this mean and variance (method of moments).

    A variance of mean·(1-mean) or more fits no Beta; it is capped just below, which gives
    the flattest Beta with that mean.
    """
    mean = min(max(mean, 1e-6), 1 - 1e-6)
    limit = mean * (1 - mean)
    variance = min(max(variance, 1e-12), limit * (1 - 1e-6))
    strength = limit / variance - 1
    return mean * strength, (1 - mean) * strength


# -- the decision --------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """What an output must reach: quality above ``threshold`` with at least
    ``accept_confidence``; below ``escalate_confidence`` retrying is pointless; at most
    ``retries`` retries of a stage."""

    threshold: float
    accept_confidence: float
    escalate_confidence: float
    retries: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        """The thresholds of the inspection settings."""
        return cls(
            threshold=settings.quality_threshold,
            accept_confidence=settings.accept_confidence,
            escalate_confidence=settings.escalate_confidence,
            retries=settings.quality_retries,
        )


def decide(confidence: float, attempt: int, thresholds: Thresholds) -> tuple[Decision, str]:
    """Accept, retry or escalate an attempt whose P(quality > threshold) is ``confidence``.

    In order: accept when confidence >= accept_confidence (on any attempt); escalate when
    confidence < escalate_confidence (another attempt is unlikely to get there) or when the
    retries are spent (``attempt`` counts from 1, so attempt > retries means the stage has
    had 1 + retries attempts); retry otherwise.
    """
    t = thresholds
    said = f"P(quality > {t.threshold:g}) = {confidence:.3f}"
    if confidence >= t.accept_confidence:
        return "accept", f"{said}, at least {t.accept_confidence:g}"
    if confidence < t.escalate_confidence:
        return "escalate", f"{said}, below {t.escalate_confidence:g}: a retry is unlikely to help"
    if attempt > t.retries:
        return "escalate", f"{said}, below {t.accept_confidence:g}, after {attempt} attempts"
    return "retry", f"{said}, below {t.accept_confidence:g}; attempt {attempt + 1} may do better"


# -- priors from the hierarchical fit ------------------------------------------------------


class Prior(NamedTuple):
    """The Beta prior of one group, and where it came from: 'default' or a fit_id."""

    alpha: float
    beta: float
    source: str


GroupKey = tuple[str, str, str | None]
"""(role, tool, model): the unit the quality model pools over."""


@dataclass(frozen=True)
class Priors:
    """The per-evaluation priors: each group's fitted posterior from the latest converged
    quality.fitted, the fit's population Beta(mu·kappa, (1-mu)·kappa) for groups it did not
    see, and (alpha, beta) before any fit.

    ``max_weight`` optionally caps alpha + beta of a fitted prior (keeping its mean): a
    group with a long history otherwise outweighs the few checks of one output, so a bad
    output of a good group would still be accepted. None applies the fit as it is.
    """

    alpha: float = 1.0
    beta: float = 1.0
    fit: QualityFitted | None = None
    max_weight: float | None = None
    _groups: Mapping[GroupKey, tuple[float, float]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.fit is not None and not self.fit.converged:
            raise ValueError(
                f"fit {self.fit.fit_id} has not converged ({self.fit.reason}); priors never "
                "come from it: pass it to with_fit, which ignores it"
            )
        groups = (
            {(g.role, g.tool, g.model): (g.alpha, g.beta) for g in self.fit.groups}
            if self.fit
            else {}
        )
        # Frozen: the lookup is derived once, here, from the fit.
        object.__setattr__(self, "_groups", groups)

    @classmethod
    def from_settings(cls, settings: Settings, max_weight: float | None = None) -> Priors:
        """Priors before any fit, from settings' prior_alpha and prior_beta."""
        return cls(settings.prior_alpha, settings.prior_beta, max_weight=max_weight)

    def with_fit(self, fitted: QualityFitted) -> Priors:
        """These priors after ``fitted``; a fit that has not converged changes nothing."""
        if not fitted.converged:
            return self
        return replace(self, fit=fitted)

    def prior(self, role: str, tool: str, model: str | None = None) -> Prior:
        """The prior of the (role, tool, model) group."""
        if self.fit is None:
            return Prior(self.alpha, self.beta, "default")
        found = self._groups.get((role, tool, model))
        if found is None:
            mu = min(max(self.fit.mu, 1e-6), 1 - 1e-6)
            found = (mu * self.fit.kappa, (1 - mu) * self.fit.kappa)
        alpha, beta = found
        if self.max_weight is not None and alpha + beta > self.max_weight:
            scale = self.max_weight / (alpha + beta)
            alpha, beta = alpha * scale, beta * scale
        return Prior(alpha, beta, self.fit.fit_id)

    def tool_posteriors(self) -> dict[str, tuple[float, float]]:
        """Each fitted tool's success rate as one Beta, moment-matched to the mixture of its
        groups (across roles and models) weighted by their evaluations: the input of
        Thompson sampling. Empty before any fit."""
        by_tool: dict[str, list[tuple[float, float, float]]] = {}
        for g in self.fit.groups if self.fit is not None else []:
            by_tool.setdefault(g.tool, []).append((g.evaluations + 1.0, g.alpha, g.beta))
        found: dict[str, tuple[float, float]] = {}
        for tool, rows in by_tool.items():
            total = sum(w for w, _, _ in rows)
            means = [(w, a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))) for w, a, b in rows]
            mean = sum(w * m for w, m, _ in means) / total
            second = sum(w * (v + m * m) for w, m, v in means) / total
            found[tool] = beta_from_moments(mean, second - mean * mean)
        return found


class Assessment(NamedTuple):
    """The per-evaluation verdict: the posterior, what it says, and the decision."""

    alpha: float
    beta: float
    estimate: Estimate
    decision: Decision
    reason: str


def assess(prior: Prior, checked: Checked, attempt: int, thresholds: Thresholds) -> Assessment:
    """The whole per-evaluation path after the checks: the conjugate update of ``prior`` with
    the passed and failed checks, its summary at the threshold, and the decision."""
    alpha, beta = posterior(prior.alpha, prior.beta, checked.passed, checked.failed)
    estimate = summary(alpha, beta, thresholds.threshold)
    decision, reason = decide(estimate.confidence, attempt, thresholds)
    return Assessment(alpha, beta, estimate, decision, reason)


# -- Thompson sampling ---------------------------------------------------------------------


def thompson_draws(posteriors: Mapping[str, tuple[float, float]], seed: int) -> dict[str, float]:
    """One draw per tool from its Beta(alpha, beta) posterior, seeded so a replay draws the
    same: the same seed and posteriors always give the same draws, whatever the mapping's
    order (tools are drawn in sorted order from one generator)."""
    rng = random.Random(seed)
    return {tool: rng.betavariate(*posteriors[tool]) for tool in sorted(posteriors)}


__all__ = [
    "Assessment",
    "Checked",
    "Estimate",
    "GroupKey",
    "Prior",
    "Priors",
    "Thresholds",
    "assess",
    "beta_from_moments",
    "check_agent_output",
    "decide",
    "evaluate_agent_output",
    "parse_test_summary",
    "posterior",
    "summary",
    "thompson_draws",
]
