"""Multiplexer streams Envoy unwraps itself (`lua_stream.py`), with a real Envoy: a stream
whose first message names a target Envoy can route reaches the instance without the Python
router, message by message, however its bytes are cut into HTTP/2 frames; every other
stream reaches the router, which answers it as it does without Envoy. (The router's
behaviour tests in tests/router run the multiplexer streams on both data planes.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from router.fake_backend import fake_backend, vector
from router.harness import endpoint, mux_client, running_data_plane, to

from tei_reconciler.dataplane.lua_mux import CLUSTER_HEADER
from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.router.routes import too_large
from tei_reconciler.routing import RoutingTable

from support import raw_grpc
from support.envoy import router_calls
from support.waiting import eventually

pytestmark = pytest.mark.anyio

EMBED_STREAM = "/tei_multiplexer.v1.TeiMultiplexer/EmbedStream"


def counted(instance: str, method: str) -> float:
    """Calls of `method` to `instance` that ended OK, as `GET /metrics` shows them."""
    labels = {"instance": instance, "method": method, "code": "OK"}
    return REGISTRY.get_sample_value("tei_reconciler_router_requests_total", labels) or 0.0


def embed(target: mux.Target | None, text: str) -> mux.EmbedRequest:
    return mux.EmbedRequest(target=target, request=tei_pb2.EmbedRequest(inputs=text))


async def each(messages: Iterable[Any]) -> AsyncIterator[Any]:
    for message in messages:
        yield message


async def embeddings(stub: Any, messages: list[mux.EmbedRequest]) -> list[list[float]]:
    return [list(r.embeddings) async for r in stub.EmbedStream(each(messages))]


@pytest.fixture
async def two_instances(
    tmp_path: Path, envoy: str
) -> AsyncIterator[tuple[int, Any, dict[str, Any]]]:
    """Envoy routing to "a" and "b" (model org/m, Ready) and "c" (not Ready): yields the
    port, the data plane and the backends' recorders by name."""
    async with (
        fake_backend(dim=3, model_id="org/m") as (a_port, a),
        fake_backend(dim=3, model_id="org/m") as (b_port, b),
        fake_backend(dim=3) as (c_port, c),
    ):
        table = RoutingTable()
        table.update(
            [
                endpoint("a", a_port, model_id="org/m"),
                endpoint("b", b_port, model_id="org/m"),
                endpoint("c", c_port, ready=False),
            ]
        )
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path) as (
            port,
            plane,
        ):
            await plane.wait_routed("a")
            await plane.wait_routed("b")
            yield port, plane, {"a": a, "b": b, "c": c}


async def test_a_stream_envoy_can_route_reaches_the_instance_message_by_message_without_the_router(
    two_instances: tuple[int, Any, dict[str, Any]],
) -> None:
    port, plane, backends = two_instances
    texts = ["one", "two", "three", "four"]
    # later targets are ignored, as the Python router ignores them
    later = [to("ghost"), None, mux.Target(model_id="nope")]
    before, streams_before = await router_calls(plane), counted("b", EMBED_STREAM)
    async with mux_client(port) as stub:
        by_name = await embeddings(
            stub, [embed(t, x) for t, x in zip([to("b"), *later], texts, strict=True)]
        )
        by_model = await embeddings(stub, [embed(mux.Target(model_id="org/m"), x) for x in texts])
        by_index = await embeddings(stub, [embed(mux.Target(instance_index=1), "one")])
        ranks = await stub.RerankStream(
            each(
                mux.RerankStreamRequest(
                    target=to("a") if i == 0 else None,
                    request=tei_pb2.RerankStreamRequest(query="q", text="x" * (i + 1)),
                )
                for i in range(3)
            )
        )
    assert await router_calls(plane) - before == 0
    await eventually(
        lambda: counted("b", EMBED_STREAM) - streams_before >= 2,  # by name, by index
        what="the streams to b counted under the multiplexer's method",
    )
    assert by_name == by_model == [pytest.approx(vector(x, 3)) for x in texts]
    assert by_index == [pytest.approx(vector("one", 3))]
    assert [(r.index, r.score) for r in ranks.ranks] == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert backends["b"].calls >= 4 + 1  # by name, by index (model calls may go to either)
    assert backends["a"].calls + backends["b"].calls == 4 + 4 + 1 + 1


async def test_a_stream_envoy_cannot_route_gets_the_routers_own_answer(
    two_instances: tuple[int, Any, dict[str, Any]],
) -> None:
    port, plane, backends = two_instances
    before = await router_calls(plane)
    async with mux_client(port) as stub:
        errors = []
        for first in (to("ghost"), to("c"), None, mux.Target()):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await embeddings(stub, [embed(first, "x"), embed(to("a"), "y")])
            errors.append((refused.value.code(), refused.value.details()))
        steered = await embeddings(
            stub, [embed(to("a"), "x")]
        )  # a client's internal header cannot steer it
        compressed = [
            list(r.embeddings)
            async for r in stub.EmbedStream(
                each([embed(to("a"), "x")]),
                compression=grpc.Compression.Gzip,
                metadata=((CLUSTER_HEADER, "instance_b"),),
            )
        ]
    assert errors[:2] == [
        (grpc.StatusCode.NOT_FOUND, "Instance 'ghost' not found"),
        (grpc.StatusCode.UNAVAILABLE, "instance c is not ready (phase Starting)"),
    ]
    assert [code for code, _ in errors[2:]] == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    assert steered == compressed == [pytest.approx(vector("x", 3))]
    assert backends["c"].calls == 0
    assert backends["b"].calls == 0
    assert await router_calls(plane) - before == 5  # the refused, and the compressed one


async def test_messages_cut_anywhere_by_http2_frames_are_each_unwrapped_whole(
    two_instances: tuple[int, Any, dict[str, Any]],
) -> None:
    """A 100 KB message spans several DATA frames; the first message ends in the frame
    where the large one starts; the last frame carries two whole messages."""
    port, plane, backends = two_instances
    texts = ["first", "x" * 100_000, "y" * 40_000, "small", "last"]
    frames = [
        raw_grpc.frame(embed(to("a") if i == 0 else None, x).SerializeToString())
        for i, x in enumerate(texts)
    ]
    body = b"".join(frames)
    cut = len(frames[0]) + 100
    tail = len(frames[-1]) + len(frames[-2])
    before = await router_calls(plane)
    answers, trailers = await raw_grpc.call(
        port, EMBED_STREAM, [body[:cut], body[cut:-tail], body[-tail:]]
    )
    assert trailers.get("grpc-status") == "0", trailers
    assert [list(tei_pb2.EmbedResponse.FromString(a).embeddings) for a in answers] == [
        pytest.approx(vector(x, 3)) for x in texts
    ]
    assert await router_calls(plane) - before == 0
    assert backends["a"].calls == len(texts)


async def test_a_message_envoy_cannot_unwrap_ends_the_stream_with_the_routers_words(
    two_instances: tuple[int, Any, dict[str, Any]],
) -> None:
    """The answers to the messages before it arrive; the refusal is the router's, though the
    router never saw the stream."""
    port, plane, backends = two_instances
    good = embed(to("a"), "fine").SerializeToString()
    big = embed(None, "x" * (5 << 20)).SerializeToString()
    bad = [
        mux.EmbedRequest(target=to("a")).SerializeToString(),  # no inner request
        b"\x0a\x05ab",  # the target's length runs past the end
        b"\x12\x01\xff",  # an inner request that does not decode
        big,
    ]
    before = await router_calls(plane)
    outcomes = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for later in bad:
            call = channel.stream_stream(EMBED_STREAM)(each([good, good, later, good]))
            answers = 0
            try:
                async for _ in call:
                    answers += 1
            except grpc.aio.AioRpcError as refused:
                outcomes.append((answers, refused.code(), refused.details()))
    assert outcomes == [
        (2, grpc.StatusCode.INVALID_ARGUMENT, "Missing embed request (stream message 3)"),
        (
            2,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Malformed message: length-delimited field runs past the end",
        ),
        (
            2,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Malformed message: Error parsing message with type 'tei.v1.EmbedRequest': "
            "Wire format was corrupt",
        ),
        (
            2,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            too_large(len(tei_pb2.EmbedRequest(inputs="x" * (5 << 20)).SerializeToString())),
        ),
    ]
    assert await router_calls(plane) - before == 0
    assert backends["a"].calls == 2 * len(bad)


async def test_an_unwrapped_stream_to_a_keyed_instance_carries_its_key_in_place_of_the_clients(
    envoy: str, tmp_path: Path
) -> None:
    client = (("authorization", "Bearer for-the-reconciler"),)
    async with (
        fake_backend(dim=2, model_id="org/k") as (k_port, k),
        fake_backend(dim=3) as (u_port, u),
    ):
        table = RoutingTable()
        table.update(
            [endpoint("k", k_port, model_id="org/k", api_key="key-k"), endpoint("u", u_port)]
        )
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path) as (
            port,
            plane,
        ):
            await plane.wait_routed("k")
            await plane.wait_routed("u")
            before = await router_calls(plane)
            async with mux_client(port) as stub:
                for first in (to("k"), mux.Target(model_id="org/k"), to("u")):
                    messages = [embed(first, "one"), embed(None, "two")]
                    _ = [r async for r in stub.EmbedStream(each(messages), metadata=client)]
            relayed = await router_calls(plane) - before
    assert relayed == 0
    assert [seen.get("authorization") for seen in k.metadata] == ["Bearer key-k"] * 4
    assert [seen.get("authorization") for seen in u.metadata] == ["Bearer for-the-reconciler"] * 2


async def test_a_stream_without_a_message_is_the_routers_empty_stream_however_it_ends(
    two_instances: tuple[int, Any, dict[str, Any]],
) -> None:
    port, _, _ = two_instances
    answers = [await raw_grpc.call(port, EMBED_STREAM, pieces) for pieces in ([b""], [])]
    assert [(messages, t["grpc-status"], t["grpc-message"]) for messages, t in answers] == [
        ([], "3", "Empty stream")
    ] * 2


async def test_a_message_above_max_message_mb_is_refused_in_the_routers_words(
    envoy: str, tmp_path: Path
) -> None:
    """As the grpcio router refuses it (how many answers come before depends on timing)."""
    big = "x" * (2 << 20)
    streams = {
        "first": [embed(to("a"), big)],
        "later": [embed(to("a"), "fine"), embed(None, big)],
        "first, not routable": [embed(to("ghost"), big)],
    }
    refusals: dict[str, dict[str, tuple[grpc.StatusCode, str]]] = {}
    async with fake_backend(dim=3) as (a_port, _):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        for kind in ("grpcio", "envoy"):
            async with (
                running_data_plane(
                    table, data_plane=kind, runtime=tmp_path / kind, max_message_mb=1
                ) as (port, plane),
                mux_client(port) as stub,
            ):
                if kind == "envoy":
                    await plane.wait_routed("a")
                for name, messages in streams.items():
                    try:
                        _ = [r async for r in stub.EmbedStream(each(messages))]
                    except grpc.aio.AioRpcError as refused:
                        outcome = (refused.code(), refused.details())
                    refusals.setdefault(kind, {})[name] = outcome
    assert refusals["envoy"] == refusals["grpcio"]
    assert {code for code, _ in refusals["envoy"].values()} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
