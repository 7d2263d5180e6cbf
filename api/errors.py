"""Every error answer has one shape: ``{"error": {"code", "message", "details"}}``.

This module is the one place where errors become HTTP: WrenchError subclasses map to a status
by class, request validation to 422 with the field paths, Starlette's 404 and 405 to the same
body, and anything unexpected to a generic 500 (see api.middleware) that names nothing inside.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from api.models import ErrorBody, ErrorDetail
from events import BrokerUnavailable, KeyStoreUnavailable, TenantKeysDestroyed
from projections import DatabaseUnavailable
from wrenchai.errors import WrenchError

log = structlog.get_logger(__name__)


class ApiError(WrenchError):
    """Root of the errors the API raises on purpose; ``status`` is the HTTP status and
    ``headers`` go with the answer."""

    code = "API_ERROR"
    status = 400
    headers: dict[str, str] | None = None


class Unauthenticated(ApiError):
    """No credential, or one that is not valid now. The answer never says which: the
    reason goes to the log and to an access.denied event."""

    code = "UNAUTHENTICATED"
    status = 401
    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self, reason: str = "invalid_credential") -> None:
        super().__init__(
            "missing or invalid credentials: send an access token or an API key as "
            "'Authorization: Bearer ...', or an API key as 'X-API-Key: wr_...'"
        )
        self.reason = reason
        self.details = {}


class Forbidden(ApiError):
    """The credential is valid but does not hold the scope the route needs."""

    code = "FORBIDDEN"
    status = 403


class RateLimited(ApiError):
    """Too many requests of one kind from one caller; retry after the header's seconds."""

    code = "RATE_LIMITED"
    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}


class TaskNotFound(ApiError):
    """No task with this id in the caller's tenant (or not projected yet: try ``?wait_for=``)."""

    code = "TASK_NOT_FOUND"
    status = 404


class TaskTerminal(ApiError):
    """The task has already completed, failed or been cancelled; it takes no more commands."""

    code = "TASK_TERMINAL"
    status = 409


class AlertNotFound(ApiError):
    """No alert with this id in the caller's tenant (or not projected yet)."""

    code = "ALERT_NOT_FOUND"
    status = 404


class AlertAlreadyAcknowledged(ApiError):
    """Someone has acknowledged the alert already; the first acknowledgement stands."""

    code = "ALERT_ALREADY_ACKNOWLEDGED"
    status = 409


class BudgetNotFound(ApiError):
    """The caller's tenant has no budget for this scope (or it is not projected yet)."""

    code = "BUDGET_NOT_FOUND"
    status = 404


class InvalidRequest(ApiError):
    """A parameter passed type checks but means nothing (a cursor this API never issued)."""

    code = "VALIDATION_ERROR"
    status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__("the request is invalid", errors=[{"field": field, "message": message}])


# Errors raised outside the API package, by the status they answer with. Anything else that
# is a WrenchError but not listed here is a fault of ours: a generic 500.
_STATUS_BY_ERROR: tuple[tuple[type[WrenchError], int], ...] = (
    (BrokerUnavailable, 503),
    (DatabaseUnavailable, 503),
    (KeyStoreUnavailable, 503),
    # A tenant shredded between its credential check and its write: nothing is written.
    (TenantKeysDestroyed, 410),
)

_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    410: "GONE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}

# The methods a 405's Allow header can name (a mount answers any method, so none is asked).
_PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

INTERNAL_MESSAGE = "the server hit an unexpected error; quote the request id when reporting it"


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON answer for one error."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=dict(details or {})))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def internal_error_response() -> JSONResponse:
    """The 500 answer: the same for every fault, so nothing about the inside leaks."""
    return error_response(500, "INTERNAL_ERROR", INTERNAL_MESSAGE)


def log_fault(exc: BaseException, **context: Any) -> None:
    """Log an exception no handler expected, with its stack but without any payload: the
    message of a failed validation (which can quote a user's description) is reduced to the
    field paths and error types. Callers pass the request id in ``context``."""
    if isinstance(exc, ValidationError):
        message = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors(include_input=False)
        )
    else:
        message = str(exc)[:500]
    log.error(
        "unhandled error",
        error_type=type(exc).__name__,
        error=message,
        stack="".join(traceback.format_tb(exc.__traceback__)),
        **context,
    )


def status_of(exc: WrenchError) -> int | None:
    """The HTTP status of a known error, or None when it is a fault (500)."""
    if isinstance(exc, ApiError):
        return exc.status
    return next((status for kind, status in _STATUS_BY_ERROR if isinstance(exc, kind)), None)


async def _wrench_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WrenchError)
    status = status_of(exc)
    if status is None:
        log_fault(
            exc,
            request_id=getattr(request.state, "request_id", None),
            method=request.method,
            path=request.url.path,
        )
        return internal_error_response()
    if status >= 500:
        log.warning("dependency unavailable", code=exc.code, reason=exc.message)
    headers = exc.headers if isinstance(exc, ApiError) else None
    return error_response(
        status, exc.code, _public_message(exc), _public_details(exc), headers=headers
    )


def _public_message(exc: WrenchError) -> str:
    # Driver messages carry hosts and ports; the client gets a message that says what to do.
    if isinstance(exc, BrokerUnavailable):
        return "the event log is unavailable; nothing was written, retry later"
    if isinstance(exc, DatabaseUnavailable | KeyStoreUnavailable):
        return "the database is unavailable; retry later"
    if isinstance(exc, TenantKeysDestroyed):
        return "this tenant was shredded: nothing more is written for it"
    return exc.message


def _public_details(exc: WrenchError) -> dict[str, Any]:
    if isinstance(exc, ApiError):
        return dict(exc.details)
    return {}


def error_detail(exc: WrenchError) -> ErrorDetail:
    """What the answer to ``exc`` says: its code, its public message and its details (the
    OpenAPI examples of api.openapi are made with it, so they read as the answers do)."""
    return ErrorDetail(code=exc.code, message=_public_message(exc), details=_public_details(exc))


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic's error list as ``[{"field": "body.description", "message": ...}]``.

    The input value is left out on purpose: it may be a sensitive description.
    """
    found = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()))
        found.append({"field": location, "message": str(error.get("msg", "invalid value"))})
    return found


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(
        422, "VALIDATION_ERROR", "the request is invalid", {"errors": field_errors(exc.errors())}
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, f"HTTP_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
    headers = exc.headers
    if exc.status_code == 405 and (methods := allowed_methods(request)):
        headers = {**(headers or {}), "Allow": ", ".join(methods)}
    return error_response(exc.status_code, code, message, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the app serves at the request's path. Starlette's router answers a 405
    from the first route whose path matches, so its Allow names that route's methods only
    (``POST`` on /tasks, which serves GET too); this asks every route, one method at a time,
    as the router would (FastAPI nests included routers, so routes are not a flat list)."""
    routes = [route for route in request.app.routes if not isinstance(route, Mount)]
    allowed = []
    for method in _PROBED_METHODS:
        probe: Scope = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "headers": [],
            "query_string": b"",
        }
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above; unexpected exceptions are api.middleware's job."""
    app.add_exception_handler(WrenchError, _wrench_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
