"""Every Prometheus metric of the reconciler, declared once, with bounded label values.

Labels take values from small fixed sets (phases, action kinds, stop reasons, probe kinds),
never instance names or free text, so the series count does not grow with churn. Metrics
live on prometheus_client's default registry, which `GET /metrics` exports.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

__all__ = [
    "ACTIONS",
    "INSTANCES",
    "PROBE_FAILURES",
    "RECONCILE_DURATION",
    "REGISTRY",
    "RESTARTS",
    "ROUTER_IN_FLIGHT",
    "ROUTER_LATENCY",
    "ROUTER_REQUESTS",
    "SPEC_ERRORS",
    "SPEC_VALID",
]

INSTANCES = Gauge(
    "tei_reconciler_instances",
    "Instances by phase (Pending, Starting, Running, Stopping, Stopped, CrashLoopBackOff, Failed).",
    ["phase"],
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
ROUTER_IN_FLIGHT = Gauge(
    "tei_reconciler_router_in_flight_requests",
    "Calls the router is relaying to each instance right now.",
    ["instance"],
)
