"""A routing-table snapshot as Envoy resources: clusters, their endpoints, one route table.

Pure: endpoints and a `Plan` in, protobuf messages out; nothing here reads a clock, a file or
a socket, so every rule is table-tested and the same input always gives the same resources.

- One cluster per instance and one per model, with every instance the table knows as an
  endpoint, HEALTHY when Ready and DRAINING otherwise (`clusters.py`).
- Routes (only for `/tei.v1.*`), in the order `router/routes.py` decides: `x-tei-instance`,
  then `x-tei-model`, then `default_instance`, then the only instance. A routing header that
  names a Ready target goes straight to the instance with the routing keys stripped; every
  other case (an unknown or not-Ready target, an ambiguous call) goes to the Python router,
  which answers it with the same code and message as when it serves the port alone. So do
  the services Envoy cannot route by header: the multiplexer, health, reflection.
- Unary multiplexer calls (`plan.multiplexer`) first pass a Lua filter that unwraps those
  whose target Envoy can route (`lua_mux.py`); they then reach the instance or model cluster
  like a `tei.v1` call, and every other multiplexer call goes to the Python router. The
  multiplexer streams (`plan.streams`) enter by a route per method that enables the gRPC
  field extraction filter and the stream scripts (`lua_stream.py`), which unwrap a stream by
  the target of its first message the same way; a compressed stream takes the catch-all
  route to the Python router.
- An instance with an API key gets it as `authorization` on every route to it (in place of
  the client's, which was for the reconciler): plain routes add it themselves, and for an
  unwrapped multiplexer call the Lua script sets it from its context, which holds the header
  per keyed cluster. A model whose Ready instances have different keys is routed by the
  Python router, which sends each instance its own (for multiplexer calls to it, too). The
  keys travel only to Envoy, over the private control socket, as they must to be sent.
- Deadlines: the client's `grpc-timeout` bounds the call and reaches the instance; without
  one the call gets `request_timeout_secs`, also sent to the instance as `grpc-timeout`.
- With auth, the virtual host carries the allowlists and token digests as the Lua filter's
  context (`lua_auth.py`); a tokens file change is a route update, never a listener drain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, struct_pb2

from tei_reconciler._types import Secret
from tei_reconciler.dataplane import lua_mux, lua_stream
from tei_reconciler.dataplane.clusters import (
    assignment,
    duration,
    eds_cluster,
    instance_cluster,
    model_cluster,
    model_label,
    pack,
)
from tei_reconciler.routing import Endpoint

INSTANCE_KEY = "x-tei-instance"
MODEL_KEY = "x-tei-model"
ROUTE_CONFIG = "tei"
ROUTER_CLUSTER = "router"
LUA_FILTER = "envoy.filters.http.lua"
LUA_AUTH_SCRIPT = "auth"  # the name of the auth script in the listener's Lua filter
TEI_PREFIX = "/tei.v1."
MESSAGE_SLACK = 64 << 10  # gRPC framing around a message of max_message_bytes, buffered


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
    multiplexer: tuple[lua_mux.UnaryMethod, ...] = ()  # the ones Envoy may unwrap itself
    streams: tuple[lua_stream.StreamMethod, ...] = ()  # the same, for streams
    max_message_bytes: int = 40 << 20  # the largest message the Python router takes


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """One snapshot's resources, plus what the control plane needs to know about them."""

    clusters: tuple[cluster_pb2.Cluster, ...]
    endpoints: tuple[endpoint_pb2.ClusterLoadAssignment, ...]
    routes: tuple[route_pb2.RouteConfiguration, ...]
    routed: dict[str, tuple[str, int]]  # Ready instance -> (address, generation) routes reach
    cluster_labels: dict[str, str]  # cluster -> the `instance` label of its metrics
    addresses: dict[str, str]  # instance -> "host:port" of its endpoint (drain accounting)
    secrets: frozenset[Secret] = frozenset()  # the API keys they carry, never to be shown


def grpc_timeout(secs: float) -> str:
    """A `grpc-timeout` header value (at most 8 digits and a unit)."""
    millis = max(1, round(secs * 1000))
    if millis < 10**8:
        return f"{millis}m"
    return f"{min(round(secs), 10**8 - 1)}S"


def _bearer(api_key: Secret) -> str:
    """The `authorization` value that carries an instance's API key."""
    return f"Bearer {api_key.reveal()}"


def _model_keys(ready: dict[str, Endpoint]) -> dict[str, set[Secret | None]]:
    """Each model's distinct API keys over its Ready instances (None: an instance without
    one); Envoy routes a model itself only when there is exactly one."""
    keys: dict[str, set[Secret | None]] = {}
    for e in ready.values():
        keys.setdefault(e.model_id, set()).add(e.api_key)
    return keys


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
                header=base_pb2.HeaderValue(key="authorization", value=_bearer(api_key)),
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


def mux_context(ready: dict[str, Endpoint]) -> struct_pb2.Struct:
    """The multiplexer script's per-route context: the cluster of each target Envoy routes a
    multiplexer call to by itself, by instance name, by model and by `instance_index` (the
    Ready instances sorted by name, as the Python router counts), and for each of those
    clusters whose instances need an API key the `authorization` the call gets. A model whose
    Ready instances have different keys is left to the Python router."""
    ordered = [ready[name] for name in sorted(ready)]
    models = {m: next(iter(k)) for m, k in sorted(_model_keys(ready).items()) if len(k) == 1}
    authorization = {
        instance_cluster(e.name): _bearer(e.api_key) for e in ordered if e.api_key is not None
    }
    authorization.update(
        {model_cluster(m): _bearer(key) for m, key in models.items() if key is not None}
    )
    context = struct_pb2.Struct()
    context.update(
        {
            "instances": {e.name: instance_cluster(e.name) for e in ordered},
            "models": {m: model_cluster(m) for m in models},
            "indexes": {str(i): instance_cluster(e.name) for i, e in enumerate(ordered)},
            "authorization": authorization,
        }
    )
    return context


def _mux_routes(ready: dict[str, Endpoint], plan: Plan) -> list[route_components_pb2.Route]:
    """Per method, the route of an unwrapped call (to the cluster its internal header names,
    the path rewritten to the tei.v1 method); then the route every unary multiplexer call
    enters by, which runs the unary script and, for a call it left as it was, goes to the
    Python router with the whole message buffered; then, per stream method, the one its
    uncompressed streams enter by (`lua_stream.py`), which goes to the Python router too."""
    internal = route_components_pb2.HeaderMatcher(
        name=lua_mux.CLUSTER_HEADER,
        string_match=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex="(instance|model)_[a-z0-9-]+")
        ),
    )
    strip = pack(lua_pb2.LuaPerRoute(name=lua_mux.STRIP_SCRIPT))
    leave = pack(lua_pb2.LuaPerRoute(name=lua_stream.UNWRAPPED_SCRIPT))
    routes = []
    unwrapped = [(m.path, m.target, strip) for m in plan.multiplexer]
    unwrapped += [(m.path, m.target, leave) for m in plan.streams]
    for path, target, script in unwrapped:
        route = _to_instance(f"mux:{path}", "", [internal], plan)
        route.match.path = path
        route.route.cluster_header = lua_mux.CLUSTER_HEADER
        route.route.prefix_rewrite = target
        route.request_headers_to_remove.append(lua_mux.CLUSTER_HEADER)
        route.typed_per_filter_config[lua_mux.FILTER].CopyFrom(script)
        routes.append(route)
    buffer_limit = plan.max_message_bytes + MESSAGE_SLACK
    context = mux_context(ready)
    if plan.multiplexer:
        alternatives = "|".join(re.escape(m.path) for m in plan.multiplexer)
        entry = _to_router("mux", "")
        entry.match.safe_regex.regex = f"({alternatives})"
        entry.request_body_buffer_limit.value = buffer_limit
        entry.typed_per_filter_config[lua_mux.FILTER].CopyFrom(
            pack(lua_pb2.LuaPerRoute(name=lua_mux.MUX_SCRIPT, filter_context=context))
        )
        routes.append(entry)
    uncompressed = route_components_pb2.HeaderMatcher(
        name="grpc-encoding",
        string_match=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex="(identity)?")
        ),
        treat_missing_header_as_empty=True,
    )
    # The largest frame a stream may send: the router's limit on a message, plus its prefix
    # (the extraction filter refuses a larger first message, the scripts a later one).
    frame_limit = plan.max_message_bytes + lua_stream.FRAME_PREFIX
    align = struct_pb2.Struct()
    align.update({"limit": frame_limit})
    stream_context = struct_pb2.Struct()
    stream_context.CopyFrom(context)
    stream_context.update({"limit": frame_limit})
    for method in plan.streams:
        entry = _to_router(f"mux-stream:{method.path}", "", [uncompressed])
        entry.match.path = method.path
        entry.request_body_buffer_limit.value = frame_limit
        config = entry.typed_per_filter_config
        config[lua_stream.ALIGN_FILTER].CopyFrom(
            pack(lua_pb2.LuaPerRoute(name=lua_stream.ALIGN_SCRIPT, filter_context=align))
        )
        # enabled (it is disabled on every other route), with the listener's configuration
        enable = route_components_pb2.FilterConfig(config=any_pb2.Any())
        config[lua_stream.EXTRACTION_FILTER].CopyFrom(pack(enable))
        config[lua_mux.FILTER].CopyFrom(
            pack(lua_pb2.LuaPerRoute(name=lua_stream.STREAM_SCRIPT, filter_context=stream_context))
        )
        routes.append(entry)
    return routes


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
    keys = _model_keys(ready)
    for m in sorted(keys):
        by_model = [_header(MODEL_KEY, exact=m)]
        if len(keys[m]) == 1:
            (key,) = keys[m]
            routes.append(_to_instance(f"model:{m}", model_cluster(m), by_model, plan, key))
        else:  # one header cannot carry several keys: the Python router picks and sends one
            routes.append(_to_router(f"model:{m}", TEI_PREFIX, by_model))
    routes.append(_to_router("model:other", TEI_PREFIX, [_header(MODEL_KEY)]))
    routes.append(_default_route(known, ready, plan))
    if plan.multiplexer or plan.streams:
        routes += _mux_routes(ready, plan)
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
        clusters.append(eds_cluster(name))
        assignments.append(assignment(name, [e]))
        labels[name] = e.name
    for model_id in sorted(by_model):
        name = model_cluster(model_id)
        clusters.append(eds_cluster(name))
        assignments.append(assignment(name, by_model[model_id]))
        labels[name] = model_label(model_id)
    return Resources(
        clusters=tuple(clusters),
        endpoints=tuple(assignments),
        routes=(_route_config(known, ready, plan),),
        routed={name: (e.address, e.generation) for name, e in ready.items()},
        cluster_labels=labels,
        addresses={e.name: e.address for e in known},
        secrets=frozenset(e.api_key for e in known if e.api_key is not None),
    )
