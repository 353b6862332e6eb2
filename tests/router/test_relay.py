"""What the router carries besides payloads: streams, deadlines, cancellation, metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import grpc
import pytest
from prometheus_client import REGISTRY

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc
from tei_reconciler.routing import RoutingTable

from .fake_backend import Recorder, fake_backend, vector
from .harness import endpoint, mux_client, mux_to_fake, running_router, to
from support.waiting import DEADLINE, eventually

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("each_data_plane")]


def embed(text: str, target: mux.Target | None = None) -> mux.EmbedRequest:
    return mux.EmbedRequest(target=target, request=tei_pb2.EmbedRequest(inputs=text))


async def test_a_stream_is_answered_in_order_and_ends_when_the_client_half_closes() -> None:
    texts = [f"text {i}" for i in range(50)]
    async with mux_to_fake(dim=4) as (stub, _):

        async def requests() -> AsyncIterator[mux.EmbedRequest]:
            yield embed(texts[0], to("a"))
            for text in texts[1:]:
                yield embed(text)  # later targets are not needed: the first one routes

        replies = [r async for r in stub.EmbedStream(requests(), timeout=DEADLINE)]
    assert [list(r.embeddings) for r in replies] == [pytest.approx(vector(t, 4)) for t in texts]


async def test_a_stream_message_without_a_request_fails_the_stream() -> None:
    async with mux_to_fake() as (stub, _):

        async def requests() -> AsyncIterator[mux.EmbedRequest]:
            yield embed("one", to("a"))
            yield mux.EmbedRequest(target=to("a"))

        with pytest.raises(grpc.aio.AioRpcError) as failed:
            _ = [r async for r in stub.EmbedStream(requests(), timeout=DEADLINE)]
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == "Missing embed request (stream message 2)"


async def test_an_empty_stream_is_invalid() -> None:
    async with running_router(RoutingTable()) as port, mux_client(port) as stub:

        async def nothing() -> AsyncIterator[mux.EmbedRequest]:
            return
            yield

        with pytest.raises(grpc.aio.AioRpcError) as failed:
            _ = [r async for r in stub.EmbedStream(nothing(), timeout=DEADLINE)]
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == "Empty stream"


async def test_a_backend_error_inside_a_stream_reaches_the_client_unchanged() -> None:
    async with mux_to_fake() as (stub, _):

        async def requests() -> AsyncIterator[mux.EmbedRequest]:
            yield embed("fine", to("a"))
            yield embed("fail: now")

        call = stub.EmbedStream(requests(), timeout=DEADLINE)
        first = await call.read()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call.read()
    assert len(first.embeddings) == 8
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_client_stream_returns_the_backends_single_answer() -> None:
    async with mux_to_fake() as (stub, _):

        async def requests() -> AsyncIterator[mux.RerankStreamRequest]:
            for i, text in enumerate(["a", "bbb", "cc"]):
                yield mux.RerankStreamRequest(
                    target=to("a") if i == 0 else None,
                    request=tei_pb2.RerankStreamRequest(query="q", text=text),
                )

        reply = await stub.RerankStream(requests(), timeout=DEADLINE)
    assert [(r.index, r.score) for r in reply.ranks] == [(0, 1.0), (1, 3.0), (2, 2.0)]


async def test_the_client_deadline_reaches_the_backend_and_expires_there() -> None:
    async with mux_to_fake() as (stub, recorder):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Embed(embed("slow please", to("a")), timeout=2.0)
        with anyio.fail_after(DEADLINE):
            await recorder.cancelled.wait()
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    remaining = recorder.time_remaining[0]
    assert remaining is not None
    assert remaining < 2.5  # the client deadline, not the 30 s default (rounded on the wire)


async def test_without_a_client_deadline_the_router_sets_its_request_timeout() -> None:
    async with fake_backend() as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with running_router(table, request_timeout_secs=12) as port, mux_client(port) as stub:
            await stub.Embed(embed("quick", to("a")))
    remaining = recorder.time_remaining[0]
    assert remaining is not None
    assert 5 < remaining < 13  # grpc-timeout is rounded on the wire


async def test_a_client_cancel_reaches_the_backend() -> None:
    async with mux_to_fake() as (stub, recorder):
        call = stub.Embed(embed("slow please", to("a")), timeout=DEADLINE)
        with anyio.fail_after(DEADLINE):
            await recorder.slow_started.wait()
        call.cancel()
        with anyio.fail_after(DEADLINE):
            await recorder.cancelled.wait()


async def cancel_mid_stream(
    stub: multiplexer_pb2_grpc.TeiMultiplexerStub, recorder: Recorder, instance: str
) -> None:
    """Open an EmbedStream to `instance`, get one answer, start a slow call on it, cancel the
    stream, and wait until the backend saw the cancellation."""
    call = stub.EmbedStream(timeout=DEADLINE)
    await call.write(embed("fine", to(instance)))
    await call.read()
    await call.write(embed("slow too"))
    with anyio.fail_after(DEADLINE):
        await recorder.slow_started.wait()
    call.cancel()
    with anyio.fail_after(DEADLINE):
        await recorder.cancelled.wait()


async def test_a_client_cancel_of_a_stream_reaches_the_backend() -> None:
    async with mux_to_fake() as (stub, recorder):
        await cancel_mid_stream(stub, recorder, "a")


def router_calls(instance: str, method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "tei_reconciler_router_requests_total",
        {"instance": instance, "method": method, "code": code},
    )
    return value or 0.0


async def test_streams_the_client_cancels_are_counted_cancelled_and_finished_ones_ok() -> None:
    """The grpcio router's own count (Envoy counts the calls that end with a status, so a
    stream it routes itself, plain or unwrapped, is not counted when the client cancels it)."""
    stream = "/tei_multiplexer.v1.TeiMultiplexer/EmbedStream"
    ok_before = router_calls("cancel-counted", stream, "OK")
    cancelled_before = router_calls("cancel-counted", stream, "CANCELLED")
    async with fake_backend() as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("cancel-counted", a_port)])
        async with (
            running_router(table, data_plane="grpcio") as port,
            mux_client(port) as stub,
        ):
            finished = stub.EmbedStream(timeout=DEADLINE)
            await finished.write(embed("one", to("cancel-counted")))
            await finished.read()
            await finished.done_writing()
            assert await finished.read() == grpc.aio.EOF
            await cancel_mid_stream(stub, recorder, "cancel-counted")
            await eventually(
                lambda: router_calls("cancel-counted", stream, "CANCELLED") > cancelled_before,
                what="the count",
            )
    assert router_calls("cancel-counted", stream, "OK") == ok_before + 1
    assert router_calls("cancel-counted", stream, "CANCELLED") == cancelled_before + 1


#: Bytes that are no protobuf message at all, and a string field whose length runs past the end.
MALFORMED = [b"\xff\xff\xff", b"\x0a\x05ab"]


def wrapped(target: mux.Target, inner: bytes) -> bytes:
    """A multiplexer wrapper around raw inner bytes, as a client library would frame it."""
    raw_target = target.SerializeToString()
    return b"\x0a" + bytes([len(raw_target)]) + raw_target + b"\x12" + bytes([len(inner)]) + inner


async def test_malformed_requests_are_invalid_argument_on_both_routes_never_forwarded() -> None:
    """The grpcio router's own check (behind Envoy, plain tei.v1 requests are the instance's
    to judge; the multiplexer's are checked as here)."""
    mux_embed = "/tei_multiplexer.v1.TeiMultiplexer/Embed"
    mux_stream = "/tei_multiplexer.v1.TeiMultiplexer/EmbedStream"
    async with fake_backend() as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with (
            running_router(table, data_plane="grpcio") as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            failures: list[grpc.aio.AioRpcError] = []
            for bad in MALFORMED:
                calls = [
                    channel.unary_unary(mux_embed)(wrapped(to("a"), bad), timeout=DEADLINE),
                    channel.unary_unary("/tei.v1.Embed/Embed")(bad, timeout=DEADLINE),
                ]
                for call in calls:
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await call
                    failures.append(caught.value)
                good = tei_pb2.EmbedRequest(inputs="fine").SerializeToString()
                for path, first, later in [
                    (mux_stream, wrapped(to("a"), good), wrapped(to("a"), bad)),
                    ("/tei.v1.Embed/EmbedStream", good, bad),
                ]:
                    stream = channel.stream_stream(path)(timeout=DEADLINE)
                    await stream.write(first)
                    await stream.read()
                    await stream.write(later)
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stream.read()
                    failures.append(caught.value)
    assert len(failures) == 8
    for failure in failures:
        assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.details().startswith("Malformed message: ")
    assert recorder.calls == 4  # only the good first message of each stream


async def test_client_metadata_is_forwarded_but_the_routing_keys_are_not() -> None:
    async with fake_backend() as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with (
            running_router(table) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            await tei_pb2_grpc.EmbedStub(channel).Embed(
                tei_pb2.EmbedRequest(inputs="x"),
                metadata=(
                    ("authorization", "Bearer secret"),
                    ("traceparent", "00-abc-def-01"),
                    ("x-request-id", "42"),
                    ("x-tei-instance", "a"),
                ),
            )
    seen = recorder.metadata[0]
    assert seen["authorization"] == "Bearer secret"
    assert seen["traceparent"] == "00-abc-def-01"
    assert seen["x-request-id"] == "42"
    assert "x-tei-instance" not in seen


async def test_plain_tei_calls_are_routed_by_metadata_then_default_then_only_instance() -> None:
    async with (
        fake_backend(model_id="m1", dim=2) as (a_port, a),
        fake_backend(model_id="m2", dim=3) as (b_port, b),
    ):
        table = RoutingTable()
        table.update([endpoint("a", a_port, model_id="m1"), endpoint("b", b_port, model_id="m2")])
        async with (
            running_router(table) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = tei_pb2_grpc.EmbedStub(channel)
            request = tei_pb2.EmbedRequest(inputs="x")
            by_name = await stub.Embed(request, metadata=(("x-tei-instance", "b"),))
            by_model = await stub.Embed(request, metadata=(("x-tei-model", "m1"),))
            with pytest.raises(grpc.aio.AioRpcError) as ambiguous:
                await stub.Embed(request)
            table.update([endpoint("b", b_port, model_id="m2")])
            only = await stub.Embed(request)
        async with (
            running_router(table, default_instance="b") as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            table.update(
                [endpoint("a", a_port, model_id="m1"), endpoint("b", b_port, model_id="m2")]
            )
            default = await tei_pb2_grpc.EmbedStub(channel).Embed(request)
    assert (len(by_name.embeddings), len(by_model.embeddings)) == (3, 2)
    assert ambiguous.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(only.embeddings) == 3
    assert len(default.embeddings) == 3
    assert (a.calls, b.calls) == (1, 3)


async def test_plain_tei_streams_are_relayed() -> None:
    async with fake_backend(dim=3) as (a_port, _):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with (
            running_router(table) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):

            async def requests() -> AsyncIterator[tei_pb2.EmbedRequest]:
                for text in ("x", "y", "z"):
                    yield tei_pb2.EmbedRequest(inputs=text)

            replies = [
                r
                async for r in tei_pb2_grpc.EmbedStub(channel).EmbedStream(
                    requests(), timeout=DEADLINE
                )
            ]
    assert [list(r.embeddings) for r in replies] == [
        pytest.approx(vector(t, 3)) for t in ("x", "y", "z")
    ]


async def test_a_backend_error_ends_the_stream_while_the_client_still_holds_it_open() -> None:
    async with mux_to_fake() as (stub, _):
        call = stub.EmbedStream(timeout=DEADLINE)
        await call.write(embed("fail: at once", to("a")))
        with anyio.fail_after(DEADLINE / 2), pytest.raises(grpc.aio.AioRpcError) as failed:
            await call.read()
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_stream_without_a_client_deadline_ends_at_the_request_timeout() -> None:
    async with fake_backend() as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with running_router(table, request_timeout_secs=1) as port, mux_client(port) as stub:
            call = stub.EmbedStream()  # no client deadline
            await call.write(embed("slow stream", to("a")))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                with anyio.fail_after(DEADLINE):
                    await call.read()
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            with anyio.fail_after(DEADLINE):
                await recorder.cancelled.wait()  # the instance saw the call end, too


async def test_a_stream_to_an_instance_that_stops_reading_pushes_back_on_the_client() -> None:
    """Flow control end to end: the router buffers no more than the transports' windows, so
    a client writing to an instance that no longer reads is soon made to wait."""
    megabyte = embed("x" * 1_000_000)
    limit = 200  # 200 MB: far beyond any HTTP/2 window, well within what an unbounded buffer takes
    async with mux_to_fake() as (stub, recorder):
        call = stub.EmbedStream(timeout=DEADLINE)
        await call.write(embed("slow: the instance stops reading here", to("a")))
        with anyio.fail_after(DEADLINE):
            await recorder.slow_started.wait()
        written = 0
        while written < limit:
            with anyio.move_on_after(2) as waited:
                await call.write(megabyte)
            if waited.cancelled_caught:
                break
            written += 1
        call.cancel()
    assert written < limit
