"""Envoy as the data plane, and the reconciler as its control plane (DESIGN.md section 10).

`EnvoyDataPlane.run` serves ADS on a private socket, starts (or adopts) Envoy with a bootstrap
that points at it, and from then on translates every routing-table version into a snapshot
(`translate.py`) and publishes it; Envoy's acknowledgements say which snapshot carries the
traffic. The Python router runs beside it on another private socket (started by the
composition root) and answers what Envoy sends it: the multiplexer, health, reflection and
every call Envoy cannot route to a Ready instance.

As a `DataPlane` it answers the controller and the REST API: an instance is routed once Envoy
applied a snapshot that sends its calls to the instance's current process; a drain of a process
waits for a snapshot that sends it no new call (it is DRAINING there) to be applied, then for
the calls in flight to it, in Envoy (its per-host counters) and in the Python router, to end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import TaskStatus
from prometheus_client.metrics_core import Metric

from tei_reconciler import metrics
from tei_reconciler._types import Clock
from tei_reconciler.atomic import write_atomically
from tei_reconciler.auth.certs import normalize_san
from tei_reconciler.auth.providers import TokenProvider
from tei_reconciler.dataplane import bootstrap as boot
from tei_reconciler.dataplane.admin import Admin
from tei_reconciler.dataplane.ads import Snapshot
from tei_reconciler.dataplane.files import EnvoyFiles
from tei_reconciler.dataplane.stats import TrafficFeed, parse, router_metrics
from tei_reconciler.dataplane.supervisor import EnvoySupervisor
from tei_reconciler.dataplane.translate import AuthContext, Plan, translate
from tei_reconciler.dataplane.xds import ControlPlane, serve_xds
from tei_reconciler.drivers.process import ProcessDriver, owner_digest
from tei_reconciler.routing import Backend, DataPlaneStatus, RoutingTable
from tei_reconciler.settings import AuthSettings, Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.traffic import TrafficSink

log = logging.getLogger(__name__)

TOKENS_POLL_SECS = 1.0  # how soon a tokens file change reaches Envoy
TRAFFIC_POLL_SECS = 2.0  # how often Envoy's counters feed the dashboard's traffic ring
_POLL = 0.05  # seconds between checks of Envoy's in-flight counters during a drain


def auth_context(auth: AuthSettings, digests: tuple[str, ...]) -> AuthContext | None:
    if not auth.providers:
        return None
    return AuthContext(
        mtls="mtls" in auth.providers,
        token="token" in auth.providers,
        allowed_subjects=auth.mtls.allowed_subjects,
        allowed_sans=tuple(normalize_san(s) for s in auth.mtls.allowed_sans),
        token_digests=digests,
        exempt_services=auth.exempt_grpc_services,
    )


def bootstrap_spec(settings: Settings, files: EnvoyFiles, port: int) -> boot.Spec:
    auth = settings.auth
    tls = None
    if "mtls" in auth.providers:
        mtls = auth.mtls
        tls = boot.Tls(  # settings require all three with "mtls"
            ca_cert=str(Path(mtls.ca_cert or "").absolute()),
            server_cert=str(Path(mtls.server_cert or "").absolute()),
            server_key=str(Path(mtls.server_key or "").absolute()),
        )
    return boot.Spec(
        admin_socket=files.admin_socket,
        xds_socket=files.xds_socket,
        router_socket=files.router_socket,
        listen_host=settings.grpc_host,
        listen_port=port,
        tls=tls,
        auth=bool(auth.providers),
    )


class EnvoyDataPlane:
    """Envoy on the gRPC port, programmed from the routing table."""

    def __init__(
        self,
        settings: Settings,
        table: RoutingTable,
        *,
        binary: str,
        files: EnvoyFiles,
        store: StatusStore,
        clock: Clock,
        router_in_flight: Callable[[Backend], int] = lambda backend: 0,
        traffic: TrafficSink | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.binary = binary
        self.files = files
        self.store = store
        self.clock = clock
        self.router_in_flight = router_in_flight
        self.traffic = traffic
        self.control = ControlPlane(on_rejected=self._rejected)
        self.admin = Admin(files.admin_socket)
        self.owner = owner_digest(Path(settings.state_file))
        self.tokens: TokenProvider | None = None
        if "token" in settings.auth.providers:
            self.tokens = TokenProvider.from_settings(settings.auth.token)
        self.rejected = 0
        self.port: int | None = None
        self.supervisor: EnvoySupervisor | None = None

    # ---- DataPlane ---------------------------------------------------------------------
    @property
    def kind(self) -> Literal["envoy"]:
        return "envoy"

    def routes_to(self, name: str) -> bool:
        applied = self.control.applied
        endpoint = self.table.get(name)
        if applied is None or endpoint is None or not endpoint.ready:
            return False
        return applied.resources.routed.get(name) == (endpoint.address, endpoint.generation)

    async def wait_routed(self, name: str) -> None:
        while not self.routes_to(name):
            with anyio.move_on_after(0.5):  # table changes do not wake this wait: look again
                await self.control.wait_progress()

    async def drain(self, backend: Backend) -> None:
        snapshot = self._publish()
        while self._up() and (self.control.applied is None or self._behind(snapshot)):
            with anyio.move_on_after(0.5):
                await self.control.wait_progress()
        while True:
            envoy = await self.admin.requests_to([backend.address]) if self._up() else 0
            if not envoy and not self.router_in_flight(backend):
                return
            await anyio.sleep(_POLL)

    def status(self) -> DataPlaneStatus:
        supervisor = self.supervisor
        pid = supervisor.handle.pid if supervisor and supervisor.handle else None
        detail = "Envoy" + (f" pid {pid}" if pid else "")
        if self.port is not None:
            detail += f" on port {self.port}"
        applied = self.control.applied
        return DataPlaneStatus(
            kind="envoy",
            up=self._up(),
            detail=detail,
            restarts=supervisor.restarts if supervisor else 0,
            config_version=applied.version if applied else None,
            config_rejected=self.rejected,
        )

    def _up(self) -> bool:
        return self.supervisor is not None and self.supervisor.up

    def _behind(self, snapshot: Snapshot) -> bool:
        applied = self.control.applied
        return applied is None or applied.version < snapshot.version

    # ---- control plane -----------------------------------------------------------------
    def _plan(self) -> Plan:
        digests = self.tokens.digests() if self.tokens is not None else ()
        return Plan(
            request_timeout_secs=self.settings.request_timeout_secs,
            default_instance=self.settings.default_instance or self.table.default_instance,
            auth=auth_context(self.settings.auth, digests),
            multiplexer=boot.MUX_METHODS,
            streams=boot.MUX_STREAMS,
            max_message_bytes=self.settings.max_message_mb << 20,
        )

    def _publish(self) -> Snapshot:
        resources = translate(self.table.all(), self._plan())
        snapshot = self.control.publish(resources, self.table.version)
        metrics.DATA_PLANE_CONFIG_VERSION.labels("published").set(snapshot.version)
        return snapshot

    def _rejected(self, resource: str, version: int, message: str) -> None:
        self.rejected += 1
        metrics.DATA_PLANE_CONFIG_REJECTED.labels(resource).inc()
        self.store.record_event(
            "",
            "Warning",
            "DataPlaneConfigRejected",
            f"Envoy rejected the {resource} of routing snapshot {version}: {message}",
            self.clock.wall(),
        )

    async def _follow_table(self) -> None:
        seen = self.table.version
        while True:
            await self.table.wait_changed(seen)
            seen = self.table.version
            self._publish()

    async def _follow_tokens(self, tokens: TokenProvider) -> None:
        """Re-read the tokens file when it changes; new digests go out with the routes."""
        seen = tokens.digests()
        while True:
            await anyio.sleep(TOKENS_POLL_SECS)
            if tokens.digests() != seen:
                seen = tokens.digests()
                self._publish()

    async def _follow_applied(self) -> None:
        while True:
            await self.control.wait_progress()
            applied = self.control.applied
            if applied is not None:
                metrics.DATA_PLANE_CONFIG_VERSION.labels("applied").set(applied.version)

    def _cluster_labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        for snapshot in (self.control.applied, self.control.snapshot):
            if snapshot is not None:
                labels.update(snapshot.resources.cluster_labels)
        return labels

    def _router_metrics(self) -> list[Metric]:
        text = self.admin.stats() if self._up() else None
        return [] if text is None else router_metrics(parse(text, self._cluster_labels()))

    async def _follow_traffic(self, feed: TrafficFeed) -> None:
        while True:
            await anyio.sleep(TRAFFIC_POLL_SECS)
            text = await self.admin.cluster_stats() if self._up() else None
            if text is not None:
                feed.update(parse(text, self._cluster_labels()))

    # ---- running -----------------------------------------------------------------------
    def _write_bootstrap(self, port: int) -> str:
        spec = bootstrap_spec(self.settings, self.files, port)
        data = boot.to_json(boot.bootstrap(spec)).encode()
        write_atomically(Path(self.files.bootstrap), data)  # 0600: mkstemp's mode
        return boot.digest(spec)

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the gRPC port with Envoy until cancelled; reports the bound port."""
        self._publish()
        digest = self._write_bootstrap(self.settings.grpc_port)
        self.supervisor = EnvoySupervisor(
            binary=self.binary,
            bootstrap=self.files.bootstrap,
            digest=digest,
            driver=ProcessDriver(
                runtime_dir=Path(self.settings.runtime_dir), owner=self.owner, clock=self.clock
            ),
            admin=self.admin,
            owner=self.owner,
            store=self.store,
            clock=self.clock,
            keep=self.settings.on_shutdown == "keep",
            stop_grace_secs=self.settings.stop_grace_secs,
            log_max_bytes=self.settings.log_max_bytes,
            log_backups=self.settings.log_backups,
        )
        remove_source = metrics.add_router_source(self._router_metrics)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(serve_xds, self.control, self.files.xds_socket)
                await tg.start(self.supervisor.run)
                self.port = await self.admin.listener_port(boot.LISTENER)
                if self.port is None:
                    raise OSError("Envoy serves no gRPC listener")
                if self.port != self.settings.grpc_port:
                    # Port 0 became a real port: an Envoy started later (after a crash)
                    # binds the same one, so clients keep their address.
                    self.supervisor.digest = self._write_bootstrap(self.port)
                log.info(
                    "data plane: Envoy (pid %s) on %s:%d",
                    self.supervisor.handle.pid if self.supervisor.handle else "?",
                    self.settings.grpc_host,
                    self.port,
                )
                tg.start_soon(self._follow_table)
                tg.start_soon(self._follow_applied)
                if self.tokens is not None:
                    tg.start_soon(self._follow_tokens, self.tokens)
                if self.traffic is not None:
                    tg.start_soon(self._follow_traffic, TrafficFeed(self.traffic))
                task_status.started(self.port)
        finally:
            remove_source()
