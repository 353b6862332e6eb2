"""Clusters and their endpoints: one per instance and one per model, fed by EDS. Pure.

- One cluster per instance (`instance_<name>`) and one per model (`model_<digest>`, least
  request balancing across the model's instances). Every instance the table knows is an
  endpoint of both, HEALTHY when it is Ready and DRAINING otherwise: a DRAINING endpoint
  takes no new call, while calls already on it finish (the drain) and stay visible in
  Envoy's per-host counters. The panic threshold is 0, so Envoy never sends a call to a
  DRAINING endpoint because too few are HEALTHY.
- HTTP/2 to every upstream, with the windows and keepalive the Python router uses too, and
  circuit breakers wide enough never to refuse what an instance would queue.

Also the small protobuf helpers every resource module shares (`duration`, `pack`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from tei_reconciler.routing import Endpoint

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
STREAM_WINDOW = 1 << 20  # bytes a stream may have in flight: flow control, not a size limit
CONNECTION_WINDOW = 8 << 20
CIRCUIT_LIMIT = 1 << 20  # Envoy's defaults (1024) would refuse calls a TEI instance queues

_HEALTHY = health_check_pb2.HealthStatus.HEALTHY
_DRAINING = health_check_pb2.HealthStatus.DRAINING


def instance_cluster(name: str) -> str:
    return f"instance_{name}"  # instance names never contain "_" (DNS-1123 labels)


def model_cluster(model_id: str) -> str:
    """A stat-safe name: model ids may contain "." and "/", which Envoy's stat names split on."""
    return "model_" + hashlib.sha256(model_id.encode()).hexdigest()[:16]


def model_label(model_id: str) -> str:
    """The `instance` label of calls Envoy balanced across a model's instances."""
    return f"model:{model_id}"


def duration(secs: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(secs * 1e9))
    return d


def pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def http2_options() -> any_pb2.Any:
    """HTTP/2 to the upstream, with the windows and keepalive the Python router uses too."""
    return pack(
        http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                    initial_stream_window_size=wrappers_pb2.UInt32Value(value=STREAM_WINDOW),
                    initial_connection_window_size=wrappers_pb2.UInt32Value(
                        value=CONNECTION_WINDOW
                    ),
                    connection_keepalive=protocol_pb2.KeepaliveSettings(
                        interval=duration(30), timeout=duration(10)
                    ),
                )
            )
        )
    )


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    """An instance's or a model's cluster; its endpoints arrive over ADS (`assignment`)."""
    limit = wrappers_pb2.UInt32Value(value=CIRCUIT_LIMIT)
    config = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.DiscoveryType.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
        connect_timeout=duration(2),
        lb_policy=cluster_pb2.Cluster.LbPolicy.LEAST_REQUEST,
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            healthy_panic_threshold=percent_pb2.Percent(value=0.0)
        ),
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    max_connections=limit, max_pending_requests=limit, max_requests=limit
                )
            ]
        ),
    )
    config.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(http2_options())
    return config


def _lb_endpoint(host: str, port: int, *, healthy: bool) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=host.strip("[]"), port_value=port)
            )
        ),
        health_status=_HEALTHY if healthy else _DRAINING,
    )


def assignment(name: str, members: Iterable[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    """Each member's current process (HEALTHY when Ready), and its processes that left
    routing and finish their calls (DRAINING: a rollout's old process)."""
    lb_endpoints = []
    for e in members:
        lb_endpoints.append(_lb_endpoint(e.host, e.port, healthy=e.ready))
        lb_endpoints += [
            _lb_endpoint(b.host, b.port, healthy=False)
            for b in e.draining
            if (b.host, b.port) != (e.host, e.port)
        ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)],
    )
