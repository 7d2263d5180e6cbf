"""Every operation of /openapi.json shows an example of each body it takes or gives: its
request body, its success answer, and each error status it declares, in the error shape
with a real code. Examples must be valid against their schemas, so the docs never show a
body the API would refuse or never send.

How to give them (api.openapi): errors with ``responses=responses_for(404, 422, ...,
examples={404: TaskNotFound(...)})`` on the route; request and success bodies with
``model_config = ConfigDict(json_schema_extra={"examples": [...]})`` on the model; a body
that is not JSON (text/event-stream) with an ``example`` on its media type."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from api import create_app
from wrenchai.settings import Settings

CODE = re.compile(r"^[A-Z][A-Z0-9_]*[A-Z0-9]$")


@pytest.fixture(scope="module")
async def document() -> dict[str, Any]:
    """/openapi.json as the app serves it (reading it needs neither broker nor database)."""
    app = create_app(Settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch"}:
                yield f"{method.upper()} {path}", operation


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema a $ref names, and for an optional body (anyOf [X, null]) X's."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _resolve(doc, doc["components"]["schemas"][name])
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1 and "examples" not in schema:
        return _resolve(doc, options[0])
    return schema


def _examples(doc: dict[str, Any], media: dict[str, Any], *, own: bool) -> list[Any]:
    """The examples a media type shows: its own ``example``/``examples``, and unless
    ``own``, those of the schema it references."""
    found = [media["example"]] if "example" in media else []
    found += [e["value"] for e in media.get("examples", {}).values() if "value" in e]
    if not own:
        found += _resolve(doc, media.get("schema", {})).get("examples", [])
    return found


def _invalid(doc: dict[str, Any], schema: dict[str, Any], example: Any) -> str | None:
    validator = Draft202012Validator({**schema, "components": doc["components"]})
    error = next(iter(validator.iter_errors(example)), None)
    return None if error is None else f"{list(error.absolute_path)}: {error.message}"


def _problems(doc: dict[str, Any]) -> Iterator[str]:
    for label, operation in _operations(doc):
        body = operation.get("requestBody", {}).get("content", {})
        for kind, media in body.items():
            if not _examples(doc, media, own=False):
                yield f"{label}: the request body ({kind}) has no example"
        statuses = sorted(operation["responses"], key=str)
        successes = [s for s in statuses if s.startswith("2")]
        if not successes:
            yield f"{label}: no success answer is declared"
        for status in statuses:
            content = operation["responses"][status].get("content", {})
            error = int(status) >= 400
            for kind, media in content.items():
                examples = _examples(doc, media, own=error)
                if not examples:
                    where = "on its media type " if error else ""
                    yield f"{label} {status} ({kind}): no example {where}"
                    continue
                if kind != "application/json":
                    continue
                for example in examples:
                    problem = _invalid(doc, media.get("schema", {}), example)
                    if problem:
                        yield f"{label} {status}: an example is not valid: {problem}"
                    if error and isinstance(example, dict) and "error" in example:
                        code = example["error"].get("code", "")
                        if not CODE.match(code) or code.startswith("HTTP_"):
                            yield f"{label} {status}: example code {code!r} is not a real code"


async def test_every_operation_has_valid_examples_of_its_bodies_and_errors(
    document: dict[str, Any],
) -> None:
    """Each operation's request body, success answer and every declared error status
    carries an example (errors on the status itself, in the error shape with a stable
    code), and each example is valid against its schema."""
    problems = list(_problems(document))

    assert not problems, "\n".join(problems)


async def test_an_error_status_shows_the_routes_own_error(document: dict[str, Any]) -> None:
    """The examples are the errors the route really raises: a task's 404 is
    TASK_NOT_FOUND, an alert's ALERT_NOT_FOUND, and a 401 is UNAUTHENTICATED everywhere."""
    paths = document["paths"]

    def codes(path: str, method: str, status: str) -> set[str]:
        media = paths[path][method]["responses"][status]["content"]["application/json"]
        return {e["value"]["error"]["code"] for e in media["examples"].values()}

    assert codes("/tasks/{task_id}", "get", "404") == {"TASK_NOT_FOUND"}
    assert codes("/tasks/{task_id}/cancel", "post", "409") == {"TASK_TERMINAL"}
    assert codes("/alerts/{alert_id}/ack", "post", "404") == {"ALERT_NOT_FOUND"}
    assert codes("/tasks", "get", "401") == {"UNAUTHENTICATED"}
    assert codes("/tasks", "get", "422") == {"VALIDATION_ERROR"}
    assert "304" in paths["/tasks/{task_id}"]["get"]["responses"]
