"""report.compile: markdown with numbered, deduplicated sources in first-use order."""

from __future__ import annotations

from processors.tools.builtin import ReportCompile


async def test_report_numbers_sources_once_in_first_use_order() -> None:
    result = await ReportCompile().call(
        {
            "title": "Error recovery\nin WrenchAI",
            "sections": [
                {"heading": "Findings", "body": "Steps are retried.", "sources": ["b", "a", "b"]},
                {"body": "Replays never repeat a side effect.", "sources": [" a ", "c"]},
                {"heading": "Next", "body": "Nothing cited."},
            ],
        }
    )
    assert result["sources"] == ["b", "a", "c"]
    assert result["markdown"] == (
        "# Error recovery in WrenchAI\n\n"
        "## Findings\n\n"
        "Steps are retried.\n\nSources: [1], [2]\n\n"
        "Replays never repeat a side effect.\n\nSources: [2], [3]\n\n"
        "## Next\n\n"
        "Nothing cited.\n\n"
        "## Sources\n\n"
        "1. b\n2. a\n3. c\n"
    )


async def test_a_report_without_sources_has_no_sources_section() -> None:
    result = await ReportCompile().call({"title": "T", "sections": [{"body": "Body."}]})
    assert result == {"markdown": "# T\n\nBody.\n", "sources": []}


async def test_health_compiles_a_known_report() -> None:
    assert (await ReportCompile().health()).ok
