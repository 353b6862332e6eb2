"""The routing table: which instances may take traffic, and where they listen.

The controller publishes a new immutable snapshot whenever an instance becomes Ready, stops
being Ready, or moves to another port; the gRPC router only reads snapshots. This is the
router's whole view of the world: it never reads the state file or the status store.

A `DataPlane` is what carries the traffic the table describes (the grpcio router, or Envoy
programmed by the reconciler): the controller asks it to drain a process before stopping it
(a stopped or deleted instance's, or the old one of a rollout), the REST API asks whether
traffic reaches an instance yet.
"""

from __future__ import annotations

from typing import Literal, Protocol

import anyio
import msgspec

from tei_reconciler._types import Secret
from tei_reconciler.planner.phase import Phase


def grpc_address(host: str, port: int) -> str:
    """`host:port` as gRPC targets spell it (an IPv6 literal goes in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class Backend(msgspec.Struct, frozen=True, kw_only=True):
    """One process of an instance, as a data plane reaches it and counts its calls: its
    address, and its generation (a process restarted on the same port is another one)."""

    host: str
    port: int
    generation: int = 0

    @property
    def address(self) -> str:
        return grpc_address(self.host, self.port)


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """One instance as the router sees it: its current process, and the processes of it
    that left routing but still finish their calls (`draining`: the old process of a
    rollout, until it is stopped)."""

    name: str
    model_id: str
    host: str
    port: int
    ready: bool
    phase: Phase  # for "instance X is not ready (phase ...)" errors
    generation: int = 0  # bumps when the process is replaced (restart, new port)
    draining: tuple[Backend, ...] = ()
    api_key: Secret | None = None  # what a call must carry (`authorization: Bearer <key>`)

    @property
    def address(self) -> str:
        """`host:port` as gRPC targets spell it (an IPv6 literal goes in brackets)."""
        return grpc_address(self.host, self.port)

    @property
    def backend(self) -> Backend:
        """The current process."""
        return Backend(host=self.host, port=self.port, generation=self.generation)


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

    async def drain(self, backend: Backend) -> None:
        """Return once no new call reaches the process `backend` and none is in flight to
        it (it has already left routing: its instance is not Ready, or another process of
        the instance took over; callers bound the wait)."""
        ...

    def status(self) -> DataPlaneStatus: ...
