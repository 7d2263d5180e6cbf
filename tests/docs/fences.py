"""The fenced code blocks of the documentation, and the markers that say how to run them.

A fence's language is the first word of its info string. A ```sh block is a command: the
harness runs it (tests/docs/runner.py) unless the line just before its fence is a marker,
an HTML comment that a rendered page does not show:

    <!-- docs: not run: REASON -->   the block cannot run against a dev stack here; REASON
                                     says why (Docker, apt-get, an LLM server, ...)
    <!-- docs: expect-fail -->       the block demonstrates an error: each curl in it must
                                     answer a 4xx, or the block must exit nonzero
    <!-- docs: file NAME -->          (before a fence of any language) the block is a file a
                                     later command reads: it is written to NAME, in the
                                     working folder, where it stands among the page's blocks

Hidden setup, for what a page's visible commands need but should not show, is a comment of
its own whose text is shell, run where it stands among the page's blocks:

    <!-- docs: setup
    wrenchai audit public-key > wrench-checkpoints.pem
    -->
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The info-string words that mean "a shell command"; only `sh` is run, the others are
# refused so that no command hides from the harness under another name.
COMMAND = "sh"
OTHER_SHELL_NAMES = frozenset({"bash", "shell", "console", "zsh", "shell-session"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs:\s*(?P<body>.*?)\s*-->\s*$")
_SETUP_START = re.compile(r"^\s*<!--\s*docs:\s*setup\s*$")
_NOT_RUN = re.compile(r"^not run:\s*(?P<reason>.*)$")
_FILE = re.compile(r"^file\s+(?P<name>[A-Za-z0-9_.][A-Za-z0-9_./-]*)$")


class Mode(Enum):
    """What the harness does with a block."""

    RUN = "run"
    EXPECT_FAIL = "expect-fail"
    NOT_RUN = "not run"
    SETUP = "setup"
    FILE = "file"


@dataclass(frozen=True)
class Block:
    """One fenced block (or one hidden setup comment) of a document.

    ``line`` is the 1-based line of its opening fence (of the comment, for setup);
    ``body_line`` that of its first line of content. ``reason`` is why a block is not run;
    ``file`` the name a file block is written to."""

    doc: str
    line: int
    language: str
    body: str
    mode: Mode
    reason: str = ""
    file: str = ""

    @property
    def body_line(self) -> int:
        return self.line + 1

    @property
    def is_command(self) -> bool:
        return self.language == COMMAND or self.mode is Mode.SETUP

    @property
    def runs(self) -> bool:
        return self.mode is Mode.FILE or (self.is_command and self.mode is not Mode.NOT_RUN)

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """Something in a document the harness cannot work with, with where it is."""

    doc: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Document:
    """A Markdown file's blocks and the problems found reading them."""

    name: str
    blocks: tuple[Block, ...]
    problems: tuple[Problem, ...]

    def commands(self) -> list[Block]:
        return [block for block in self.blocks if block.is_command]

    def runnable(self) -> list[Block]:
        return [block for block in self.blocks if block.runs]


def documents() -> list[Path]:
    """Every document whose commands are run: the README, then docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def not_run_lines() -> list[str]:
    """Each ```sh block of the documents that is not run, with its reason."""
    return [
        f"{block.where()}: {block.reason or '(no reason given)'}"
        for path in documents()
        for block in read(path).commands()
        if block.mode is Mode.NOT_RUN
    ]


def name_of(path: Path) -> str:
    """A document's path from the project's root (its file name, outside the project)."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def read(path: Path) -> Document:
    """The blocks of one Markdown file, in order."""
    name = name_of(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[Problem] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if _SETUP_START.match(line):
            end = _comment_end(lines, index)
            if end is None:
                problems.append(Problem(name, index + 1, "a setup comment without its '-->'"))
                break
            body = "\n".join(lines[index + 1 : end])
            blocks.append(Block(name, index + 1, COMMAND, body, Mode.SETUP))
            index = end + 1
            continue
        opened = _FENCE.match(line)
        if opened is None:
            if _MARKER.match(line) and not _is_fence(lines, index + 1):
                problems.append(
                    Problem(name, index + 1, "a docs marker must be the line just before a fence")
                )
            index += 1
            continue
        close = _closing_fence(lines, index, opened)
        if close is None:
            problems.append(Problem(name, index + 1, "a fence that is never closed"))
            break
        indent = len(opened["indent"])
        body = "\n".join(_dedent(text, indent) for text in lines[index + 1 : close])
        language = opened["info"].strip().split(" ", 1)[0] if opened["info"].strip() else ""
        mode, detail, problem = _marker(lines[index - 1] if index else "")
        if problem:
            problems.append(Problem(name, index, problem))
        if mode is Mode.FILE:
            blocks.append(Block(name, index + 1, language, body, mode, file=detail))
        else:
            blocks.append(Block(name, index + 1, language, body, mode, reason=detail))
        index = close + 1
    return Document(name, tuple(blocks), tuple(problems))


def fence_problems(document: Document) -> Iterator[Problem]:
    """Fences without a language, shell commands tagged other than ```sh, and markers on
    blocks that are not commands."""
    for block in document.blocks:
        if block.mode is Mode.SETUP:
            continue
        if not block.language:
            yield Problem(
                block.doc,
                block.line,
                "a fence without a language: tag it ```sh for a command, ```text for output "
                "or a synopsis, or the language of the code",
            )
        elif block.language in OTHER_SHELL_NAMES:
            yield Problem(block.doc, block.line, f"```{block.language}: tag shell commands ```sh")
        elif block.mode not in (Mode.RUN, Mode.FILE) and block.language != COMMAND:
            yield Problem(block.doc, block.line, f"a docs marker on a ```{block.language} block")
        if block.mode is Mode.NOT_RUN and not block.reason:
            yield Problem(block.doc, block.line, "'not run' needs a reason after 'not run:'")


def _marker(line: str) -> tuple[Mode, str, str | None]:
    """The mode a marker line gives the fence after it (RUN when the line is no marker),
    the reason or file name it gives, and the problem with it, if any."""
    found = _MARKER.match(line)
    if found is None:
        return Mode.RUN, "", None
    body = found["body"]
    if body == "expect-fail":
        return Mode.EXPECT_FAIL, "", None
    not_run = _NOT_RUN.match(body)
    if not_run:
        return Mode.NOT_RUN, not_run["reason"].strip(), None
    if body.startswith("not run"):
        return Mode.NOT_RUN, "", None
    file = _FILE.match(body)
    if file:
        return Mode.FILE, file["name"], None
    return (
        Mode.RUN,
        "",
        (
            f"unknown docs marker {body!r}: use 'not run: REASON', 'expect-fail', 'file NAME' "
            "or a setup comment"
        ),
    )


def _is_fence(lines: list[str], index: int) -> bool:
    return index < len(lines) and _FENCE.match(lines[index]) is not None


def _closing_fence(lines: list[str], start: int, opened: re.Match[str]) -> int | None:
    char, size = opened["fence"][0], len(opened["fence"])
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if stripped and set(stripped) == {char} and len(stripped) >= size:
            return index
    return None


def _comment_end(lines: list[str], start: int) -> int | None:
    for index in range(start + 1, len(lines)):
        if lines[index].strip() == "-->":
            return index
    return None


def _dedent(text: str, indent: int) -> str:
    """A fence inside a list item is indented; its content loses that indent."""
    cut = 0
    while cut < indent and cut < len(text) and text[cut] in " \t":
        cut += 1
    return text[cut:]
