"""The plain `tei.v1` services on the router's port, so stock TEI clients work through it.

A call is routed by the `x-tei-instance` or `x-tei-model` metadata key, else to the default
instance, else to the only instance; its bytes go to the instance untouched (once they are
known to decode as the method's request: malformed bytes are INVALID_ARGUMENT here) and the
instance's answer comes back untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import grpc

from tei_reconciler.router.methods import (
    TEI_METHODS,
    TEI_SERVICES,
    Handler,
    Kind,
    Method,
    method_handler,
)
from tei_reconciler.router.relay import Context, Relay, split_metadata
from tei_reconciler.router.routes import RouteError, check_request, from_metadata
from tei_reconciler.routing import Endpoint


async def _route(relay: Relay, context: Context, label: str) -> tuple[Endpoint, Any]:
    metadata, instance, model = split_metadata(context)
    try:
        endpoint = from_metadata(
            relay.table, relay.balancer, instance, model, relay.default_instance
        )
    except RouteError as exc:
        await relay.refuse(context, label, exc)
        raise
    return endpoint, metadata


def _unary(relay: Relay, method: Method) -> Handler:
    async def handler(request: bytes, context: Context) -> bytes:
        try:
            check_request(method, request)
        except RouteError as exc:
            await relay.refuse(context, method.path, exc)
            raise
        endpoint, metadata = await _route(relay, context, method.path)
        return await relay.unary(
            context,
            method=method.path,
            endpoint=endpoint,
            path=method.path,
            payload=request,
            metadata=metadata,
        )

    return handler


def _streaming(relay: Relay, method: Method) -> Handler:
    async def handler(requests: AsyncIterator[bytes], context: Context) -> bytes | None:
        endpoint, metadata = await _route(relay, context, method.path)
        return await relay.stream(
            context,
            method=method.path,
            endpoint=endpoint,
            path=method.path,
            first=None,
            rest=aiter(requests),
            unwrap=partial(check_request, method),
            metadata=metadata,
            client_stream_only=method.kind is Kind.CLIENT_STREAM,
        )

    return handler


def generic_handlers(relay: Relay) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {s: {} for s in TEI_SERVICES}
    for method in TEI_METHODS:
        handlers = by_service[f"tei.v1.{method.service}"]
        handlers[method.name] = method_handler(
            method, partial(_unary, relay), partial(_streaming, relay)
        )
    return [
        grpc.method_handlers_generic_handler(service, handlers)
        for service, handlers in by_service.items()
    ]
