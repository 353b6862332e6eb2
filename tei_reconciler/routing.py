"""The routing table: which instances may take traffic, and where they listen.

The controller publishes a new immutable snapshot whenever an instance becomes Ready, stops
being Ready, or moves to another port; the gRPC router only reads snapshots. This is the
router's whole view of the world: it never reads the state file or the status store.

A `DataPlane` is what carries the traffic the table describes (the grpcio router, or Envoy
programmed by the reconciler): the controller asks it to drain an instance before stopping
it, the REST API asks whether traffic reaches an instance yet.
"""

from __future__ import annotations

from typing import Literal, Protocol

import anyio
import msgspec

from tei_reconciler._types import Secret
from tei_reconciler.planner.phase import Phase


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """One instance as the router sees it."""

    name: str
    model_id: str
    host: str
    port: int
    ready: bool
    phase: Phase  # for "instance X is not ready (phase ...)" errors
    generation: int = 0  # bumps when the process is replaced (restart, new port)
    api_key: Secret | None = None  # what a call must carry (`authorization: Bearer <key>`)

    @property
    def address(self) -> str:
        """`host:port` as gRPC targets spell it (an IPv6 literal goes in brackets)."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"


class RoutingTable:
    """Holds the current snapshot; `version` increases on every change so readers can cache."""

    def __init__(self, default_instance: str | None = None) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self.version = 0
        self.default_instance = default_instance
        self._changed: anyio.Event | None = None  # created on first wait (needs a running loop)

    def update(self, endpoints: list[Endpoint]) -> None:
        """Replace the whole table (the controller calls this after every pass)."""
        new = {e.name: e for e in endpoints}
        if new != self._endpoints:
            self._endpoints = new
            self.version += 1
            if self._changed is not None:
                self._changed.set()
                self._changed = None

    async def wait_changed(self, seen: int) -> None:
        """Return once `version` differs from `seen` (at once if it already does)."""
        while self.version == seen:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def get(self, name: str) -> Endpoint | None:
        return self._endpoints.get(name)

    def all(self) -> list[Endpoint]:
        """Every known instance, sorted by name."""
        return [self._endpoints[n] for n in sorted(self._endpoints)]

    def ready(self) -> list[Endpoint]:
        """Ready instances sorted by name (the order `instance_index` indexes)."""
        return [e for e in self.all() if e.ready]

    def ready_for_model(self, model_id: str) -> list[Endpoint]:
        return [e for e in self.ready() if e.model_id == model_id]


class DataPlaneStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What `GET /health` and `/ready` say about the data plane."""

    kind: Literal["envoy", "grpcio"]
    up: bool  # serving the gRPC port
    detail: str = ""  # one line: the binary and pid, or why the kind was chosen
    restarts: int = 0  # Envoy exits the reconciler recovered from
    config_version: int | None = None  # routing snapshot Envoy applied (None: none yet)
    config_rejected: int = 0  # snapshots Envoy rejected


class DataPlane(Protocol):
    """The reader of the routing table that carries the gRPC traffic."""

    @property
    def kind(self) -> Literal["envoy", "grpcio"]: ...

    def routes_to(self, name: str) -> bool:
        """Whether new calls for instance `name` reach its current process now."""
        ...

    async def wait_routed(self, name: str) -> None:
        """Return once `routes_to(name)` (callers bound the wait)."""
        ...

    async def drain(self, name: str) -> None:
        """Return once no new call reaches `name` and none is in flight to it (the instance
        has already left the table's Ready set; callers bound the wait)."""
        ...

    def status(self) -> DataPlaneStatus: ...
