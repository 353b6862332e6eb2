"""Run a data plane on port 0 inside a test, and build multiplexer requests.

`running_router` serves a routing table with a data plane: "grpcio" (the Python router alone,
exactly as `serve_router` runs it) or "envoy" (Envoy in front, the Python router behind it
on a private socket, as `tei-reconciler run` composes them, in a directory of the test's
own). Which one, when a test does not say, is `DataPlaneUnderTest`'s: the router's behaviour
tests set it once per data plane (the `each_data_plane` fixture), so every helper here runs
them against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import grpc

from tei_reconciler._types import Secret, SystemClock
from tei_reconciler.dataplane.binary import Choice, find_envoy
from tei_reconciler.dataplane.serve import DataPlaneRunner
from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2, multiplexer_pb2_grpc
from tei_reconciler.router import serve_router
from tei_reconciler.router.routes import Balancer
from tei_reconciler.router.traffic import GrpcioDataPlane
from tei_reconciler.routing import DataPlane, Endpoint, RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.traffic import TrafficSink

from .fake_backend import Recorder, fake_backend
from support.envoy import first_routes_applied


def endpoint(
    name: str,
    port: int,
    *,
    model_id: str = "fake/model",
    ready: bool = True,
    phase: Phase = Phase.RUNNING,
    generation: int = 0,
    api_key: str | None = None,
) -> Endpoint:
    return Endpoint(
        name=name,
        model_id=model_id,
        host="127.0.0.1",
        port=port,
        ready=ready,
        phase=phase if ready or phase is not Phase.RUNNING else Phase.STARTING,
        generation=generation,
        api_key=None if api_key is None else Secret(api_key),
    )


@dataclass
class DataPlaneUnderTest:
    """The data plane helpers use when a test does not name one (tests run one at a time
    per process, so a plain global is enough)."""

    kind: str = "grpcio"
    runtime: Path | None = None  # Envoy's directory (the test's tmp_path)


UNDER_TEST = DataPlaneUnderTest()


def data_plane_settings(runtime: Path, **options: Any) -> Settings:
    """Settings for a data plane on 127.0.0.1 port 0 with its files under `runtime`."""
    defaults: dict[str, Any] = {
        "runtime_dir": str(runtime / "runtime"),
        "state_file": str(runtime / "state.toml"),
        "api_port": 0,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
    }
    return Settings(**(defaults | options))


@asynccontextmanager
async def running_data_plane(
    table: RoutingTable,
    *,
    data_plane: str | None = None,
    runtime: Path | None = None,
    store: StatusStore | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    traffic: TrafficSink | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[int, DataPlane]]:
    """Serve `table` on 127.0.0.1 port 0 with these `Settings` values; yields the bound port
    and the data plane. Envoy's events go to `store`; interceptors and credentials are the
    grpcio router's own seam."""
    kind = data_plane or UNDER_TEST.kind
    runtime = runtime or UNDER_TEST.runtime
    async with anyio.create_task_group() as tg:
        plane: DataPlane
        if kind == "grpcio":
            balancer = Balancer()
            plane = GrpcioDataPlane(table, balancer)
            config = Settings(grpc_host="127.0.0.1", grpc_port=0, **settings)
            port: int = await tg.start(
                lambda task_status: serve_router(
                    table,
                    config,
                    interceptors=interceptors,
                    credentials=credentials,
                    traffic=traffic,
                    balancer=balancer,
                    task_status=task_status,
                )
            )
        else:
            assert runtime is not None, "an Envoy data plane needs a directory of its own"
            assert not interceptors, "Envoy checks auth itself"
            assert credentials is None, "Envoy terminates TLS itself"
            binary = find_envoy("auto")
            assert binary is not None
            runner = DataPlaneRunner(
                data_plane_settings(runtime, **settings),
                table,
                store=store or StatusStore(),
                clock=SystemClock(),
                choice=Choice(kind="envoy", binary=binary, reason="test"),
                traffic=traffic,
            )
            plane = runner.plane
            port = await tg.start(runner.serve)
        try:
            await first_routes_applied(plane, table)
            yield port, plane
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def running_router(table: RoutingTable, **options: Any) -> AsyncIterator[int]:
    """Serve the router for `table` on 127.0.0.1 port 0 (see `running_data_plane`); yields
    the bound port."""
    async with running_data_plane(table, **options) as (port, _):
        yield port


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
