"""Envoy's bootstrap: what stays fixed for the life of one Envoy process. Pure.

The listener on `grpc_host:grpc_port` (with TLS and the auth filters when `[auth]` asks), the
admin interface, and two clusters on private Unix sockets (the reconciler's xDS server and the
Python router behind Envoy) depend only on settings, so they are static. Everything that
follows the routing table (clusters per instance and model, their endpoints, the routes)
arrives over ADS (`xds.py`). A settings change therefore means a new bootstrap, and the
supervisor replaces an Envoy whose bootstrap differs (`digest`).

`inline` turns a bootstrap plus one snapshot's resources into a fully static configuration:
what `envoy --mode validate` checks, and what a stock Envoy would run with.
"""

from __future__ import annotations

import hashlib

import msgspec
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    protocol_pb2,
)
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.metrics.v3 import stats_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.grpc_field_extraction.v3 import (
    config_pb2 as field_extraction_pb2,
)
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import descriptor_pb2, json_format, wrappers_pb2

from tei_reconciler.dataplane import lua_auth, lua_mux, lua_stream
from tei_reconciler.dataplane.clusters import (
    CONNECTION_WINDOW,
    HTTP_OPTIONS,
    STREAM_WINDOW,
    duration,
    http2_options,
    pack,
)
from tei_reconciler.dataplane.translate import LUA_FILTER, ROUTE_CONFIG, ROUTER_CLUSTER, Resources
from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2
from tei_reconciler.router.methods import MULTIPLEXER_SERVICE, TEI_METHODS, Kind, Method
from tei_reconciler.router.multiplexer import EMPTY_STREAM, malformed, missing
from tei_reconciler.router.routes import (
    INSTANCE_MAX_REQUEST_BYTES,
    RouteError,
    check_request,
    too_large,
)

NODE_ID = "tei-reconciler"
XDS_CLUSTER = "xds"
LISTENER = "grpc"
#: The router's latency buckets (metrics.ROUTER_LATENCY), in Envoy's milliseconds, so Envoy's
#: histograms merge into the same metric.
LATENCY_BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
#: The unary multiplexer methods Envoy unwraps itself when it can route the target.
MUX_METHODS = tuple(
    lua_mux.UnaryMethod(f"/{MULTIPLEXER_SERVICE}/{m.name}", m.path, m.inner is not None)
    for m in TEI_METHODS
    if m.kind is Kind.UNARY
)


def _undecodable(method: Method) -> str:
    """The router's refusal of an inner request that does not decode."""
    try:
        check_request(method, b"\xff")
    except RouteError as refused:
        return refused.message
    raise AssertionError(f"{method.path}: one byte decoded as a request")


#: The multiplexer streams Envoy unwraps itself when it can route the first message's target.
MUX_STREAMS = tuple(
    lua_stream.StreamMethod(
        path=f"/{MULTIPLEXER_SERVICE}/{m.name}",
        target=m.path,
        missing=missing(m, "%d"),
        malformed=_undecodable(m),
    )
    for m in TEI_METHODS
    if m.kind is not Kind.UNARY
)
STREAM_REFUSALS = lua_stream.Refusals(
    malformed=malformed("%s"),
    too_large=too_large("%d"),
    max_inner_bytes=INSTANCE_MAX_REQUEST_BYTES,
)


class Tls(msgspec.Struct, frozen=True, kw_only=True):
    """The listener's TLS: server certificate, and the CA client certificates must chain to."""

    ca_cert: str
    server_cert: str
    server_key: str


class Spec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a bootstrap depends on."""

    admin_socket: str
    xds_socket: str
    router_socket: str
    listen_host: str
    listen_port: int
    tls: Tls | None = None
    auth: bool = False  # the Lua auth filter (and, with `tls`, the SAN header mutation)


def digest(spec: Spec) -> str:
    """Identifies a bootstrap (its content, so a new release's bootstrap differs too): an
    adopted Envoy with another digest is replaced."""
    return hashlib.sha256(bootstrap(spec).SerializeToString(deterministic=True)).hexdigest()[:16]


def _pipe(path: str) -> address_pb2.Address:
    return address_pb2.Address(pipe=address_pb2.Pipe(path=path, mode=0o600))


def _static_cluster(name: str, socket: str) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.DiscoveryType.STATIC,
        connect_timeout=duration(1),
    )
    cluster.load_assignment.cluster_name = name
    locality = cluster.load_assignment.endpoints.add()
    locality.lb_endpoints.add().endpoint.address.CopyFrom(_pipe(socket))
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(http2_options())
    return cluster


def _grpc_stats() -> grpc_stats_pb2.FilterConfig:
    """Counts per tei.v1 method and status code, and latency, per upstream cluster (instance
    or model), and so per multiplexer method Envoy unwraps; the method list is fixed,
    so the series count is bounded."""
    services: dict[str, list[str]] = {}
    for method in TEI_METHODS:
        services.setdefault(f"tei.v1.{method.service}", []).append(method.name)
    paths = [m.path for m in MUX_METHODS] + [m.path for m in MUX_STREAMS]
    services[MULTIPLEXER_SERVICE] = [path.rsplit("/", 1)[1] for path in paths]
    config = grpc_stats_pb2.FilterConfig(enable_upstream_stats=True)
    for service, names in services.items():
        config.individual_method_stats_allowlist.services.add(name=service, method_names=names)
    return config


def _field_extraction() -> field_extraction_pb2.GrpcFieldExtractionConfig:
    """The first message's target, for each multiplexer stream (`lua_stream.py`)."""
    files = descriptor_pb2.FileDescriptorSet()
    for module in (tei_pb2, multiplexer_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    config = field_extraction_pb2.GrpcFieldExtractionConfig(
        descriptor_set=base_pb2.DataSource(inline_bytes=files.SerializeToString())
    )
    for method in MUX_STREAMS:
        extractions = config.extractions_by_method[method.path[1:].replace("/", ".")]
        for field in lua_stream.TARGET_FIELDS.values():
            extractions.request_field_extractions[field].SetInParent()
    return config


def _san_headers() -> header_mutation_pb2.HeaderMutation:
    """IP and email SANs of the client certificate as internal request headers, for the Lua
    auth script (Envoy's Lua API has no accessor for them); a client's own are removed."""
    mutations = header_mutation_pb2.HeaderMutation()
    request = mutations.mutations.request_mutations
    for header, operator in (
        (lua_auth.IP_SANS_HEADER, "%DOWNSTREAM_PEER_IP_SAN%"),
        (lua_auth.EMAIL_SANS_HEADER, "%DOWNSTREAM_PEER_EMAIL_SAN%"),
    ):
        request.add(remove=header)
        request.add(
            append=base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=header, value=operator),
                append_action=base_pb2.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    return mutations


def _http_filters(spec: Spec) -> list[hcm_pb2.HttpFilter]:
    filters = []
    if spec.auth and spec.tls is not None:
        filters.append(
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.header_mutation", typed_config=pack(_san_headers())
            )
        )
    if spec.auth:
        lua = lua_pb2.Lua(
            default_source_code=base_pb2.DataSource(inline_string=lua_auth.FAIL_CLOSED),
            # The script only removes its internal headers, which no route looks at.
            clear_route_cache=wrappers_pb2.BoolValue(value=False),
        )
        lua.source_codes["auth"].inline_string = lua_auth.AUTH_SCRIPT
        filters.append(hcm_pb2.HttpFilter(name=LUA_FILTER, typed_config=pack(lua)))
    # The multiplexer's filters are disabled by default: Envoy creates them only for a call
    # whose route names one of their scripts (or enables the field extraction filter), so a
    # plain tei.v1 call does not pay for them.
    align = lua_pb2.Lua()
    align.source_codes[lua_stream.ALIGN_SCRIPT].inline_string = lua_stream.align_script(
        EMPTY_STREAM
    )
    filters.append(
        hcm_pb2.HttpFilter(name=lua_stream.ALIGN_FILTER, typed_config=pack(align), disabled=True)
    )
    filters.append(
        hcm_pb2.HttpFilter(
            name=lua_stream.EXTRACTION_FILTER, typed_config=pack(_field_extraction()), disabled=True
        )
    )
    mux = lua_pb2.Lua()
    mux.source_codes[lua_mux.MUX_SCRIPT].inline_string = lua_mux.script(
        MUX_METHODS, INSTANCE_MAX_REQUEST_BYTES
    )
    mux.source_codes[lua_stream.STREAM_SCRIPT].inline_string = lua_stream.stream_script(
        MUX_STREAMS, STREAM_REFUSALS
    )
    mux.source_codes[lua_stream.UNWRAPPED_SCRIPT].inline_string = lua_stream.UNWRAPPED
    mux.source_codes[lua_mux.STRIP_SCRIPT].inline_string = lua_mux.STRIP
    filters.append(hcm_pb2.HttpFilter(name=lua_mux.FILTER, typed_config=pack(mux), disabled=True))
    filters.append(
        hcm_pb2.HttpFilter(name="envoy.filters.http.grpc_stats", typed_config=pack(_grpc_stats()))
    )
    filters.append(
        hcm_pb2.HttpFilter(
            name="envoy.filters.http.router",
            typed_config=pack(router_pb2.Router(suppress_envoy_headers=True)),
        )
    )
    return filters


def _connection_manager(spec: Spec) -> hcm_pb2.HttpConnectionManager:
    return hcm_pb2.HttpConnectionManager(
        stat_prefix="grpc",
        codec_type=hcm_pb2.HttpConnectionManager.CodecType.HTTP2,
        rds=hcm_pb2.Rds(
            route_config_name=ROUTE_CONFIG,
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.ApiVersion.V3,
            ),
        ),
        http_filters=_http_filters(spec),
        stream_idle_timeout=duration(0),  # a stream may idle as long as the client wants
        generate_request_id=wrappers_pb2.BoolValue(value=False),
        preserve_external_request_id=True,
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
            initial_stream_window_size=wrappers_pb2.UInt32Value(value=STREAM_WINDOW),
            initial_connection_window_size=wrappers_pb2.UInt32Value(value=CONNECTION_WINDOW),
        ),
    )


def _tls_socket(tls: Tls) -> base_pb2.TransportSocket:
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(filename=tls.server_cert),
                    private_key=base_pb2.DataSource(filename=tls.server_key),
                )
            ],
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(filename=tls.ca_cert)
            ),
            tls_params=common_pb2.TlsParameters(
                tls_minimum_protocol_version=common_pb2.TlsParameters.TlsProtocol.TLSv1_2
            ),
            alpn_protocols=["h2"],
        ),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
        # The auth script reads the certificate of every connection; a resumed session
        # would not carry a verified one.
        disable_stateless_session_resumption=True,
        disable_stateful_session_resumption=True,
    )
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def _listener(spec: Spec) -> listener_pb2.Listener:
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager",
                typed_config=pack(_connection_manager(spec)),
            )
        ]
    )
    if spec.tls is not None:
        chain.transport_socket.CopyFrom(_tls_socket(spec.tls))
    return listener_pb2.Listener(
        name=LISTENER,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=spec.listen_host.strip("[]"), port_value=spec.listen_port
            )
        ),
        # Never share the port with another process (SO_REUSEPORT would split its traffic).
        enable_reuse_port=wrappers_pb2.BoolValue(value=False),
        filter_chains=[chain],
    )


def _stats_config() -> stats_pb2.StatsConfig:
    """Tags that keep the cluster and the gRPC method apart (Envoy's defaults split
    "tei.v1.Embed" on its dots), and the router's latency buckets."""
    config = stats_pb2.StatsConfig(use_all_default_tags=wrappers_pb2.BoolValue(value=False))
    config.stats_tags.add(tag_name="cluster", regex=r"^cluster\.((.+?)\.)")
    config.stats_tags.add(tag_name="grpc_method", regex=r"^cluster\.[^.]+\.grpc\.((.+)\.)[^.]+$")
    buckets = config.histogram_bucket_settings.add(buckets=LATENCY_BUCKETS_MS)
    buckets.match.prefix = "cluster."
    return config


def bootstrap(spec: Spec) -> bootstrap_pb2.Bootstrap:
    config = bootstrap_pb2.Bootstrap(
        node=base_pb2.Node(id=NODE_ID, cluster=NODE_ID),
        stats_config=_stats_config(),
        stats_flush_interval=duration(1),
    )
    config.admin.address.CopyFrom(_pipe(spec.admin_socket))
    config.static_resources.listeners.append(_listener(spec))
    config.static_resources.clusters.append(_static_cluster(XDS_CLUSTER, spec.xds_socket))
    config.static_resources.clusters.append(_static_cluster(ROUTER_CLUSTER, spec.router_socket))
    ads = config.dynamic_resources.ads_config
    ads.api_type = config_source_pb2.ApiConfigSource.ApiType.GRPC
    ads.transport_api_version = config_source_pb2.ApiVersion.V3
    ads.set_node_on_first_message_only = True
    grpc = ads.grpc_services.add()
    grpc.envoy_grpc.cluster_name = XDS_CLUSTER
    # A new reconciler (after a restart, or adopting this Envoy) is found within a second.
    back_off = grpc.envoy_grpc.retry_policy.retry_back_off
    back_off.base_interval.CopyFrom(duration(0.1))
    back_off.max_interval.CopyFrom(duration(1))
    config.dynamic_resources.cds_config.ads.SetInParent()
    config.dynamic_resources.cds_config.resource_api_version = config_source_pb2.ApiVersion.V3
    return config


def inline(config: bootstrap_pb2.Bootstrap, resources: Resources) -> bootstrap_pb2.Bootstrap:
    """`config` with `resources` in place of ADS: every cluster static with its endpoints,
    the route table inside the listener."""
    static = bootstrap_pb2.Bootstrap()
    static.CopyFrom(config)
    static.ClearField("dynamic_resources")
    assignments = {a.cluster_name: a for a in resources.endpoints}
    for cluster in resources.clusters:
        copy = static.static_resources.clusters.add()
        copy.CopyFrom(cluster)
        copy.ClearField("eds_cluster_config")
        copy.type = cluster_pb2.Cluster.DiscoveryType.STATIC
        if cluster.name in assignments:
            copy.load_assignment.CopyFrom(assignments[cluster.name])
    routes = {r.name: r for r in resources.routes}
    for listener in static.static_resources.listeners:
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                manager = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                table = routes.get(manager.rds.route_config_name, route_pb2.RouteConfiguration())
                manager.ClearField("rds")
                manager.route_config.CopyFrom(table)
                network_filter.typed_config.Pack(manager)
    return static


def to_json(config: bootstrap_pb2.Bootstrap) -> str:
    return json_format.MessageToJson(config, indent=1)
