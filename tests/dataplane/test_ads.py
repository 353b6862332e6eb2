"""The ADS state machine, one stream, no sockets: what Envoy is sent, and when a snapshot
counts as applied (every type acknowledged, endpoints and routes for every name needed)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from tei_reconciler._types import Secret
from tei_reconciler.dataplane.ads import CDS, EDS, RDS, Ack, AdsSession, Nack, Snapshot, redact
from tei_reconciler.dataplane.clusters import model_cluster
from tei_reconciler.dataplane.translate import Plan, translate
from tei_reconciler.planner.phase import Phase
from tei_reconciler.routing import Endpoint


def snapshot(version: int, *names: str) -> Snapshot:
    endpoints = [
        Endpoint(
            name=n, model_id="m", host="127.0.0.1", port=8000 + i, ready=True, phase=Phase.RUNNING
        )
        for i, n in enumerate(names)
    ]
    resources = translate(endpoints, Plan(request_timeout_secs=30))
    return Snapshot(version=version, table_version=version, resources=resources)


def request(
    type_url: str,
    *names: str,
    nonce: str = "",
    version: str = "",
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=names, response_nonce=nonce, version_info=version
    )
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def names_of(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    """The resource names in an answer."""
    if response.type_url == CDS:
        return [cluster_pb2.Cluster.FromString(r.value).name for r in response.resources]
    if response.type_url == EDS:
        return [
            endpoint_pb2.ClusterLoadAssignment.FromString(r.value).cluster_name
            for r in response.resources
        ]
    return [route_pb2.RouteConfiguration.FromString(r.value).name for r in response.resources]


def subscribe(session: AdsSession, snap: Snapshot) -> dict[str, discovery_pb2.DiscoveryResponse]:
    """Envoy's first requests for the three types: wildcard clusters, then the names."""
    (cds,), _ = session.request(request(CDS), snap)
    (eds,), _ = session.request(request(EDS, *names_of(cds)), snap)
    (rds,), _ = session.request(request(RDS, "tei"), snap)
    return {CDS: cds, EDS: eds, RDS: rds}


def ack(
    session: AdsSession, response: discovery_pb2.DiscoveryResponse, snap: Snapshot, *names: str
) -> object:
    answers, outcome = session.request(
        request(response.type_url, *names, nonce=response.nonce, version=response.version_info),
        snap,
    )
    assert answers == []
    return outcome


def test_a_first_subscription_gets_every_cluster_and_only_the_names_asked_for() -> None:
    session, snap = AdsSession(), snapshot(1, "a", "b")
    sent = subscribe(session, snap)
    assert names_of(sent[CDS]) == ["instance_a", "instance_b", model_cluster("m")]
    assert names_of(sent[EDS]) == names_of(sent[CDS])
    assert names_of(sent[RDS]) == ["tei"]
    assert {r.version_info for r in sent.values()} == {"1"}
    assert len({r.nonce for r in sent.values()}) == 3


def test_a_snapshot_is_applied_once_every_type_acknowledged_it() -> None:
    session, snap = AdsSession(), snapshot(1, "a")
    sent = subscribe(session, snap)
    snapshots = {1: snap}
    assert ack(session, sent[CDS], snap) == Ack(type_url=CDS, version=1)
    assert ack(session, sent[EDS], snap, *names_of(sent[CDS])) == Ack(type_url=EDS, version=1)
    assert session.applied(snapshots) is None  # routes not acknowledged yet
    ack(session, sent[RDS], snap, "tei")
    assert session.applied(snapshots) == 1


def test_an_empty_tables_routes_count_as_acknowledged_though_no_endpoints_are_asked() -> None:
    session, snap = AdsSession(), snapshot(1)
    (cds,), _ = session.request(request(CDS), snap)
    (rds,), _ = session.request(request(RDS, "tei"), snap)
    assert session.acknowledged(RDS) is None  # sent, not yet acknowledged
    ack(session, cds, snap)
    ack(session, rds, snap, "tei")
    assert session.acknowledged(RDS) == 1
    assert session.applied({1: snap}) is None  # no endpoints were ever asked for


def test_a_new_snapshot_goes_out_in_the_order_clusters_endpoints_routes() -> None:
    session, first = AdsSession(), snapshot(1, "a")
    sent = subscribe(session, first)
    for response in sent.values():
        ack(session, response, first, *names_of(response) if response.type_url != CDS else ())
    second = snapshot(2, "a", "b")
    pushed = session.snapshot(second)
    assert [r.type_url for r in pushed] == [CDS, EDS, RDS]
    assert {r.version_info for r in pushed} == {"2"}


def test_endpoints_acknowledged_for_fewer_clusters_than_needed_do_not_count_as_applied() -> None:
    session, first = AdsSession(), snapshot(1, "a")
    sent = subscribe(session, first)
    for response in sent.values():
        ack(session, response, first, *names_of(response) if response.type_url != CDS else ())
    second = snapshot(2, "a", "b")
    cds, eds, rds = session.snapshot(second)
    snapshots = {1: first, 2: second}
    ack(session, cds, second)
    ack(session, eds, second, "instance_a", model_cluster("m"))
    ack(session, rds, second, "tei")
    assert session.applied(snapshots) == 1  # Envoy holds no endpoints for instance_b yet
    # Envoy asks for the new cluster's endpoints: same version, more names.
    (again,), _ = session.request(
        request(EDS, *names_of(cds), nonce=eds.nonce, version="2"), second
    )
    assert names_of(again) == names_of(cds)
    ack(session, again, second, *names_of(cds))
    assert session.applied(snapshots) == 2


def test_a_rejected_snapshot_is_reported_once_and_never_resent() -> None:
    session, snap = AdsSession(), snapshot(1, "a")
    sent = subscribe(session, snap)
    answers, outcome = session.request(
        request(RDS, "tei", nonce=sent[RDS].nonce, error="invalid regex"), snap
    )
    assert outcome == Nack(type_url=RDS, version=1, message="invalid regex")
    assert answers == []  # the same version again would be rejected again
    assert session.snapshot(snap) == []
    assert [r.type_url for r in session.snapshot(snapshot(2, "a"))] == [RDS]  # only RDS was waiting


def test_a_request_about_a_superseded_answer_is_ignored() -> None:
    session, snap = AdsSession(), snapshot(1, "a")
    sent = subscribe(session, snap)
    answers, outcome = session.request(request(CDS, nonce="stale", version="0"), snap)
    assert (answers, outcome) == ([], None)
    assert ack(session, sent[CDS], snap) == Ack(type_url=CDS, version=1)


def test_a_type_this_control_plane_does_not_serve_is_left_unanswered() -> None:
    session = AdsSession()
    listeners = "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert session.request(request(listeners), snapshot(1, "a")) == ([], None)


def test_a_rejection_reason_shows_no_key_as_sent_or_as_text_format_escapes_it() -> None:
    quoted = (
        'value: "Bearer abc" value: "Bearer abc-2" value: "Bearer k\\001\\303\\251\\"x" name: "a"'
    )
    keys = [Secret("abc"), Secret("abc-2"), Secret('k\x01\u00e9"x')]
    assert redact(quoted, keys) == (
        'value: "Bearer ***" value: "Bearer ***" value: "Bearer ***" name: "a"'
    )
    assert redact(quoted, []) == quoted
