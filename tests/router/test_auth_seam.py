"""Auth plugs into the router from outside: server interceptors and TLS credentials."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import trustme

from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc
from tei_reconciler.routing import RoutingTable

from .fake_backend import fake_backend
from .harness import endpoint, running_router, to

pytestmark = pytest.mark.anyio

REQUEST = mux.EmbedRequest(target=to("a"), request=tei_pb2.EmbedRequest(inputs="x"))


class RequireToken(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses unary calls without `authorization: Bearer ok`."""

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if ("authorization", "Bearer ok") in (details.invocation_metadata or ()):
            return await continuation(details)

        async def refuse(request: Any, context: Any) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "token required")

        return grpc.unary_unary_rpc_method_handler(refuse)


async def test_a_server_interceptor_sees_every_call_before_it_is_routed() -> None:
    async with fake_backend() as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with (
            running_router(table, interceptors=[RequireToken()]) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = multiplexer_pb2_grpc.TeiMultiplexerStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Embed(REQUEST, timeout=30)
            await stub.Embed(REQUEST, timeout=30, metadata=(("authorization", "Bearer ok"),))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert recorder.calls == 1


async def test_the_router_serves_tls_when_given_server_credentials() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())]
    )
    async with fake_backend() as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with (
            running_router(table, credentials=credentials) as port,
            grpc.aio.secure_channel(
                f"127.0.0.1:{port}",
                grpc.ssl_channel_credentials(ca.cert_pem.bytes()),
                options=[("grpc.ssl_target_name_override", "localhost")],
            ) as channel,
        ):
            reply = await multiplexer_pb2_grpc.TeiMultiplexerStub(channel).Embed(
                REQUEST, timeout=30
            )
    assert len(reply.embeddings) == 8
    assert recorder.calls == 1
