"""Request parsing for the HTTP build, with axum's error bodies for malformed requests.

TEI's errors are JSON (`{"error", "error_type"}`), but requests that never reach TEI's code
get axum's plain-text answers: 413 over `--payload-limit`, 415 without a JSON content type,
400 for bad JSON, 422 for a body of the wrong shape. Unknown fields are ignored (serde).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from tei_reconciler.engine.types import Text, validation_error


class Reject(Exception):
    """A plain-text answer before the request reaches the engine's semantics."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def shape_error(detail: str) -> Reject:
    return Reject(422, f"Failed to deserialize the JSON body into the target type: {detail}")


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json" and not (
        content_type.split(";")[0].strip().lower().endswith("+json")
    ):
        raise Reject(415, "Expected request with `Content-Type: application/json`")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Reject(413, "Failed to buffer the request body: length limit exceeded")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise Reject(400, f"Failed to parse the request body as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise shape_error(f"invalid type: {type(data).__name__}, expected a JSON object")
    return data


def get(data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """`data[name]` if present and of `kind`; `default` if absent or null."""
    value = data.get(name)
    if value is None:
        if default is _REQUIRED:
            raise shape_error(f"missing field `{name}`")
        return default
    if isinstance(value, bool) and kind is not bool and bool not in _tuple(kind):
        raise shape_error(f"{name}: invalid type: boolean `{value}`")
    if not isinstance(value, kind):
        raise shape_error(f"{name}: invalid type: {type(value).__name__}")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


_REQUIRED = object()
REQUIRED: Any = _REQUIRED


def direction_left(data: dict[str, Any]) -> bool:
    value = get(data, "truncation_direction", str, "Right")
    if value not in {"Left", "left", "Right", "right"}:
        raise shape_error(f"truncation_direction: unknown variant `{value}`")
    return str(value).lower() == "left"


U32_MAX = 0xFFFF_FFFF


def is_token_id(value: Any) -> bool:
    """A JSON integer that fits TEI's `u32` token ids (booleans and negatives do not)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32_MAX


def inputs_of(value: Any) -> tuple[list[Text], bool]:
    """TEI's `Input`: a string, token ids, or a batch of either. Returns (inputs, is_batch)."""
    if isinstance(value, str):
        return [value], False
    if isinstance(value, list):
        if all(is_token_id(v) for v in value):
            return [tuple(value)], False
        texts: list[Text] = []
        for item in value:
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, list) and all(is_token_id(v) for v in item):
                texts.append(tuple(item))
            else:
                raise shape_error("inputs: data did not match any variant of untagged enum Input")
        if not texts:
            raise validation_error("`inputs` cannot be empty")
        return texts, True
    raise shape_error("inputs: data did not match any variant of untagged enum Input")
