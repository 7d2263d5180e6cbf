"""The documentation cannot drift: every command in README.md and docs/*.md is run against a
real `wrenchai dev`, as a reader would run it, and docs/api.md shows a working example of
every route the API serves.

Conventions (tests/docs/fences.py): a fence always names its language; ```sh blocks are
commands and run in order, one bash per page, in the folder holding `.wrenchai`; the line
before a fence may say `<!-- docs: not run: REASON -->`, `<!-- docs: expect-fail -->` or
`<!-- docs: file NAME -->`; a `<!-- docs: setup ... -->` comment is hidden shell run in
its place. How they run: tests/docs/runner.py."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

import api.app  # noqa: F401  (imports every router, so every error class is defined)
from api import create_app
from api.errors import _CODE_BY_STATUS, _STATUS_BY_ERROR, ApiError
from tests.docs import runner
from tests.docs.fences import ROOT, Mode, documents, fence_problems, not_run_lines, read
from tests.docs.requests import requests_in, template_pattern
from wrenchai.settings import Settings

API_MD = ROOT / "docs" / "api.md"
RUNNABLE = [path for path in documents() if read(path).runnable()]
OUTPUT_TAIL_LINES = 120
OUTPUT_LINE_CHARS = 400
# Error classes whose codes no HTTP answer carries: the agents' WebSocket checks an agent's id
# itself and closes with 4404; the identity store's own 400 is unreachable through the API,
# whose models refuse a bad tenant id or scope with a 422 first.
NOT_HTTP_CODES = {"AGENT_NOT_FOUND", ApiError.code}


def test_every_fence_names_its_language_and_every_marker_is_understood() -> None:
    problems = [
        str(problem)
        for path in documents()
        for document in [read(path)]
        for problem in [*document.problems, *fence_problems(document)]
    ]
    assert problems == [], "\n".join(problems)


def test_every_command_block_is_run_or_says_why_not() -> None:
    """A ```sh block runs, or carries `<!-- docs: not run: REASON -->` with a reason."""
    unexplained = [
        block.where()
        for path in documents()
        for block in read(path).commands()
        if block.mode is Mode.NOT_RUN and not block.reason
    ]
    assert unexplained == []
    print("\n".join(["blocks not run:", *not_run_lines()]))


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_a_documents_commands_run_against_the_dev_stack(path: Path, stack: runner.Stack) -> None:
    result = runner.run(read(path), stack)
    if result.returncode != 0:
        tail = "\n".join(
            line[:OUTPUT_LINE_CHARS] for line in result.output.splitlines()[-OUTPUT_TAIL_LINES:]
        )
        where = result.failed_at or "(see the last '### docs:' line)"
        pytest.fail(f"{where}: a command failed (exit {result.returncode})\n{tail}", False)


def _operations() -> list[tuple[str, str]]:
    """Every operation of /openapi.json as the app serves it: (method, path template)."""

    async def fetch() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(Settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            response = await client.get("/openapi.json")
        assert response.status_code == 200
        document: dict[str, Any] = response.json()
        return document

    document = asyncio.run(fetch())
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    ]


def test_every_route_has_a_runnable_example_in_api_md() -> None:
    """A route added without an example in docs/api.md fails here: each operation of the
    OpenAPI document is called by a curl in a block of docs/api.md that the harness runs."""
    shown = [
        request
        for block in read(API_MD).blocks
        if block.mode is Mode.RUN and block.is_command
        for request in requests_in(block.body)
    ]
    missing = [
        f"{method} {template}"
        for method, template in _operations()
        if not any(
            request.method == method and template_pattern(template).match(request.path)
            for request in shown
        )
    ]
    assert missing == [], f"routes without a runnable example in docs/api.md: {missing}"


def _documented_codes() -> dict[str, set[int]]:
    """The statuses docs/api.md's error table gives each code."""
    text = API_MD.read_text(encoding="utf-8")
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[int]] = {}
    for row in re.finditer(r"^\| (\d{3}) \|.*\|(?P<codes>[^|]*)\|\s*$", section, re.M):
        for code in re.findall(r"`([A-Z][A-Z0-9_]+)`", row["codes"]):
            found.setdefault(code, set()).add(int(row[1]))
    return found


def _answered_codes() -> dict[str, int]:
    """Every code the API answers with, and its status: each error class the API raises,
    the errors of other packages it maps, and the answers to a path or method it lacks and
    to a fault of its own."""
    classes: list[type[ApiError]] = [ApiError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    codes = {cls.code: cls.status for cls in classes if cls.code not in NOT_HTTP_CODES}
    codes.update({kind.code: status for kind, status in _STATUS_BY_ERROR})
    codes.update({_CODE_BY_STATUS[404]: 404, _CODE_BY_STATUS[405]: 405})
    codes.update({"INTERNAL_ERROR": 500, "PAYLOAD_TOO_LARGE": 413})
    return codes


def test_the_error_table_lists_every_code_the_api_answers_with_its_status() -> None:
    documented = _documented_codes()
    answered = _answered_codes()
    unlisted = sorted(
        f"{code} ({status})"
        for code, status in answered.items()
        if status not in documented.get(code, set())
    )
    generic = set(_CODE_BY_STATUS.values())
    unknown = sorted(code for code in documented if code not in answered and code not in generic)
    assert unlisted == [], f"codes the API answers that docs/api.md does not list: {unlisted}"
    assert unknown == [], f"codes docs/api.md lists that the API never answers: {unknown}"
