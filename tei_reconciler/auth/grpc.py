"""A grpc.aio server interceptor applying the same providers as the REST middleware.

`intercept_service` sees only the method name and metadata, not the TLS peer, so the check
runs inside the handler, where `context.auth_context()` holds the client certificate that
gRPC's handshake verified against the CA (`x509_pem_cert`). The certificate is parsed by
`certs.py`, so CN and SANs are compared in exactly the REST form (gRPC's own
`x509_subject_alternative_name` drops the `DNS:`/`IP:` kinds). The wrapper keeps the handler's
shape (unary or streaming) so refusals reach streaming clients before any message is read.
Services in `exempt_services` (by default `grpc.health.v1.Health`) skip the per-call check.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from cryptography import x509

from tei_reconciler.auth.principal import Decision, Verdict
from tei_reconciler.auth.providers import Authenticator, Credentials

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self, authenticator: Authenticator, *, exempt_services: Sequence[str] = ()
    ) -> None:
        self.authenticator = authenticator
        self.exempt_services = frozenset(exempt_services)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or _service(details.method) in self.exempt_services:
            return handler
        return _guarded(handler, self._gate)

    async def _gate(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        decision = self.authenticator.decide(_credentials(context))
        if decision.verdict is Verdict.ALLOWED:
            return
        code = (
            grpc.StatusCode.PERMISSION_DENIED
            if decision.verdict is Verdict.DENIED
            else grpc.StatusCode.UNAUTHENTICATED
        )
        await context.abort(code, _reason(decision))


def _service(method: str) -> str:
    return method.lstrip("/").partition("/")[0]


def _reason(decision: Decision) -> str:
    return decision.reason or "authentication required"


def _credentials(context: grpc.aio.ServicerContext[Any, Any]) -> Credentials:
    pems = context.auth_context().get("x509_pem_cert") or []
    cert = x509.load_pem_x509_certificate(pems[0]) if pems else None
    authorization = None
    count = 0
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            count += 1
            authorization = value if isinstance(value, str) else value.decode("latin-1")
    repeated = ("authorization",) if count > 1 else ()
    return Credentials(peer_cert=cert, authorization=authorization, repeated=repeated)


Gate = Callable[[Any], Awaitable[None]]


def _guarded(handler: grpc.RpcMethodHandler, gate: Gate) -> grpc.RpcMethodHandler:
    """`handler` with `gate(context)` run first; same request/response shape and codecs."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, gate), **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary, gate), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_stream(handler.unary_stream, gate), **codec)
    return grpc.stream_stream_rpc_method_handler(_stream(handler.stream_stream, gate), **codec)


def _unary(behavior: Callable[..., Any], gate: Gate) -> Callable[[Any, Any], Awaitable[Any]]:
    async def guarded(request: Any, context: Any) -> Any:
        await gate(context)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return guarded


def _stream(behavior: Callable[..., Any], gate: Gate) -> Callable[[Any, Any], Awaitable[None]]:
    """Always a coroutine that writes with `context.write`: grpc.aio accepts that shape for
    every streaming handler, whether the wrapped one is an async generator or writes itself."""

    async def guarded(request: Any, context: Any) -> None:
        await gate(context)
        result = behavior(request, context)
        if hasattr(result, "__aiter__"):
            async for message in result:
                await context.write(message)
        elif inspect.isawaitable(result):
            await result
        else:
            for message in result:
                await context.write(message)

    return guarded
