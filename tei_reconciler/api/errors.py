"""One JSON error envelope for every non-2xx answer.

tei-manager answered framework rejections (bad JSON, wrong content type, unknown route, auth)
in plain text, so clients had to parse two formats. Here every failure, whether raised by a
handler, by the state file, by Starlette's router or by an auth middleware, leaves as
`{"error", "code", "timestamp"}` (+ `details` for validation). `api_error_for` is the one place
that maps the project's exception tree to HTTP status codes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tei_reconciler.api.schemas import ErrorDetail, ErrorResponse
from tei_reconciler.errors import (
    InstanceExists,
    InstanceNotFound,
    Problem,
    RevisionConflict,
    SpecError,
    StateFileError,
    StateReadOnly,
)

log = logging.getLogger(__name__)

#: Codes for statuses Starlette raises itself (routing, method) or that a middleware sends.
_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    412: "REVISION_MISMATCH",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    500: "INTERNAL_ERROR",
    503: "NOT_READY",
}


class ApiError(Exception):
    """An answer other than 2xx, raised anywhere below a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[ErrorDetail] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The envelope itself; auth middleware calls this for its 401/403 answers."""
    body = ErrorResponse(error=message, code=code, timestamp=datetime.now(UTC), details=details)
    return json_response(body, status, headers)


def problem_details(problems: list[Problem], *, prefix: str = "") -> list[ErrorDetail]:
    """Validation problems as `details`; `prefix` (e.g. "instances.bge.") is stripped so an
    instance route names the request field rather than the state-file path."""
    details = []
    for p in problems:
        field = p.field.removeprefix(prefix) if prefix else p.field
        details.append(
            ErrorDetail(
                field=field,
                message=p.message,
                line=p.line or None,
                column=p.column or None,
            )
        )
    return details


def api_error_for(exc: Exception, *, prefix: str = "") -> ApiError:
    """Map a domain exception to its HTTP answer (DESIGN.md section 6)."""
    match exc:
        case ApiError():
            return exc
        case SpecError(problems=problems):
            conflicts = [p for p in problems if p.code == "port_conflict"]
            if conflicts:
                return ApiError(
                    409,
                    "PORT_CONFLICT",
                    conflicts[0].message,
                    problem_details(conflicts, prefix=prefix),
                )
            over = [p for p in problems if p.code == "max_instances"]
            if over:
                return ApiError(422, "MAX_INSTANCES_REACHED", over[0].message)
            return ApiError(
                400,
                "VALIDATION_ERROR",
                "validation failed: " + "; ".join(f"{p.field}: {p.message}" for p in problems),
                problem_details(problems, prefix=prefix),
            )
        case StateReadOnly():
            return ApiError(
                409,
                "STATE_READ_ONLY",
                f"the state file is managed outside the API (GitOps): {exc}",
            )
        case RevisionConflict():
            return ApiError(412, "REVISION_MISMATCH", str(exc))
        case InstanceExists(name=name):
            return ApiError(409, "INSTANCE_EXISTS", f"instance {name!r} already exists")
        case InstanceNotFound(name=name):
            return ApiError(404, "INSTANCE_NOT_FOUND", f"instance {name!r} not found")
        case StateFileError():  # a directory in its place, too large, a full disk, ...
            return ApiError(503, "STATE_FILE_UNAVAILABLE", f"the state file cannot be used: {exc}")
    return ApiError(500, "INTERNAL_ERROR", "internal error")


async def handle_api_error(request: Request, exc: Exception) -> Response:
    err = api_error_for(exc)
    if err.status == 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    return error_response(err.status, err.code, err.message, err.details, err.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method) in the envelope."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    message = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, message, headers=headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error")


EXCEPTION_HANDLERS = {
    HTTPException: handle_http_exception,
    ApiError: handle_api_error,
    SpecError: handle_api_error,
    StateFileError: handle_api_error,
    Exception: handle_unexpected,
}
