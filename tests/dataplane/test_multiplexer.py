"""Unary multiplexer calls Envoy unwraps itself (`lua_mux.py`), with a real Envoy: they reach
the instance without the Python router, what Envoy cannot route reaches the router untouched,
and a client cannot steer a call with Envoy's internal header. (The router's behaviour tests
in tests/router run every multiplexer call on both data planes.)"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from router.fake_backend import fake_backend
from router.harness import endpoint, mux_client, running_data_plane, to

from tei_reconciler.dataplane.lua_mux import CLUSTER_HEADER
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.routing import RoutingTable

from support.envoy import router_calls

pytestmark = pytest.mark.anyio


def embed(target: mux.Target, text: str = "hello") -> mux.EmbedRequest:
    return mux.EmbedRequest(target=target, request=tei_pb2.EmbedRequest(inputs=text))


async def test_a_multiplexer_call_envoy_can_route_reaches_the_instance_without_the_router(
    envoy: str, tmp_path: Path
) -> None:
    async with fake_backend(dim=3, model_id="org/m") as (a_port, a):
        table = RoutingTable()
        table.update([endpoint("a", a_port, model_id="org/m")])
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path) as (
            port,
            plane,
        ):
            await plane.wait_routed("a")
            before = await router_calls(plane)
            async with mux_client(port) as stub:
                replies = [
                    await stub.Embed(embed(to("a"))),
                    await stub.Embed(embed(mux.Target(model_id="org/m"))),
                    await stub.Embed(embed(mux.Target(instance_index=0))),
                ]
                info = await stub.Info(mux.InfoRequest(target=to("a")))
                routed_by_envoy = await router_calls(plane) - before
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await stub.Embed(embed(to("ghost")))
                with pytest.raises(grpc.aio.AioRpcError) as no_request:
                    await stub.Embed(mux.EmbedRequest(target=to("a")))
            answered_by_router = await router_calls(plane) - before
    assert [len(r.embeddings) for r in replies] == [3, 3, 3]
    assert info.model_id == "org/m"
    assert a.calls == 3  # Embed calls (Info is not counted)
    assert routed_by_envoy == 0  # by name, model, index, and the Info
    assert (unknown.value.code(), unknown.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Instance 'ghost' not found",
    )
    assert (no_request.value.code(), no_request.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing embed request",
    )
    assert answered_by_router == 2


async def test_envoy_unwraps_calls_to_keyed_instances_with_their_key_in_place_of_the_clients(
    envoy: str, tmp_path: Path
) -> None:
    """As on the plain tei.v1 routes: an instance with an API key gets its own key as
    `authorization`, one without gets the client's as it came, and a model whose Ready
    instances hold different keys is left to the Python router, which sends each its own."""
    client = (("authorization", "Bearer for-the-reconciler"),)
    async with (
        fake_backend(dim=2, model_id="org/k") as (a_port, a),
        fake_backend(dim=3, model_id="org/u") as (b_port, b),
        fake_backend(dim=4, model_id="org/mixed") as (c_port, c),
        fake_backend(dim=4, model_id="org/mixed") as (d_port, d),
    ):
        table = RoutingTable()
        table.update(
            [
                endpoint("a", a_port, model_id="org/k", api_key="key-a"),
                endpoint("b", b_port, model_id="org/u"),
                endpoint("c", c_port, model_id="org/mixed", api_key="key-c"),
                endpoint("d", d_port, model_id="org/mixed", api_key="key-d"),
            ]
        )
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path) as (
            port,
            plane,
        ):
            for name in "abcd":
                await plane.wait_routed(name)
            before = await router_calls(plane)
            async with mux_client(port) as stub:
                by_envoy = [
                    await stub.Embed(embed(target), metadata=client)
                    for target in (to("a"), mux.Target(model_id="org/k"), to("b"))
                ]
                unwrapped = await router_calls(plane) - before
                mixed = await stub.Embed(embed(mux.Target(model_id="org/mixed")), metadata=client)
            relayed = await router_calls(plane) - before
    assert [len(r.embeddings) for r in (*by_envoy, mixed)] == [2, 2, 3, 4]
    assert unwrapped == 0
    assert [seen.get("authorization") for seen in a.metadata] == ["Bearer key-a"] * 2
    assert [seen.get("authorization") for seen in b.metadata] == ["Bearer for-the-reconciler"]
    assert relayed == 1
    assert [seen.get("authorization") for seen in c.metadata + d.metadata] in (
        ["Bearer key-c"],
        ["Bearer key-d"],
    )


async def test_a_client_cannot_steer_a_call_with_envoys_internal_header(
    envoy: str, tmp_path: Path
) -> None:
    async with fake_backend(dim=2) as (a_port, a), fake_backend(dim=5) as (b_port, b):
        table = RoutingTable()
        table.update([endpoint("a", a_port), endpoint("b", b_port)])
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path) as (
            port,
            plane,
        ):
            await plane.wait_routed("a")
            await plane.wait_routed("b")
            steer = ((CLUSTER_HEADER, "instance_b"),)
            async with mux_client(port) as stub:
                to_a = await stub.Embed(embed(to("a")), metadata=steer)
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await stub.Embed(embed(to("ghost")), metadata=steer)
                to_xds = await stub.Embed(embed(to("a")), metadata=((CLUSTER_HEADER, "xds"),))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                plain = await tei_pb2_grpc.EmbedStub(channel).Embed(
                    tei_pb2.EmbedRequest(inputs="x"),
                    metadata=(("x-tei-instance", "a"), *steer),
                )
    assert [len(r.embeddings) for r in (to_a, to_xds, plain)] == [2, 2, 2]
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert b.calls == 0
    assert a.calls == 3
    assert [CLUSTER_HEADER in seen for seen in a.metadata] == [False, False, True]  # the
    # plain call's metadata reaches the instance as it was sent, as any client metadata does
