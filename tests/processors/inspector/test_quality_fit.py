"""The hierarchical quality model: it recovers known group qualities from simulated checks,
its intervals cover the truth at about their nominal rate, its convergence rule holds, and
it runs in a worker process.

The default run makes one small fit (8 groups, 300 draws, 2 chains: seconds once PyTensor's
cache is warm, about 20 s more on a fresh machine). The coverage study and the unconverged
fit are marked slow; run them with `pytest -m slow tests/processors/inspector/test_quality_fit.py`.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import psutil
import pytest

from events import EvaluationRecorded, QualityFitted
from processors.inspector import quality_fit
from processors.inspector.quality import Priors
from processors.inspector.quality_fit import (
    ESS_PER_CHAIN,
    R_HAT_MAX,
    GroupCounts,
    convergence_problems,
    count_groups,
    fit_id_of,
    fit_in_subprocess,
)
from wrenchai.settings import Settings


def _simulate(
    groups: int, checks: int, seed: int, mu: float = 0.7, kappa: float = 15.0
) -> tuple[np.ndarray, list[GroupCounts]]:
    """Group qualities drawn from the model's own population, and their checks."""
    rng = np.random.default_rng(seed)
    truth = rng.beta(mu * kappa, (1 - mu) * kappa, size=groups)
    passed = rng.binomial(checks, truth)
    counts = [
        GroupCounts(f"role{g}", "web.search", None, checks // 5, int(p), checks - int(p))
        for g, p in enumerate(passed)
    ]
    return truth, counts


def _covered(fit: QualityFitted, truth: np.ndarray) -> np.ndarray:
    low = np.array([g.interval[0] for g in fit.groups])
    high = np.array([g.interval[1] for g in fit.groups])
    return (low <= truth) & (truth <= high)


async def test_a_small_fit_in_a_worker_process_recovers_the_group_qualities() -> None:
    truth, counts = _simulate(groups=8, checks=200, seed=3)
    fit = await fit_in_subprocess(counts, Settings(fit_draws=300, fit_chains=2), seed=11)
    assert fit.converged, fit.reason
    assert fit.r_hat_max <= R_HAT_MAX and fit.ess_min >= ESS_PER_CHAIN * 2
    assert (fit.draws, fit.chains, fit.evaluations) == (300, 2, 8 * 40)
    assert fit.fit_id == fit_id_of(counts, 11)
    means = np.array([g.mean for g in fit.groups])
    assert np.abs(means - truth).max() < 0.1
    assert np.abs(means - truth).mean() < 0.05
    assert _covered(fit, truth).sum() >= 6
    assert 0.5 < fit.mu < 0.9
    for group, counted in zip(fit.groups, counts, strict=True):
        assert (group.role, group.tool, group.model) == counted.key
        # The moment-matched Beta keeps the draws' mean: it is the next prior.
        assert group.alpha / (group.alpha + group.beta) == pytest.approx(group.mean, abs=1e-9)
        assert group.interval[0] < group.mean < group.interval[1]
    prior = Priors().with_fit(fit).prior("role0", "web.search")
    assert prior.source == fit.fit_id


async def test_a_fit_that_fails_comes_back_unconverged_with_the_reason() -> None:
    fit = await fit_in_subprocess([], Settings(), seed=1)
    assert not fit.converged
    assert "at least one group with a check" in fit.reason
    assert Priors().with_fit(fit).prior("a", "b").source == "default"


async def test_cancelling_a_fit_kills_its_process_without_blocking_the_loop() -> None:
    """A worker that shuts down cancels its fit; the fit's process must go at once rather
    than hold the event loop until sampling ends."""
    _, counts = _simulate(groups=200, checks=50, seed=6)
    fit = asyncio.ensure_future(
        fit_in_subprocess(counts, Settings(fit_draws=5_000, fit_chains=2), seed=1)
    )
    for _ in range(150):  # the process starts within 30 s
        if quality_fit._WARM.pid is not None:
            break
        await asyncio.sleep(0.2)
    assert quality_fit._WARM.pid is not None, "the fit's process did not start"
    started = [psutil.Process(quality_fit._WARM.pid)]
    await asyncio.sleep(1.0)  # well inside the import or the sampling
    cancelled_at = time.monotonic()
    fit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fit
    assert time.monotonic() - cancelled_at < 1.0
    _, alive = psutil.wait_procs(started, timeout=5)
    assert alive == []


def test_the_convergence_rule() -> None:
    assert convergence_problems(1.0, 1_000.0, chains=2) == []
    assert convergence_problems(R_HAT_MAX, ESS_PER_CHAIN * 2, chains=2) == []
    assert convergence_problems(1.06, 1_000.0, chains=2) == ["r_hat 1.0600 above 1.05"]
    assert convergence_problems(1.0, 199.0, chains=2) == ["bulk ESS 199 below 200"]
    assert len(convergence_problems(float("nan"), float("nan"), chains=4)) == 2


def _evaluation(role: str, model: str | None, results: list[bool]) -> EvaluationRecorded:
    return EvaluationRecorded.model_validate(
        {
            "stage_id": "s",
            "attempt": 1,
            "role": role,
            "tool": "llm.complete",
            "model": model,
            "checks": [{"name": f"c{i}", "passed": ok} for i, ok in enumerate(results)],
            "prior_alpha": 1.0,
            "prior_beta": 1.0,
            "prior_source": "default",
            "quality_score": 0.5,
            "interval": [0.1, 0.9],
            "confidence": 0.5,
            "threshold": 0.6,
            "decision": "retry",
            "reason": "r",
        }
    )


def test_evaluations_are_counted_per_role_tool_and_model() -> None:
    history = [
        _evaluation("writer", "m1", [True, True, False]),
        _evaluation("writer", "m1", [True]),
        _evaluation("writer", None, [False, False]),
        _evaluation("analyst", "m1", [True]),
    ]
    assert count_groups(history) == [
        GroupCounts("analyst", "llm.complete", "m1", 1, 1, 0),
        GroupCounts("writer", "llm.complete", None, 1, 0, 2),
        GroupCounts("writer", "llm.complete", "m1", 2, 3, 1),
    ]


@pytest.mark.slow
async def test_intervals_cover_the_truth_at_about_the_nominal_rate_over_many_groups() -> None:
    """300 groups with 10 to 100 checks each: the 90% intervals hold the true quality of
    about 90% of them, and the posterior means are close."""
    rng = np.random.default_rng(5)
    truth = rng.beta(0.75 * 12, 0.25 * 12, size=300)
    trials = rng.integers(10, 101, size=300)
    passed = rng.binomial(trials, truth)
    counts = [
        GroupCounts(f"role{g}", "llm.complete", "m", 1, int(p), int(n - p))
        for g, (p, n) in enumerate(zip(passed, trials, strict=True))
    ]
    fit = await fit_in_subprocess(counts, Settings(fit_draws=1_000, fit_chains=2), seed=8)
    assert fit.converged, fit.reason
    coverage = _covered(fit, truth).mean()
    assert 0.84 <= coverage <= 0.96, coverage
    means = np.array([g.mean for g in fit.groups])
    assert np.abs(means - truth).mean() < 0.06
    assert fit.mu == pytest.approx(0.75, abs=0.05)


@pytest.mark.slow
async def test_too_few_draws_are_reported_as_not_converged() -> None:
    _, counts = _simulate(groups=50, checks=30, seed=2)
    fit = await fit_in_subprocess(counts, Settings(fit_draws=50, fit_chains=2), seed=4)
    assert not fit.converged
    assert "ESS" in fit.reason or "r_hat" in fit.reason
    assert Priors().with_fit(fit).prior("role0", "web.search").source == "default"


async def test_fits_in_a_row_share_one_warm_process_that_exits_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second fit runs in the process of the first (PyMC imported and the model compiled
    once); once no fit comes for KEEP_WARM_S the process exits."""
    monkeypatch.setattr(quality_fit, "KEEP_WARM_S", 1.0)
    _, counts = _simulate(groups=4, checks=20, seed=3)
    settings = Settings(fit_draws=100, fit_chains=2)
    await fit_in_subprocess(counts, settings, seed=1)
    first = quality_fit._WARM.pid
    assert first is not None and psutil.pid_exists(first)
    await fit_in_subprocess(counts, settings, seed=2)
    assert quality_fit._WARM.pid == first
    process = psutil.Process(first)
    await asyncio.sleep(1.5)
    _, alive = await asyncio.to_thread(psutil.wait_procs, [process], 10)
    assert alive == [] and quality_fit._WARM.pid is None
