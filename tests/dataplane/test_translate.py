"""Translation is pure: a routing-table snapshot in, Envoy resources out. The tables below
read the routes back in the order Envoy matches them, as (routing key, target cluster)."""

from __future__ import annotations

import re

import msgspec
import pytest
from envoy.config.core.v3 import health_check_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from google.protobuf import json_format

from tei_reconciler._types import Secret
from tei_reconciler.dataplane import lua_mux, lua_stream
from tei_reconciler.dataplane.bootstrap import MUX_METHODS, MUX_STREAMS
from tei_reconciler.dataplane.clusters import instance_cluster, model_cluster
from tei_reconciler.dataplane.translate import AuthContext, Plan, grpc_timeout, translate
from tei_reconciler.planner.phase import Phase
from tei_reconciler.routing import Backend, Endpoint

PLAN = Plan(request_timeout_secs=30)


def ep(name: str, model: str = "org/m", *, ready: bool = True, port: int = 8080) -> Endpoint:
    return Endpoint(
        name=name,
        model_id=model,
        host="127.0.0.1",
        port=port,
        ready=ready,
        phase=Phase.RUNNING if ready else Phase.STARTING,
    )


def routes(config: route_pb2.RouteConfiguration) -> list[tuple[str, str]]:
    """Each route as (what it matches, where it goes)."""
    out = []
    for route in config.virtual_hosts[0].routes:
        keys = [
            f"{h.name.removeprefix('x-tei-')}="
            + (h.string_match.exact if h.string_match.HasField("exact") else "*")
            for h in route.match.headers
        ]
        out.append(
            (route.match.prefix + (" " + ",".join(keys) if keys else ""), route.route.cluster)
        )
    return out


def health(resources: object, cluster: str) -> list[tuple[int, str]]:
    for assignment in resources.endpoints:  # type: ignore[attr-defined]
        if assignment.cluster_name == cluster:
            return [
                (
                    e.endpoint.address.socket_address.port_value,
                    health_check_pb2.HealthStatus.Name(e.health_status),
                )
                for locality in assignment.endpoints
                for e in locality.lb_endpoints
            ]
    raise AssertionError(f"no endpoints for {cluster}")


M = model_cluster("org/m")


@pytest.mark.parametrize(
    ("endpoints", "default", "expected"),
    [
        pytest.param(
            [],
            None,
            [
                ("/tei.v1. instance=*", "router"),
                ("/tei.v1. model=*", "router"),
                ("/tei.v1.", "router"),
                ("/", "router"),
            ],
            id="no instances: everything to the Python router (it says why)",
        ),
        pytest.param(
            [ep("a")],
            None,
            [
                ("/tei.v1. instance=a", "instance_a"),
                ("/tei.v1. instance=*", "router"),
                ("/tei.v1. model=org/m", M),
                ("/tei.v1. model=*", "router"),
                ("/tei.v1.", "instance_a"),
                ("/", "router"),
            ],
            id="the only instance takes calls without routing keys",
        ),
        pytest.param(
            [ep("a", ready=False)],
            None,
            [
                ("/tei.v1. instance=*", "router"),
                ("/tei.v1. model=*", "router"),
                ("/tei.v1.", "router"),
                ("/", "router"),
            ],
            id="a not-Ready instance gets no route: the router answers UNAVAILABLE",
        ),
        pytest.param(
            [ep("a"), ep("b", "org/n")],
            None,
            [
                ("/tei.v1. instance=a", "instance_a"),
                ("/tei.v1. instance=b", "instance_b"),
                ("/tei.v1. instance=*", "router"),
                ("/tei.v1. model=org/m", M),
                ("/tei.v1. model=org/n", model_cluster("org/n")),
                ("/tei.v1. model=*", "router"),
                ("/tei.v1.", "router"),
                ("/", "router"),
            ],
            id="two instances and no default: an ambiguous call goes to the router",
        ),
        pytest.param(
            [ep("a"), ep("b")],
            "b",
            [
                ("/tei.v1. instance=a", "instance_a"),
                ("/tei.v1. instance=b", "instance_b"),
                ("/tei.v1. instance=*", "router"),
                ("/tei.v1. model=org/m", M),
                ("/tei.v1. model=*", "router"),
                ("/tei.v1.", "instance_b"),
                ("/", "router"),
            ],
            id="the default instance takes calls without routing keys",
        ),
        pytest.param(
            [ep("a"), ep("b", ready=False)],
            "b",
            [
                ("/tei.v1. instance=a", "instance_a"),
                ("/tei.v1. instance=*", "router"),
                ("/tei.v1. model=org/m", M),
                ("/tei.v1. model=*", "router"),
                ("/tei.v1.", "router"),
                ("/", "router"),
            ],
            id="a default that is not Ready: the router answers, never another instance",
        ),
    ],
)
def test_routes_follow_the_python_routers_order(
    endpoints: list[Endpoint], default: str | None, expected: list[tuple[str, str]]
) -> None:
    resources = translate(endpoints, Plan(request_timeout_secs=30, default_instance=default))
    assert routes(resources.routes[0]) == expected


def test_every_known_instance_is_an_endpoint_healthy_when_ready_and_draining_otherwise() -> None:
    resources = translate(
        [ep("a", port=1), ep("b", port=2, ready=False), ep("c", "x/y", port=3)], PLAN
    )
    assert [c.name for c in resources.clusters] == [
        "instance_a",
        "instance_b",
        "instance_c",
        M,
        model_cluster("x/y"),
    ]
    assert health(resources, "instance_b") == [(2, "DRAINING")]
    assert health(resources, M) == [(1, "HEALTHY"), (2, "DRAINING")]
    assert resources.routed == {"a": ("127.0.0.1:1", 0), "c": ("127.0.0.1:3", 0)}
    assert resources.cluster_labels[M] == "model:org/m"
    assert resources.cluster_labels["instance_b"] == "b"


def test_the_old_process_of_a_rollout_stays_draining_beside_the_new_one_until_stopped() -> None:
    switched = msgspec.structs.replace(
        ep("a", port=9002), generation=2, draining=(Backend(host="127.0.0.1", port=9001),)
    )
    resources = translate([switched], PLAN)
    assert health(resources, "instance_a") == [(9002, "HEALTHY"), (9001, "DRAINING")]
    assert health(resources, M) == [(9002, "HEALTHY"), (9001, "DRAINING")]
    assert resources.routed == {"a": ("127.0.0.1:9002", 2)}


def test_clusters_balance_by_least_request_and_never_fall_back_to_draining_endpoints() -> None:
    (cluster, *_) = translate([ep("a")], PLAN).clusters
    assert cluster.lb_policy == cluster.LbPolicy.LEAST_REQUEST
    assert cluster.common_lb_config.healthy_panic_threshold.value == 0
    assert cluster.eds_cluster_config.eds_config.HasField("ads")


def test_routes_to_instances_strip_the_routing_keys_and_carry_the_deadline() -> None:
    config = translate([ep("a")], Plan(request_timeout_secs=12.5)).routes[0]
    route = config.virtual_hosts[0].routes[0]
    assert list(route.request_headers_to_remove) == ["x-tei-instance", "x-tei-model"]
    (added,) = route.request_headers_to_add
    assert (added.header.key, added.header.value) == ("grpc-timeout", "12500m")
    assert added.append_action == added.ADD_IF_ABSENT  # the client's own deadline wins
    assert route.route.timeout.ToSeconds() == 0  # no cut-off of long streams
    assert route.route.max_stream_duration.max_stream_duration.ToMilliseconds() == 12500
    assert route.route.max_stream_duration.grpc_timeout_header_max.ToSeconds() == 0


def keyed(name: str, key: str | None, model: str = "org/m") -> Endpoint:
    return msgspec.structs.replace(ep(name, model), api_key=Secret(key) if key else None)


def authorization(route: route_pb2.Route) -> str | None:
    for added in route.request_headers_to_add:
        if added.header.key == "authorization":
            assert added.append_action == added.OVERWRITE_IF_EXISTS_OR_ADD  # never the client's
            return str(added.header.value)
    return None


def test_an_instance_with_an_api_key_gets_it_on_every_route_that_reaches_it() -> None:
    config = translate([keyed("a", "k-a"), keyed("b", None)], PLAN).routes[0]
    by_name = {r.name: r for r in config.virtual_hosts[0].routes}
    assert authorization(by_name["instance:a"]) == "Bearer k-a"
    assert authorization(by_name["instance:b"]) is None
    alone = translate([keyed("a", "k-a")], PLAN).routes[0]
    default = {r.name: r for r in alone.virtual_hosts[0].routes}["default"]
    assert default.route.cluster == instance_cluster("a")
    assert authorization(default) == "Bearer k-a"


def test_a_model_whose_instances_hold_different_keys_is_left_to_the_python_router() -> None:
    same = translate([keyed("a", "k"), keyed("b", "k")], PLAN).routes[0]
    model = {r.name: r for r in same.virtual_hosts[0].routes}["model:org/m"]
    assert (model.route.cluster, authorization(model)) == (M, "Bearer k")
    mixed = translate([keyed("a", "k-a"), keyed("b", None)], PLAN).routes[0]
    model = {r.name: r for r in mixed.virtual_hosts[0].routes}["model:org/m"]
    assert model.route.cluster == "router"
    assert authorization(model) is None


def test_an_endpoint_never_shows_its_key() -> None:
    endpoint = keyed("a", "s3cret-key")
    assert "s3cret-key" not in repr(endpoint)
    assert "s3cret-key" not in str(endpoint)
    with pytest.raises(TypeError):
        msgspec.json.encode(endpoint)


def test_model_cluster_names_are_safe_for_envoy_stat_names_and_stable() -> None:
    name = model_cluster("BAAI/bge-large-en-v1.5")
    assert name == model_cluster("BAAI/bge-large-en-v1.5")
    assert name != model_cluster("BAAI/bge-large-en-v1.6")
    assert "." not in name
    assert "/" not in name
    assert instance_cluster("bge-1") == "instance_bge-1"


def test_an_ipv6_instance_is_addressed_without_brackets() -> None:
    v6 = msgspec.structs.replace(ep("a"), host="::1")
    resources = translate([v6], PLAN)
    address = resources.endpoints[0].endpoints[0].lb_endpoints[0].endpoint.address
    assert address.socket_address.address == "::1"
    assert resources.routed["a"] == ("[::1]:8080", 0)


def test_auth_rules_travel_with_the_routes_and_only_when_auth_is_on() -> None:
    auth = AuthContext(
        mtls=True,
        token=True,
        allowed_subjects=("client1",),
        token_digests=("ab" * 32,),
        exempt_services=("grpc.health.v1.Health",),
    )
    with_auth = translate([ep("a")], Plan(request_timeout_secs=30, auth=auth)).routes[0]
    without = translate([ep("a")], PLAN).routes[0]
    per_filter = with_auth.virtual_hosts[0].typed_per_filter_config
    assert "envoy.filters.http.lua" in per_filter
    assert "envoy.filters.http.lua" not in without.virtual_hosts[0].typed_per_filter_config
    assert b"ab" * 32 in per_filter["envoy.filters.http.lua"].value  # a digest, never a token


def test_the_same_snapshot_translates_to_equal_resources() -> None:
    table = [ep("b", port=2), ep("a", port=1)]
    assert translate(table, PLAN) == translate(list(reversed(table)), PLAN)


@pytest.mark.parametrize(
    ("secs", "header"),
    [(30, "30000m"), (0.0001, "1m"), (12.5, "12500m"), (10**6, "1000000S"), (10**9, "99999999S")],
)
def test_grpc_timeout_headers_fit_grpcs_eight_digits(secs: float, header: str) -> None:
    assert grpc_timeout(secs) == header


MUX = Plan(
    request_timeout_secs=12.5,
    multiplexer=MUX_METHODS,
    streams=MUX_STREAMS,
    max_message_bytes=40 << 20,
)


def per_route_lua(route: route_pb2.Route, name: str = lua_mux.FILTER) -> lua_pb2.LuaPerRoute:
    config = lua_pb2.LuaPerRoute()
    route.typed_per_filter_config[name].Unpack(config)
    return config


def test_a_unary_multiplexer_call_enters_by_one_route_and_leaves_by_its_methods_route() -> None:
    config = translate([ep("a")], MUX).routes[0]
    names = [r.name for r in config.virtual_hosts[0].routes]
    by_name = {r.name: r for r in config.virtual_hosts[0].routes}
    unwrapped = [by_name[f"mux:{m.path}"] for m in MUX_METHODS]
    entry = by_name["mux"]
    assert names.index("default") < names.index(f"mux:{MUX_METHODS[0].path}")
    assert names.index("mux") > names.index(f"mux:{MUX_STREAMS[-1].path}")  # after every
    # route that reads the header
    assert names[-1] == "router"
    embed = by_name["mux:/tei_multiplexer.v1.TeiMultiplexer/Embed"]
    assert embed.match.path == "/tei_multiplexer.v1.TeiMultiplexer/Embed"
    assert embed.route.prefix_rewrite == "/tei.v1.Embed/Embed"
    assert by_name["mux:/tei_multiplexer.v1.TeiMultiplexer/Decode"].route.prefix_rewrite == (
        "/tei.v1.Tokenize/Decode"
    )
    for route in unwrapped:
        (header,) = route.match.headers
        assert header.name == lua_mux.CLUSTER_HEADER
        assert header.string_match.safe_regex.regex == "(instance|model)_[a-z0-9-]+"
        assert route.route.cluster_header == lua_mux.CLUSTER_HEADER
        assert lua_mux.CLUSTER_HEADER in route.request_headers_to_remove
        assert "x-tei-instance" in route.request_headers_to_remove
        assert route.route.max_stream_duration.max_stream_duration.ToMilliseconds() == 12500
        assert per_route_lua(route).name == lua_mux.STRIP_SCRIPT
    assert entry.route.cluster == "router"
    assert re.fullmatch(entry.match.safe_regex.regex, "/tei_multiplexer.v1.TeiMultiplexer/Info")
    assert not re.fullmatch(
        entry.match.safe_regex.regex, "/tei_multiplexer.v1.TeiMultiplexer/EmbedStream"
    )
    assert entry.request_body_buffer_limit.value >= 40 << 20  # the router's own limit
    assert per_route_lua(entry).name == lua_mux.MUX_SCRIPT
    assert len(unwrapped) == 9  # the unary methods: streams and Arrow stay with the router


def test_a_multiplexer_stream_enters_by_its_methods_route_which_runs_the_stream_filters() -> None:
    routes = translate([ep("a")], MUX).routes[0].virtual_hosts[0].routes
    names = [r.name for r in routes]
    by_name = {r.name: r for r in routes}
    embed = by_name["mux:/tei_multiplexer.v1.TeiMultiplexer/EmbedStream"]
    rerank = by_name["mux:/tei_multiplexer.v1.TeiMultiplexer/RerankStream"]
    entries = [by_name[f"mux-stream:{m.path}"] for m in MUX_STREAMS]
    assert embed.route.prefix_rewrite == "/tei.v1.Embed/EmbedStream"
    assert rerank.route.prefix_rewrite == "/tei.v1.Rerank/RerankStream"
    assert embed.route.cluster_header == lua_mux.CLUSTER_HEADER
    assert per_route_lua(embed).name == lua_stream.UNWRAPPED_SCRIPT
    assert lua_stream.EXTRACTION_FILTER not in embed.typed_per_filter_config  # disabled
    assert len(entries) == 8
    for method, entry in zip(MUX_STREAMS, entries, strict=True):
        assert names.index(entry.name) > names.index(f"mux:{method.path}")
        assert entry.match.path == method.path
        assert entry.route.cluster == "router"
        (encoding,) = entry.match.headers
        assert encoding.name == "grpc-encoding"
        assert encoding.treat_missing_header_as_empty
        assert re.fullmatch(encoding.string_match.safe_regex.regex, "identity")
        assert re.fullmatch(encoding.string_match.safe_regex.regex, "")
        assert not re.fullmatch(encoding.string_match.safe_regex.regex, "gzip")
        assert per_route_lua(entry).name == lua_stream.STREAM_SCRIPT
        align = per_route_lua(entry, lua_stream.ALIGN_FILTER)
        assert align.name == lua_stream.ALIGN_SCRIPT
        assert json_format.MessageToDict(align.filter_context) == {
            "limit": entry.request_body_buffer_limit.value
        }
        assert entry.request_body_buffer_limit.value == (40 << 20) + 5  # the router's limit
        enabled = route_components_pb2.FilterConfig()
        assert entry.typed_per_filter_config[lua_stream.EXTRACTION_FILTER].Unpack(enabled)
        assert not enabled.disabled
    assert names[-1] == "router"  # a compressed stream, and every other call


def test_a_stream_has_the_unary_calls_targets_and_keys_and_the_largest_message_it_takes() -> None:
    endpoints = [keyed("a", None), keyed("b", "k-b"), ep("c", "x/y", ready=False)]
    routes = {r.name: r for r in translate(endpoints, MUX).routes[0].virtual_hosts[0].routes}
    stream = routes["mux-stream:/tei_multiplexer.v1.TeiMultiplexer/EmbedStream"]
    assert json_format.MessageToDict(per_route_lua(stream).filter_context) == mux_context(
        endpoints
    ) | {"limit": stream.request_body_buffer_limit.value}


def mux_context(endpoints: list[Endpoint]) -> dict[str, dict[str, str]]:
    """The multiplexer script's context on the route every unary multiplexer call enters by."""
    config = translate(endpoints, MUX).routes[0]
    entry = {r.name: r for r in config.virtual_hosts[0].routes}["mux"]
    context: dict[str, dict[str, str]] = json_format.MessageToDict(
        per_route_lua(entry).filter_context
    )
    return context


def test_envoy_unwraps_calls_to_ready_targets_with_the_key_each_ones_instances_need() -> None:
    context = mux_context(
        [
            keyed("a", None),
            keyed("b", "k-b"),
            keyed("c", None, model="x/y"),
            ep("d", "x/y", ready=False),
            keyed("e", "k-p", model="p/q"),
            keyed("f", "k-p", model="p/q"),
            keyed("g", "k-g", model="u/v"),
        ]
    )
    assert context == {
        "instances": {n: instance_cluster(n) for n in "abcefg"},
        "models": {m: model_cluster(m) for m in ("p/q", "u/v", "x/y")},
        "indexes": {str(i): instance_cluster(n) for i, n in enumerate("abcefg")},
        "authorization": {
            instance_cluster("b"): "Bearer k-b",
            instance_cluster("e"): "Bearer k-p",
            instance_cluster("f"): "Bearer k-p",
            instance_cluster("g"): "Bearer k-g",
            model_cluster("p/q"): "Bearer k-p",  # one key for the whole model
            model_cluster("u/v"): "Bearer k-g",
        },
    }  # org/m (a without a key, b with one) is left to the Python router, as plain calls are


@pytest.mark.parametrize(
    ("keys", "by_envoy"),
    [
        pytest.param((None, None), {}, id="no keys: unwrapped, the client's header kept"),
        pytest.param(("k", "k"), {M: "Bearer k"}, id="one key: unwrapped with it"),
        pytest.param(("k-a", "k-b"), None, id="two keys: the Python router"),
        pytest.param(("k-a", None), None, id="a key and none: the Python router"),
    ],
)
def test_a_multiplexer_call_to_a_model_is_unwrapped_exactly_when_its_plain_route_is(
    keys: tuple[str | None, str | None], by_envoy: dict[str, str] | None
) -> None:
    endpoints = [keyed("a", keys[0]), keyed("b", keys[1])]
    context = mux_context(endpoints)
    plain = {r.name: r for r in translate(endpoints, MUX).routes[0].virtual_hosts[0].routes}
    model_route = plain["model:org/m"]
    if by_envoy is None:
        assert "org/m" not in context["models"]
        assert model_route.route.cluster == "router"
    else:
        assert context["models"] == {"org/m": M}
        assert model_route.route.cluster == M
        to_model = {c: v for c, v in context["authorization"].items() if c == M}
        assert to_model == by_envoy
        assert authorization(model_route) == by_envoy.get(M)


def test_without_the_multiplexer_methods_every_multiplexer_call_goes_to_the_router() -> None:
    names = [r.name for r in translate([ep("a")], PLAN).routes[0].virtual_hosts[0].routes]
    assert not [n for n in names if n.startswith("mux")]
