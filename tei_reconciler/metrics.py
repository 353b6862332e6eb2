"""Every Prometheus metric of the reconciler, declared once, with bounded label values.

Labels take values from small fixed sets (phases, action kinds, stop reasons, probe kinds)
or from the instances and models of the state file (bounded by `max_instances`), never free
text. Per-instance series are rewritten as a whole after every pass, so an instance that is
gone leaves no series behind. Metrics live on prometheus_client's default registry, which
`GET /metrics` exports.

`instance` is the TEI instance's name. Prometheus also gives every scraped series an
`instance` label of its own (the target); the ServiceMonitor in manifests/monitoring sets
`honorLabels` so the name wins, and the pod stays known by its `pod` label.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

__all__ = [
    "ACTIONS",
    "INSTANCES",
    "INSTANCE_INFO",
    "INSTANCE_PHASE",
    "INSTANCE_READY",
    "PROBE_FAILURES",
    "RECONCILE_DURATION",
    "REGISTRY",
    "RESTARTS",
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

# The gRPC router. `instance` is a name from the routing table (bounded by max_instances) or ""
# for calls refused before routing; `method` is one of the served method paths.
ROUTER_REQUESTS = Counter(
    "tei_reconciler_router_requests",
    "gRPC calls handled by the router, by instance, method and status code.",
    ["instance", "method", "code"],
)
ROUTER_LATENCY = Histogram(
    "tei_reconciler_router_request_duration_seconds",
    "Time from the router receiving a call to its final status, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ROUTER_INSTANCE_LATENCY = Histogram(
    "tei_reconciler_router_instance_request_duration_seconds",
    "Time from the router receiving a call to its final status, by instance (all methods).",
    ["instance"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ROUTER_IN_FLIGHT = Gauge(
    "tei_reconciler_router_in_flight_requests",
    "Calls the router is relaying to each instance right now.",
    ["instance"],
)


def set_instances(instances: Iterable[tuple[str, str, str, bool]]) -> None:
    """Rewrite the per-instance series from (name, model, phase, ready) of every instance."""
    INSTANCE_INFO.clear()
    INSTANCE_PHASE.clear()
    INSTANCE_READY.clear()
    for name, model, phase, ready in instances:
        INSTANCE_INFO.labels(name, model).set(1)
        INSTANCE_READY.labels(name, model).set(1 if ready else 0)
        for each in PHASES:
            INSTANCE_PHASE.labels(name, model, each).set(1 if each == phase else 0)
