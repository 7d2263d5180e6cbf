"""One `wrenchai dev` for the documentation's commands, and the list of the blocks that are
not run, printed after the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.docs.fences import not_run_lines
from tests.docs.runner import Stack
from tests.docs.stack import dev_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The stack as the README starts it, once for every document."""
    with dev_stack() as running:
        yield running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran_docs = any(
        "tests/docs/" in report.nodeid
        for reports in terminalreporter.stats.values()
        for report in reports
        if hasattr(report, "nodeid")
    )
    if not ran_docs:
        return
    lines = not_run_lines()
    terminalreporter.section(f"documentation blocks not run ({len(lines)})")
    for line in lines:
        terminalreporter.write_line(line)
