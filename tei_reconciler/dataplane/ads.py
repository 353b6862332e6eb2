"""The state-of-the-world ADS protocol, one stream at a time, as a state machine. No I/O.

Envoy subscribes to clusters (CDS, wildcard), to the endpoints of the clusters it has (EDS)
and to the route table its listener names (RDS), all on one stream. For each type the server
answers a request when it has something newer than what Envoy last received, or when Envoy
asks for other names; Envoy's next request on that type acknowledges the answer (its nonce,
the answer's version) or rejects it (`error_detail`, the previous version). Answers for one
snapshot go out in the order clusters, endpoints, routes, so a route never names a cluster
Envoy has not been told about.

A snapshot counts as applied once every type acknowledged it (endpoints and routes for all
the names the snapshot needs): from then on Envoy routes by it. A rejection keeps the last
applied snapshot in force, and is reported, never retried in a loop: the same version is not
sent again, the next snapshot is. Envoy's reason for a rejection may quote the resource
whole, API keys included: `redact` masks them before the reason is shown anywhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, text_encoding

from tei_reconciler._types import Secret
from tei_reconciler.dataplane.translate import ROUTE_CONFIG, Resources

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ORDER = (CDS, EDS, RDS)
SHORT = {CDS: "clusters", EDS: "endpoints", RDS: "routes"}


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Resources for one routing-table version, numbered by the control plane."""

    version: int
    table_version: int
    resources: Resources


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    type_url: str
    version: int


class Nack(msgspec.Struct, frozen=True, kw_only=True):
    type_url: str
    version: int
    message: str


def redact(message: str, secrets: Iterable[Secret]) -> str:
    """Envoy's reason for a rejection with every secret in `secrets` masked as `***`. A
    resource that fails validation comes back quoted whole in protobuf's text format, where a
    key appears as sent or escaped (bytes outside printable ASCII, quotes, backslashes)."""
    forms: set[str] = set()
    for secret in secrets:
        value = secret.reveal()
        raw = value.encode()
        forms |= {value, text_encoding.CEscape(raw, False), text_encoding.CEscape(raw, True)}
    for form in sorted(forms - {""}, key=len, reverse=True):  # a key inside another: longest first
        message = message.replace(form, "***")
    return message


@dataclass
class _TypeState:
    names: frozenset[str] | None = None  # None: wildcard (every resource of the type)
    waiting: bool = False  # Envoy has a request open that we have not answered
    sent_version: int | None = None
    sent_names: frozenset[str] | None = None
    sent_covers: bool = False  # the last answer holds every name its snapshot needs
    nonce: str = ""
    complete: int | None = None  # last version acknowledged with every name it needs


def _needed(type_url: str, snapshot: Snapshot) -> frozenset[str] | None:
    """The names a snapshot needs Envoy to hold for `type_url` (None: no particular ones)."""
    if type_url == EDS:
        return frozenset(c.name for c in snapshot.resources.clusters)
    if type_url == RDS:
        return frozenset({ROUTE_CONFIG})
    return None


def _resources(type_url: str, snapshot: Snapshot) -> Iterable[tuple[str, object]]:
    res = snapshot.resources
    if type_url == CDS:
        return ((c.name, c) for c in res.clusters)
    if type_url == EDS:
        return ((e.cluster_name, e) for e in res.endpoints)
    return ((r.name, r) for r in res.routes)


@dataclass
class AdsSession:
    """One ADS stream's state. `request` and `snapshot` return the responses to send."""

    _types: dict[str, _TypeState] = field(default_factory=lambda: {t: _TypeState() for t in ORDER})
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def request(
        self, req: discovery_pb2.DiscoveryRequest, snapshot: Snapshot | None
    ) -> tuple[list[discovery_pb2.DiscoveryResponse], Ack | Nack | None]:
        state = self._types.get(req.type_url)
        if state is None:
            return [], None  # a type this control plane does not serve
        if req.response_nonce and req.response_nonce != state.nonce:
            return [], None  # about an answer superseded since: Envoy will ask again
        outcome: Ack | Nack | None = None
        if req.response_nonce and state.sent_version is not None:
            if req.HasField("error_detail"):
                outcome = Nack(
                    type_url=req.type_url,
                    version=state.sent_version,
                    message=req.error_detail.message,
                )
            else:
                outcome = Ack(type_url=req.type_url, version=state.sent_version)
                if state.sent_covers:
                    state.complete = state.sent_version
        names = [n for n in req.resource_names if n != "*"]
        state.names = frozenset(names) if names or req.type_url != CDS else None
        state.waiting = True
        return self._answer(req.type_url, snapshot), outcome

    def snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        """A new snapshot: answer every open request, in dependency order."""
        return [r for t in ORDER for r in self._answer(t, snapshot)]

    def applied(self, snapshots: Mapping[int, Snapshot]) -> int | None:
        """The newest snapshot version every type has applied (None: none yet)."""
        versions = [self._types[t].complete for t in ORDER]
        if any(v is None for v in versions):
            return None
        lowest = min(v for v in versions if v is not None)
        return lowest if lowest in snapshots else None

    def acknowledged(self, type_url: str) -> int | None:
        """The newest version of `type_url` Envoy acknowledged with every name its snapshot
        needs (None: none yet). Routes can be applied before `applied` says so: an empty
        table has no clusters, so Envoy never asks for endpoints."""
        return self._types[type_url].complete

    def _answer(
        self, type_url: str, snapshot: Snapshot | None
    ) -> list[discovery_pb2.DiscoveryResponse]:
        state = self._types[type_url]
        if snapshot is None or not state.waiting:
            return []
        if state.sent_version == snapshot.version and state.sent_names == state.names:
            return []  # Envoy has this already (or rejected it): wait for the next snapshot
        response = discovery_pb2.DiscoveryResponse(
            version_info=str(snapshot.version), type_url=type_url
        )
        for name, resource in _resources(type_url, snapshot):
            if state.names is None or name in state.names:
                packed = any_pb2.Any()
                packed.Pack(resource)  # type: ignore[arg-type]
                response.resources.append(packed)
        state.nonce = response.nonce = str(next(self._nonces))
        state.sent_version = snapshot.version
        state.sent_names = state.names
        needed = _needed(type_url, snapshot)
        state.sent_covers = needed is None or state.names is None or needed <= state.names
        state.waiting = False
        return [response]
