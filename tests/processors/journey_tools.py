"""Tools with known failure patterns, loaded by the workers under test through
WRENCH_TOOL_MODULES=tests.processors.journey_tools.

- ``test.flaky`` fails (transiently) on its first two calls for each task and stage, then
  answers;
- ``test.broken`` always fails; ``test.backup`` has the same capability and input, so the
  planner makes it test.broken's alternate tool;
- ``test.lonely`` always fails and has no alternate;
- ``test.sleep`` sleeps for ``seconds`` (cancellable) and answers;
- ``test.sloppy`` answers an empty text on its first two calls for each task and stage,
  then echoes its input, so the InspectorAgent rejects the first two outputs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

from processors.tools import ToolCost, ToolRegistry, ToolSpec
from processors.tools.builtin import BuiltinTool, Tool, ToolError, ToolFailed
from wrenchai.settings import Settings

_TEXT_IN = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}
_TEXT_OUT = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "calls": {"type": "integer"}},
    "required": ["text"],
    "additionalProperties": False,
}


def _spec(name: str, capability: str, **fields: Any) -> ToolSpec:
    return ToolSpec(
        name=name,
        version="1.0.0",
        description=f"Test tool {name}.",
        capabilities=[capability],
        input_schema=fields.pop("input_schema", _TEXT_IN),
        output_schema=fields.pop("output_schema", _TEXT_OUT),
        cost=ToolCost(seconds=0.1),
        **fields,
    )


class Flaky(BuiltinTool):
    spec: ClassVar[ToolSpec] = _spec("test.flaky", "test_flaky")

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("call() is overridden")

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        # The key is task:stage:attempt; failures are counted per task and stage.
        stage = (idempotency_key or "").rsplit(":", 1)[0]
        self.calls[stage] += 1
        if self.calls[stage] <= 2:
            raise ToolError(f"flaky failure {self.calls[stage]} of 2", transient=True)
        return {"text": tool_input["text"].upper(), "calls": self.calls[stage]}

    async def _probe(self) -> tuple[bool, str]:
        return True, "flaky by design"


class Broken(BuiltinTool):
    spec: ClassVar[ToolSpec] = _spec("test.broken", "test_echo")

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        raise ToolFailed("test.broken always fails: the backend rejected the request")

    async def _probe(self) -> tuple[bool, str]:
        return False, "broken by design"


class Backup(BuiltinTool):
    spec: ClassVar[ToolSpec] = _spec("test.backup", "test_echo")

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        return {"text": f"backup: {tool_input['text']}"}

    async def _probe(self) -> tuple[bool, str]:
        return True, "ok"


class Lonely(BuiltinTool):
    spec: ClassVar[ToolSpec] = _spec("test.lonely", "test_lonely")

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        raise ToolFailed("test.lonely always fails: the backend rejected the request")

    async def _probe(self) -> tuple[bool, str]:
        return False, "broken by design"


class Sleep(BuiltinTool):
    spec: ClassVar[ToolSpec] = _spec(
        "test.sleep",
        "test_sleep",
        input_schema={
            "type": "object",
            "properties": {"seconds": {"type": "number", "minimum": 0}},
            "required": ["seconds"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {"slept": {"type": "number"}},
            "required": ["slept"],
            "additionalProperties": False,
        },
    )

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(tool_input["seconds"])
        return {"slept": tool_input["seconds"]}

    async def _probe(self) -> tuple[bool, str]:
        return True, "ok"


class Sloppy(BuiltinTool):
    spec: ClassVar[ToolSpec] = _spec("test.sloppy", "test_sloppy")

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("call() is overridden")

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        stage = (idempotency_key or "").rsplit(":", 1)[0]
        self.calls[stage] += 1
        return {"text": tool_input["text"] if self.calls[stage] >= 3 else ""}

    async def _probe(self) -> tuple[bool, str]:
        return True, "sloppy by design"


def register(registry: ToolRegistry, tools: dict[str, Tool], settings: Settings) -> None:
    """Add the test tools to a worker's registry and toolbox."""
    for tool in (Flaky(), Broken(), Backup(), Lonely(), Sleep(), Sloppy()):
        registry.register(tool.spec)
        tools[tool.spec.name] = tool
