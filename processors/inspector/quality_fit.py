"""The hierarchical quality model, fitted with PyMC in a separate process.

Each (role, tool, model) group g has a quality q_g, the probability that one check of its
outputs passes; the groups share a population::

    mu     ~ Beta(2, 2)                        the population's mean quality
    kappa  ~ Gamma(2, 0.1)                     its concentration (mean 20)
    q_g    ~ Beta(mu * kappa, (1 - mu) * kappa)
    passed_g ~ Binomial(passed_g + failed_g, q_g)

Beta(2, 2) keeps mu off 0 and 1 but barely prefers 0.5. kappa is how many checks the
population is worth to one group: Gamma(2, 0.1) has no mass at 0 (where every q_g would be
pushed to 0 or 1 and the sampler struggles), a mode at 10 and a long tail (5% above 47), so
the data decides between little and strong pooling.

PyTensor compiles the model to C for seconds on first use, and sampling takes seconds to
minutes, so :func:`fit_in_subprocess` runs :func:`fit_counts` in a worker process started
with "spawn" (a fork would copy the event loop and the Kafka client's threads). PyMC is
imported only there. A fit has converged when every r_hat is at most :data:`R_HAT_MAX`
and every bulk effective sample size at least :data:`ESS_PER_CHAIN` per chain (Vehtari
et al., 2021, "Rank-normalization, folding, and localization"); a fit that has not is
returned with ``converged`` false and a reason, and :class:`processors.inspector.quality.Priors`
ignores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from events import EvaluationRecorded, GroupPosterior, QualityFitted
from processors.inspector.quality import INTERVAL_MASS, GroupKey, beta_from_moments
from wrenchai.embedded import die_with_parent
from wrenchai.settings import Settings

R_HAT_MAX = 1.05
"""Largest rank-normalised split-r_hat of a converged fit. Vehtari et al. recommend 1.01
with four chains of ample length; with the default two chains of 500 draws, and the
maximum taken over every group, noise alone takes well-mixed fits past 1.01 (a simulated
8-group fit of 300 draws gave 1.013), while chains that disagree still land far above 1.05."""
ESS_PER_CHAIN = 100
"""Smallest bulk effective sample size per chain of a converged fit (so 200 with 2 chains)."""
MU_PRIOR = (2.0, 2.0)
KAPPA_PRIOR = (2.0, 0.1)
"""Gamma(shape, rate) of kappa."""
TARGET_ACCEPT = 0.9
"""NUTS step-size target; above the default 0.8 because hierarchical Betas have funnels."""


@dataclass(frozen=True)
class GroupCounts:
    """The evidence of one (role, tool, model) group: its evaluations and their checks."""

    role: str
    tool: str
    model: str | None
    evaluations: int
    passed: int
    failed: int

    @property
    def key(self) -> GroupKey:
        """The group's (role, tool, model)."""
        return (self.role, self.tool, self.model)


def count_groups(evaluations: Iterable[EvaluationRecorded]) -> list[GroupCounts]:
    """The passed and failed checks of each group in ``evaluations``, in sorted group order.

    Judge votes and structural checks count alike: each is one Bernoulli observation.
    """
    totals: dict[GroupKey, list[int]] = {}
    for evaluation in evaluations:
        row = totals.setdefault((evaluation.role, evaluation.tool, evaluation.model), [0, 0, 0])
        passed = sum(1 for check in evaluation.checks if check.passed)
        row[0] += 1
        row[1] += passed
        row[2] += len(evaluation.checks) - passed
    return [
        GroupCounts(role, tool, model, *totals[(role, tool, model)])
        for role, tool, model in sorted(totals, key=lambda k: (k[0], k[1], k[2] or ""))
    ]


def fit_id_of(counts: Sequence[GroupCounts], seed: int) -> str:
    """A fit's id: a digest of its evidence and seed, so the same fit gets the same id."""
    canonical = json.dumps([asdict(c) for c in counts] + [seed], sort_keys=True)
    return "fit-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _diagnostics(idata: Any) -> tuple[Any, Any]:
    import arviz as az

    names = ["mu", "kappa", "q"]
    # arviz ships no annotations for these two.
    rhat = az.rhat(idata, var_names=names)  # type: ignore[no-untyped-call]
    ess = az.ess(idata, var_names=names, method="bulk")  # type: ignore[no-untyped-call]
    return rhat, ess


def convergence_problems(r_hat_max: float, ess_min: float, chains: int) -> list[str]:
    """Why a fit with these diagnostics has not converged; empty when it has.

    Written so that NaN diagnostics (a chain that never moved) fail too.
    """
    problems: list[str] = []
    if not r_hat_max <= R_HAT_MAX:
        problems.append(f"r_hat {r_hat_max:.4f} above {R_HAT_MAX}")
    if not ess_min >= ESS_PER_CHAIN * chains:
        problems.append(f"bulk ESS {ess_min:.0f} below {ESS_PER_CHAIN * chains}")
    return problems


def fit_counts(
    counts: Sequence[GroupCounts],
    *,
    draws: int,
    chains: int,
    seed: int,
    tune: int | None = None,
    fit_id: str | None = None,
) -> QualityFitted:
    """Fit the hierarchical model to ``counts`` with NUTS and return the quality.fitted
    payload: each group's posterior moment-matched to a Beta, with its 90% interval from
    the draws. Imports PyMC: call it in a worker process (:func:`fit_in_subprocess`).

    ``tune`` defaults to ``draws``. Raises ValueError when no group has a check.
    """
    started = time.perf_counter()
    counts = [c for c in counts if c.passed + c.failed > 0]
    if not counts:
        raise ValueError("the quality model needs at least one group with a check to fit")
    # PyTensor warns that it found no BLAS; this model is scalar algebra, it needs none.
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
    import numpy as np
    import pymc as pm

    # PyMC reports each step of sampling at INFO; one fit is one line in our own logs.
    logging.getLogger("pymc").setLevel(logging.ERROR)
    passed = np.array([c.passed for c in counts])
    trials = np.array([c.passed + c.failed for c in counts])
    with pm.Model(coords={"group": range(len(counts))}):
        mu = pm.Beta("mu", *MU_PRIOR)
        kappa = pm.Gamma("kappa", alpha=KAPPA_PRIOR[0], beta=KAPPA_PRIOR[1])
        q = pm.Beta("q", alpha=mu * kappa, beta=(1 - mu) * kappa, dims="group")
        pm.Binomial("passed", n=trials, p=q, observed=passed)
        idata = pm.sample(
            draws=draws,
            tune=draws if tune is None else tune,
            chains=chains,
            cores=1,
            random_seed=seed,
            target_accept=TARGET_ACCEPT,
            progressbar=False,
            compute_convergence_checks=False,
        )
    rhat, ess = _diagnostics(idata)
    post = idata.posterior
    q_draws = post["q"].values.reshape(-1, len(counts))
    tail = (1 - INTERVAL_MASS) / 2
    low, high = np.quantile(q_draws, [tail, 1 - tail], axis=0)
    groups = []
    for g, c in enumerate(counts):
        alpha, beta = beta_from_moments(float(q_draws[:, g].mean()), float(q_draws[:, g].var()))
        groups.append(
            GroupPosterior(
                role=c.role,
                tool=c.tool,
                model=c.model,
                evaluations=c.evaluations,
                alpha=alpha,
                beta=beta,
                mean=float(q_draws[:, g].mean()),
                interval=[float(low[g]), float(high[g])],
                r_hat=float(rhat["q"].values[g]),
                ess=float(ess["q"].values[g]),
            )
        )
    r_hat_max = float(max(float(rhat[name].max()) for name in ("mu", "kappa", "q")))
    ess_min = float(min(float(ess[name].min()) for name in ("mu", "kappa", "q")))
    divergent = int(idata.sample_stats["diverging"].values.sum())
    reasons = convergence_problems(r_hat_max, ess_min, chains)
    converged = not reasons
    if divergent:
        # Recorded, not gating: a few divergences in thousands of draws bias the tails a
        # little; many show up in r_hat and ESS too.
        reasons.append(f"{divergent} divergent transitions")
    return QualityFitted(
        fit_id=fit_id or fit_id_of(counts, seed),
        evaluations=sum(c.evaluations for c in counts),
        groups=groups,
        mu=float(post["mu"].mean()),
        kappa=float(post["kappa"].mean()),
        r_hat_max=r_hat_max if np.isfinite(r_hat_max) else 0.0,
        ess_min=ess_min if np.isfinite(ess_min) else 0.0,
        converged=converged,
        draws=draws,
        chains=chains,
        seconds=round(time.perf_counter() - started, 3),
        reason="; ".join(reasons),
    )


def _failed(
    counts: Sequence[GroupCounts], draws: int, chains: int, fit_id: str, why: str
) -> QualityFitted:
    # The payload must still be a valid event: neutral numbers that no one uses, since a
    # fit that is not converged is ignored, and the reason that says what went wrong.
    return QualityFitted(
        fit_id=fit_id,
        evaluations=sum(c.evaluations for c in counts),
        groups=[],
        mu=0.5,
        kappa=1.0,
        r_hat_max=0.0,
        ess_min=0.0,
        converged=False,
        draws=draws,
        chains=chains,
        seconds=0.0,
        reason=why[:2_000],
    )


async def fit_in_subprocess(
    counts: Sequence[GroupCounts],
    settings: Settings,
    seed: int,
    *,
    fit_id: str | None = None,
    draws: int | None = None,
) -> QualityFitted:
    """Fit the model in a "spawn" worker process and return its quality.fitted payload.

    Draws and chains come from settings (``draws`` overrides for benchmarks). A fit that
    raises or whose process dies comes back as a payload with ``converged`` false and the
    error as the reason, so the caller emits it like any other fit that cannot be used.

    The process stays warm between fits and exits after :data:`KEEP_WARM_S` without one:
    a fresh process spends most of a small fit importing PyMC and compiling the model
    (about 6 s of CPU against 1.5 s warm, measured on this model), while a warm one holds
    PyMC's memory only while fits keep coming.

    Cancelling the call (a worker shutting down) kills the fit's process at once: waiting
    for the fit to end would block the event loop for as long as it runs. The process
    ignores SIGINT, so a Ctrl-C that reaches the whole process group leaves the decision to
    its parent.
    """
    draws = settings.fit_draws if draws is None else draws
    chains = settings.fit_chains
    fit_id = fit_id or fit_id_of(counts, seed)
    loop = asyncio.get_running_loop()
    try:
        pool = await _WARM.take(loop)
        result = await loop.run_in_executor(
            pool, _fit_call, list(counts), draws, chains, seed, fit_id
        )
    except asyncio.CancelledError:
        _WARM.kill()
        raise
    except Exception as exc:
        await _WARM.discard(loop)
        return _failed(counts, draws, chains, fit_id, f"the fit failed: {exc!r}")
    _WARM.give_back(loop)
    return result


KEEP_WARM_S = 600.0
"""How long the fit's process waits for the next fit before it exits."""


class _WarmProcess:
    """The one "spawn" process fits run in, kept between fits."""

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.pid: int | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Future[None]] = set()

    async def take(self, loop: asyncio.AbstractEventLoop) -> ProcessPoolExecutor:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.pool is None:
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(
                max_workers=1, mp_context=context, initializer=_ignore_sigint
            )
            self.pid = await loop.run_in_executor(self.pool, os.getpid)
        return self.pool

    def give_back(self, loop: asyncio.AbstractEventLoop) -> None:
        self._idle = loop.call_later(KEEP_WARM_S, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        pool, self.pool, self.pid, self._idle = self.pool, None, None, None
        if pool is not None:
            # Joining a process blocks: in a thread, held until it is done.
            closing = loop.run_in_executor(None, pool.shutdown, True)
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def discard(self, loop: asyncio.AbstractEventLoop) -> None:
        pool, self.pool, self.pid = self.pool, None, None
        if pool is not None:
            await loop.run_in_executor(None, pool.shutdown, True)

    def kill(self) -> None:
        pool, pid, self.pool, self.pid = self.pool, self.pid, None, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_WARM = _WarmProcess()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A fit outliving a killed worker would hold its output pipe and its cores.
    die_with_parent(signal.SIGKILL)


def _fit_call(
    counts: list[GroupCounts], draws: int, chains: int, seed: int, fit_id: str
) -> QualityFitted:
    # Keyword arguments do not cross run_in_executor, hence this positional shim.
    return fit_counts(counts, draws=draws, chains=chains, seed=seed, fit_id=fit_id)
