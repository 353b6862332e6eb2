"""The control plane: the reconciler's ADS server for its Envoy, on a private Unix socket.

`publish` turns each new set of resources into a numbered snapshot; every ADS stream (there
is one per Envoy process, a new one after each Envoy restart) answers it as `ads.py` decides.
The newest stream's acknowledgements say which snapshot Envoy routes by (`applied`), which is
what `?wait=ready` and the drain wait for; a rejection goes to `on_rejected` (an event and a
metric) and to the log, its reason without the API keys of any snapshot Envoy may have been
sent (`ads.redact`), and the snapshot Envoy applied before stays in force.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import grpc
from anyio.abc import TaskStatus
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tei_reconciler.dataplane.ads import RDS, SHORT, Ack, AdsSession, Nack, Snapshot, redact
from tei_reconciler.dataplane.translate import Resources

log = logging.getLogger(__name__)

Rejected = Callable[[str, int, str], None]  # (type name, version, Envoy's message)


class ControlPlane:
    """Snapshots for Envoy, and what Envoy has applied of them."""

    def __init__(self, *, on_rejected: Rejected | None = None) -> None:
        self.on_rejected = on_rejected
        self.snapshot: Snapshot | None = None
        self.streams = 0  # ADS streams opened (one per Envoy process connecting)
        self._snapshots: dict[int, Snapshot] = {}
        self._session: AdsSession | None = None
        self._applied: int | None = None
        self._changed = anyio.Event()  # a new snapshot
        self._progress = anyio.Event()  # Envoy applied something, or its stream ended

    # ---- the reconciler's side ---------------------------------------------------------
    def publish(self, resources: Resources, table_version: int) -> Snapshot:
        """Make `resources` the current snapshot (a new version only when they changed)."""
        current = self.snapshot
        if current is not None and current.resources == resources:
            return current
        version = 1 if current is None else current.version + 1
        snapshot = Snapshot(version=version, table_version=table_version, resources=resources)
        self.snapshot = self._snapshots[version] = snapshot
        self._changed.set()
        self._changed = anyio.Event()
        return snapshot

    @property
    def applied(self) -> Snapshot | None:
        """The snapshot the connected Envoy routes by (None: no Envoy, or none applied yet)."""
        return None if self._applied is None else self._snapshots.get(self._applied)

    @property
    def routes_applied(self) -> int | None:
        """The newest snapshot whose routes the connected Envoy applied (None: no Envoy, or
        none yet). The auth context rides on the routes: until then Envoy's auth filter
        answers every call UNAVAILABLE "authentication is not configured yet"."""
        session = self._session
        return None if session is None else session.acknowledged(RDS)

    async def wait_applied(self, version: int) -> None:
        """Return once Envoy applied `version` or a newer snapshot."""
        while self._applied is None or self._applied < version:
            await self._progress.wait()

    async def wait_progress(self) -> None:
        """Return at Envoy's next acknowledgement (or the end of its stream)."""
        await self._progress.wait()

    # ---- Envoy's side ------------------------------------------------------------------
    async def stream(
        self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> None:
        """One ADS stream: answer requests and new snapshots until Envoy goes away."""
        session = self._session = AdsSession()
        self.streams += 1
        self._applied = None
        send, receive = anyio.create_memory_object_stream[discovery_pb2.DiscoveryRequest | None](64)

        async def read(scope: anyio.CancelScope) -> None:
            async with send:
                async for request in requests:
                    await send.send(request)
            scope.cancel()

        async def watch() -> None:
            while True:
                await self._changed.wait()
                await send.send(None)

        try:
            async with anyio.create_task_group() as tg, receive:
                tg.start_soon(read, tg.cancel_scope)
                tg.start_soon(watch)
                async for request in receive:
                    if request is None:
                        responses = (
                            session.snapshot(self.snapshot) if self.snapshot is not None else []
                        )
                    else:
                        responses, outcome = session.request(request, self.snapshot)
                        self._record(session, outcome)
                    for response in responses:
                        await context.write(response)
        finally:
            if self._session is session:
                self._session = None
                self._applied = None
                self._wake()

    def _record(self, session: AdsSession, outcome: Ack | Nack | None) -> None:
        if isinstance(outcome, Nack):
            keys = (key for s in self._snapshots.values() for key in s.resources.secrets)
            message = redact(outcome.message, keys)
            log.error(
                "Envoy rejected %s version %d: %s",
                SHORT[outcome.type_url],
                outcome.version,
                message,
            )
            if self.on_rejected is not None:
                self.on_rejected(SHORT[outcome.type_url], outcome.version, message)
        if outcome is None or session is not self._session:
            return
        applied = session.applied(self._snapshots)
        if applied is not None and applied != self._applied:
            self._applied = applied
            for old in [v for v in self._snapshots if v < applied]:
                del self._snapshots[old]
            log.debug("Envoy applied routing snapshot %d", applied)
        self._wake()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> None:
        await self.control.stream(request_iterator, context)

    async def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "state-of-the-world ADS only")


async def serve_xds(
    control: ControlPlane, socket_path: str, *, task_status: TaskStatus[None]
) -> None:
    """Serve ADS on `socket_path` (a Unix socket only this user can open) until cancelled."""
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(control), server)
    if not server.add_insecure_port(f"unix:{socket_path}"):
        raise OSError(f"cannot listen on {socket_path}")
    await server.start()
    try:
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop(0)
