"""Running the chosen data plane on the gRPC port.

- grpcio: the Python router listens on `grpc_host:grpc_port` itself, with the auth
  interceptor and TLS credentials `[auth]` asks for.
- envoy: the Python router listens on a private Unix socket, without auth (Envoy, in front,
  has checked every call), and Envoy owns `grpc_host:grpc_port`.

Either way the port actually bound is reported through `task_status.started(port)`, and
`plane` is the `DataPlane` the controller and the REST API talk to. Auth files are loaded at
construction, so a broken CA, key or tokens file stops `run` before anything listens.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from tei_reconciler import metrics
from tei_reconciler._types import Clock
from tei_reconciler.auth import build_grpc_auth
from tei_reconciler.dataplane.binary import Choice
from tei_reconciler.dataplane.envoy import EnvoyDataPlane
from tei_reconciler.dataplane.files import envoy_files, remove_stale_socket
from tei_reconciler.router import serve_router
from tei_reconciler.router.routes import Balancer
from tei_reconciler.router.traffic import GrpcioDataPlane
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.traffic import TrafficSink

log = logging.getLogger(__name__)


class DataPlaneRunner:
    """The data plane `choice` names, built from the settings, ready to `serve`."""

    def __init__(
        self,
        settings: Settings,
        table: RoutingTable,
        *,
        store: StatusStore,
        clock: Clock,
        choice: Choice,
        traffic: TrafficSink | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.choice = choice
        self.traffic = traffic
        self.balancer = Balancer()
        self.interceptors, self.credentials = build_grpc_auth(settings)
        self.grpcio = GrpcioDataPlane(table, self.balancer, detail=choice.reason)
        self.plane: GrpcioDataPlane | EnvoyDataPlane = self.grpcio
        if choice.kind == "envoy":
            assert choice.binary is not None
            self.files = envoy_files(Path(settings.runtime_dir))
            self.plane = EnvoyDataPlane(
                settings,
                table,
                binary=choice.binary,
                files=self.files,
                store=store,
                clock=clock,
                router_in_flight=self.grpcio.in_flight,
                traffic=traffic,
            )

    async def _router(
        self, bind: str | None, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        behind_envoy = bind is not None
        await serve_router(
            self.table,
            self.settings,
            bind=bind,
            interceptors=None if behind_envoy else self.interceptors,
            credentials=None if behind_envoy else self.credentials,
            balancer=self.balancer,
            traffic=self.traffic,
            task_status=task_status,
        )

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the gRPC port until cancelled; reports the port bound."""
        log.info("data plane: %s (%s)", self.choice.kind, self.choice.reason)
        try:
            async with anyio.create_task_group() as tg:
                if isinstance(self.plane, GrpcioDataPlane):
                    port = await tg.start(self._router, None)
                else:
                    remove_stale_socket(self.files.router_socket)
                    remove_stale_socket(self.files.xds_socket)
                    await tg.start(self._router, f"unix:{self.files.router_socket}")
                    port = await tg.start(self.plane.run)
                self.grpcio.up = True
                if self.choice.kind == "grpcio":
                    metrics.DATA_PLANE_UP.labels("grpcio").set(1)
                log.info(
                    "data plane %s listening on %s:%d",
                    self.choice.kind,
                    self.settings.grpc_host,
                    port,
                )
                task_status.started(port)
        finally:
            self.grpcio.up = False
            if self.choice.kind == "grpcio":
                metrics.DATA_PLANE_UP.labels("grpcio").set(0)
