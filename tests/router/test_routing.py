"""Which instance a multiplexer call reaches, and what a client hears when none can take it."""

from __future__ import annotations

import grpc
import msgspec
import pytest
from prometheus_client import REGISTRY

from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.routing import RoutingTable
from tei_reconciler.traffic import InstanceTraffic, TrafficRing

from .fake_backend import fake_backend, vector
from .harness import (
    endpoint,
    mux_client,
    mux_to,
    mux_to_fake,
    running_data_plane,
    running_router,
    to,
)
from support.clock import FakeClock
from support.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("each_data_plane")]
STEPS = 100_000  # a ring that keeps every step a polling test advances through


def embed(target: mux.Target, text: str = "hello") -> mux.EmbedRequest:
    return mux.EmbedRequest(target=target, request=tei_pb2.EmbedRequest(inputs=text))


async def test_a_call_by_instance_name_reaches_that_instance_and_returns_its_answer() -> None:
    async with (
        fake_backend(dim=5) as (a_port, a),
        fake_backend(dim=3) as (b_port, b),
        mux_to(endpoint("a", a_port), endpoint("b", b_port)) as stub,
    ):
        reply = await stub.Embed(embed(to("b"), "hi"))
    assert list(reply.embeddings) == pytest.approx(vector("hi", 3))
    assert (a.calls, b.calls) == (0, 1)


async def test_calls_by_model_are_spread_over_every_ready_instance_of_that_model() -> None:
    async with fake_backend() as (a_port, a), fake_backend() as (b_port, b):
        table = RoutingTable()
        table.update(
            [
                endpoint("a", a_port, model_id="m"),
                endpoint("b", b_port, model_id="m"),
                endpoint("c", 1, model_id="other"),
            ]
        )
        sent = 0
        async with running_router(table) as port, mux_client(port) as stub:
            # Envoy's least-request balancer picks at random between idle instances: one
            # call after another can land on the same one a few times in a row.
            while sent < 60 and not (a.calls and b.calls):
                await stub.Embed(embed(mux.Target(model_id="m")))
                sent += 1
    assert a.calls > 0
    assert b.calls > 0
    assert a.calls + b.calls == sent


async def test_instance_index_counts_only_ready_instances_sorted_by_name() -> None:
    async with fake_backend(dim=2) as (a_port, _), fake_backend(dim=4) as (c_port, _):
        table = RoutingTable()
        table.update(
            [
                endpoint("c", c_port),
                endpoint("b", 1, ready=False),
                endpoint("a", a_port),
            ]
        )
        async with running_router(table) as port, mux_client(port) as stub:
            first = await stub.Embed(embed(mux.Target(instance_index=0)))
            second = await stub.Embed(embed(mux.Target(instance_index=1)))
            with pytest.raises(grpc.aio.AioRpcError) as beyond:
                await stub.Embed(embed(mux.Target(instance_index=2)))
    assert (len(first.embeddings), len(second.embeddings)) == (2, 4)
    assert beyond.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_instance_that_is_not_ready_is_unavailable_with_its_phase() -> None:
    async with mux_to(endpoint("warming", 1, ready=False, phase=Phase.STARTING)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as by_name:
            await stub.Embed(embed(to("warming")))
        with pytest.raises(grpc.aio.AioRpcError) as by_model:
            await stub.Embed(embed(mux.Target(model_id="fake/model")))
    assert by_name.value.code() == grpc.StatusCode.UNAVAILABLE
    assert by_name.value.details() == "instance warming is not ready (phase Starting)"
    assert by_model.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("request_", "code", "details"),
    [
        (
            mux.EmbedRequest(request=tei_pb2.EmbedRequest(inputs="x")),
            "INVALID_ARGUMENT",
            "Missing target",
        ),
        (embed(mux.Target()), "INVALID_ARGUMENT", "No routing specified"),
        (embed(to("")), "INVALID_ARGUMENT", "Instance name cannot be empty"),
        (mux.EmbedRequest(target=to("ghost")), "INVALID_ARGUMENT", "Missing embed request"),
        (embed(to("ghost")), "NOT_FOUND", "Instance 'ghost' not found"),
        (
            embed(mux.Target(model_id="nobody/serves")),
            "NOT_FOUND",
            "no instance serves model 'nobody/serves'",
        ),
    ],
)
async def test_calls_the_router_cannot_route_get_a_precise_status(
    request_: mux.EmbedRequest, code: str, details: str
) -> None:
    async with running_router(RoutingTable()) as port, mux_client(port) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Embed(request_)
    assert refused.value.code().name == code
    assert refused.value.details() == details


async def test_an_instance_restarted_on_another_port_answers_the_next_call_once_routed() -> None:
    """On grpcio the very next call (no stale channel); on Envoy the next call after Envoy
    applied the routes, which is what the controller waits for (`wait_routed`)."""
    table = RoutingTable()
    async with fake_backend(dim=2) as (old_port, _):
        table.update([endpoint("a", old_port)])
        async with running_data_plane(table) as (port, plane), mux_client(port) as stub:
            assert len((await stub.Embed(embed(to("a")))).embeddings) == 2
            async with fake_backend(dim=6) as (new_port, _):
                table.update([endpoint("a", new_port, generation=1)])
                await plane.wait_routed("a")
                reply = await stub.Embed(embed(to("a")))
    assert len(reply.embeddings) == 6


async def test_a_backend_status_reaches_the_client_unchanged() -> None:
    async with mux_to_fake() as (stub, _):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Embed(embed(to("a"), "fail: too much"))
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failed.value.details() == "model is overloaded"


async def test_info_needs_only_a_target() -> None:
    async with mux_to_fake(model_id="org/model") as (stub, _):
        info = await stub.Info(mux.InfoRequest(target=to("a")))
    assert info.model_id == "org/model"


async def test_router_metrics_count_calls_by_instance_method_and_code() -> None:
    def count(instance: str, method: str, code: str) -> float:
        value = REGISTRY.get_sample_value(
            "tei_reconciler_router_requests_total",
            {"instance": instance, "method": method, "code": code},
        )
        return value or 0.0

    embed_path = "/tei_multiplexer.v1.TeiMultiplexer/Embed"
    before_ok = count("metered", embed_path, "OK")
    before_failed = count("metered", embed_path, "RESOURCE_EXHAUSTED")
    before_refused = count("", embed_path, "NOT_FOUND")
    async with fake_backend() as (a_port, _), mux_to(endpoint("metered", a_port)) as stub:
        await stub.Embed(embed(to("metered")))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Embed(embed(to("metered"), "fail: x"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Embed(embed(to("nobody")))
        # Read while the data plane serves: Envoy's counters leave with Envoy.
        assert count("metered", embed_path, "OK") == before_ok + 1
        assert count("metered", embed_path, "RESOURCE_EXHAUSTED") == before_failed + 1
        assert count("", embed_path, "NOT_FOUND") == before_refused + 1
        assert (
            REGISTRY.get_sample_value(
                "tei_reconciler_router_in_flight_requests", {"instance": "metered"}
            )
            == 0
        )


async def test_every_routed_call_lands_in_the_dashboards_traffic_ring(
    fake_clock: FakeClock, each_data_plane: str
) -> None:
    """The grpcio router records each call as it ends; Envoy's counters reach the ring on
    the data plane's own schedule, per instance (without the split by method)."""
    traffic = TrafficRing(step_secs=10.0, steps=STEPS, clock=fake_clock)

    def charted() -> InstanceTraffic | None:
        fake_clock.advance(10)  # the ring summarizes finished steps
        seen = traffic.snapshot(span_secs=STEPS * 10).instances
        return seen[0] if seen and seen[0].requests == 2 and seen[0].p50_ms else None

    async with fake_backend() as (a_port, _):
        table = RoutingTable()
        table.update([endpoint("charted", a_port)])
        async with running_router(table, traffic=traffic) as port, mux_client(port) as stub:
            await stub.Embed(embed(to("charted")))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Embed(embed(to("charted"), "fail: x"))  # RESOURCE_EXHAUSTED
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Embed(embed(to("nobody")))  # refused before routing: no instance
            ring = await eventually(charted, what="both routed calls in the traffic ring")
    assert [i.instance for i in traffic.snapshot(span_secs=STEPS * 10).instances] == ["charted"]
    assert (ring.instance, ring.requests, ring.errors) == ("charted", 2, 1)
    by_method = {"/tei_multiplexer.v1.TeiMultiplexer/Embed": 2}
    assert ring.methods == (by_method if each_data_plane == "grpcio" else {})


async def test_an_instance_listening_on_an_ipv6_address_is_reachable_through_the_router() -> None:
    async with (
        fake_backend(dim=4, host="::1") as (backend_port, backend),
        mux_to(msgspec.structs.replace(endpoint("v6", backend_port), host="::1")) as stub,
    ):
        reply = await stub.Embed(embed(to("v6"), "hi"), timeout=30)
    assert list(reply.embeddings) == pytest.approx(vector("hi", 4))
    assert backend.calls == 1
