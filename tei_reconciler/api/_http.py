"""Request parsing shared by the handlers: bounded bodies, strict JSON, typed query values.

A body is read in chunks and refused as soon as it passes `max_body_bytes`, so an oversized
upload costs at most the limit in memory, whatever its `Content-Length` claims. Decoding goes
through msgspec once, and its errors become `VALIDATION_ERROR` details naming the field.
"""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec
from starlette.requests import Request

from tei_reconciler.api.errors import ApiError
from tei_reconciler.api.schemas import ErrorDetail

_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")

T = TypeVar("T")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 `PAYLOAD_TOO_LARGE` once more than `limit` bytes arrive."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"request body is larger than {limit} bytes")


async def decode_json(request: Request, type_: type[T], limit: int) -> T:
    """Decode a JSON body into `type_`: 415 for another content type, 400 for bad JSON."""
    kind = media_type(request)
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"expected Content-Type application/json, got {kind or 'none'}",
        )
    body = await read_body(request, limit)
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        detail = validation_detail(str(exc))
        raise ApiError(400, "VALIDATION_ERROR", f"invalid request body: {exc}", [detail]) from None
    except msgspec.DecodeError as exc:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"malformed JSON: {exc}",
            [ErrorDetail(field="", message=f"malformed JSON: {exc}")],
        ) from None


def validation_detail(message: str) -> ErrorDetail:
    """msgspec's "Expected `int`, got `str` - at `$.port`" as {field: "port", message}."""
    field = ""
    at = _AT_PATH.search(message)
    if at:
        message = message[: at.start()]
        field = at.group("path").lstrip(".")
    missing = _MISSING.search(message)
    if missing:
        field = f"{field}.{missing.group('field')}" if field else missing.group("field")
    return ErrorDetail(field=field, message=message)


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"query parameter {name!r} must be an integer, got {raw!r}",
            [ErrorDetail(field=name, message="must be an integer")],
        ) from None


def query_float(request: Request, name: str, *, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"query parameter {name!r} must be seconds between 0 and 3600, got {raw!r}",
            [ErrorDetail(field=name, message="must be a number of seconds in [0, 3600]")],
        )
    return value


def query_bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "").lower()
    if raw in {"", "false", "0", "no"}:
        return False
    if raw in {"true", "1", "yes"}:
        return True
    raise ApiError(
        400,
        "VALIDATION_ERROR",
        f"query parameter {name!r} must be true or false, got {raw!r}",
        [ErrorDetail(field=name, message="must be true or false")],
    )
