"""The processor workers this installation has, for `wrenchai worker` and `wrenchai dev`.

Below both :mod:`wrenchai.cli` (which runs one worker) and :mod:`wrenchai.stack` (which starts
them all), so neither imports the other for it.
"""

from __future__ import annotations

import importlib.util

from wrenchai.settings import Settings

# The processor workers, by the module that implements each. A worker runs when its module
# exists, so adding one is one line here.
WORKERS: tuple[tuple[str, str], ...] = (
    ("super-agent", "processors.super.agent"),
    ("journey-agent", "processors.journey.agent"),
    ("inspector-agent", "processors.inspector.agent"),
    ("cost-guard", "processors.cost.agent"),
)

# Workers that are no agent (they publish nothing, so they send no heartbeat) and that have
# work only when a setting is set: by name, module and that setting. `wrenchai dev` starts
# one only then; `wrenchai worker NAME` without it says so and exits 0.
OPTIONAL_WORKERS: tuple[tuple[str, str, str], ...] = (
    ("tracer", "processors.tracing.agent", "otlp_endpoint"),
)


def available_workers() -> list[str]:
    """Names of the processor workers this installation has, optional ones last."""
    modules = [*WORKERS, *((name, module) for name, module, _ in OPTIONAL_WORKERS)]
    return [name for name, module in modules if _module_exists(module)]


def worker_module(name: str) -> str:
    """The module that implements the worker ``name`` (KeyError for none)."""
    modules = {**dict(WORKERS), **{n: module for n, module, _ in OPTIONAL_WORKERS}}
    return modules[name]


def workers_to_start(settings: Settings | None = None) -> list[str]:
    """The workers a stack runs: every agent, and each optional worker whose setting
    ``settings`` sets (none without settings)."""
    wanted = {
        name
        for name, _, setting in OPTIONAL_WORKERS
        if settings is not None and getattr(settings, setting) is not None
    }
    optional = {name for name, _, _ in OPTIONAL_WORKERS}
    return [name for name in available_workers() if name not in optional or name in wanted]


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
