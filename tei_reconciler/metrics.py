"""Every Prometheus metric of the reconciler, declared once, with bounded label values.

Labels take values from small fixed sets (phases, action kinds, stop reasons, probe kinds)
or from the instances and models of the state file (bounded by `max_instances`), never free
text. Per-instance series are rewritten as a whole after every pass, so an instance that is
gone leaves no series behind. Metrics live on prometheus_client's default registry, which
`GET /metrics` exports.

`instance` is the TEI instance's name. Prometheus also gives every scraped series an
`instance` label of its own (the target); the ServiceMonitor in manifests/monitoring sets
`honorLabels` so the name wins, and the pod stays known by its `pod` label.

The router's metrics describe traffic, whichever data plane carries it: the grpcio router
counts its own calls, and with Envoy a source added with `add_router_source` yields Envoy's
statistics under the same names and labels at scrape time; samples with the same labels are
summed, so one scrape shows all traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = [
    "ACTIONS",
    "DATA_PLANE_CONFIG_REJECTED",
    "DATA_PLANE_CONFIG_VERSION",
    "DATA_PLANE_RESTARTS",
    "DATA_PLANE_UP",
    "INSTANCES",
    "INSTANCE_INFO",
    "INSTANCE_PHASE",
    "INSTANCE_READY",
    "INSTANCE_ROLLOUT",
    "PROBE_FAILURES",
    "RECONCILE_DURATION",
    "REGISTRY",
    "RESTARTS",
    "ROLLOUTS",
    "ROUTER_INSTANCE_LATENCY",
    "ROUTER_IN_FLIGHT",
    "ROUTER_LATENCY",
    "ROUTER_REQUESTS",
    "SPEC_ERRORS",
    "SPEC_VALID",
    "TASK_ERRORS",
    "set_instances",
]

PHASES = ("Pending", "Starting", "Running", "Stopping", "Stopped", "CrashLoopBackOff", "Failed")

INSTANCES = Gauge(
    "tei_reconciler_instances",
    "Instances by phase (Pending, Starting, Running, Stopping, Stopped, CrashLoopBackOff, Failed).",
    ["phase"],
)
INSTANCE_INFO = Gauge(
    "tei_reconciler_instance_info",
    "1 for every instance the reconciler knows, with its model (join on `instance` to group "
    "router metrics by model).",
    ["instance", "model"],
)
INSTANCE_PHASE = Gauge(
    "tei_reconciler_instance_phase",
    "1 for the phase each instance is in, 0 for the others.",
    ["instance", "model", "phase"],
)
INSTANCE_READY = Gauge(
    "tei_reconciler_instance_ready",
    "1 when the instance is Ready (takes traffic), else 0.",
    ["instance", "model"],
)
RESTARTS = Counter(
    "tei_reconciler_restarts",
    "Instance processes replaced or restarted, by reason (Crashed, LivenessFailed, "
    "StartupTimeout, SpecChanged).",
    ["reason"],
)
ROLLOUTS = Counter(
    "tei_reconciler_rollouts",
    "Surge rollouts by outcome: complete (the new process took the traffic, the old one is "
    "stopped), failed (the new process crashed or could not start), deadline_exceeded (not "
    "Ready within progress_deadline_secs), superseded (the spec changed again, or the instance "
    "was stopped or removed, before it was Ready).",
    ["outcome"],
)
INSTANCE_ROLLOUT = Gauge(
    "tei_reconciler_instance_rollout",
    "1 for the rollout state of each instance (rolling: a new process is on its way; failed: "
    "the last rollout failed and the old process keeps serving), 0 for the other.",
    ["instance", "model", "state"],
)
PROBE_FAILURES = Counter(
    "tei_reconciler_probe_failures",
    "Failed health probes, by kind (startup, liveness).",
    ["kind"],
)
SPEC_VALID = Gauge(
    "tei_reconciler_spec_valid", "1 when the state file last read was valid, else 0."
)
SPEC_ERRORS = Counter(
    "tei_reconciler_spec_errors",
    "Times an invalid state file was read (the last good one is kept).",
)
TASK_ERRORS = Counter(
    "tei_reconciler_task_errors_total",
    "Per-instance tasks (start, stop, watch_exit, probe_loop, reap) ended by an unexpected "
    "error; each is logged with its traceback and the controller carries on.",
    ["task"],
)
ACTIONS = Counter(
    "tei_reconciler_actions",
    "Actions the controller carried out, by kind and outcome.",
    ["action", "outcome"],
)
RECONCILE_DURATION = Histogram(
    "tei_reconciler_reconcile_duration_seconds",
    "Time of one reconcile pass (observe, plan, dispatch, publish); actions run on their own.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

# The gRPC router. `instance` is a name from the routing table (bounded by max_instances), ""
# for calls refused before routing, or "model:<model_id>" for calls Envoy balanced across a
# model's instances; `method` is one of the served method paths.
ROUTER_REQUESTS = Counter(
    "tei_reconciler_router_requests",
    "gRPC calls handled by the router, by instance, method and status code.",
    ["instance", "method", "code"],
    registry=None,
)
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
INSTANCE_LATENCY_BUCKETS = LATENCY_BUCKETS[1:]  # per instance from 1 ms: one series fewer each
ROUTER_LATENCY = Histogram(
    "tei_reconciler_router_request_duration_seconds",
    "Time from the router receiving a call to its final status, by method.",
    ["method"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
ROUTER_INSTANCE_LATENCY = Histogram(
    "tei_reconciler_router_instance_request_duration_seconds",
    "Time from the router receiving a call to its final status, by instance (all methods).",
    ["instance"],
    buckets=INSTANCE_LATENCY_BUCKETS,
    registry=None,
)
ROUTER_IN_FLIGHT = Gauge(
    "tei_reconciler_router_in_flight_requests",
    "Calls the router is relaying to each instance right now.",
    ["instance"],
    registry=None,
)

# The data plane (DESIGN.md section 10).
DATA_PLANE_UP = Gauge(
    "tei_reconciler_data_plane_up",
    "1 while the data plane serves the gRPC port (Envoy running and initialized, or the "
    "grpcio router listening), by data plane (envoy, grpcio).",
    ["data_plane"],
)
DATA_PLANE_RESTARTS = Counter(
    "tei_reconciler_data_plane_restarts",
    "Times Envoy exited on its own and was started again.",
)
DATA_PLANE_CONFIG_VERSION = Gauge(
    "tei_reconciler_data_plane_config_version",
    "Routing snapshot versions sent to Envoy: the newest published, and the one it applied.",
    ["state"],
)
DATA_PLANE_CONFIG_REJECTED = Counter(
    "tei_reconciler_data_plane_config_rejected",
    "Routing snapshots Envoy rejected (NACK), by resource (clusters, endpoints, routes).",
    ["resource"],
)

RouterSource = Callable[[], Iterable[Metric]]
_ROUTER_METRICS = (ROUTER_REQUESTS, ROUTER_LATENCY, ROUTER_INSTANCE_LATENCY, ROUTER_IN_FLIGHT)


class _RouterMetrics(Collector):
    """The router's metrics, plus whatever the data plane's sources report under their names."""

    def __init__(self) -> None:
        self.sources: list[RouterSource] = []

    def describe(self) -> Iterator[Metric]:
        for metric in _ROUTER_METRICS:
            yield from metric.describe()

    def collect(self) -> Iterator[Metric]:
        families = {
            family.name: family for metric in _ROUTER_METRICS for family in metric.collect()
        }
        for source in list(self.sources):
            for extra in source():
                family = families.get(extra.name)
                if family is not None:
                    _merge(family, extra)
        yield from families.values()


def _merge(family: Metric, extra: Metric) -> None:
    index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(family.samples)}
    for sample in extra.samples:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        at = index.get(key)
        if at is None:
            index[key] = len(family.samples)
            family.samples.append(sample)
        else:
            old = family.samples[at]
            family.samples[at] = old._replace(value=old.value + sample.value)


_ROUTER = _RouterMetrics()
REGISTRY.register(_ROUTER)


def add_router_source(source: RouterSource) -> Callable[[], None]:
    """Report `source`'s samples with the router's metrics; returns the remover."""
    _ROUTER.sources.append(source)
    return lambda: _ROUTER.sources.remove(source)


ROLLOUT_STATES = ("rolling", "failed")


def set_instances(
    instances: Iterable[tuple[str, str, str, bool]],
    rollouts: Iterable[tuple[str, str, str]] = (),
) -> None:
    """Rewrite the per-instance series from (name, model, phase, ready) of every instance,
    and (name, model, rollout state) of those rolling out or whose rollout failed."""
    INSTANCE_INFO.clear()
    INSTANCE_PHASE.clear()
    INSTANCE_READY.clear()
    INSTANCE_ROLLOUT.clear()
    for name, model, phase, ready in instances:
        INSTANCE_INFO.labels(name, model).set(1)
        INSTANCE_READY.labels(name, model).set(1 if ready else 0)
        for each in PHASES:
            INSTANCE_PHASE.labels(name, model, each).set(1 if each == phase else 0)
    for name, model, state in rollouts:
        for each in ROLLOUT_STATES:
            INSTANCE_ROLLOUT.labels(name, model, each).set(1 if each == state else 0)
