"""Per-instance series: one row per instance as it is now, nothing left of one that is gone."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tei_reconciler import metrics
from tei_reconciler.planner.phase import Phase


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_phase_series_cover_every_phase_the_planner_knows() -> None:
    assert tuple(p.value for p in Phase) == metrics.PHASES


def test_each_instance_has_one_phase_set_and_a_gone_instance_leaves_no_series() -> None:
    metrics.set_instances(
        [("a", "org/m", "Running", True), ("b", "org/m", "CrashLoopBackOff", False)]
    )
    assert sample("tei_reconciler_instance_ready", instance="a", model="org/m") == 1
    assert sample("tei_reconciler_instance_ready", instance="b", model="org/m") == 0
    assert sample("tei_reconciler_instance_info", instance="b", model="org/m") == 1
    phases = {
        p: sample("tei_reconciler_instance_phase", instance="b", model="org/m", phase=p)
        for p in metrics.PHASES
    }
    assert phases == {p: (1.0 if p == "CrashLoopBackOff" else 0.0) for p in metrics.PHASES}
    metrics.set_instances([("a", "org/other", "Running", True)])
    assert sample("tei_reconciler_instance_info", instance="b", model="org/m") is None
    assert sample("tei_reconciler_instance_ready", instance="a", model="org/m") is None
    assert sample("tei_reconciler_instance_ready", instance="a", model="org/other") == 1
    metrics.set_instances([])
