"""Routing changes without failed calls: an instance leaving routing finishes the calls it
has (the drain the controller waits for before stopping it), and instances that stay Ready
never notice another one coming or going. On both data planes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import grpc
import pytest

from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.routing import DataPlane, RoutingTable

from .fake_backend import fake_backend
from .harness import endpoint
from support.waiting import eventually

pytestmark = pytest.mark.anyio

ServePlane = Callable[..., AbstractAsyncContextManager[tuple[int, DataPlane]]]
DEADLINE = 30


async def embed(stub: tei_pb2_grpc.EmbedStub, text: str, **keys: str) -> str:
    """The status code name of one plain tei.v1 call routed by `keys` (instance, model)."""
    metadata = tuple((f"x-tei-{k}", v) for k, v in keys.items())
    try:
        await stub.Embed(tei_pb2.EmbedRequest(inputs=text), metadata=metadata, timeout=DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


async def test_an_instance_leaving_routing_finishes_its_calls_and_takes_no_new_ones(
    serve_plane: ServePlane,
) -> None:
    async with fake_backend(model_id="m") as (a_port, recorder):
        table = RoutingTable()
        table.update([endpoint("a", a_port, model_id="m")])
        async with (
            serve_plane(table) as (port, plane),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            anyio.create_task_group() as tg,
        ):
            stub = tei_pb2_grpc.EmbedStub(channel)
            await eventually(lambda: plane.routes_to("a"), what="traffic to reach a")
            held: list[str] = []

            async def hold(**keys: str) -> None:
                held.append(await embed(stub, "hold on", **keys))

            tg.start_soon(lambda: hold(instance="a"))
            tg.start_soon(lambda: hold(instance="a"))
            tg.start_soon(lambda: hold(model="m"))
            await eventually(lambda: recorder.held == 3, what="three calls in flight")
            table.update([endpoint("a", a_port, model_id="m", ready=False, phase=Phase.STOPPING)])
            drained = anyio.Event()

            async def drain() -> None:
                await plane.drain("a")
                drained.set()

            tg.start_soon(drain)

            async def refused() -> bool:
                return await embed(stub, "new", instance="a") == "UNAVAILABLE"

            await eventually(refused, what="new calls to be refused")
            late_by_model = await embed(stub, "new", model="m")
            assert not drained.is_set()
            assert held == []
            recorder.release.set()
            with anyio.fail_after(DEADLINE):
                await drained.wait()
            assert not plane.routes_to("a")
    assert held == ["OK", "OK", "OK"]
    assert late_by_model == "UNAVAILABLE"
    assert recorder.held == 3  # nothing new reached the instance once it left routing


async def test_instances_that_stay_ready_see_no_failed_call_while_others_come_and_go(
    serve_plane: ServePlane,
) -> None:
    async with fake_backend(model_id="m") as (a_port, _), fake_backend(model_id="m") as (b_port, _):
        a = endpoint("a", a_port, model_id="m")
        table = RoutingTable()
        table.update([a])
        async with (
            serve_plane(table) as (port, plane),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = tei_pb2_grpc.EmbedStub(channel)
            await eventually(lambda: plane.routes_to("a"), what="traffic to reach a")
            codes: list[str] = []
            changes = [
                [a, endpoint("b", b_port, model_id="m", ready=False, phase=Phase.STARTING)],
                [a, endpoint("b", b_port, model_id="m")],
                [a, endpoint("b", b_port, model_id="m", ready=False, phase=Phase.STOPPING)],
                [a],
                [a, endpoint("b", b_port, model_id="m", generation=2)],
                [a],
            ]
            async with anyio.create_task_group() as tg:

                async def load() -> None:
                    while True:
                        codes.append(await embed(stub, "x", instance="a"))

                for _ in range(4):
                    tg.start_soon(load)
                for step in changes:
                    table.update(step)
                    b_routed = any(e.name == "b" and e.ready for e in step)

                    def applied(b_routed: bool = b_routed) -> bool:
                        return plane.routes_to("b") == b_routed

                    await eventually(applied, what="the data plane to apply the change")
                    seen = len(codes)

                    def more_calls(seen: int = seen) -> bool:
                        return len(codes) > seen + 20

                    await eventually(more_calls, what="calls")
                tg.cancel_scope.cancel()
    assert len(codes) > 100
    assert set(codes) == {"OK"}
