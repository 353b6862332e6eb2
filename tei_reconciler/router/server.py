"""Running the router: one grpc.aio server for every instance, until cancelled.

`serve_router` binds, reports the bound port through `task_status.started(port)` (port 0
picks a free one; behind Envoy it binds a private Unix socket, `bind="unix:PATH"`), then
runs a maintenance task that mirrors the routing table into the health service and closes
the channels of instances that left it or idled out. On cancellation it stops in uvicorn's
order: health reports NOT_SERVING, the server stops accepting and gives running calls
`stop_grace_secs`, then the instance channels close.
Auth plugs in from outside: server interceptors and server credentials are parameters; so
does `traffic`, the dashboard's ring that every finished call is recorded in. The router is
handed the manager's settings whole, as the REST API is; `RouterSettings` says what it reads
of them (the router imports nothing of the desired state, so not `Settings` itself).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import anyio
import grpc
from anyio.abc import TaskStatus

from tei_reconciler.router.arrow import embed_arrow_handler, embed_sparse_arrow_handler
from tei_reconciler.router.health import HEALTH_SERVICE, HealthSync, add_reflection
from tei_reconciler.router.methods import MULTIPLEXER_SERVICE, TEI_SERVICES
from tei_reconciler.router.multiplexer import method_handlers
from tei_reconciler.router.passthrough import generic_handlers
from tei_reconciler.router.pool import ChannelPool
from tei_reconciler.router.relay import Relay
from tei_reconciler.router.routes import Balancer
from tei_reconciler.routing import RoutingTable
from tei_reconciler.traffic import TrafficSink

CHANNEL_CLOSE_GRACE_SECS = 5.0
STOP_GRACE_MAX_SECS = 5.0  # calls get at most this long to finish when the router stops

log = logging.getLogger(__name__)


class RouterSettings(Protocol):
    """The settings the router reads (`tei_reconciler.settings.Settings` has them all)."""

    @property
    def grpc_host(self) -> str: ...
    @property
    def grpc_port(self) -> int: ...  # 0: any free port
    @property
    def request_timeout_secs(self) -> float: ...  # for calls without a client deadline
    @property
    def max_message_mb(self) -> int: ...
    @property
    def idle_channel_secs(self) -> float: ...
    @property
    def default_instance(self) -> str | None: ...
    @property
    def stop_grace_secs(self) -> float: ...


async def serve_router(
    table: RoutingTable,
    settings: RouterSettings,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] | None = None,
    credentials: grpc.ServerCredentials | None = None,
    balancer: Balancer | None = None,
    bind: str | None = None,
    traffic: TrafficSink | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    max_bytes = settings.max_message_mb * 1024 * 1024
    pool = ChannelPool(max_message_bytes=max_bytes, idle_secs=settings.idle_channel_secs)
    relay = Relay(
        table,
        pool,
        request_timeout_secs=settings.request_timeout_secs,
        default_instance=settings.default_instance,
        balancer=balancer,
        traffic=traffic,
    )
    health = HealthSync(table)
    server = grpc.aio.server(
        interceptors=list(interceptors or ()),
        options=[
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    mux = method_handlers(relay)
    mux["EmbedArrow"] = embed_arrow_handler(relay)
    mux["EmbedSparseArrow"] = embed_sparse_arrow_handler(relay)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(MULTIPLEXER_SERVICE, mux),)
    )
    server.add_generic_rpc_handlers(tuple(generic_handlers(relay)))
    health.add_to(server)
    add_reflection(server, [MULTIPLEXER_SERVICE, *TEI_SERVICES, HEALTH_SERVICE])
    host = settings.grpc_host
    address = bind or f"{host}:{settings.grpc_port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpcio raises this for a port that is taken
        raise OSError(f"gRPC router cannot bind {address}: the address is in use") from exc
    if not bound:
        raise OSError(f"gRPC router cannot bind {address}")
    await health.apply()
    await server.start()
    log.info("gRPC router listening on %s", bind or f"{host}:{bound}")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_maintain, relay, health)
            task_status.started(bound)
            await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await health.servicer.enter_graceful_shutdown()
            await server.stop(min(settings.stop_grace_secs, STOP_GRACE_MAX_SECS))
            for channel in pool.drain():
                await channel.close()


async def _maintain(relay: Relay, health: HealthSync) -> None:
    """Mirror each routing-table change into the pool and health service as it happens;
    prune idle channels on a slow timer."""
    pool = relay.pool
    table = relay.table
    prune_interval = min(pool.idle_secs, 60.0)
    seen = -1
    next_prune = anyio.current_time() + prune_interval
    async with anyio.create_task_group() as closers:
        while True:
            with anyio.move_on_after(max(0.0, next_prune - anyio.current_time())):
                await table.wait_changed(seen)
            if table.version != seen:
                seen = table.version
                pool.sync(table)
                await health.apply()
            if anyio.current_time() >= next_prune:
                pool.prune_idle()
                next_prune = anyio.current_time() + prune_interval
            for channel in pool.take_retired():
                closers.start_soon(_close, channel)


async def _close(channel: grpc.aio.Channel) -> None:
    """Let calls on a dropped channel finish; on shutdown, close it at once."""
    try:
        await channel.close(CHANNEL_CLOSE_GRACE_SECS)
    finally:
        with anyio.CancelScope(shield=True):
            await channel.close()
