"""Envoy's statistics read as the router's metrics and as the dashboard's traffic: pure
functions over Envoy's Prometheus text (the cluster and method tags of `bootstrap.py`)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tei_reconciler.dataplane.stats import TrafficFeed, parse, router_metrics

LABELS = {"instance_a": "a", "model_0123": "model:org/m"}
A_EMBED = 'cluster="instance_a",grpc_method="tei.v1.Embed.Embed"'


def envoy_text(ok: int, unavailable: int = 0, fast: int = 0, slow: int = 0) -> str:
    """What Envoy's /stats/prometheus says after `ok` + `unavailable` calls to instance a
    (`fast` of them under 5 ms, `slow` between 50 and 100 ms), one by model, one to the
    router's own cluster."""
    buckets = "".join(
        f'envoy_cluster_upstream_rq_time_bucket{{cluster="instance_a",le="{le}"}} {n}\n'
        for le, n in (
            ("1", 0),
            ("5", fast),
            ("50", fast),
            ("100", fast + slow),
            ("+Inf", fast + slow),
        )
    )
    method = "".join(
        f'envoy_cluster_grpc_upstream_rq_time_bucket{{{A_EMBED},le="{le}"}} {n}\n'
        for le, n in (("0.5", 0), ("5", fast), ("+Inf", fast + slow))
    )
    return f"""# TYPE envoy_cluster_grpc_0 counter
envoy_cluster_grpc_0{{cluster="instance_a",grpc_method="tei.v1.Embed.Embed"}} {ok}
envoy_cluster_grpc_0{{cluster="model_0123",grpc_method="tei.v1.Embed.EmbedStream"}} 1
envoy_cluster_grpc_0{{cluster="router",grpc_method="tei.v1.Embed.Embed"}} 7
# TYPE envoy_cluster_grpc_14 counter
envoy_cluster_grpc_14{{cluster="instance_a",grpc_method="tei.v1.Embed.Embed"}} {unavailable}
# TYPE envoy_cluster_grpc_success counter
envoy_cluster_grpc_success{{cluster="instance_a",grpc_method="tei.v1.Embed.Embed"}} {ok}
# TYPE envoy_cluster_upstream_rq_active gauge
envoy_cluster_upstream_rq_active{{cluster="instance_a"}} 2
envoy_cluster_upstream_rq_active{{cluster="xds"}} 1
# TYPE envoy_cluster_upstream_rq_time histogram
{buckets}envoy_cluster_upstream_rq_time_sum{{cluster="instance_a"}} 250
envoy_cluster_upstream_rq_time_count{{cluster="instance_a"}} {fast + slow}
# TYPE envoy_cluster_grpc_upstream_rq_time histogram
{method}envoy_cluster_grpc_upstream_rq_time_sum{{{A_EMBED}}} 250
envoy_cluster_grpc_upstream_rq_time_count{{{A_EMBED}}} {fast + slow}
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in router_metrics(parse(text, LABELS)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_calls_are_counted_by_instance_method_and_status_name() -> None:
    got = samples(envoy_text(ok=5, unavailable=2))
    embed = "/tei.v1.Embed/Embed"
    key = "tei_reconciler_router_requests_total"
    assert got[(key, (("code", "OK"), ("instance", "a"), ("method", embed)))] == 5
    assert got[(key, (("code", "UNAVAILABLE"), ("instance", "a"), ("method", embed)))] == 2
    by_model = (
        ("code", "OK"),
        ("instance", "model:org/m"),
        ("method", "/tei.v1.Embed/EmbedStream"),
    )
    assert got[(key, by_model)] == 1
    assert not [k for k in got if ("instance", "router") in k[1]]  # the router counts its own
    assert got[("tei_reconciler_router_in_flight_requests", (("instance", "a"),))] == 2


def test_latency_lands_in_the_routers_buckets_in_seconds() -> None:
    got = samples(envoy_text(ok=5, fast=3, slow=2))
    method = "/tei.v1.Embed/Embed"
    bucket = "tei_reconciler_router_request_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.005"), ("method", method)))] == 3
    assert got[(bucket, (("le", "+Inf"), ("method", method)))] == 5
    assert (
        got[("tei_reconciler_router_request_duration_seconds_sum", (("method", method),))] == 0.25
    )
    per_instance = "tei_reconciler_router_instance_request_duration_seconds_bucket"
    assert got[(per_instance, (("instance", "a"), ("le", "0.1")))] == 5
    assert got[(per_instance, (("instance", "a"), ("le", "0.001")))] == 0


class Sink:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int, list[tuple[float, int]]]] = []

    def record(self, instance: str, method: str, code: str, seconds: float) -> None:
        raise AssertionError("Envoy's feed reports counts, not single calls")

    def record_counts(
        self,
        instance: str,
        *,
        requests: int,
        errors: int,
        latencies: Iterable[tuple[float, int]] = (),
    ) -> None:
        self.seen.append((instance, requests, errors, list(latencies)))


def test_the_ring_gets_each_looks_calls_at_the_next_look_with_the_latencies_in_by_then() -> None:
    sink = Sink()
    feed = TrafficFeed(sink)
    feed.update(parse(envoy_text(ok=5, unavailable=1, fast=4, slow=2), LABELS))
    assert sink.seen == []  # Envoy may not have merged these calls' latencies yet
    feed.update(parse(envoy_text(ok=8, unavailable=2, fast=6, slow=4), LABELS))
    feed.update(parse(envoy_text(ok=8, unavailable=2, fast=6, slow=4), LABELS))  # idle
    feed.update(parse(envoy_text(ok=8, unavailable=2, fast=6, slow=4), LABELS))  # idle
    (first_a, first_model, second_a) = sink.seen
    assert first_a[:3] == ("a", 6, 1)
    assert first_model[:3] == ("model:org/m", 1, 0)
    assert second_a[:3] == ("a", 4, 1)  # 3 OK and 1 UNAVAILABLE more
    latencies = dict(first_a[3])
    assert sum(latencies.values()) == 10  # every latency in at the second look
    assert [round(s, 4) for s in latencies] == [pytest.approx(0.0022, abs=1e-4), 0.0707]
    assert second_a[3] == []


def test_latencies_envoy_merges_after_their_calls_were_counted_still_reach_the_ring() -> None:
    sink = Sink()
    feed = TrafficFeed(sink)
    feed.update(parse(envoy_text(ok=5), LABELS))  # counted, histograms not merged yet
    feed.update(parse(envoy_text(ok=5, fast=5), LABELS))
    feed.update(parse(envoy_text(ok=5, fast=5), LABELS))
    (a, _) = sink.seen
    assert a[:3] == ("a", 5, 0)
    assert sum(count for _, count in a[3]) == 5


def test_counters_that_went_down_start_over_as_after_an_envoy_restart() -> None:
    sink = Sink()
    feed = TrafficFeed(sink)
    feed.update(parse(envoy_text(ok=50, fast=50), LABELS))
    feed.update(parse(envoy_text(ok=3, fast=3), LABELS))
    feed.update(parse(envoy_text(ok=3, fast=3), LABELS))
    assert [seen[:3] for seen in sink.seen] == [
        ("a", 50, 0),
        ("model:org/m", 1, 0),
        ("a", 3, 0),
    ]
    assert [sum(count for _, count in seen[3]) for seen in sink.seen] == [50, 0, 3]
