"""Run a data plane on port 0 inside a test, and build multiplexer requests.

`running_router` serves a routing table with the data plane a test names: "grpcio" (the
Python router alone, exactly as `serve_router` runs it) or "envoy" (Envoy in front, the
Python router behind it on a private socket, as `tei-reconciler run` composes them). Envoy
needs a directory of its own per test (`runtime`), which also keeps each test's Envoy apart
from every other test's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import grpc

from tei_reconciler._types import SystemClock
from tei_reconciler.dataplane.binary import Choice, find_envoy
from tei_reconciler.dataplane.serve import DataPlaneRunner
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2, multiplexer_pb2_grpc
from tei_reconciler.router import serve_router
from tei_reconciler.router.routes import Balancer
from tei_reconciler.router.traffic import GrpcioDataPlane
from tei_reconciler.routing import DataPlane, Endpoint, RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

#: `serve(table, **options)`: a running data plane for `table`, yielding its port.
Serve = Callable[..., AbstractAsyncContextManager[int]]


def endpoint(
    name: str,
    port: int,
    *,
    model_id: str = "fake/model",
    ready: bool = True,
    phase: str = "Running",
    generation: int = 0,
) -> Endpoint:
    return Endpoint(
        name=name,
        model_id=model_id,
        host="127.0.0.1",
        port=port,
        ready=ready,
        phase=phase if ready or phase != "Running" else "Starting",
        generation=generation,
    )


def data_plane_settings(runtime: Path, **options: Any) -> Settings:
    """Settings for a data plane on 127.0.0.1 port 0 with its files under `runtime`."""
    defaults: dict[str, Any] = {
        "runtime_dir": str(runtime / "runtime"),
        "state_file": str(runtime / "state.toml"),
        "api_port": 0,
        "grpc_port": 0,
    }
    return Settings(**(defaults | options))


@asynccontextmanager
async def running_data_plane(
    table: RoutingTable,
    *,
    data_plane: str = "grpcio",
    runtime: Path | None = None,
    store: StatusStore | None = None,
    **options: Any,
) -> AsyncIterator[tuple[int, DataPlane]]:
    """Serve `table` on 127.0.0.1 port 0; yields the bound port and the data plane.

    grpcio: `options` are `serve_router`'s; envoy: they are settings (`request_timeout_secs`,
    `default_instance`, `max_message_mb`, `auth`, ...) and `runtime` is required; its events
    go to `store`."""
    async with anyio.create_task_group() as tg:
        plane: DataPlane
        if data_plane == "grpcio":
            balancer = Balancer()
            plane = GrpcioDataPlane(table, balancer)
            port: int = await tg.start(
                lambda task_status: serve_router(
                    table,
                    host="127.0.0.1",
                    port=0,
                    balancer=balancer,
                    task_status=task_status,
                    **options,
                )
            )
        else:
            assert runtime is not None, "an Envoy data plane needs a directory of its own"
            binary = find_envoy("auto")
            assert binary is not None
            runner = DataPlaneRunner(
                data_plane_settings(runtime, **options),
                table,
                store=store or StatusStore(),
                clock=SystemClock(),
                choice=Choice(kind="envoy", binary=binary, reason="test"),
            )
            plane = runner.plane
            port = await tg.start(runner.serve)
        try:
            yield port, plane
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def running_router(
    table: RoutingTable,
    *,
    data_plane: str = "grpcio",
    runtime: Path | None = None,
    **options: Any,
) -> AsyncIterator[int]:
    """Serve the router for `table` on 127.0.0.1 port 0; yields the bound port."""
    async with running_data_plane(table, data_plane=data_plane, runtime=runtime, **options) as (
        port,
        _,
    ):
        yield port


@asynccontextmanager
async def mux_client(port: int) -> AsyncIterator[multiplexer_pb2_grpc.TeiMultiplexerStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield multiplexer_pb2_grpc.TeiMultiplexerStub(channel)


def to(name: str) -> multiplexer_pb2.Target:
    return multiplexer_pb2.Target(instance_name=name)
