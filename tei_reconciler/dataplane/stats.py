"""Envoy's statistics as the router's metrics and as the dashboard's traffic.

Envoy counts each tei.v1 call per upstream cluster, method and gRPC status (its `grpc_stats`
filter), times it per method and per cluster (`upstream_rq_time`, in the router's buckets,
see `bootstrap.py`) and knows the calls in flight per cluster. `parse` reads Envoy's
Prometheus text into those numbers, the cluster already turned into the `instance` label
(`model:<model_id>` for a model's cluster, where Envoy picked the instance); the Python router
behind Envoy counts the calls it answers itself, so its cluster is left out and nothing is
counted twice.

- `router_metrics`: the numbers under the router's metric names, read at scrape time.
- `TrafficFeed`: what changed since the last look, handed to the dashboard's traffic ring
  (`TrafficSink.record_counts`), on the data plane's own schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from tei_reconciler.metrics import INSTANCE_LATENCY_BUCKETS, LATENCY_BUCKETS
from tei_reconciler.traffic import SERVER_ERROR_CODES, TrafficSink

REQUESTS = "tei_reconciler_router_requests"
LATENCY = "tei_reconciler_router_request_duration_seconds"
INSTANCE_LATENCY = "tei_reconciler_router_instance_request_duration_seconds"
IN_FLIGHT = "tei_reconciler_router_in_flight_requests"
_CODES = dict(  # gRPC status codes by number (grpc.StatusCode, without importing grpc)
    enumerate(
        (
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        )
    )
)
_GRPC = "envoy_cluster_grpc_"
_INF = math.inf

Buckets = dict[float, float]  # upper bound in seconds -> cumulative count


@dataclass
class EnvoyStats:
    requests: dict[tuple[str, str, str], float] = field(default_factory=dict)  # inst, meth, code
    method_buckets: dict[str, Buckets] = field(default_factory=dict)
    method_sums: dict[str, float] = field(default_factory=dict)  # seconds
    instance_buckets: dict[str, Buckets] = field(default_factory=dict)
    instance_sums: dict[str, float] = field(default_factory=dict)
    in_flight: dict[str, float] = field(default_factory=dict)


def _method(grpc_method: str) -> str:
    """ "tei.v1.Embed.EmbedStream" -> "/tei.v1.Embed/EmbedStream"."""
    service, _, name = grpc_method.rpartition(".")
    return f"/{service}/{name}"


def _bound(le: str) -> float:
    """Envoy's bucket bound (milliseconds) in seconds, rounded like the router's buckets."""
    return _INF if le == "+Inf" else round(float(le) / 1000, 9)


def _add(table: dict[str, float], key: str, value: float) -> None:
    table[key] = table.get(key, 0.0) + value


def parse(text: str, labels: Mapping[str, str]) -> EnvoyStats:
    """Envoy's Prometheus text (cluster statistics); `labels` maps cluster names to instance
    labels, and every other cluster is ignored."""
    stats = EnvoyStats()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            instance = labels.get(sample.labels.get("cluster", ""))
            if instance is None:
                continue
            name = sample.name.removesuffix("_total")  # the parser adds it to counters
            value = float(sample.value)
            if name == "envoy_cluster_upstream_rq_active":
                _add(stats.in_flight, instance, value)
            elif name == "envoy_cluster_upstream_rq_time_bucket":
                buckets = stats.instance_buckets.setdefault(instance, {})
                bound = _bound(sample.labels.get("le", "+Inf"))
                buckets[bound] = buckets.get(bound, 0.0) + value
            elif name == "envoy_cluster_upstream_rq_time_sum":
                _add(stats.instance_sums, instance, value / 1000)
            elif name.startswith(_GRPC) and "grpc_method" in sample.labels:
                _grpc_sample(stats, instance, name, sample.labels, value)
    return stats


def _grpc_sample(
    stats: EnvoyStats, instance: str, name: str, labels: Mapping[str, str], value: float
) -> None:
    method = _method(labels["grpc_method"])
    rest = name.removeprefix(_GRPC)
    if rest.isdigit() and int(rest) in _CODES:
        key = (instance, method, _CODES[int(rest)])
        stats.requests[key] = stats.requests.get(key, 0.0) + value
    elif rest == "upstream_rq_time_bucket":
        buckets = stats.method_buckets.setdefault(method, {})
        bound = _bound(labels.get("le", "+Inf"))
        buckets[bound] = buckets.get(bound, 0.0) + value
    elif rest == "upstream_rq_time_sum":
        _add(stats.method_sums, method, value / 1000)


def _histogram(
    name: str,
    label: str,
    series: Mapping[str, Buckets],
    sums: Mapping[str, float],
    bounds: tuple[float, ...],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, "", labels=[label])
    for key, counts in sorted(series.items()):
        cumulative = [(_le(b), counts.get(float(b), 0.0)) for b in (*bounds, _INF)]
        family.add_metric([key], cumulative, sums.get(key, 0.0))
    return family


def _le(bound: float) -> str:
    """A bucket bound written as prometheus_client writes its own ("0.005", "1.0", "+Inf")."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def router_metrics(stats: EnvoyStats) -> list[Metric]:
    """The router's metric families, as Envoy saw the traffic."""
    counter = CounterMetricFamily(REQUESTS, "", labels=["instance", "method", "code"])
    for (instance, method, code), value in sorted(stats.requests.items()):
        counter.add_metric([instance, method, code], value)
    gauge = GaugeMetricFamily(IN_FLIGHT, "", labels=["instance"])
    for instance, value in sorted(stats.in_flight.items()):
        gauge.add_metric([instance], value)
    return [
        counter,
        _histogram(LATENCY, "method", stats.method_buckets, stats.method_sums, LATENCY_BUCKETS),
        _histogram(
            INSTANCE_LATENCY,
            "instance",
            stats.instance_buckets,
            stats.instance_sums,
            INSTANCE_LATENCY_BUCKETS,
        ),
        gauge,
    ]


@dataclass
class _Totals:
    requests: float = 0.0
    errors: float = 0.0
    buckets: Buckets = field(default_factory=dict)


def _totals(stats: EnvoyStats) -> dict[str, _Totals]:
    totals: dict[str, _Totals] = {}
    for (instance, _, code), value in stats.requests.items():
        entry = totals.setdefault(instance, _Totals())
        entry.requests += value
        if code in SERVER_ERROR_CODES:
            entry.errors += value
    for instance, buckets in stats.instance_buckets.items():
        totals.setdefault(instance, _Totals()).buckets = dict(buckets)
    return totals


@dataclass
class _Fed:
    """What the feed knows of one instance."""

    recorded: _Totals = field(default_factory=_Totals)  # the counters handed to the ring
    pending: _Totals = field(default_factory=_Totals)  # the last look, handed at the next
    buckets: Buckets = field(default_factory=dict)  # the latencies handed to the ring


class TrafficFeed:
    """Hands the traffic ring what Envoy counted since the previous look.

    Envoy's counters move with every call, its histograms only when it merges them (once a
    second, `bootstrap.py`): a look may see calls whose latencies are not in yet. So the
    counters are handed over one look late, with every latency that arrived meanwhile (a
    look that hands over no call keeps its latencies for the next that does); every call
    and every latency reaches the ring, at most two looks after it ended. A counter that
    went down (Envoy restarted, a cluster came back) starts over from zero."""

    def __init__(self, sink: TrafficSink) -> None:
        self.sink = sink
        self._fed: dict[str, _Fed] = {}

    def update(self, stats: EnvoyStats) -> None:
        now = _totals(stats)
        for instance in sorted(now.keys() | self._fed.keys()):
            fed = self._fed.setdefault(instance, _Fed())
            current = now.get(instance)
            recorded = fed.recorded
            if fed.pending.requests < recorded.requests:
                recorded = _Totals()
            requests = round(fed.pending.requests - recorded.requests)
            buckets = fed.pending.buckets  # all there is of an Envoy that is gone
            if current is not None and _total(current.buckets) >= _total(buckets):
                buckets = current.buckets
            if requests > 0:
                errors = round(max(fed.pending.errors - recorded.errors, 0.0))
                self.sink.record_counts(
                    instance,
                    requests=requests,
                    errors=errors,
                    latencies=_new_latencies(buckets, fed.buckets),
                )
                fed.buckets = buckets
            elif _total(buckets) < _total(fed.buckets):
                fed.buckets = {}
            fed.recorded = fed.pending
            if current is None:
                del self._fed[instance]
            else:
                fed.pending = current


def _total(buckets: Buckets) -> float:
    return buckets.get(_INF, 0.0)


def _new_latencies(now: Buckets, before: Buckets) -> list[tuple[float, int]]:
    """(seconds, count) per histogram bucket from two cumulative readings, each count placed
    at its bucket's geometric middle (the ring keeps finer buckets of its own); a reading
    below the one before (Envoy restarted) counts from zero."""
    if _total(now) < _total(before):
        before = {}
    out = []
    lower = 0.0
    previous_delta = 0.0
    for bound in sorted(b for b in now if b != _INF):
        delta = now[bound] - before.get(bound, 0.0)
        count = round(delta - previous_delta)
        if count > 0:
            middle = math.sqrt(lower * bound) if lower > 0 else bound / 2
            out.append((middle, count))
        previous_delta = delta
        lower = bound
    return out
