"""What the InspectorAgent's quality model costs: per evaluation, and per fit.

- evaluations per second on the per-evaluation path: the checks of a web.search output
  (:func:`processors.inspector.quality.check_agent_output`, no judge votes), the conjugate update,
  its summary (mean, 90% interval, confidence) and the decision — everything the agent
  does on the event loop for one step.completed, minus the events themselves. Most of it
  is JSON Schema validation of the output (jsonschema, about 85% in a profile);
- the baseline, in the same run: the bare Beta update and scipy's betainc alone, which is
  the floor of any exact Beta posterior summary;
- the wall time of the hierarchical fit (:func:`processors.inspector.quality_fit.fit_in_subprocess`,
  in the warm process fits share, as a running InspectorAgent has it after its first fit)
  for 10, 100 and 1,000 groups on simulated checks. 10 and 100 groups use the default 500
  draws per chain; 1,000 groups use 300 (``--draws-1000``), and the printed convergence
  shows whether that was enough. PyTensor compiles the model on the first fit and caches
  it on disk, so the first fit on a fresh machine is about 20 s slower; a warm-up fit
  (which also starts the process and imports PyMC) runs first and is not counted.

Usage: python bench/inspector.py [--evaluations N] [--groups 10,100,1000] [--draws-1000 N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import numpy as np
from scipy import special

from processors.inspector.quality import Prior, Thresholds, assess, check_agent_output
from processors.inspector.quality_fit import GroupCounts, fit_in_subprocess
from processors.shared.planning import Estimate, Stage
from processors.tools.descriptors import WEB_SEARCH
from wrenchai.settings import Settings

STAGE = Stage(
    id="search",
    role="researcher",
    tools=["web.search"],
    tool_version="1.0.0",
    depends_on=[],
    inputs=[],
    tool_input={"query": "solar power", "limit": 5},
    success_criteria=[
        "the output matches the web.search@1.0.0 output schema",
        "the output has results",
        "at least one result with a snippet",
        "the stage finishes within 30 s",
    ],
    optional=False,
    timeout=30,
    retry=0,
    estimate=Estimate(),
    fallbacks=[],
)
OUTPUT = {
    "results": [
        {"title": f"t{i}", "url": f"https://example.org/{i}", "snippet": "solar", "score": 0.5}
        for i in range(5)
    ]
}


def per_second(label: str, n: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    for _ in range(n):
        run()
    rate = n / (time.perf_counter() - started)
    print(f"  {label:<48} {rate:>12,.0f} /s  {1e6 / rate:>8.1f} µs each")
    return rate


def evaluations(n: int) -> None:
    settings = Settings()
    thresholds = Thresholds.from_settings(settings)
    prior = Prior(settings.prior_alpha, settings.prior_beta, "default")

    def full() -> None:
        checked = check_agent_output(STAGE, OUTPUT, WEB_SEARCH, duration_s=0.4)
        assess(prior, checked, 1, thresholds)

    def update_only() -> None:
        alpha, beta = prior.alpha + 4, prior.beta + 1
        special.betaincc(alpha, beta, thresholds.threshold)

    checked = check_agent_output(STAGE, OUTPUT, WEB_SEARCH, duration_s=0.4)

    def model_only() -> None:
        assess(prior, checked, 1, thresholds)

    print(f"per evaluation ({len(checked.checks)} checks, no judge votes), {n:,} runs:")
    full_rate = per_second("checks + update + summary + decision", n, full)
    per_second("update + summary + decision (checks done)", n, model_only)
    base = per_second("baseline: Beta update + scipy betaincc alone", n, update_only)
    print(f"  the whole path costs {base / full_rate:.0f}x the bare update")


def simulated(groups: int, seed: int) -> list[GroupCounts]:
    rng = np.random.default_rng(seed)
    truth = rng.beta(0.7 * 15, 0.3 * 15, size=groups)
    trials = rng.integers(10, 101, size=groups)
    passed = rng.binomial(trials, truth)
    return [
        GroupCounts(f"role{g}", "web.search", None, int(n) // 5, int(p), int(n - p))
        for g, (p, n) in enumerate(zip(passed, trials, strict=True))
    ]


async def fits(sizes: list[int], draws_1000: int) -> None:
    settings = Settings()
    print(f"\nhierarchical fit, {settings.fit_chains} chains, in the warm process fits share:")
    await fit_in_subprocess(simulated(5, 0), settings, seed=0, draws=100)  # warm the cache
    for groups in sizes:
        draws = draws_1000 if groups >= 1_000 else settings.fit_draws
        started = time.perf_counter()
        fit = await fit_in_subprocess(simulated(groups, groups), settings, seed=1, draws=draws)
        wall = time.perf_counter() - started
        verdict = "converged" if fit.converged else f"NOT converged: {fit.reason}"
        print(
            f"  {groups:>5} groups, {draws} draws: {wall:6.1f} s wall ({fit.seconds:.1f} s in "
            f"the fit itself), r_hat max {fit.r_hat_max:.3f}, ESS min {fit.ess_min:.0f}, "
            f"{verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=20_000)
    parser.add_argument("--groups", default="10,100,1000")
    parser.add_argument("--draws-1000", type=int, default=300)
    args = parser.parse_args()
    evaluations(args.evaluations)
    sizes = [int(size) for size in args.groups.split(",") if size]
    if sizes:
        asyncio.run(fits(sizes, args.draws_1000))


if __name__ == "__main__":
    main()
