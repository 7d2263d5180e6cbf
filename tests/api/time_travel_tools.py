"""Tools that misbehave once, loaded by the workers of tests/api/test_time_travel.py through
WRENCH_TOOL_MODULES=tests.api.time_travel_tools:

- ``test.once`` fails (transiently) on its first call for each task and stage, then
  answers its text upper-cased;
- ``test.careless`` answers an empty text on its first call for each task and stage, so
  the InspectorAgent rejects that output once, then echoes its input;
- ``test.echo`` answers its text.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from processors.tools import ToolCost, ToolRegistry, ToolSpec
from processors.tools.builtin import BuiltinTool, Tool, ToolError
from wrenchai.settings import Settings

_TEXT = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


def _spec(name: str) -> ToolSpec:
    return ToolSpec(
        name=name,
        version="1.0.0",
        description=f"Test tool {name}.",
        capabilities=[name.replace(".", "_")],
        input_schema=_TEXT,
        output_schema=_TEXT,
        cost=ToolCost(seconds=0.1, usd_per_call=0.002),
    )


class _CountsCalls(BuiltinTool):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def _count(self, idempotency_key: str | None) -> int:
        # The key is task:stage:attempt; calls are counted per task and stage.
        stage = (idempotency_key or "").rsplit(":", 1)[0]
        self.calls[stage] += 1
        return self.calls[stage]

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("call() is overridden")

    async def _probe(self) -> tuple[bool, str]:
        return True, "misbehaves once by design"


class Once(_CountsCalls):
    spec: ClassVar[ToolSpec] = _spec("test.once")

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        if self._count(idempotency_key) == 1:
            raise ToolError("first call fails", transient=True)
        return {"text": tool_input["text"].upper()}


class Careless(_CountsCalls):
    spec: ClassVar[ToolSpec] = _spec("test.careless")

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return {"text": "" if self._count(idempotency_key) == 1 else tool_input["text"]}


class Echo(BuiltinTool):
    spec: ClassVar[ToolSpec] = _spec("test.echo")

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        return {"text": tool_input["text"]}

    async def _probe(self) -> tuple[bool, str]:
        return True, "ok"


def register(registry: ToolRegistry, tools: dict[str, Tool], settings: Settings) -> None:
    """Add the test tools to a worker's registry and toolbox."""
    for tool in (Once(), Careless(), Echo()):
        registry.register(tool.spec)
        tools[tool.spec.name] = tool
