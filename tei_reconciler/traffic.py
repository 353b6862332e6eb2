"""Recent traffic per instance, kept in memory for the dashboard: a short ring of time steps.

Prometheus keeps history for Grafana; the dashboard wants the last minutes with nothing else
installed. A data plane feeds the ring through the narrow `TrafficSink` interface: the Python
router calls `record` once per finished call; a data plane that only exposes cumulative
counters and histograms (Envoy's stats) hands the deltas it saw since its last look to
`record_counts`, on its own schedule. The API reads `snapshot` (every instance, the last
minute) and `series` (one instance, every step of the window).

Memory is bounded whatever the traffic: `steps` buckets per instance, each holding a count, an
error count and a fixed latency histogram, allocated only for steps that saw a call; an
instance without traffic in the window is dropped. Every method runs on the event loop thread
(grpc.aio and the API share it), so nothing here locks.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Protocol

import msgspec

from tei_reconciler._types import Clock, SystemClock

#: gRPC codes that count as errors: the server's or the backend's fault, not the caller's
#: (a bad argument, an unknown instance or a cancel by the client is not an outage). The
#: PrometheusRule in manifests/monitoring uses the same set.
SERVER_ERROR_CODES = frozenset(
    {
        "UNKNOWN",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
    }
)

#: Latency bucket upper bounds in seconds: 0.1 ms to about 2 minutes, 30 % apart, so a
#: quantile read from them is within 15 % of the true value.
BOUNDS: tuple[float, ...] = tuple(0.0001 * 1.3**i for i in range(54))

DEFAULT_STEP_SECS = 10.0
DEFAULT_STEPS = 60  # ten minutes at the default step
SUMMARY_SECS = 60.0  # what `snapshot` sums over: the last minute


class TrafficSink(Protocol):
    """What a data plane needs to feed the ring."""

    def record(self, instance: str, method: str, code: str, seconds: float) -> None:
        """One finished call: its gRPC method path, status code name and duration."""
        ...

    def record_counts(
        self,
        instance: str,
        *,
        requests: int,
        errors: int,
        latencies: Iterable[tuple[float, int]] = (),
    ) -> None:
        """Calls seen since the feeder's last report: how many, how many failed, and their
        durations as (seconds, count) pairs (a histogram bucket's bound and its new count)."""
        ...


class TrafficPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One step of one instance's traffic."""

    at: float  # epoch seconds the step began
    requests: int
    errors: int
    rate: float  # requests per second over the step
    error_ratio: float | None  # errors / requests; None without requests
    p50_ms: float | None
    p99_ms: float | None


class InstanceTraffic(msgspec.Struct, frozen=True, kw_only=True):
    """One instance over a span: totals, quantiles and (for `series`) every step."""

    instance: str
    requests: int
    errors: int
    rate: float  # requests per second over the span
    error_ratio: float | None
    p50_ms: float | None
    p99_ms: float | None
    methods: dict[str, int]  # calls per gRPC method path
    points: list[TrafficPoint]  # oldest first; empty in `snapshot`


class TrafficSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    at: float  # epoch seconds the span ends (the start of the step in progress)
    step_secs: float
    span_secs: float  # what the totals cover
    instances: list[InstanceTraffic]


class _Step:
    __slots__ = ("buckets", "errors", "methods", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.buckets = [0] * (len(BOUNDS) + 1)  # the last one: above the largest bound
        self.methods: dict[str, int] = {}


def bucket_of(seconds: float) -> int:
    return bisect.bisect_left(BOUNDS, seconds)


def quantile(buckets: list[int], q: float) -> float | None:
    """The q-quantile in seconds of a histogram over `BOUNDS`, interpolated inside the bucket
    where it falls (log-linearly: the bounds grow geometrically)."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(BOUNDS):
                return BOUNDS[-1]
            upper = BOUNDS[i]
            lower = BOUNDS[i - 1] if i > 0 else upper / 1.3
            fraction = (rank - seen) / count
            return lower * math.exp(fraction * math.log(upper / lower))
        seen += count
    return BOUNDS[-1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class TrafficRing:
    """The ring: per instance, one `_Step` per `step_secs` for the last `steps` steps."""

    def __init__(
        self,
        *,
        step_secs: float = DEFAULT_STEP_SECS,
        steps: int = DEFAULT_STEPS,
        clock: Clock | None = None,
    ) -> None:
        if step_secs <= 0 or steps < 2:
            raise ValueError("a traffic ring needs a positive step and at least two steps")
        self.step_secs = step_secs
        self.steps = steps
        self.clock = clock or SystemClock()
        self._data: dict[str, dict[int, _Step]] = {}

    # ---- feeding ------------------------------------------------------------------------
    def _step(self, instance: str) -> _Step:
        index = self._index()
        steps = self._data.setdefault(instance, {})
        step = steps.get(index)
        if step is None:
            step = steps[index] = _Step()
            self._expire(steps, index)
        return step

    def _expire(self, steps: dict[int, _Step], index: int) -> None:
        """Drop the steps that left the window ending at step `index`."""
        for old in [i for i in steps if i <= index - self.steps]:
            del steps[old]

    def record(self, instance: str, method: str, code: str, seconds: float) -> None:
        step = self._step(instance)
        step.requests += 1
        if code in SERVER_ERROR_CODES:
            step.errors += 1
        step.buckets[bucket_of(seconds)] += 1
        step.methods[method] = step.methods.get(method, 0) + 1

    def record_counts(
        self,
        instance: str,
        *,
        requests: int,
        errors: int,
        latencies: Iterable[tuple[float, int]] = (),
    ) -> None:
        if requests <= 0 and errors <= 0:
            return
        step = self._step(instance)
        step.requests += max(requests, 0)
        step.errors += max(errors, 0)
        for seconds, count in latencies:
            if count > 0:
                step.buckets[bucket_of(seconds)] += count

    # ---- reading ------------------------------------------------------------------------
    def _index(self) -> int:
        return int(self.clock.wall() // self.step_secs)

    def _prune(self) -> int:
        """Drop steps that left the window and instances left without any; the current
        step's index."""
        index = self._index()
        for name in list(self._data):
            steps = self._data[name]
            self._expire(steps, index)
            if not steps:
                del self._data[name]
        return index

    def instances(self) -> list[str]:
        self._prune()
        return sorted(self._data)

    def snapshot(self, span_secs: float = SUMMARY_SECS) -> TrafficSnapshot:
        """Every instance with traffic, summed over the last `span_secs` of finished steps."""
        index = self._prune()
        count = max(1, min(self.steps - 1, round(span_secs / self.step_secs)))
        wanted = range(index - count, index)
        out = [
            self._summary(name, [steps[i] for i in wanted if i in steps], count, points=[])
            for name, steps in sorted(self._data.items())
        ]
        return TrafficSnapshot(
            at=index * self.step_secs,
            step_secs=self.step_secs,
            span_secs=count * self.step_secs,
            instances=out,
        )

    def series(self, instance: str) -> TrafficSnapshot:
        """One instance over the whole window, a point per finished step (zeros included)."""
        index = self._prune()
        steps = self._data.get(instance, {})
        wanted = range(index - self.steps + 1, index)
        points = [self._point(i, steps.get(i)) for i in wanted]
        summary = self._summary(
            instance, [steps[i] for i in wanted if i in steps], len(wanted), points=points
        )
        return TrafficSnapshot(
            at=index * self.step_secs,
            step_secs=self.step_secs,
            span_secs=len(wanted) * self.step_secs,
            instances=[summary],
        )

    def _point(self, index: int, step: _Step | None) -> TrafficPoint:
        at = index * self.step_secs
        if step is None or step.requests == 0:
            return TrafficPoint(
                at=at, requests=0, errors=0, rate=0.0, error_ratio=None, p50_ms=None, p99_ms=None
            )
        return TrafficPoint(
            at=at,
            requests=step.requests,
            errors=step.errors,
            rate=round(step.requests / self.step_secs, 4),
            error_ratio=round(step.errors / step.requests, 4),
            p50_ms=_ms(quantile(step.buckets, 0.5)),
            p99_ms=_ms(quantile(step.buckets, 0.99)),
        )

    def _summary(
        self, name: str, steps: list[_Step], count: int, *, points: list[TrafficPoint]
    ) -> InstanceTraffic:
        requests = sum(s.requests for s in steps)
        errors = sum(s.errors for s in steps)
        buckets = [sum(col) for col in zip(*(s.buckets for s in steps), strict=True)]
        methods: dict[str, int] = {}
        for s in steps:
            for method, n in s.methods.items():
                methods[method] = methods.get(method, 0) + n
        return InstanceTraffic(
            instance=name,
            requests=requests,
            errors=errors,
            rate=round(requests / (count * self.step_secs), 4),
            error_ratio=round(errors / requests, 4) if requests else None,
            p50_ms=_ms(quantile(buckets, 0.5)) if buckets else None,
            p99_ms=_ms(quantile(buckets, 0.99)) if buckets else None,
            methods=methods,
            points=points,
        )


def until_next_step(ring: TrafficRing) -> float:
    """Seconds until the step in progress ends (when a watcher has a new point to show)."""
    now = ring.clock.wall()
    return ring.step_secs - (now % ring.step_secs)


__all__ = [
    "BOUNDS",
    "SERVER_ERROR_CODES",
    "InstanceTraffic",
    "TrafficPoint",
    "TrafficRing",
    "TrafficSink",
    "TrafficSnapshot",
    "quantile",
    "until_next_step",
]
