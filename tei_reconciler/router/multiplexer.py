"""`tei_multiplexer.v1.TeiMultiplexer`: tei-manager's protocol, served from raw bytes.

Each wrapper is split on the wire (see `wire.py`): the `Target` is decoded, the inner
`tei.v1` request is forwarded as the bytes the client sent. Check order follows tei-manager
(target, then inner request, then lookup), with model and index routing implemented and
not-Ready instances refused. A stream is routed by the `Target` of its **first** message;
targets on later messages are ignored, and a later message without an inner request ends the
call with INVALID_ARGUMENT instead of being dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import grpc

from tei_reconciler.router.methods import (
    MULTIPLEXER_SERVICE,
    TEI_METHODS,
    Handler,
    Kind,
    Method,
    method_handler,
)
from tei_reconciler.router.relay import Context, Relay, split_metadata
from tei_reconciler.router.routes import RouteError, check_request, parse_target, resolve
from tei_reconciler.router.wire import WireError, split_wrapper
from tei_reconciler.routing import Endpoint

#: The answer (INVALID_ARGUMENT) to a stream that ends before its first message.
EMPTY_STREAM = "Empty stream"


def malformed(reason: object) -> str:
    """Why a wrapper that does not decode is refused (INVALID_ARGUMENT)."""
    return f"Malformed message: {reason}"


def missing(method: Method, position: int | str) -> str:
    """Why a wrapper without its inner request is refused (INVALID_ARGUMENT); `position`:
    the wrapper's place in a stream."""
    where = f" (stream message {position})" if method.kind is not Kind.UNARY else ""
    return f"Missing {method.inner} request{where}"


def _unwrap(raw: bytes, method: Method, position: int) -> tuple[bytes | None, bytes]:
    """Split one wrapper; the inner request is required unless the method takes none."""
    try:
        target, inner = split_wrapper(raw)
    except WireError as exc:
        raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, malformed(exc)) from exc
    if inner is None:
        if method.inner is not None:
            raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, missing(method, position))
        inner = b""
    return target, check_request(method, inner)


def _non_empty(first: bytes | None) -> bytes:
    if first is None:
        raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, EMPTY_STREAM)
    return first


def _unary(relay: Relay, method: Method) -> Handler:
    label = f"/{MULTIPLEXER_SERVICE}/{method.name}"

    async def handler(request: bytes, context: Context) -> bytes:
        endpoint, inner = await _route(relay, context, label, method, request)
        metadata, _, _ = split_metadata(context)
        return await relay.unary(
            context,
            method=label,
            endpoint=endpoint,
            path=method.path,
            payload=inner,
            metadata=metadata,
        )

    return handler


async def _route(
    relay: Relay, context: Context, label: str, method: Method, first: bytes | None
) -> tuple[Endpoint, bytes]:
    """The instance the first message's target names, and that message's inner request;
    a message that names none, or an instance that cannot serve, refuses the call."""
    try:
        raw_target, inner = _unwrap(_non_empty(first), method, 1)
        endpoint = resolve(relay.table, relay.balancer, parse_target(raw_target))
    except RouteError as exc:
        await relay.refuse(context, label, exc)
        raise
    return endpoint, inner


def _streaming(relay: Relay, method: Method) -> Handler:
    label = f"/{MULTIPLEXER_SERVICE}/{method.name}"

    async def handler(requests: AsyncIterator[bytes], context: Context) -> bytes | None:
        messages = aiter(requests)
        endpoint: Endpoint
        first = await anext(messages, None)
        endpoint, inner = await _route(relay, context, label, method, first)
        position = 1

        def later(raw: bytes) -> bytes:
            nonlocal position
            position += 1
            return _unwrap(raw, method, position)[1]

        metadata, _, _ = split_metadata(context)
        return await relay.stream(
            context,
            method=label,
            endpoint=endpoint,
            path=method.path,
            first=inner,
            rest=messages,
            unwrap=later,
            metadata=metadata,
            client_stream_only=method.kind is Kind.CLIENT_STREAM,
        )

    return handler


def method_handlers(relay: Relay) -> dict[str, grpc.RpcMethodHandler]:
    """Handlers for the 17 relayed RPCs (the two Arrow RPCs live in `arrow.py`)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in TEI_METHODS:
        handlers[method.name] = method_handler(
            method, partial(_unary, relay), partial(_streaming, relay)
        )
    return handlers
