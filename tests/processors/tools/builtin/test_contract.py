"""The contract every built-in tool keeps, written once and run against each of them:
its descriptor is the registry's, input is checked before it runs (INVALID_INPUT with the
path), its result satisfies its output schema, it reports health, and its failures are
ToolErrors with a stable code and a transient flag."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import processors.tools.builtin as builtin_package
from processors.tools import BUILTIN_TOOLS, builtin_registry
from processors.tools.builtin import (
    BuiltinTool,
    FetchFailed,
    FetchRefused,
    InvalidToolInput,
    SearchUnavailable,
    Tool,
    ToolError,
    ToolFailed,
    ToolHealth,
    ToolLLMNotConfigured,
    ToolLLMUnavailable,
    ToolOutputInvalid,
    ToolOutputTooLarge,
    ToolTimeout,
    build_tools,
)
from processors.tools.registry import ToolSpec
from tests.processors.openai_server import OpenAIServer
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

NAMES = sorted(spec.name for spec in BUILTIN_TOOLS)

# One valid input per tool (http.fetch is refused by its guard: a result needs a server,
# which test_http_fetch has; here its valid input must get past validation).
VALID: dict[str, dict[str, Any]] = {
    "code.python": {"code": "print('hi')"},
    "http.fetch": {"url": "http://127.0.0.1:9/"},
    "llm.complete": {"prompt": "Say hi."},
    "report.compile": {"title": "T", "sections": [{"body": "B", "sources": ["s"]}]},
    "text.summarize": {"text": "One. Two. Three."},
    "web.search": {"query": "broker"},
}

# Per tool: an invalid input and the JSON path the error must name.
INVALID: dict[str, list[tuple[dict[str, Any], str]]] = {
    "code.python": [({"code": ""}, "$.code"), ({"code": "x", "timeout_s": 0}, "$.timeout_s")],
    "http.fetch": [({"url": "file:///etc/passwd"}, "$.url"), ({"url": 5}, "$.url")],
    "llm.complete": [({"prompt": "p", "temperature": 3}, "$.temperature")],
    "report.compile": [
        ({"title": "T", "sections": []}, "$.sections"),
        ({"title": "T", "sections": [{"heading": "h"}]}, "$.sections[0]"),
        ({"title": "T", "sections": [{"body": "b", "sources": [1]}]}, "$.sections[0].sources[0]"),
    ],
    "text.summarize": [({"text": "t", "max_sentences": 0}, "$.max_sentences")],
    "web.search": [({"query": "q", "limit": 51}, "$.limit"), ({"query": "q", "x": 1}, "$")],
}


@pytest.fixture(scope="module")
async def llm_server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as server:
        yield server


@pytest.fixture
async def tools(llm_server: OpenAIServer, tmp_path: Path) -> AsyncIterator[dict[str, Tool]]:
    (tmp_path / "notes.md").write_text("# Notes\n\nThe broker keeps the log.\n")
    llm_server.reset()
    settings = Settings(
        llm_base_url=llm_server.base_url,
        llm_max_retries=0,
        search_corpus=tmp_path,
        sandbox_timeout_s=20,
    )
    built = build_tools(settings)
    yield built
    for tool in built.values():
        if isinstance(tool, BuiltinTool):
            await tool.aclose()


def test_every_descriptor_has_exactly_one_tool() -> None:
    assert sorted(build_tools(Settings())) == NAMES
    assert set(VALID) == set(INVALID) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_the_tool_implements_the_registry_descriptor(name: str) -> None:
    tool = build_tools(Settings())[name]
    assert isinstance(tool, Tool)
    assert isinstance(tool.spec, ToolSpec)
    assert tool.spec == builtin_registry().get(name)


@pytest.mark.parametrize("name", NAMES)
async def test_invalid_input_is_refused_with_its_path_before_running(
    name: str, tools: dict[str, Tool], llm_server: OpenAIServer
) -> None:
    for tool_input, path in INVALID[name]:
        with pytest.raises(InvalidToolInput) as caught:
            await tools[name].call(tool_input)
        error = caught.value
        assert error.code == "INVALID_INPUT" and not error.transient
        assert error.details["path"] == path, error.message
        assert error.details["tool"] == name
        assert path in error.message
    with pytest.raises(InvalidToolInput):
        await tools[name].call("not an object")  # type: ignore[arg-type]
    assert llm_server.requests == [], "nothing ran"


@pytest.mark.parametrize("name", NAMES)
async def test_a_valid_call_returns_its_output_schema_or_a_tool_error(
    name: str, tools: dict[str, Tool], llm_server: OpenAIServer
) -> None:
    llm_server.answer("hi")
    tool = tools[name]
    try:
        result = await tool.call(VALID[name])
    except ToolError as exc:
        # Only the guard may say no here: the contract is about the error's shape.
        assert name == "http.fetch" and isinstance(exc, FetchRefused)
        assert isinstance(exc.code, str) and isinstance(exc.transient, bool)
        return
    assert list(Draft202012Validator(tool.spec.output_schema).iter_errors(result)) == []


@pytest.mark.parametrize("name", NAMES)
async def test_health_answers_with_a_reason(name: str, tools: dict[str, Tool]) -> None:
    health = await tools[name].health()
    assert isinstance(health, ToolHealth)
    assert health.detail
    assert health.checked_at.tzinfo is not None
    assert health.ok, f"{name}: {health.detail}"


async def test_an_idempotency_key_returns_the_first_result(
    tools: dict[str, Tool], llm_server: OpenAIServer
) -> None:
    llm_server.answer("first")
    llm_server.answer("second")
    tool = tools["llm.complete"]
    one = await tool.call({"prompt": "p"}, idempotency_key="step-1")
    again = await tool.call({"prompt": "p"}, idempotency_key="step-1")
    other = await tool.call({"prompt": "p"}, idempotency_key="step-2")
    assert one["text"] == again["text"] == "first"
    assert other["text"] == "second"
    assert len(llm_server.requests) == 2


async def test_a_result_that_breaks_the_output_schema_is_a_tool_failure() -> None:
    class Broken(BuiltinTool):
        spec = builtin_registry().get("text.summarize")

        async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
            return {"summary": 42}

        async def _probe(self) -> tuple[bool, str]:
            raise RuntimeError("probe exploded")

    with pytest.raises(ToolOutputInvalid, match=r"\$\.summary") as caught:
        await Broken().call({"text": "t"})
    assert caught.value.code == "INVALID_OUTPUT" and isinstance(caught.value, ToolFailed)
    health = await Broken().health()
    assert not health.ok and "probe exploded" in health.detail


def test_errors_have_stable_codes_and_transience() -> None:
    expected = {
        InvalidToolInput: ("INVALID_INPUT", False),
        ToolTimeout: ("TOOL_TIMEOUT", True),
        ToolFailed: ("TOOL_FAILED", False),
        ToolOutputInvalid: ("INVALID_OUTPUT", False),
        ToolOutputTooLarge: ("OUTPUT_TOO_LARGE", False),
        FetchRefused: ("FETCH_REFUSED", False),
        FetchFailed: ("FETCH_FAILED", True),
        ToolLLMNotConfigured: ("LLM_NOT_CONFIGURED", False),
        ToolLLMUnavailable: ("LLM_UNAVAILABLE", True),
        SearchUnavailable: ("SEARCH_UNAVAILABLE", True),
    }
    for cls, (code, transient) in expected.items():
        assert issubclass(cls, ToolError) and issubclass(cls, WrenchError)
        error = cls("m", tool="t")
        assert (error.code, error.transient) == (code, transient)
        assert cls("m", transient=not transient).transient is not transient


def test_the_public_names_are_pinned() -> None:
    assert sorted(builtin_package.__all__) == [
        "BuiltinTool",
        "CodePython",
        "CorpusBackend",
        "FetchFailed",
        "FetchRefused",
        "HttpFetch",
        "InvalidToolInput",
        "LLMComplete",
        "ReportCompile",
        "SearchBackend",
        "SearchUnavailable",
        "SearxngBackend",
        "SsrfGuard",
        "TextSummarize",
        "Tool",
        "ToolError",
        "ToolFailed",
        "ToolHealth",
        "ToolLLMNotConfigured",
        "ToolLLMUnavailable",
        "ToolOutputInvalid",
        "ToolOutputTooLarge",
        "ToolTimeout",
        "WebSearch",
        "build_tools",
    ]


async def test_a_result_too_big_for_an_event_is_output_too_large() -> None:
    tools = build_tools(Settings(max_event_bytes=4_096))
    text = " ".join(f"Sentence number {i} talks about the log." for i in range(400))
    with pytest.raises(ToolOutputTooLarge) as caught:
        await tools["report.compile"].call({"title": "T", "sections": [{"body": text}]})
    assert caught.value.details["limit"] == 4_096
    assert "WRENCH_MAX_EVENT_BYTES" in caught.value.message


async def test_an_unexpected_exception_leaves_as_tool_failed() -> None:
    class Buggy(BuiltinTool):
        spec = builtin_registry().get("text.summarize")

        async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
            raise KeyError("oops")

        async def _probe(self) -> tuple[bool, str]:
            return True, "fine"

    with pytest.raises(ToolFailed) as caught:
        await Buggy().call({"text": "t"})
    assert caught.value.details["error"] == "KeyError"
    assert isinstance(caught.value.__cause__, KeyError)
