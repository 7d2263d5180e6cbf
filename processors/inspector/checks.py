"""Checks of an agent's output: binary observations for the quality model.

:func:`check_agent_output` turns a stage's success criteria and its output into
:class:`~events.CheckResult` s: non-empty, valid for the tool's output schema, and per tool
(exit code and test summary for code.python, results with snippets for web.search, sources
for report.compile, a 2xx status for http.fetch, the length the input asked) and per
criterion. :func:`evaluate_agent_output` adds the votes of the reasoner acting as a judge,
the only part that awaits. :mod:`processors.inspector.quality` turns the checks into a verdict.

Details and suggestions describe an output's shape, never its content: evaluations are not
encrypted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog
from jsonschema import Draft202012Validator

from events import CheckResult
from processors.reasoning import Reasoner, ReasoningError, TaskBrief, Usage, check_output
from processors.shared.planning import Stage
from processors.tools.registry import ToolSpec

log = structlog.get_logger(__name__)

MAX_SUGGESTIONS = 10
"""Suggestions kept per evaluation: a retry carries them into the step's context."""
MAX_SUGGESTION_CHARS = 500
MAX_DETAIL_CHARS = 500

# -- checks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """The checks of one output and what to do about the failed ones.

    ``usage`` holds the LLM usage of the judge's votes, for the shell to record.
    """

    checks: tuple[CheckResult, ...]
    suggestions: tuple[str, ...] = ()
    usage: tuple[Usage, ...] = ()

    @property
    def passed(self) -> int:
        """How many checks passed: the successes of the conjugate update."""
        return sum(1 for check in self.checks if check.passed)

    @property
    def failed(self) -> int:
        """How many checks failed: the failures of the conjugate update."""
        return len(self.checks) - self.passed


class _Found(NamedTuple):
    check: CheckResult
    suggestion: str | None


def _check(name: str, passed: bool, detail: str, suggestion: str) -> _Found:
    # Details and suggestions travel unencrypted in evaluation.recorded, so they describe
    # the output's shape (counts, codes, schema paths) and never quote its content.
    return _Found(
        CheckResult(name=name[:200], passed=passed, detail=detail[:MAX_DETAIL_CHARS]),
        None if passed else suggestion[:MAX_SUGGESTION_CHARS],
    )


# The field that carries a tool's content, where an output is "empty" when it is.
_CONTENT_FIELD = {
    "text.summarize": "summary",
    "llm.complete": "text",
    "report.compile": "markdown",
    "http.fetch": "text",
    "web.search": "results",
}
_TEXT_FIELDS = ("summary", "text", "markdown", "stdout")


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, Mapping | list | tuple):
        return len(value) == 0
    return False


def _text(output: Any) -> str:
    """The text an output reads as: itself, its first text field, or its canonical JSON."""
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        for name in _TEXT_FIELDS:
            if isinstance(output.get(name), str):
                return str(output[name])
    return json.dumps(output, sort_keys=True, default=str)


def _non_empty(output: Any, tool: str) -> _Found:
    content = _CONTENT_FIELD.get(tool)
    if isinstance(output, Mapping) and content is not None:
        empty = _empty(output.get(content))
        detail = f"{content} is {'empty' if empty else 'present'}"
    else:
        empty = _empty(output)
        detail = "empty output" if empty else "output present"
    return _check("non_empty", not empty, detail, "produce a non-empty output")


def _json_path(path: Iterable[Any]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _schema_valid(output: Any, spec: ToolSpec) -> _Found:
    errors = sorted(Draft202012Validator(spec.output_schema).iter_errors(output), key=str)
    if not errors:
        return _check("schema_valid", True, f"matches the {spec.ref} output schema", "")
    first = errors[0]
    # validator_value comes from the schema, not the output, so it is safe to show.
    where = f"{_json_path(first.absolute_path)} fails {first.validator} {first.validator_value!r}"
    detail = f"{len(errors)} schema error(s); {where}"
    return _check(
        "schema_valid", False, detail, f"return output that matches the {spec.ref} schema: {where}"
    )


_EXCEPTION = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit|Interrupt))\b", re.MULTILINE)


def _exit_code(output: Mapping[str, Any]) -> _Found:
    code = output.get("exit_code")
    if not isinstance(code, int) or isinstance(code, bool):
        return _check("exit_code", False, "no exit code", "run the code to completion")
    raised = _EXCEPTION.findall(str(output.get("stderr") or ""))
    because = f" ({raised[-1]})" if raised else ""
    return _check(
        "exit_code",
        code == 0,
        f"exit code {code}{because}",
        f"the code exited with status {code}{because}; fix the error so that it exits 0",
    )


_PYTEST_LINE = re.compile(
    r"^=*\s*(?P<body>(?:\d+ [a-z]+(?:, )?)+|no tests ran) in [\d.]+s\b.*$", re.MULTILINE
)
_PYTEST_COUNT = re.compile(r"(\d+) ([a-z]+)")
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s", re.MULTILINE)
_UNITTEST_VERDICT = re.compile(r"^(OK|FAILED)\b(.*)$", re.MULTILINE)


def parse_test_summary(text: str) -> tuple[bool, str] | None:
    """Whether the pytest or unittest run reported in ``text`` passed, and its summary line;
    None when ``text`` holds no such summary. The last summary wins (a rerun prints one more).
    """
    found: list[tuple[int, bool, str]] = []
    for match in _PYTEST_LINE.finditer(text):
        counts: dict[str, int] = {}
        for number, word in _PYTEST_COUNT.findall(match.group("body")):
            key = "errors" if word in ("error", "errors") else word
            counts[key] = counts.get(key, 0) + int(number)
        ok = counts.get("passed", 0) > 0 and not counts.get("failed") and not counts.get("errors")
        found.append((match.start(), ok, match.group("body")))
    for ran in _UNITTEST_RAN.finditer(text):
        verdict = _UNITTEST_VERDICT.search(text, ran.end())
        if verdict is not None:
            ok = verdict.group(1) == "OK" and int(ran.group(1)) > 0
            line = f"ran {ran.group(1)}: {verdict.group(1)}{verdict.group(2)}".strip()
            found.append((ran.start(), ok, line))
    if not found:
        return None
    _, ok, line = max(found)
    return ok, line


def _tests_passed(output: Mapping[str, Any]) -> _Found | None:
    # unittest writes its summary to stderr, pytest to stdout: read both.
    text = f"{output.get('stdout') or ''}\n{output.get('stderr') or ''}"
    parsed = parse_test_summary(text)
    if parsed is None:
        return None
    ok, line = parsed
    return _check("tests_passed", ok, line, f"make the failing tests pass ({line})")


def _search_results(output: Mapping[str, Any]) -> _Found:
    results = output.get("results")
    rows = [row for row in results if isinstance(row, Mapping)] if isinstance(results, list) else []
    with_snippet = sum(1 for row in rows if not _empty(row.get("snippet")))
    return _check(
        "search_results",
        with_snippet > 0,
        f"{with_snippet} of {len(rows)} results have a snippet",
        "find at least one search result with a snippet: broaden or rephrase the query",
    )


_LINK = re.compile(r"https?://|\[[^\]]+\]\([^)]+\)")


def _cites_sources(output: Mapping[str, Any]) -> _Found:
    sources = output.get("sources")
    count = len(sources) if isinstance(sources, list) else 0
    linked = bool(_LINK.search(str(output.get("markdown") or "")))
    return _check(
        "cites_sources",
        count > 0 or linked,
        f"{count} sources" + (", links in the text" if linked else ""),
        "cite the sources the report draws on",
    )


def _http_status(output: Mapping[str, Any]) -> _Found:
    status = output.get("status")
    ok = isinstance(status, int) and 200 <= status < 300
    return _check(
        "http_status", ok, f"status {status}", f"the fetch answered {status}; fix the URL"
    )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _count(unit: str, output: Any) -> int:
    """How many ``unit`` s (words, sentences, …; singular) ``output`` holds."""
    if unit in ("result", "item", "source"):
        key = {"result": "results", "item": "results", "source": "sources"}[unit]
        seq = output.get(key) if isinstance(output, Mapping) else output
        return len(seq) if isinstance(seq, list) else 0
    if (
        unit == "sentence"
        and isinstance(output, Mapping)
        and isinstance(output.get("sentences"), list)
    ):
        return len(output["sentences"])
    text = _text(output).strip()
    counters: dict[str, Callable[[str], int]] = {
        "word": lambda t: len(t.split()),
        "sentence": lambda t: len([s for s in _SENTENCE_END.split(t) if s.strip()]),
        "character": len,
        "line": lambda t: len(t.splitlines()),
        "paragraph": lambda t: len([p for p in re.split(r"\n\s*\n", t) if p.strip()]),
    }
    return counters[unit](text) if text else 0


_BOUNDS: dict[str, Callable[[int, int], bool]] = {
    "at most": lambda n, b: n <= b,
    "no more than": lambda n, b: n <= b,
    "up to": lambda n, b: n <= b,
    "fewer than": lambda n, b: n < b,
    "less than": lambda n, b: n < b,
    "under": lambda n, b: n < b,
    "at least": lambda n, b: n >= b,
    "no fewer than": lambda n, b: n >= b,
    "more than": lambda n, b: n > b,
    "over": lambda n, b: n > b,
    "exactly": lambda n, b: n == b,
}
_LENGTH = re.compile(
    rf"\b(?P<op>{'|'.join(sorted(_BOUNDS, key=len, reverse=True))})\s+(?P<n>\d+)\s+"
    r"(?P<unit>word|sentence|character|char|line|paragraph|result|item|source)s?\b"
)


def _length(name: str, output: Any, op: str, bound: int, unit: str) -> _Found:
    unit = "character" if unit == "char" else unit
    count = _count(unit, output)
    return _check(
        name,
        _BOUNDS[op](count, bound),
        f"{count} {unit}s, asked {op} {bound}",
        f"keep the output {op} {bound} {unit}s (it has {count})",
    )


# Criteria that a structural check answers better than keywords do, by the check's name.
_COVERED = (
    (re.compile(r"\bexit(s|ed)?\b.*\b(status|code)\b\D*\b0\b"), "exit_code"),
    (re.compile(r"\btests?\b.*\bpass"), "tests_passed"),
    (re.compile(r"\bresults?\b.*\bsnippets?\b"), "search_results"),
    (re.compile(r"\bcites?\b.*\bsources?\b|\bsources?\b.*\bcited\b"), "cites_sources"),
    (re.compile(r"\b(not|non)[ -]?empty\b"), "non_empty"),
    (re.compile(r"^the output (matches the .* output schema|has )"), "schema_valid"),
)
_WITHIN = re.compile(r"\bfinishes within (?P<s>\d+(?:\.\d+)?) s\b")


def _tool_checks(output: Any, tool: str, tool_input: Mapping[str, Any]) -> list[_Found]:
    if not isinstance(output, Mapping):
        return []
    found: list[_Found] = []
    if tool == "code.python":
        found.append(_exit_code(output))
        tests = _tests_passed(output)
        if tests is not None:
            found.append(tests)
    elif tool == "web.search":
        found.append(_search_results(output))
        if isinstance(tool_input.get("limit"), int):
            found.append(_length("length:limit", output, "at most", tool_input["limit"], "result"))
    elif tool == "report.compile":
        found.append(_cites_sources(output))
    elif tool == "http.fetch":
        found.append(_http_status(output))
    elif tool == "text.summarize" and isinstance(tool_input.get("max_sentences"), int):
        limit = tool_input["max_sentences"]
        found.append(_length("length:max_sentences", output, "at most", limit, "sentence"))
    return found


def check_agent_output(
    stage: Stage,
    output: Any,
    spec: ToolSpec | None,
    *,
    tool_input: Mapping[str, Any] | None = None,
    duration_s: float | None = None,
) -> Checked:
    """The binary checks of one stage's ``output``, made by ``spec`` (the tool the attempt
    ran; None when it is unknown), with the suggestions of the failed ones.

    Always: non-empty, and schema-valid when the tool is known. Per tool: exit code 0 and
    the test summary for code.python, results with snippets for web.search, sources for
    report.compile, a 2xx status for http.fetch, and the length the tool input asked
    (max_sentences, limit). Per criterion: a length it states ("at most 5 sentences"), the
    stage's time limit when ``duration_s`` is given, and otherwise the rule reasoner's
    keyword check — except criteria a structural check above already answers, which would
    only count the same evidence twice.
    """
    tool = spec.name if spec is not None else (stage.tools[0] if stage.tools else "")
    given = stage.tool_input if tool_input is None else tool_input
    found = [_non_empty(output, tool)]
    if spec is not None:
        found.append(_schema_valid(output, spec))
    found.extend(_tool_checks(output, tool, given))
    ran = {item.check.name for item in found}
    keyword: list[str] = []
    for criterion in stage.success_criteria:
        lowered = criterion.lower()
        length = _LENGTH.search(lowered)
        within = _WITHIN.search(lowered)
        if any(pattern.search(lowered) and name in ran for pattern, name in _COVERED):
            continue
        if length is not None:
            op, bound, unit = length.group("op"), int(length.group("n")), length.group("unit")
            found.append(_length(f"length: {criterion}", output, op, bound, unit))
        elif within is not None:
            # A completed step ran within its timeout (the JourneyAgent enforces it), so
            # without a duration this criterion holds no evidence and is not counted.
            if duration_s is not None:
                limit = float(within.group("s"))
                found.append(
                    _check(
                        "within_time",
                        duration_s <= limit,
                        f"{duration_s:.3f} s of {limit:g} s",
                        f"finish within {limit:g} s",
                    )
                )
        else:
            keyword.append(criterion)
    if keyword:
        # check_output's first two findings (not empty, fits in an event) are covered above.
        for finding in check_output(keyword, output)[2:]:
            found.append(
                _check(
                    f"criterion: {finding.criterion}",
                    finding.met,
                    finding.detail,
                    f"address: {finding.criterion} ({finding.detail})",
                )
            )
    return Checked(
        checks=tuple(item.check for item in found),
        suggestions=_bounded(item.suggestion for item in found),
    )


def _bounded(suggestions: Iterable[str | None]) -> tuple[str, ...]:
    unique = dict.fromkeys(s[:MAX_SUGGESTION_CHARS] for s in suggestions if s)
    return tuple(unique)[:MAX_SUGGESTIONS]


async def evaluate_agent_output(
    stage: Stage,
    output: Any,
    spec: ToolSpec | None,
    *,
    task: TaskBrief,
    reasoner: Reasoner | None = None,
    votes: int = 0,
    tool_input: Mapping[str, Any] | None = None,
    duration_s: float | None = None,
) -> Checked:
    """:func:`check_agent_output`, plus ``votes`` verdicts of ``reasoner`` as a judge of the
    output against the stage's success criteria, each vote one more check.

    A vote the reasoner cannot give (a :class:`ReasoningError`: the LLM is down, its answer
    is invalid) is left out and logged: an outage says nothing about the output. The rule
    reasoner is deterministic, so its votes agree; an LLM judge's differ when it samples.
    """
    checked = check_agent_output(stage, output, spec, tool_input=tool_input, duration_s=duration_s)
    if reasoner is None or votes <= 0:
        return checked
    checks = list(checked.checks)
    suggestions = list(checked.suggestions)
    usage: list[Usage] = []
    for vote in range(1, votes + 1):
        try:
            answer = await reasoner.evaluate(task, stage.id, list(stage.success_criteria), output)
        except ReasoningError as exc:
            log.warning("judge vote not given", stage_id=stage.id, vote=vote, error=str(exc))
            continue
        verdict = answer.result
        usage.extend(answer.usage)
        unmet = sum(1 for finding in verdict.findings if not finding.met)
        checks.append(
            CheckResult(
                name=f"judge_vote_{vote}",
                passed=verdict.passed,
                detail=f"score {verdict.score:.2f}, {unmet} of {len(verdict.findings)} unmet",
            )
        )
        suggestions.extend(verdict.suggestions)
    return Checked(checks=tuple(checks), suggestions=_bounded(suggestions), usage=tuple(usage))


__all__ = ["Checked", "check_agent_output", "evaluate_agent_output", "parse_test_summary"]
