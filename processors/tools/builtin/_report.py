"""report.compile: stage outputs in, one markdown report with numbered sources out.

The report is the title as a level-1 heading, then each section (its heading as a level-2
heading when it has one, its body as given), each section's sources cited after its body
as ``[n]`` markers, and a closing ``## Sources`` list. Sources are numbered once each, in
the order they are first cited (whitespace trimmed, exact duplicates merged), so the same
URL cited by three sections is one entry and one number.
"""

from __future__ import annotations

from typing import Any

from processors.tools.builtin._base import BuiltinTool
from processors.tools.descriptors import REPORT_COMPILE


def compile_report(title: str, sections: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The markdown of the report and its deduplicated sources, in first-use order."""
    numbers: dict[str, int] = {}
    parts = [f"# {_one_line(title)}"]
    for section in sections:
        heading = _one_line(section.get("heading", ""))
        if heading:
            parts.append(f"## {heading}")
        body = section["body"].strip()
        cited = []
        for source in section.get("sources", []):
            source = source.strip()
            if not source:
                continue
            number = numbers.setdefault(source, len(numbers) + 1)
            if number not in cited:
                cited.append(number)
        if cited:
            body = f"{body}\n\nSources: {', '.join(f'[{n}]' for n in cited)}".strip()
        if body:
            parts.append(body)
    sources = list(numbers)
    if sources:
        parts.append("## Sources")
        parts.append("\n".join(f"{n}. {source}" for n, source in enumerate(sources, 1)))
    return "\n\n".join(parts) + "\n", sources


def _one_line(text: str) -> str:
    """A heading must stay on one line to stay a heading."""
    return " ".join(text.split())


class ReportCompile(BuiltinTool):
    """Assembles stage outputs into a markdown report with its sources."""

    spec = REPORT_COMPILE

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        markdown, sources = compile_report(tool_input["title"], tool_input["sections"])
        return {"markdown": markdown, "sources": sources}

    async def _probe(self) -> tuple[bool, str]:
        markdown, sources = compile_report("t", [{"body": "b", "sources": ["s", "s"]}])
        ok = sources == ["s"] and markdown.endswith("1. s\n")
        return ok, "compiles a known report as expected" if ok else "unexpected output"
