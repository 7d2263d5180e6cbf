"""Every script in bench/ still runs: once each, at a tiny size, as `make bench` runs it.

Only that it completes and prints its figures with their baseline is checked; the figures
themselves are for `make bench` to print, never for a test to judge. A benchmark that no
longer runs (a changed default, a worker it does not start) fails here, in `make test`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY: dict[str, tuple[list[str], list[str]]] = {
    # script: (arguments, words its output must hold)
    "cost.py": (["--events", "300", "--tasks", "12"], ["cost-guard:", "baseline", "ratio"]),
    "projector.py": (
        ["--events", "500", "--batch-size", "100"],
        ["projector:", "baseline", "ratio"],
    ),
    "journey.py": (
        ["--tasks", "3"],
        ["lone task", "tasks/s", "overhead/step", "ms/task", "peer", "floor"],
    ),
    "inspector.py": (
        ["--evaluations", "200", "--groups", "5", "--draws-1000", "50"],
        ["per evaluation", "baseline", "converged"],
    ),
    "intake.py": (
        ["--requests", "20", "--idle", "10"],
        ["idle", "burst", "accepted/s", "CPU over the burst", "baseline", "ratios"],
    ),
    "restart.py": (
        ["--tasks", "300", "--small", "30"],
        ["first start", "restart after SIGTERM", "restart after SIGKILL", "RSS", "baseline"],
    ),
    "streams.py": (
        ["--sockets", "20", "--events", "50", "--submissions", "5"],
        ["p50", "fan-out", "baseline", "ratios"],
    ),
}


def test_every_benchmark_is_covered() -> None:
    """A new script in bench/ gets a tiny size here."""
    scripts = {p.name for p in (ROOT / "bench").glob("*.py") if p.name != "noop_tool.py"}
    assert scripts == set(TINY)


@pytest.mark.parametrize("script", sorted(TINY))
def test_a_benchmark_runs_at_a_tiny_size_and_prints_its_figures(
    script: str, tmp_path: Path
) -> None:
    """`python bench/SCRIPT` exits 0 and prints its figures and its baseline."""
    arguments, words = TINY[script]
    # Run where a user runs it, but with no dev stack's state to pick up by accident.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for word in words:
        assert word in output, f"{script} printed no {word!r}:\n{output[-3000:]}"
