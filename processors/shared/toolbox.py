"""The tools a worker can use: the built-in ones and those of WRENCH_TOOL_MODULES.

A tool module is any importable module with a function::

    def register(registry: ToolRegistry, tools: dict[str, Tool], settings: Settings) -> None

that registers its descriptors in ``registry`` (so the SuperAgent can allocate and plan
with them) and puts its implementations in ``tools`` by name (so the JourneyAgent can call
them). Both agents load the same modules, so a plan never names a tool that the executor
does not know.
"""

from __future__ import annotations

import importlib

from processors.tools import ToolRegistry, builtin_registry
from processors.tools.builtin import Tool, build_tools
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings


def toolbox(settings: Settings) -> tuple[ToolRegistry, dict[str, Tool]]:
    """The registry of descriptors and the implementations, by tool name."""
    registry = builtin_registry()
    tools = build_tools(settings)
    for name in (part.strip() for part in settings.tool_modules.split(",")):
        if not name:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot import the tool module {name!r} named in WRENCH_TOOL_MODULES: {exc}",
                module=name,
            ) from exc
        register = getattr(module, "register", None)
        if not callable(register):
            raise ConfigurationError(
                f"tool module {name!r} has no register(registry, tools, settings) function",
                module=name,
            )
        register(registry, tools, settings)
    return registry, tools
