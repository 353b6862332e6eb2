"""Envoy's statistics under the router's metric names, read at scrape time.

Envoy counts each tei.v1 call per upstream cluster, method and gRPC status (its `grpc_stats`
filter), times it (`upstream_rq_time`, in the router's buckets, see `bootstrap.py`) and knows
the calls in flight per cluster. `router_metrics` relabels them: the cluster becomes the
`instance` label (`model:<model_id>` for a model's cluster, where Envoy picked the instance),
the method its path, the status code its name. The Python router behind Envoy counts the calls
it answers itself, so its cluster is left out here, and nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from tei_reconciler.metrics import LATENCY_BUCKETS

REQUESTS = "tei_reconciler_router_requests"
LATENCY = "tei_reconciler_router_request_duration_seconds"
IN_FLIGHT = "tei_reconciler_router_in_flight_requests"
_CODES = {code.value[0]: code.name for code in grpc.StatusCode}
_PREFIX = "envoy_cluster_grpc_"


def _method(grpc_method: str) -> str:
    """ "tei.v1.Embed.EmbedStream" -> "/tei.v1.Embed/EmbedStream"."""
    service, _, name = grpc_method.rpartition(".")
    return f"/{service}/{name}"


def router_metrics(text: str, labels: Mapping[str, str]) -> list[Metric]:
    """Envoy's Prometheus text (cluster statistics) as the router's metric families.
    `labels` maps cluster names to instance labels; other clusters are ignored."""
    requests: dict[tuple[str, str, str], float] = {}
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    in_flight: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            instance = labels.get(sample.labels.get("cluster", ""))
            if instance is None:
                continue
            name = sample.name.removesuffix("_total")  # the parser adds it to counters
            if name == "envoy_cluster_upstream_rq_active":
                in_flight[instance] = in_flight.get(instance, 0.0) + sample.value
                continue
            if not name.startswith(_PREFIX) or "grpc_method" not in sample.labels:
                continue
            method = _method(sample.labels["grpc_method"])
            rest = name.removeprefix(_PREFIX)
            if rest.isdigit() and int(rest) in _CODES:
                key = (instance, method, _CODES[int(rest)])
                requests[key] = requests.get(key, 0.0) + sample.value
            elif rest == "upstream_rq_time_bucket":
                le = sample.labels.get("le", "+Inf")
                bound = float("inf") if le == "+Inf" else round(float(le) / 1000, 9)
                per_method = buckets.setdefault(method, {})
                per_method[bound] = per_method.get(bound, 0.0) + sample.value
            elif rest == "upstream_rq_time_sum":
                sums[method] = sums.get(method, 0.0) + sample.value / 1000
    counter = CounterMetricFamily(REQUESTS, "", labels=["instance", "method", "code"])
    for (instance, method, code), value in sorted(requests.items()):
        counter.add_metric([instance, method, code], value)
    histogram = HistogramMetricFamily(LATENCY, "", labels=["method"])
    for method, counts in sorted(buckets.items()):
        bounds = (*LATENCY_BUCKETS, float("inf"))
        cumulative = [(floatToGoString(b), counts.get(float(b), 0.0)) for b in bounds]
        histogram.add_metric([method], cumulative, sums.get(method, 0.0))
    gauge = GaugeMetricFamily(IN_FLIGHT, "", labels=["instance"])
    for instance, value in sorted(in_flight.items()):
        gauge.add_metric([instance], value)
    return [counter, histogram, gauge]
