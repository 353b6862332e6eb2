"""The grpcio router as a `DataPlane`: what the controller and the REST API may ask of it.

The router reads the routing table on every call, so a routing change is in force as soon as
it is published, and its balancer knows every call in flight: a drain waits for the calls to
the instance to end. Behind Envoy the same router serves what Envoy hands it, and Envoy's data
plane adds its own calls in flight to these (`in_flight`).
"""

from __future__ import annotations

from typing import Literal

from tei_reconciler.router.routes import Balancer
from tei_reconciler.routing import DataPlaneStatus, RoutingTable


class GrpcioDataPlane:
    def __init__(self, table: RoutingTable, balancer: Balancer, *, detail: str = "") -> None:
        self.table = table
        self.balancer = balancer
        self.detail = detail
        self.up = False  # set by whoever runs the router, once it listens

    @property
    def kind(self) -> Literal["grpcio"]:
        return "grpcio"

    def routes_to(self, name: str) -> bool:
        endpoint = self.table.get(name)
        return endpoint is not None and endpoint.ready

    async def wait_routed(self, name: str) -> None:
        while not self.routes_to(name):
            await self.table.wait_changed(self.table.version)

    def in_flight(self, name: str) -> int:
        return self.balancer.outstanding.get(name, 0)

    async def drain(self, name: str) -> None:
        await self.balancer.idle(name)

    def status(self) -> DataPlaneStatus:
        return DataPlaneStatus(kind="grpcio", up=self.up, detail=self.detail)
