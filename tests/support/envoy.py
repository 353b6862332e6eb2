"""Reading a running Envoy data plane from a test, through its admin interface."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tei_reconciler.dataplane.admin import Admin
from tei_reconciler.dataplane.envoy import EnvoyDataPlane
from tei_reconciler.routing import DataPlane


async def router_calls(envoy: DataPlane | Admin) -> float:
    """Calls Envoy has sent to the Python router behind it (its `router` cluster)."""
    if not isinstance(envoy, Admin):
        assert isinstance(envoy, EnvoyDataPlane)
        envoy = envoy.admin
    text = await envoy.cluster_stats()
    assert text is not None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name.startswith("envoy_cluster_upstream_rq_total")
                and sample.labels.get("cluster") == "router"
            ):
                return float(sample.value)
    return 0.0
