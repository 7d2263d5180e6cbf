"""The built-in tools: the executable side of the descriptors in ``processors.tools``.

:func:`build_tools` makes one of each from the settings. Every tool implements
:class:`Tool`: ``await tool.call(input, idempotency_key=step_id)`` validates the input
against the descriptor's schema, runs, validates the result and returns it, or raises a
:class:`ToolError` whose ``code`` is stable and whose ``transient`` says whether a retry
may help; ``await tool.health()`` says whether the tool can work here. docs/tools.md has
each tool's limits, and how to add one.
"""

from __future__ import annotations

from processors.tools.builtin._base import (
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
)
from processors.tools.builtin._code_python import CodePython
from processors.tools.builtin._http_fetch import HttpFetch, SsrfGuard
from processors.tools.builtin._llm_complete import LLMComplete
from processors.tools.builtin._report import ReportCompile
from processors.tools.builtin._summarize import TextSummarize
from processors.tools.builtin._web_search import (
    CorpusBackend,
    SearchBackend,
    SearxngBackend,
    WebSearch,
)
from wrenchai.settings import Settings


def build_tools(settings: Settings) -> dict[str, Tool]:
    """One instance of every built-in tool, configured from ``settings``, by tool name.

    llm.complete is always there; without WRENCH_LLM_BASE_URL its calls raise
    :class:`ToolLLMNotConfigured` and its health is not ok.
    """
    tools: list[Tool] = [
        CodePython(settings),
        HttpFetch(settings),
        LLMComplete(settings),
        ReportCompile(max_result_bytes=settings.max_event_bytes),
        TextSummarize(max_result_bytes=settings.max_event_bytes),
        WebSearch(settings),
    ]
    return {tool.spec.name: tool for tool in tools}


__all__ = [
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
