"""Descriptors of the built-in tools: what the SuperAgent may allocate and plan with.

The tools themselves (and their health probes) belong to the JourneyAgent; these
descriptors are the contract they implement. None of the built-ins conflict with each
other; ``conflicts_with`` is for tools that must not serve one role together, such as two
backends of one search.
"""

from __future__ import annotations

from typing import Any

from processors.tools.registry import ToolCost, ToolRegistry, ToolSpec


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_STR: dict[str, Any] = {"type": "string"}
_SOURCES: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

WEB_SEARCH = ToolSpec(
    name="web.search",
    version="1.0.0",
    description="Ranked full-text search with snippets: the local corpus offline, or a "
    "SearxNG-compatible API when one is configured.",
    capabilities=["search", "retrieval"],
    input_schema=_object(
        {
            "query": {"type": "string", "minLength": 1, "maxLength": 10_000},
            "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
        },
        ["query"],
    ),
    output_schema=_object(
        {
            "results": {
                "type": "array",
                "items": _object(
                    {"title": _STR, "url": _STR, "snippet": _STR, "score": {"type": "number"}},
                    ["title", "url", "snippet"],
                ),
            }
        },
        ["results"],
    ),
    cost=ToolCost(usd_per_call=0.0, seconds=1.0),
    offline=True,
    health_probe="web.search.corpus",
)

HTTP_FETCH = ToolSpec(
    name="http.fetch",
    version="1.0.0",
    description="HTTP GET with a size cap, a timeout, a content-type allow-list and an SSRF guard.",
    capabilities=["fetch", "retrieval"],
    input_schema=_object(
        {
            "url": {"type": "string", "pattern": "^https?://", "maxLength": 4096},
            "max_bytes": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 120},
        },
        ["url"],
    ),
    output_schema=_object(
        {
            "url": _STR,
            "status": {"type": "integer"},
            "content_type": _STR,
            "text": _STR,
            "truncated": {"type": "boolean"},
        },
        ["url", "status", "text"],
    ),
    cost=ToolCost(usd_per_call=0.0, seconds=3.0),
    offline=False,
    health_probe="http.fetch.resolver",
)

TEXT_SUMMARIZE = ToolSpec(
    name="text.summarize",
    version="1.0.0",
    description="Extractive summary by sentence ranking; no LLM, no network.",
    capabilities=["summarization"],
    input_schema=_object(
        {
            "text": {"type": "string", "minLength": 1},
            "max_sentences": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
        },
        ["text"],
    ),
    output_schema=_object(
        {"summary": _STR, "sentences": {"type": "array", "items": _STR}}, ["summary"]
    ),
    cost=ToolCost(usd_per_call=0.0, seconds=0.5),
    offline=True,
    health_probe="text.summarize.self_test",
)

CODE_PYTHON = ToolSpec(
    name="code.python",
    version="1.0.0",
    description="Runs Python in a subprocess with time, CPU, memory and output limits.",
    capabilities=["code_execution"],
    input_schema=_object(
        {
            "code": {"type": "string", "minLength": 1, "maxLength": 100_000},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
            "stdin": {"type": "string"},
        },
        ["code"],
    ),
    output_schema=_object(
        {
            "stdout": _STR,
            "stderr": _STR,
            "exit_code": {"type": "integer"},
            "duration_s": {"type": "number"},
            "truncated": {"type": "boolean"},
        },
        ["stdout", "stderr", "exit_code", "duration_s"],
    ),
    # Sandboxed in a temporary directory that is thrown away: re-running is harmless.
    side_effects=False,
    idempotent=True,
    cost=ToolCost(usd_per_call=0.0, seconds=5.0),
    offline=True,
    health_probe="code.python.interpreter",
)

LLM_COMPLETE = ToolSpec(
    name="llm.complete",
    version="1.0.0",
    description="A prompt in, a completion out, through the configured LLM provider.",
    capabilities=["text_generation", "summarization", "review"],
    input_schema=_object(
        {
            "prompt": {"type": "string", "minLength": 1},
            "system": _STR,
            "model": _STR,
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32_768},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        },
        ["prompt"],
    ),
    output_schema=_object(
        {
            "text": _STR,
            "model": _STR,
            "usage": _object(
                {
                    "provider": {"type": ["string", "null"]},
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                    "cached_tokens": {"type": "integer"},
                    "reasoning_tokens": {"type": "integer"},
                    "source": {"enum": ["provider", "estimated"]},
                },
                ["input_tokens", "output_tokens"],
            ),
        },
        ["text", "model", "usage"],
    ),
    # Sampling makes two calls differ, so a retry is not a replay.
    idempotent=False,
    cost=ToolCost(usd_per_call=0.0, tokens_per_call=800, seconds=8.0),
    offline=False,
    uses_llm=True,
    health_probe="llm.complete.models",
)

REPORT_COMPILE = ToolSpec(
    name="report.compile",
    version="1.0.0",
    description="Assembles stage outputs into a markdown report with its sources.",
    capabilities=["reporting"],
    input_schema=_object(
        {
            "title": {"type": "string", "minLength": 1},
            "sections": {
                "type": "array",
                "minItems": 1,
                "items": _object({"heading": _STR, "body": _STR, "sources": _SOURCES}, ["body"]),
            },
        },
        ["title", "sections"],
    ),
    output_schema=_object({"markdown": _STR, "sources": _SOURCES}, ["markdown"]),
    cost=ToolCost(usd_per_call=0.0, seconds=0.2),
    offline=True,
    health_probe="report.compile.self_test",
)

BUILTIN_TOOLS: tuple[ToolSpec, ...] = (
    CODE_PYTHON,
    HTTP_FETCH,
    LLM_COMPLETE,
    REPORT_COMPILE,
    TEXT_SUMMARIZE,
    WEB_SEARCH,
)
"""Every built-in descriptor, by name."""


def builtin_registry() -> ToolRegistry:
    """A fresh registry holding the descriptors of the built-in tools."""
    return ToolRegistry(BUILTIN_TOOLS)
