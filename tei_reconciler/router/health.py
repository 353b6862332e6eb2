"""`grpc.health.v1` and server reflection (v1 and v1alpha) for the router's port.

Health: service "" is the router itself (SERVING while it runs, NOT_SERVING while it shuts
down); service "<instance>" is SERVING exactly when the routing table says the instance is
Ready, NOT_SERVING when it exists but is not, and SERVICE_UNKNOWN once it is deleted, so
`Watch` streams follow the controller's view. grpcio-health-checking's servicer does the
protocol; `HealthSync.apply` feeds it from the table.

Reflection: grpcio-reflection ships only v1alpha. v1 is the same protocol under another
package name, so its file descriptor is derived from v1alpha's and the same servicer answers
both paths. Only services the router actually serves are listed.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

from tei_reconciler.routing import RoutingTable

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"

_Status = health_pb2.HealthCheckResponse


class HealthSync:
    """Mirrors the routing table into the health servicer."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.servicer = HealthServicer()
        self._seen_version = -1
        self._known: set[str] = set()

    async def apply(self) -> None:
        if self.table.version == self._seen_version:
            return
        self._seen_version = self.table.version
        current = {e.name: e for e in self.table.all()}
        for name, endpoint in current.items():
            await self.servicer.set(
                name, _Status.SERVING if endpoint.ready else _Status.NOT_SERVING
            )
        for gone in self._known - current.keys():
            await self.servicer.set(gone, _Status.SERVICE_UNKNOWN)
        self._known = set(current)

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        reflection_pb2.DESCRIPTOR.CopyToProto(proto)
        proto.name = "grpc/reflection/v1/reflection.proto"
        proto.package = "grpc.reflection.v1"
        proto.options.Clear()
        for message in proto.message_type:
            for field in message.field:
                if field.type_name.startswith(".grpc.reflection.v1alpha."):
                    field.type_name = field.type_name.replace(".v1alpha.", ".v1.", 1)
        for service in proto.service:
            for method in service.method:
                method.input_type = method.input_type.replace(".v1alpha.", ".v1.", 1)
                method.output_type = method.output_type.replace(".v1alpha.", ".v1.", 1)
        pool.Add(proto)


def add_reflection(server: grpc.aio.Server, served: list[str]) -> None:
    """Serve reflection v1 and v1alpha, listing `served` plus themselves."""
    _register_v1_descriptor()
    names = [*served, REFLECTION_V1, REFLECTION_V1ALPHA]
    servicer: Any = ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (REFLECTION_V1, REFLECTION_V1ALPHA):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
