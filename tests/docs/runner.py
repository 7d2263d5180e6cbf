"""Runs a document's commands as a reader would: its ```sh blocks in order, in one bash, in
the folder that holds the stack's `.wrenchai`, with `wrenchai` on the PATH.

The script is the page's blocks with a prelude:

- `set -eEuo pipefail`, so the first failing command fails the page (`-E`: the ERR trap
  that names it reaches into functions, such as `curl` below);
- `curl` is a function adding `--fail-with-body --show-error`, so an HTTP 4xx or 5xx fails
  its block and still prints the error body;
- `http://127.0.0.1:8000` (and `localhost:8000`) become the stack's API, `127.0.0.1:9092`
  its broker;
- before each block, a line naming the page, the line and the block (and the seconds since
  the page started); a failure names the page's line of the command that failed;
- a block marked `file NAME` is written to NAME instead of run.

An expect-fail block runs in a subshell (variables it sets do not reach later blocks) with
every command run. Each curl in it must answer a 4xx; a block without curl must end with a
command that exits nonzero (126 and 127, a command that cannot run, do not count).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.docs.fences import Block, Document, Mode

FILE_END = "__DOCS_FILE_END__"
TRAP = '__docs_fail "$?"'
FAILED = re.compile(r"^docs: the command at script lines (?P<lines>[\d ]+) failed \(exit \d+\)$")

PRELUDE = r"""set -eEuo pipefail
curl() { command curl --fail-with-body --show-error "$@"; }
# The failing line, and the lines of the calls it sits in (a curl fails inside its function).
__docs_fail() {
  printf '\ndocs: the command at script lines %s failed (exit %s)\n' "${BASH_LINENO[*]}" "$1" >&2
}
trap '__docs_fail "$?"' ERR
# expect-fail blocks: a curl must answer 4xx; each answer is noted in $__docs_curls
__docs_curl_4xx() {
  local headers code rc=0
  headers=$(mktemp)
  command curl -D "$headers" "$@" || rc=$?
  code=$(awk '/^HTTP\// { code = $2 } END { print code }' "$headers")
  rm -f "$headers"
  if [[ "$code" == 4?? ]]; then
    echo "$code" >> "$__docs_curls"
    return 0
  fi
  printf '\ndocs: curl answered %s (curl exit %s); this block expects a 4xx\n' \
    "${code:-nothing}" "$rc" >&2
  echo bad >> "$__docs_curls"
  return 1
}
__docs_expect_fail() {
  local rc=$1 has_curl=$2
  if grep -qx bad "$__docs_curls"; then
    echo "docs: an expect-fail block had a curl that did not answer 4xx" >&2
    return 1
  fi
  if grep -q . "$__docs_curls"; then
    return 0
  fi
  if [[ $has_curl == yes ]]; then
    echo "docs: an expect-fail block's curl never answered a 4xx" >&2
    return 1
  fi
  if [[ $rc -eq 0 || $rc -eq 126 || $rc -eq 127 ]]; then
    echo "docs: an expect-fail block exited $rc: it should fail, and run" >&2
    return 1
  fi
  return 0
}
"""


@dataclass(frozen=True)
class Stack:
    """Where a dev stack runs: the folder holding its `.wrenchai`, and its ports."""

    home: Path
    api_port: int
    broker_port: int


@dataclass(frozen=True)
class Result:
    """One document's run: its exit status, everything it printed, and the page's line of
    the command that failed (None when none did, or it could not be told)."""

    returncode: int
    output: str
    failed_at: str | None


class Script:
    """A document's blocks as one bash script, remembering which page line each script line
    came from."""

    def __init__(self, document: Document, stack: Stack) -> None:
        self.document = document
        self.stack = stack
        self.lines: list[str] = PRELUDE.splitlines()
        self.origin: dict[int, str] = {}
        for number, block in enumerate(document.runnable(), start=1):
            self._add(number, block)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def page_line(self, script_line: int) -> str | None:
        return self.origin.get(script_line)

    def _emit(self, text: str, origin: str | None = None) -> None:
        self.lines.append(text)
        if origin is not None:
            self.origin[len(self.lines)] = origin

    def _add(self, number: int, block: Block) -> None:
        label = f"{block.where()} (block {number}, {block.mode.value})"
        self._emit(f"printf '\\n### docs: %s, at %ss\\n' {_quote(label)} \"$SECONDS\"")
        body = self.rewrite(block.body).splitlines()
        if block.mode is Mode.FILE:
            assert FILE_END not in body, f"{block.where()}: a line reads {FILE_END}"
            self._emit(f"cat > {_quote(block.file)} <<'{FILE_END}'", block.where())
            for text in body:
                self._emit(text)
            self._emit(FILE_END)
        elif block.mode is Mode.EXPECT_FAIL:
            has_curl = "yes" if re.search(r"\bcurl\b", block.body) else "no"
            self._emit("__docs_curls=$(mktemp)")
            self._emit("trap - ERR; set +e")
            self._emit("(")
            self._emit('  curl() { __docs_curl_4xx "$@"; }')
            self._body(block, body)
            self._emit(")")
            self._emit("__docs_rc=$?")
            self._emit(f"set -e; trap {_quote(TRAP)} ERR")
            self._emit(f'__docs_expect_fail "$__docs_rc" {has_curl}', block.where())
            self._emit('rm -f "$__docs_curls"')
        else:
            self._body(block, body)

    def _body(self, block: Block, body: list[str]) -> None:
        for offset, text in enumerate(body):
            self._emit(text, f"{block.doc}:{block.body_line + offset}")

    def rewrite(self, text: str) -> str:
        """The page's addresses made the stack's."""
        api, broker = self.stack.api_port, self.stack.broker_port
        for host in ("127.0.0.1", "localhost"):
            text = text.replace(f"{host}:8000", f"{host}:{api}")
            text = text.replace(f"{host}:9092", f"{host}:{broker}")
        return text


def run(document: Document, stack: Stack, timeout_s: float = 240.0) -> Result:
    """Run a document's commands in one bash; never raises on a failing command."""
    script = Script(document, stack)
    path = stack.home / f".docs-{document.name.replace('/', '-')}.sh"
    path.write_text(script.text(), encoding="utf-8")
    process = subprocess.Popen(
        ["bash", str(path)],
        cwd=stack.home,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # No controlling terminal: a command that would prompt reads stdin (empty) and fails
        # instead of waiting for a person. Its own process group, so a page that runs too long
        # is stopped with everything it started.
        start_new_session=True,
    )
    try:
        raw, _ = process.communicate(timeout=timeout_s)
        note = ""
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raw, _ = process.communicate()
        note = f"\ndocs: stopped after {timeout_s:.0f} s\n"
    output = raw.decode("utf-8", errors="replace") + note
    failed_at = None
    for line in reversed(output.splitlines()):
        found = FAILED.match(line)
        if found:
            lines = (script.page_line(int(number)) for number in found["lines"].split())
            failed_at = next((where for where in lines if where), None)
            break
    return Result(process.returncode, output, failed_at)


def environment() -> dict[str, str]:
    """A reader's shell: the venv's bin first on the PATH, and no WRENCH_* setting of the
    test session, so `wrenchai` commands find the stack through `.wrenchai` as they do
    beside `make dev`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WRENCH_")}
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    return env


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
