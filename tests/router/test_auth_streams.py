"""The real auth interceptor on streaming calls: a bidirectional `EmbedStream` (multiplexer)
and a client-streaming `RerankStream` (plain tei.v1), with bearer tokens and with mTLS. A
refused call never reaches the instance; an allowed one gets OK and a real answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme

from tei_reconciler.auth import build_grpc_auth
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import AuthSettings, MtlsSettings, Settings, TokenSettings

from .fake_backend import fake_backend, vector
from .harness import endpoint, running_router, to
from support.grpc_status import answered
from support.waiting import DEADLINE

pytestmark = pytest.mark.anyio

TOKEN = "s3cret"


async def embed_stream(channel: grpc.aio.Channel, metadata: Any) -> list[float]:
    """Two messages through the multiplexer's bidirectional stream; their embeddings, joined.
    (The client writes from an iterator, so a refusal surfaces as the call's status.)"""

    async def requests() -> AsyncIterator[mux.EmbedRequest]:
        yield mux.EmbedRequest(target=to("a"), request=tei_pb2.EmbedRequest(inputs="first"))
        yield mux.EmbedRequest(request=tei_pb2.EmbedRequest(inputs="second"))

    call = multiplexer_pb2_grpc.TeiMultiplexerStub(channel).EmbedStream(
        requests(), timeout=DEADLINE, metadata=metadata
    )
    answers = [value async for reply in call for value in reply.embeddings]
    assert await call.code() == grpc.StatusCode.OK
    return answers


async def rerank_stream(channel: grpc.aio.Channel, metadata: Any) -> list[float]:
    """A client-streaming call on the plain tei.v1 service; the scores of its one answer."""

    async def texts() -> AsyncIterator[tei_pb2.RerankStreamRequest]:
        for text in ("a", "bbb"):
            yield tei_pb2.RerankStreamRequest(query="q", text=text)

    reply = await tei_pb2_grpc.RerankStub(channel).RerankStream(
        texts(), timeout=DEADLINE, metadata=metadata
    )
    return [rank.score for rank in reply.ranks]


Call = Callable[[grpc.aio.Channel, Any], Awaitable[Any]]
CALLS: dict[str, tuple[Call, list[float]]] = {
    "EmbedStream": (embed_stream, [*vector("first", 8), *vector("second", 8)]),
    "RerankStream": (rerank_stream, [1.0, 3.0]),
}


async def refusal(call: Call, channel: grpc.aio.Channel, metadata: Any) -> grpc.aio.AioRpcError:
    """The status the router refused `call` with (each attempt must still reach no instance)."""
    outcome = await answered(lambda: call(channel, metadata))
    assert isinstance(outcome, grpc.aio.AioRpcError), f"answered: {outcome}"
    return outcome


@asynccontextmanager
async def guarded_router(auth: AuthSettings) -> AsyncIterator[tuple[int, Any]]:
    """The router with `build_grpc_auth`'s interceptor and credentials, one fake instance."""
    settings = Settings(api_port=0, grpc_port=0, auth=auth)
    interceptors, credentials = build_grpc_auth(settings)
    async with fake_backend() as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with running_router(
            table, interceptors=interceptors, credentials=credentials
        ) as port:
            yield port, recorder


@pytest.mark.parametrize("kind", list(CALLS))
async def test_streams_without_the_token_never_reach_the_instance_and_with_it_are_answered(
    kind: str,
) -> None:
    call, expected = CALLS[kind]
    auth = AuthSettings(providers=("token",), token=TokenSettings(tokens=(TOKEN,)))
    async with (
        guarded_router(auth) as (port, recorder),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        refused = [
            (await refusal(call, channel, metadata)).code()
            for metadata in [(), (("authorization", "Bearer wrong"),)]
        ]
        assert recorder.calls == 0
        answer = await call(channel, (("authorization", f"Bearer {TOKEN}"),))
    assert refused == [grpc.StatusCode.UNAUTHENTICATED] * 2
    assert answer == pytest.approx(expected, rel=1e-6)
    assert recorder.calls > 0


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def mtls_settings(ca: trustme.CA, tmp_path: Path) -> MtlsSettings:
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server-key.pem"))
    return MtlsSettings(
        ca_cert=str(tmp_path / "ca.pem"),
        server_cert=str(tmp_path / "server.pem"),
        server_key=str(tmp_path / "server-key.pem"),
        allowed_subjects=("client1",),
    )


@asynccontextmanager
async def tls_channel(ca: trustme.CA, port: int, cn: str) -> AsyncIterator[grpc.aio.Channel]:
    leaf = ca.issue_cert(common_name=cn)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=leaf.private_key_pem.bytes(),
        certificate_chain=leaf.cert_chain_pems[0].bytes(),
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
        yield channel


@pytest.mark.parametrize("kind", list(CALLS))
async def test_streams_from_a_certificate_off_the_allowlist_never_reach_the_instance(
    kind: str, ca: trustme.CA, tmp_path: Path
) -> None:
    call, expected = CALLS[kind]
    auth = AuthSettings(providers=("mtls",), mtls=mtls_settings(ca, tmp_path))
    async with guarded_router(auth) as (port, recorder):
        async with tls_channel(ca, port, "client10") as channel:
            denied = await refusal(call, channel, ())
        assert recorder.calls == 0
        async with tls_channel(ca, port, "client1") as channel:
            answer = await call(channel, ())
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "client10" in (denied.details() or "")
    assert answer == pytest.approx(expected, rel=1e-6)
    assert recorder.calls > 0
