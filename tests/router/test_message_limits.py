"""Message sizes: the instances' 4 MiB limit for requests, the router's `max_message_mb` for
answers, each refused with a reason the client can act on, in every call shape the Python
router relays."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc
from tei_reconciler.routing import RoutingTable

from .fake_backend import fake_backend
from .harness import endpoint, running_router, to
from support import raw_grpc
from support.grpc_status import answered
from support.waiting import DEADLINE

pytestmark = pytest.mark.anyio

BIG = 1_200_000  # floats: about 4.8 MB on the wire, above gRPC's 4 MiB default
TOO_LARGE = 300_000  # floats: about 1.2 MB on the wire, above a router's 1 MiB
ROOMY = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def only(port: int) -> RoutingTable:
    table = RoutingTable()
    table.update([endpoint("a", port)])
    return table


def assert_answer_refused(failure: object) -> None:
    """`failure` is the router's refusal of instance a's answer above max_message_mb = 1."""
    assert isinstance(failure, grpc.aio.AioRpcError), failure
    assert failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, failure.details()
    assert_refusal_says_why(failure.details())


def assert_refusal_says_why(details: str) -> None:
    assert details.startswith("answer message of "), details
    assert (
        " bytes from instance a not relayed: the router relays at most 1048576 bytes "
        "(1 MiB, max_message_mb) per message; send fewer or shorter inputs per message, "
        "or raise max_message_mb"
    ) in details


def mux_embed_messages(count: int) -> list[mux.EmbedRequest]:
    """A multiplexer EmbedStream of `count` messages to instance a."""
    return [
        mux.EmbedRequest(
            target=to("a") if i == 0 else None, request=tei_pb2.EmbedRequest(inputs=f"text {i}")
        )
        for i in range(count)
    ]


def mux_embeds(count: int) -> AsyncIterator[mux.EmbedRequest]:
    async def requests() -> AsyncIterator[mux.EmbedRequest]:
        for message in mux_embed_messages(count):
            yield message

    return requests()


def long_reranks() -> list[tei_pb2.RerankStreamRequest]:
    """Two messages well under 1 MiB whose texts, returned, make an answer above it."""
    return [
        tei_pb2.RerankStreamRequest(query="q", text=letter * 600_000, return_text=True)
        for letter in "ab"
    ]


def mux_rerank_messages() -> list[mux.RerankStreamRequest]:
    return [
        mux.RerankStreamRequest(target=to("a") if i == 0 else None, request=request)
        for i, request in enumerate(long_reranks())
    ]


async def drained(call: Any) -> list[Any]:
    return [answer async for answer in call]


async def embedded(
    stub: multiplexer_pb2_grpc.TeiMultiplexerStub, count: int, compression: Any = None
) -> list[Any]:
    """The answers to a multiplexer EmbedStream of `count` messages to instance a."""
    call = stub.EmbedStream(mux_embeds(count), timeout=DEADLINE, compression=compression)
    return await drained(call)


EMBED_STREAM = "/tei_multiplexer.v1.TeiMultiplexer/EmbedStream"
RERANK_STREAM = "/tei_multiplexer.v1.TeiMultiplexer/RerankStream"

#: A compressed multiplexer stream reaches the Python router on both data planes (Envoy
#: unwraps uncompressed ones itself).
GZIP = grpc.Compression.Gzip


async def test_a_request_above_the_instances_4_mib_limit_is_refused_saying_why() -> None:
    """The grpcio router's own check (behind Envoy, the instance refuses a plain tei.v1
    message above its limit itself, RESOURCE_EXHAUSTED too)."""
    big = tei_pb2.EmbedRequest(inputs="x" * (5 * 1024 * 1024))
    async with (
        fake_backend() as (a_port, recorder),
        running_router(only(a_port), data_plane="grpcio") as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        failures = []
        for path, payload in [
            (
                "/tei_multiplexer.v1.TeiMultiplexer/Embed",
                mux.EmbedRequest(target=to("a"), request=big),
            ),
            ("/tei.v1.Embed/Embed", big),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(path)(payload.SerializeToString(), timeout=DEADLINE)
            failures.append(caught.value)
    for failure in failures:
        assert failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"request message of {big.ByteSize()} bytes not forwarded" in failure.details()
        assert "TEI instances accept at most 4194304 bytes (4 MiB)" in failure.details()
    assert recorder.calls == 0


async def test_answers_above_grpcs_4_mib_default_pass_and_the_limit_is_configurable(
    each_data_plane: str,
) -> None:
    """The limit bounds what the Python router relays: every call on the grpcio data plane,
    and behind Envoy the multiplexer calls Envoy leaves to it, such as compressed streams.
    Envoy relays plain tei.v1 messages, and the multiplexer calls it unwraps, without
    holding one whole, and leaves their size to the instance and the client."""
    x = tei_pb2.EmbedRequest(inputs="x")
    async with fake_backend(dim=BIG) as (a_port, _):
        async with (
            running_router(only(a_port), default_instance="a") as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=ROOMY) as channel,
        ):
            reply = await tei_pb2_grpc.EmbedStub(channel).Embed(x, timeout=DEADLINE)
            relayed = await multiplexer_pb2_grpc.TeiMultiplexerStub(channel).Embed(
                mux.EmbedRequest(target=to("a"), request=x), timeout=DEADLINE
            )
        async with (
            running_router(only(a_port), max_message_mb=1) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=ROOMY) as channel,
        ):
            stub = multiplexer_pb2_grpc.TeiMultiplexerStub(channel)
            compressed = await answered(partial(embedded, stub, 1, GZIP))
            streamed = await answered(partial(embedded, stub, 1))
            unary = await answered(
                lambda: stub.Embed(mux.EmbedRequest(target=to("a"), request=x), timeout=DEADLINE)
            )
    assert len(reply.embeddings) == BIG
    assert len(relayed.embeddings) == BIG
    assert_answer_refused(compressed)
    if each_data_plane == "envoy":  # unwrapped by Envoy: the router's limit is not in its way
        assert isinstance(unary, tei_pb2.EmbedResponse), unary
        assert len(unary.embeddings) == BIG
        assert isinstance(streamed, list), streamed
        assert [len(answer.embeddings) for answer in streamed] == [BIG]
    else:
        assert_answer_refused(unary)
        assert_answer_refused(streamed)


async def test_a_stream_ends_with_resource_exhausted_saying_why_when_an_answer_is_too_large(
    each_data_plane: str,
) -> None:
    """Bidirectional streams, including ones the client is still writing when the answer is
    refused (the router's own writes to the instance then race the instance's end), and a
    client stream; on both data planes, as compressed multiplexer streams reach the Python
    router. The streams of several messages go over raw HTTP/2, which reads the status the
    router sent: grpcio's client, still writing when it hears it, would report its own
    INTERNAL instead (grpc/grpc#36066)."""
    compression = raw_grpc.GZIP if each_data_plane == "envoy" else None
    gzip = GZIP if compression else None  # grpcio: as any client sends

    def frames(messages: Sequence[Message]) -> list[bytes]:
        """One piece per message, as a client writes them one by one."""
        return [
            raw_grpc.frame(message.SerializeToString(), compression=compression)
            for message in messages
        ]

    async with (
        fake_backend(dim=TOO_LARGE) as (a_port, _),
        running_router(only(a_port), max_message_mb=1) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = multiplexer_pb2_grpc.TeiMultiplexerStub(channel)
        single = await answered(partial(embedded, stub, 1, gzip))
        streams = [(EMBED_STREAM, frames(mux_embed_messages(n))) for n in (2, 8, 32)]
        streams.append((RERANK_STREAM, frames(mux_rerank_messages())))
        raw = [
            await raw_grpc.call(port, path, pieces, compression=compression)
            for path, pieces in streams
        ]
    assert_answer_refused(single)
    for answers, trailers in raw:
        assert answers == []
        assert trailers.get("grpc-status") == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        assert_refusal_says_why(trailers.get("grpc-message", ""))


async def test_the_grpcio_router_limits_plain_tei_answers_to_max_message_mb_saying_why() -> None:
    plain = [tei_pb2.EmbedRequest(inputs=f"text {i}") for i in range(8)]
    async with (
        fake_backend(dim=TOO_LARGE) as (a_port, _),
        running_router(only(a_port), data_plane="grpcio", max_message_mb=1) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        embed = tei_pb2_grpc.EmbedStub(channel)
        rerank = tei_pb2_grpc.RerankStub(channel)
        failures = [
            await answered(partial(embed.Embed, plain[0], timeout=DEADLINE)),
            await answered(lambda: drained(embed.EmbedStream(iter(plain), timeout=DEADLINE))),
            await answered(lambda: rerank.RerankStream(iter(long_reranks()), timeout=DEADLINE)),
        ]
    for failure in failures:
        assert_answer_refused(failure)
