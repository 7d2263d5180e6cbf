"""The processor workers this installation has, for `wrenchai worker` and `wrenchai dev`.

Below both :mod:`wrenchai.cli` (which runs one worker) and :mod:`wrenchai.stack` (which starts
them all), so neither imports the other for it.
"""

from __future__ import annotations

import importlib.util

# The processor workers, by the module that implements each. A worker runs when its module
# exists, so adding one is one line here.
WORKERS: tuple[tuple[str, str], ...] = (
    ("super-agent", "processors.super.agent"),
    ("journey-agent", "processors.journey.agent"),
    ("inspector-agent", "processors.inspector.agent"),
    ("cost-guard", "processors.cost.agent"),
)


def available_workers() -> list[str]:
    """Names of the processor workers this installation has."""
    return [name for name, module in WORKERS if _module_exists(module)]


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
