"""TEI's Prometheus metrics, with TEI's names (metrics-rs style: counters have no `_total`).

prometheus_client's exposition renames every counter to `*_total`, but TEI dashboards query
`te_request_count`; so the engine keeps its own small registry and renders the text format
(version 0.0.4) itself.
As in TEI, a series appears only once it has been recorded.
"""

from __future__ import annotations

import bisect
import threading

_DURATION_BUCKETS = tuple(1.5e-5 * 1.5**i for i in range(35))
_HISTOGRAMS: dict[str, tuple[float, ...]] = {
    **{
        name: _DURATION_BUCKETS
        for prefix in ("te_request", "te_embed", "te_predict")
        for name in (
            f"{prefix}_duration",
            f"{prefix}_tokenization_duration",
            f"{prefix}_queue_duration",
            f"{prefix}_inference_duration",
        )
    },
    "te_request_input_length": tuple(float(2**i) for i in range(20)),
    "te_batch_next_size": tuple(float(2**i) for i in range(13)),
    "te_batch_next_tokens": tuple(float(2**i) for i in range(21)),
}

Labels = tuple[tuple[str, str], ...]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Counters, one gauge and histograms; thread-safe because backends run in threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, float] = {}
        self._histograms: dict[str, tuple[list[int], list[float]]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def observe(self, name: str, value: float) -> None:
        buckets = _HISTOGRAMS[name]
        with self._lock:
            counts, total = self._histograms.setdefault(name, ([0] * len(buckets), [0.0, 0.0]))
            index = bisect.bisect_left(buckets, value)
            if index < len(counts):
                counts[index] += 1
            total[0] += value
            total[1] += 1

    def render(self) -> str:
        """Prometheus text format 0.0.4."""
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                lines.append(f"# TYPE {name} counter")
                for labels, value in sorted(series.items()):
                    lines.append(f"{name}{_labels(labels)} {_number(value)}")
            for name, value in sorted(self._gauges.items()):
                lines.append(f"# TYPE {name} gauge")
                lines.append(f"{name} {_number(value)}")
            for name, (counts, (total, count)) in sorted(self._histograms.items()):
                lines.append(f"# TYPE {name} histogram")
                cumulative = 0
                for bound, n in zip(_HISTOGRAMS[name], counts, strict=True):
                    cumulative += n
                    lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}')
                lines.append(f'{name}_bucket{{le="+Inf"}} {int(count)}')
                lines.append(f"{name}_sum {_number(total)}")
                lines.append(f"{name}_count {int(count)}")
        return "\n".join(lines) + ("\n" if lines else "")


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"
