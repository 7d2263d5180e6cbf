"""What the OpenAPI schema says about error answers, in one place.

Every error answer has the body ``{"error": {"code", "message", "details"}}`` (api.errors).
A route declares the error statuses it may answer with :func:`responses_for`, which gives
each one that body's schema and an example as the API really words it: a default per status
(:data:`DEFAULT_EXAMPLES`), or the route's own, made from the very error it raises::

    @router.get(
        "/{task_id}",
        response_model=TaskDetail,
        responses=responses_for(404, 422, 503, examples={404: TaskNotFound("no task ...")}),
    )

Success bodies and request bodies carry their examples on the model itself
(``model_config = ConfigDict(json_schema_extra={"examples": [...]})``, the values in
api._examples), so the schema, Swagger's "Example Value" and the request's try-it-out show
the same. tests/api/test_openapi_examples.py fails for an operation that lacks one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from api.errors import Forbidden, InvalidRequest, RateLimited, Unauthenticated, error_detail
from api.models import ErrorBody, ErrorDetail
from events import BrokerUnavailable, TenantKeysDestroyed
from wrenchai.errors import WrenchError

Example = WrenchError | ErrorDetail
"""An error as a route raises it (its code, public message and details make the example),
or an ErrorDetail written out where no exception class stands behind the answer."""


def _detail(example: Example) -> ErrorDetail:
    return example if isinstance(example, ErrorDetail) else error_detail(example)


DEFAULT_EXAMPLES: dict[int, Example] = {
    400: ErrorDetail(
        code="BAD_REQUEST",
        message="the request cannot be read: send a JSON body (Content-Type: application/json)",
    ),
    401: Unauthenticated(),
    403: Forbidden(
        "this credential lacks the scope 'tasks:write' that the route needs",
        required=["tasks:write"],
    ),
    404: ErrorDetail(code="NOT_FOUND", message="not found"),
    409: ErrorDetail(code="CONFLICT", message="the resource is not in a state that allows this"),
    410: TenantKeysDestroyed("tenant acme was shredded"),
    413: ErrorDetail(
        code="PAYLOAD_TOO_LARGE",
        message="the request body is larger than the 1048576 bytes this API accepts; "
        "send a smaller one",
        details={"max_body_bytes": 1_048_576},
    ),
    422: InvalidRequest("query.limit", "Input should be less than or equal to 200"),
    429: RateLimited("too many writes; limit 60/minute per principal", 12),
    503: BrokerUnavailable("kafka at 10.0.0.7:9092 did not answer"),
}
"""The example of each error status when a route gives none of its own."""

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {
        "description": "Not Modified: the body the client holds (its entity tag was in "
        "If-None-Match) is still current. No body; the ETag header repeats the tag.",
        "headers": {"ETag": {"schema": {"type": "string"}, "description": "The entity tag."}},
    }
}
"""The 304 of a conditional GET, for a route that answers If-None-Match."""


def error_examples(examples: Example | Sequence[Example]) -> dict[str, Any]:
    """The media type's ``examples`` of one status: each example's body, named by its code."""
    listed = [examples] if isinstance(examples, WrenchError | ErrorDetail) else list(examples)
    named: dict[str, Any] = {}
    for example in listed:
        detail = _detail(example)
        named[detail.code] = {
            "summary": detail.message,
            "value": ErrorBody(error=detail).model_dump(mode="json"),
        }
    return named


def responses_for(
    *statuses: int, examples: Mapping[int, Example | Sequence[Example]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route (or of ``include_router``) that may answer ``statuses``:
    each in the error shape, with the route's own example(s) from ``examples`` or the
    status's default. Merge it with other entries (``{**responses_for(...), **NOT_MODIFIED}``)."""
    chosen = examples or {}
    unknown = sorted(set(chosen) - set(statuses))
    if unknown:
        raise ValueError(f"examples for statuses {unknown} that are not among {statuses}")
    missing = sorted(set(statuses) - set(chosen) - set(DEFAULT_EXAMPLES))
    if missing:
        raise ValueError(f"no default example for statuses {missing}: pass examples=")
    return {
        status: {
            "model": ErrorBody,
            "content": {
                "application/json": {
                    "examples": error_examples(chosen.get(status, DEFAULT_EXAMPLES[status]))
                }
            },
        }
        for status in statuses
    }


def keep_null_examples(app: FastAPI) -> None:
    """Make ``app.openapi`` keep the nulls of its examples.

    FastAPI writes the document with ``exclude_none``, which also drops every null inside an
    example: a body whose nullable fields are simply missing, invalid against its own
    schema. The examples are set again, whole, from where they were declared: the models'
    ``json_schema_extra`` and the routes' ``responses`` and ``openapi_extra``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()
        if doc.get(_RESTORED) is None:
            _restore_models(doc)
            _restore_routes(doc, app)
            doc[_RESTORED] = True
        return {k: v for k, v in doc.items() if k != _RESTORED}

    app.openapi = openapi  # type: ignore[method-assign]


_RESTORED = "x-examples-restored"


def _restore_models(doc: dict[str, Any]) -> None:
    schemas = doc.get("components", {}).get("schemas", {})
    stack = list(BaseModel.__subclasses__())
    while stack:
        model = stack.pop()
        stack.extend(model.__subclasses__())
        extra = model.model_config.get("json_schema_extra")
        if not model.__module__.startswith("api.") or not isinstance(extra, dict):
            continue
        for name in (model.__name__, f"{model.__name__}-Input", f"{model.__name__}-Output"):
            if name in schemas and "examples" in extra:
                schemas[name]["examples"] = copy.deepcopy(extra["examples"])


def _restore_routes(doc: dict[str, Any], app: FastAPI) -> None:
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        operations = doc["paths"].get(route.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue
            for status, declared in (route.responses or {}).items():
                answer = operation["responses"].get(str(status), {})
                _restore_media(answer.get("content", {}), declared.get("content", {}))
            extra = route.openapi_extra or {}
            body = operation.get("requestBody", {}).get("content", {})
            _restore_media(body, extra.get("requestBody", {}).get("content", {}))


def _restore_media(target: dict[str, Any], declared: Mapping[str, Any]) -> None:
    for media, spec in declared.items():
        for key in ("example", "examples"):
            if media in target and key in spec:
                target[media][key] = copy.deepcopy(spec[key])
