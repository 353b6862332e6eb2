"""Reading a running Envoy data plane from a test: its admin interface, and what it applied."""

from __future__ import annotations

from functools import partial

from prometheus_client.parser import text_string_to_metric_families

from tei_reconciler.dataplane.admin import Admin
from tei_reconciler.dataplane.envoy import EnvoyDataPlane
from tei_reconciler.routing import DataPlane, RoutingTable

from support.waiting import eventually


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


async def first_routes_applied(plane: DataPlane, table: RoutingTable | None = None) -> None:
    """Until an Envoy data plane routes by its first routes (for `table`: to each of its
    Ready instances); at once for grpcio. Envoy serves once it is ready, which it may be
    before its first routes arrive if they are slow to (Envoy waits 15 s for them): until
    then a call finds no route, and with auth is answered UNAVAILABLE "authentication is not
    configured yet" (the allowlists and token digests ride on the routes)."""
    if not isinstance(plane, EnvoyDataPlane):
        return
    control = plane.control
    await eventually(lambda: control.routes_applied is not None, what="Envoy's first routes")
    for name in [e.name for e in table.all() if e.ready] if table is not None else []:
        await eventually(partial(plane.routes_to, name), what=f"Envoy to route to {name}")
