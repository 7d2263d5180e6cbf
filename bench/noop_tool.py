"""``bench.noop``: a tool that does nothing, so a benchmark measures orchestration alone.

Loaded by the agent workers of bench/journey.py through WRENCH_TOOL_MODULES=noop_tool.
"""

from __future__ import annotations

from typing import Any, ClassVar

from processors.tools import ToolCost, ToolRegistry, ToolSpec
from processors.tools.builtin import BuiltinTool, Tool
from wrenchai.settings import Settings

NOOP = ToolSpec(
    name="bench.noop",
    version="1.0.0",
    description="Returns its input; does nothing else.",
    capabilities=["benchmark"],
    input_schema={
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    },
    output_schema={
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    },
    cost=ToolCost(seconds=0.0),
)


class Noop(BuiltinTool):
    spec: ClassVar[ToolSpec] = NOOP

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        return {"n": tool_input["n"]}

    async def _probe(self) -> tuple[bool, str]:
        return True, "ok"


def register(registry: ToolRegistry, tools: dict[str, Tool], settings: Settings) -> None:
    registry.register(NOOP)
    tools[NOOP.name] = Noop()
