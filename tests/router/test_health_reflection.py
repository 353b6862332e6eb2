"""The router's grpc.health.v1 follows the routing table; reflection lists what is served."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tei_reconciler.routing import Endpoint, RoutingTable

from .harness import endpoint, running_router

pytestmark = pytest.mark.anyio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def check(channel: grpc.aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=30
    )
    status: int = reply.status
    return status


async def test_health_reports_the_router_and_each_instance_by_readiness() -> None:
    table = RoutingTable()
    table.update([endpoint("up", 1), endpoint("warming", 2, ready=False)])
    async with (
        running_router(table) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        assert await check(channel, "") == SERVING
        assert await check(channel, "up") == SERVING
        assert await check(channel, "warming") == NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await check(channel, "ghost")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def watched(before: list[Endpoint], after: list[Endpoint]) -> tuple[int, int]:
    """The health of instance "a" as a Watch sees it while the table goes `before` -> `after`."""
    table = RoutingTable()
    table.update(before)
    async with (
        running_router(table) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="a"), timeout=30
        )
        first = await watch.read()
        table.update(after)
        with anyio.fail_after(30):
            second = await watch.read()
        watch.cancel()
    return first.status, second.status


async def test_health_watch_follows_an_instance_becoming_ready() -> None:
    statuses = await watched([endpoint("a", 1, ready=False)], [endpoint("a", 1)])
    assert statuses == (NOT_SERVING, SERVING)


async def list_services(channel: grpc.aio.Channel, version: str) -> list[str]:
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    replies = [r async for r in call(ask(), timeout=30)]
    return sorted(s.name for s in replies[0].list_services_response.service)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_exactly_the_served_services(version: str) -> None:
    async with (
        running_router(RoutingTable()) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        services = await list_services(channel, version)
    assert services == sorted(
        [
            "tei_multiplexer.v1.TeiMultiplexer",
            "tei.v1.Info",
            "tei.v1.Embed",
            "tei.v1.Predict",
            "tei.v1.Rerank",
            "tei.v1.Tokenize",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    )


async def test_reflection_v1_describes_its_own_service() -> None:
    async with (
        running_router(RoutingTable()) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            )
            yield reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="tei_multiplexer.v1.TeiMultiplexer"
            )

        replies = [r async for r in call(ask(), timeout=30)]
    assert all(r.HasField("file_descriptor_response") for r in replies)


async def test_a_deleted_instance_turns_unknown_to_health_and_routing() -> None:
    statuses = await watched([endpoint("a", 1)], [])
    assert statuses == (SERVING, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
