"""A routing-table snapshot as Envoy resources: clusters, their endpoints, one route table.

Pure: endpoints and a `Plan` in, protobuf messages out; nothing here reads a clock, a file or
a socket, so every rule is table-tested and the same input always gives the same resources.

- One cluster per instance (`instance_<name>`) and one per model (`model_<digest>`, least
  request balancing across the model's instances), each fed by EDS. Every instance the table
  knows is an endpoint of both, HEALTHY when it is Ready and DRAINING otherwise: a DRAINING
  endpoint takes no new call, while calls already on it finish (the drain) and stay visible
  in Envoy's per-host counters. The panic threshold is 0, so Envoy never sends a call to a
  DRAINING endpoint because too few are HEALTHY.
- Routes (only for `/tei.v1.*`), in the order `router/routes.py` decides: `x-tei-instance`,
  then `x-tei-model`, then `default_instance`, then the only instance. A routing header that
  names a Ready target goes straight to the instance with the routing keys stripped; every
  other case (an unknown or not-Ready target, an ambiguous call) goes to the Python router,
  which answers it with the same code and message as when it serves the port alone. So do
  the services Envoy cannot route by header: the multiplexer, health, reflection.
- An instance with an API key gets it as `authorization` on every route to it (in place of
  the client's, which was for the reconciler); a model whose Ready instances have different
  keys is routed by the Python router, which sends each instance its own.
- Deadlines: the client's `grpc-timeout` bounds the call and reaches the instance; without
  one the call gets `request_timeout_secs`, also sent to the instance as `grpc-timeout`.
- With auth, the virtual host carries the allowlists and token digests as the Lua filter's
  context (`lua_auth.py`); a tokens file change is a route update, never a listener drain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import msgspec
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2

from tei_reconciler._types import Secret
from tei_reconciler.routing import Endpoint

INSTANCE_KEY = "x-tei-instance"
MODEL_KEY = "x-tei-model"
ROUTE_CONFIG = "tei"
ROUTER_CLUSTER = "router"
LUA_FILTER = "envoy.filters.http.lua"
LUA_AUTH_SCRIPT = "auth"  # the name of the auth script in the listener's Lua filter
TEI_PREFIX = "/tei.v1."
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
STREAM_WINDOW = 1 << 20  # bytes a stream may have in flight: flow control, not a size limit
CONNECTION_WINDOW = 8 << 20
CIRCUIT_LIMIT = 1 << 20  # Envoy's defaults (1024) would refuse calls a TEI instance queues

_HEALTHY = health_check_pb2.HealthStatus.HEALTHY
_DRAINING = health_check_pb2.HealthStatus.DRAINING


class AuthContext(msgspec.Struct, frozen=True, kw_only=True):
    """What the Lua auth script enforces, as data (see `lua_auth.py` for the rules)."""

    mtls: bool
    token: bool
    allowed_subjects: tuple[str, ...] = ()
    allowed_sans: tuple[str, ...] = ()  # already normalized (certs.normalize_san)
    token_digests: tuple[str, ...] = ()  # hex SHA-256 of each accepted token
    exempt_services: tuple[str, ...] = ()


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The settings a translation needs."""

    request_timeout_secs: float
    default_instance: str | None = None
    auth: AuthContext | None = None


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """One snapshot's resources, plus what the control plane needs to know about them."""

    clusters: tuple[cluster_pb2.Cluster, ...]
    endpoints: tuple[endpoint_pb2.ClusterLoadAssignment, ...]
    routes: tuple[route_pb2.RouteConfiguration, ...]
    routed: dict[str, tuple[str, int]]  # Ready instance -> (address, generation) routes reach
    cluster_labels: dict[str, str]  # cluster -> the `instance` label of its metrics
    addresses: dict[str, str]  # instance -> "host:port" of its endpoint (drain accounting)


def instance_cluster(name: str) -> str:
    return f"instance_{name}"  # instance names never contain "_" (DNS-1123 labels)


def model_cluster(model_id: str) -> str:
    """A stat-safe name: model ids may contain "." and "/", which Envoy's stat names split on."""
    return "model_" + hashlib.sha256(model_id.encode()).hexdigest()[:16]


def model_label(model_id: str) -> str:
    """The `instance` label of calls Envoy balanced across a model's instances."""
    return f"model:{model_id}"


def grpc_timeout(secs: float) -> str:
    """A `grpc-timeout` header value (at most 8 digits and a unit)."""
    millis = max(1, round(secs * 1000))
    if millis < 10**8:
        return f"{millis}m"
    return f"{min(round(secs), 10**8 - 1)}S"


def duration(secs: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(secs * 1e9))
    return d


def pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _ads() -> config_source_pb2.ConfigSource:
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


def _cluster(name: str) -> cluster_pb2.Cluster:
    limit = wrappers_pb2.UInt32Value(value=CIRCUIT_LIMIT)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.DiscoveryType.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
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
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(http2_options())
    return cluster


def _lb_endpoint(host: str, port: int, *, healthy: bool) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=host.strip("[]"), port_value=port)
            )
        ),
        health_status=_HEALTHY if healthy else _DRAINING,
    )


def _assignment(name: str, members: Iterable[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
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


def _header(name: str, *, exact: str | None = None) -> route_components_pb2.HeaderMatcher:
    """`exact`: the header equals it; None: the header is present and not empty (the Python
    router treats an empty routing key as absent)."""
    if exact is not None:
        matcher = string_pb2.StringMatcher(exact=exact)
    else:
        matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    return route_components_pb2.HeaderMatcher(name=name, string_match=matcher)


def _to_instance(
    name: str,
    cluster: str,
    headers: Sequence[route_components_pb2.HeaderMatcher],
    plan: Plan,
    api_key: Secret | None = None,
) -> route_components_pb2.Route:
    route = route_components_pb2.Route(
        name=name,
        match=route_components_pb2.RouteMatch(prefix=TEI_PREFIX, headers=headers),
        route=route_components_pb2.RouteAction(
            cluster=cluster,
            timeout=duration(0),  # the per-call bound is max_stream_duration, for streams too
            max_stream_duration=route_components_pb2.RouteAction.MaxStreamDuration(
                max_stream_duration=duration(plan.request_timeout_secs),
                grpc_timeout_header_max=duration(0),
            ),
        ),
        request_headers_to_remove=[INSTANCE_KEY, MODEL_KEY],
    )
    route.request_headers_to_add.append(
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(
                key="grpc-timeout", value=grpc_timeout(plan.request_timeout_secs)
            ),
            append_action=base_pb2.HeaderValueOption.HeaderAppendAction.ADD_IF_ABSENT,
        )
    )
    if api_key is not None:  # the instance's own key, in place of the client's (the router's)
        route.request_headers_to_add.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(
                    key="authorization", value=f"Bearer {api_key.reveal()}"
                ),
                append_action=base_pb2.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    return route


def _to_router(
    name: str, prefix: str, headers: Sequence[route_components_pb2.HeaderMatcher] = ()
) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        name=name,
        match=route_components_pb2.RouteMatch(prefix=prefix, headers=headers),
        route=route_components_pb2.RouteAction(
            cluster=ROUTER_CLUSTER,
            timeout=duration(0),
            max_stream_duration=route_components_pb2.RouteAction.MaxStreamDuration(
                grpc_timeout_header_max=duration(0)
            ),
        ),
    )


def _default_route(
    known: Sequence[Endpoint], ready: dict[str, Endpoint], plan: Plan
) -> route_components_pb2.Route:
    """A plain tei.v1 call without routing keys: the default instance, else the only one."""
    target: str | None = plan.default_instance
    if target is None and len(known) == 1:
        target = known[0].name
    if target is not None and target in ready:
        return _to_instance("default", instance_cluster(target), (), plan, ready[target].api_key)
    return _to_router("default", TEI_PREFIX)


def auth_context(auth: AuthContext) -> struct_pb2.Struct:
    """The Lua filter's per-route context: sets as tables of `true`."""
    context = struct_pb2.Struct()
    context.update(
        {
            "mtls": auth.mtls,
            "token": auth.token,
            "subjects": dict.fromkeys(auth.allowed_subjects, True),
            "sans": dict.fromkeys(auth.allowed_sans, True),
            "digests": dict.fromkeys(auth.token_digests, True),
            "exempt": dict.fromkeys(auth.exempt_services, True),
        }
    )
    return context


def _route_config(
    known: Sequence[Endpoint], ready: dict[str, Endpoint], plan: Plan
) -> route_pb2.RouteConfiguration:
    routes = [
        _to_instance(
            f"instance:{name}",
            instance_cluster(name),
            [_header(INSTANCE_KEY, exact=name)],
            plan,
            ready[name].api_key,
        )
        for name in sorted(ready)
    ]
    routes.append(_to_router("instance:other", TEI_PREFIX, [_header(INSTANCE_KEY)]))
    keys: dict[str, set[Secret | None]] = {}
    for e in ready.values():
        keys.setdefault(e.model_id, set()).add(e.api_key)
    for m in sorted(keys):
        by_model = [_header(MODEL_KEY, exact=m)]
        if len(keys[m]) == 1:
            (key,) = keys[m]
            routes.append(_to_instance(f"model:{m}", model_cluster(m), by_model, plan, key))
        else:  # one header cannot carry several keys: the Python router picks and sends one
            routes.append(_to_router(f"model:{m}", TEI_PREFIX, by_model))
    routes.append(_to_router("model:other", TEI_PREFIX, [_header(MODEL_KEY)]))
    routes.append(_default_route(known, ready, plan))
    routes.append(_to_router("router", "/"))
    host = route_components_pb2.VirtualHost(name="tei", domains=["*"], routes=routes)
    if plan.auth is not None:
        host.typed_per_filter_config[LUA_FILTER].CopyFrom(
            pack(lua_pb2.LuaPerRoute(name=LUA_AUTH_SCRIPT, filter_context=auth_context(plan.auth)))
        )
    return route_pb2.RouteConfiguration(name=ROUTE_CONFIG, virtual_hosts=[host])


def translate(endpoints: Sequence[Endpoint], plan: Plan) -> Resources:
    """The resources that route exactly as `router/routes.py` would over `endpoints`."""
    known = sorted(endpoints, key=lambda e: e.name)
    ready = {e.name: e for e in known if e.ready}
    by_model: dict[str, list[Endpoint]] = {}
    for e in known:
        by_model.setdefault(e.model_id, []).append(e)
    clusters: list[cluster_pb2.Cluster] = []
    assignments: list[endpoint_pb2.ClusterLoadAssignment] = []
    labels: dict[str, str] = {}
    for e in known:
        name = instance_cluster(e.name)
        clusters.append(_cluster(name))
        assignments.append(_assignment(name, [e]))
        labels[name] = e.name
    for model_id in sorted(by_model):
        name = model_cluster(model_id)
        clusters.append(_cluster(name))
        assignments.append(_assignment(name, by_model[model_id]))
        labels[name] = model_label(model_id)
    return Resources(
        clusters=tuple(clusters),
        endpoints=tuple(assignments),
        routes=(_route_config(known, ready, plan),),
        routed={name: (e.address, e.generation) for name, e in ready.items()},
        cluster_labels=labels,
        addresses={e.name: e.address for e in known},
    )
