"""How the harness reads markers and runs a page, on small pages against a local HTTP server
that answers by path (no stack needed): a failing command names its page line, curl fails
on an error status, expect-fail blocks pass only when they really fail, files and setup run
in their place."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.docs import runner
from tests.docs.fences import Mode, fence_problems, read
from tests.docs.requests import Request, requests_in


class _Handler(BaseHTTPRequestHandler):
    """GET /status/NNN answers NNN with a JSON body."""

    def do_GET(self) -> None:
        status = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/status/") else 404
        body = b'{"status": %d}' % status
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()


def _run(tmp_path: Path, port: int, text: str) -> runner.Result:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    document = read(page)
    return runner.run(document, runner.Stack(tmp_path, port, 9), timeout_s=60)


def _page(*blocks: str) -> str:
    return "# A page\n\n" + "\n\n".join(blocks) + "\n"


def test_blocks_run_in_order_in_one_shell_against_the_rewritten_address(
    tmp_path: Path, server: int
) -> None:
    result = _run(
        tmp_path,
        server,
        _page(
            "```sh\nCODE=200\n```",
            "```sh\ncurl -s http://127.0.0.1:8000/status/$CODE > answer.json\n```",
        ),
    )
    assert result.returncode == 0, result.output
    assert (tmp_path / "answer.json").read_text() == '{"status": 200}'


def test_an_error_status_fails_the_page_and_names_the_curls_line(
    tmp_path: Path, server: int
) -> None:
    result = _run(
        tmp_path,
        server,
        _page("```sh\ntrue\ncurl -s http://127.0.0.1:8000/status/404\necho never\n```"),
    )
    assert result.returncode != 0
    assert result.failed_at == "page.md:5"
    assert '{"status": 404}' in result.output  # the error body is shown
    assert "never" not in result.output


def test_a_failing_command_in_a_substitution_names_its_line(tmp_path: Path, server: int) -> None:
    result = _run(tmp_path, server, _page("```sh\necho start\nX=$(false)\n```"))
    assert result.returncode != 0
    assert result.failed_at == "page.md:5"


def test_an_expect_fail_block_passes_on_4xx_and_the_page_goes_on(
    tmp_path: Path, server: int
) -> None:
    result = _run(
        tmp_path,
        server,
        _page(
            "<!-- docs: expect-fail -->\n```sh\ncurl -s http://127.0.0.1:8000/status/404\n"
            "curl -s http://127.0.0.1:8000/status/422\n```",
            "```sh\necho after\n```",
        ),
    )
    assert result.returncode == 0, result.output
    assert "after" in result.output


@pytest.mark.parametrize(
    "body",
    [
        "curl -s http://127.0.0.1:8000/status/200",
        "curl -s http://127.0.0.1:8000/status/404\ncurl -s http://127.0.0.1:8000/status/200",
        "curl -s http://127.0.0.1:8000/status/503",
        "true",
        "no-such-command-anywhere",
    ],
    ids=["a 200", "a 4xx then a 200", "a 5xx", "a zero exit", "a command that cannot run"],
)
def test_an_expect_fail_block_that_does_not_fail_as_shown_fails_the_page(
    tmp_path: Path, server: int, body: str
) -> None:
    result = _run(tmp_path, server, _page(f"<!-- docs: expect-fail -->\n```sh\n{body}\n```"))
    assert result.returncode != 0, result.output
    assert result.failed_at == "page.md:4"


def test_an_expect_fail_block_without_curl_passes_on_a_nonzero_exit(
    tmp_path: Path, server: int
) -> None:
    result = _run(tmp_path, server, _page("<!-- docs: expect-fail -->\n```sh\nexit 4\n```"))
    assert result.returncode == 0, result.output


def test_file_blocks_and_setup_comments_run_where_they_stand(tmp_path: Path, server: int) -> None:
    result = _run(
        tmp_path,
        server,
        _page(
            "<!-- docs: file prices.yaml -->\n```yaml\nversion: one\n```",
            '<!-- docs: setup\nWORD=$(cat prices.yaml)\n-->\n```sh\necho "$WORD" > seen.txt\n```',
            "<!-- docs: not run: shown only -->\n```sh\nexit 1\n```",
        ),
    )
    assert result.returncode == 0, result.output
    assert (tmp_path / "seen.txt").read_text() == "version: one\n"


def test_markers_are_read_and_bad_ones_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        _page(
            "<!-- docs: not run: needs Docker -->\n```sh\ndocker compose up\n```",
            "<!-- docs: not run -->\n```sh\nmake dev\n```",
            "```\n$ wrenchai dev\n```",
            "```bash\nls\n```",
            "<!-- docs: expect-fail -->\n```json\n{}\n```",
            "<!-- docs: skip -->\n```sh\nls\n```",
        ),
        encoding="utf-8",
    )
    document = read(page)
    modes = [(block.language, block.mode, block.reason) for block in document.blocks]
    assert modes[0] == ("sh", Mode.NOT_RUN, "needs Docker")
    assert modes[1] == ("sh", Mode.NOT_RUN, "")
    problems = [p.message for p in [*document.problems, *fence_problems(document)]]
    assert any("unknown docs marker 'skip'" in p for p in problems)
    assert any("needs a reason" in p for p in problems)
    assert any("without a language" in p for p in problems)
    assert any("```bash" in p for p in problems)
    assert any("marker on a ```json block" in p for p in problems)


def test_requests_are_read_from_curl_lines() -> None:
    body = (
        'TASK=$(curl -s -X POST http://127.0.0.1:8000/tasks -H "X-API-Key: $KEY" \\\n'
        "  -d '{\"description\": \"x\"}' | python3 -c 'print(1)')\n"
        'curl -s "http://127.0.0.1:8000/tasks/$TASK?wait_for=$POS" -H "X-API-Key: $KEY"\n'
        "curl -s -X POST http://127.0.0.1:8000/auth/token --data-urlencode username=a\n"
        "curl -sN localhost:8000/tasks/$TASK/stream  # SSE\n"
        "curl -s https://example.com/elsewhere\n"
    )
    assert list(requests_in(body)) == [
        Request("POST", "/tasks"),
        Request("GET", "/tasks/$TASK"),
        Request("POST", "/auth/token"),
        Request("GET", "/tasks/$TASK/stream"),
    ]
