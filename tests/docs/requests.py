"""The HTTP requests a block's curl commands make, read from their text: method and path."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

_CURL = re.compile(r"\bcurl\b")
_BASE = re.compile(r"^(?:https?://)?(?:127\.0\.0\.1|localhost):8000(?P<path>/[^?#]*)?")
_ENDS = {"|", "||", "&&", ";", ")", "&", ">", ">>", "<", "(", "`"}
# curl options that take a value, so the value is never read as the URL.
_WITH_VALUE = {
    "-X", "--request", "-H", "--header", "-d", "--data", "--data-raw", "--data-binary",
    "--data-urlencode", "-F", "--form", "-o", "--output", "-u", "--user", "-w",
    "--write-out", "-D", "--dump-header", "-b", "--cookie", "-A", "--user-agent",
    "-e", "--referer", "--max-time", "-m", "--connect-timeout", "--retry",
}  # fmt: skip
_DATA = {"-d", "--data", "--data-raw", "--data-binary", "--data-urlencode", "-F", "--form"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str


def requests_in(body: str) -> Iterator[Request]:
    """Each curl in a block's text that calls the API, with its method (``-X``, else POST
    when it sends data, else GET) and its path without the query."""
    text = body.replace("\\\n", " ")
    for line in text.splitlines():
        for found in _CURL.finditer(line):
            request = _request(line[found.end() :])
            if request is not None:
                yield request


def _request(rest: str) -> Request | None:
    lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    method: str | None = None
    data = False
    url: str | None = None
    tokens = iter(lexer)
    try:
        for token in tokens:
            if token in _ENDS:
                break
            if token in ("-X", "--request"):
                method = next(tokens).upper()
            elif token in _DATA:
                data = True
                next(tokens)
            elif token in _WITH_VALUE:
                next(tokens)
            elif url is None and _BASE.match(token):
                url = token
    except (StopIteration, ValueError):
        pass
    if url is None:
        return None
    found = _BASE.match(url)
    assert found is not None
    path = urlsplit("http://" + url.split("://", 1)[-1]).path or "/"
    return Request(method or ("POST" if data else "GET"), path)


def template_pattern(template: str) -> re.Pattern[str]:
    """An OpenAPI path template as a pattern matching concrete paths (and the shell
    variables a doc puts in them): /tasks/{task_id} matches /tasks/$TASK."""
    parts = re.split(r"(\{[^}]+\})", template)
    pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(f"^{pattern}$")
