"""Run a router on port 0 inside a test, and build multiplexer requests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import grpc

from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2, multiplexer_pb2_grpc
from tei_reconciler.router import serve_router
from tei_reconciler.routing import Endpoint, RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.traffic import TrafficSink

from .fake_backend import Recorder, fake_backend


def endpoint(
    name: str,
    port: int,
    *,
    model_id: str = "fake/model",
    ready: bool = True,
    phase: Phase = Phase.RUNNING,
    generation: int = 0,
) -> Endpoint:
    return Endpoint(
        name=name,
        model_id=model_id,
        host="127.0.0.1",
        port=port,
        ready=ready,
        phase=phase if ready or phase is not Phase.RUNNING else Phase.STARTING,
        generation=generation,
    )


@asynccontextmanager
async def running_router(
    table: RoutingTable,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    traffic: TrafficSink | None = None,
    **settings: Any,
) -> AsyncIterator[int]:
    """Serve the router for `table` on 127.0.0.1 port 0 with these `Settings` values; yields
    the bound port."""
    config = Settings(grpc_host="127.0.0.1", grpc_port=0, **settings)
    async with anyio.create_task_group() as tg:
        port: int = await tg.start(
            lambda task_status: serve_router(
                table,
                config,
                interceptors=interceptors,
                credentials=credentials,
                traffic=traffic,
                task_status=task_status,
            )
        )
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def mux_to(*endpoints: Endpoint) -> AsyncIterator[multiplexer_pb2_grpc.TeiMultiplexerStub]:
    """A multiplexer client of a router that routes to `endpoints`."""
    table = RoutingTable()
    table.update(list(endpoints))
    async with running_router(table) as port, mux_client(port) as stub:
        yield stub


@asynccontextmanager
async def mux_to_fake(
    **backend: Any,
) -> AsyncIterator[tuple[multiplexer_pb2_grpc.TeiMultiplexerStub, Recorder]]:
    """A multiplexer client of a router whose only instance, "a", is a fake backend (made
    with `backend` options); yields the client and what the backend recorded."""
    async with fake_backend(**backend) as (a_port, recorder), mux_to(endpoint("a", a_port)) as stub:
        yield stub, recorder


@asynccontextmanager
async def mux_client(port: int) -> AsyncIterator[multiplexer_pb2_grpc.TeiMultiplexerStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield multiplexer_pb2_grpc.TeiMultiplexerStub(channel)


def to(name: str) -> multiplexer_pb2.Target:
    return multiplexer_pb2.Target(instance_name=name)
