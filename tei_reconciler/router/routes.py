"""Which Ready instance serves a call, and the status code when none can.

Routing reads only the `RoutingTable` snapshot the controller publishes. A name that the
table does not know is NOT_FOUND; a known instance that is not Ready is UNAVAILABLE, with its
phase in the message, so clients can tell "wrong name" from "come back later" and retry only
the latter. `model_id` routing balances by least outstanding requests across the model's
Ready instances, breaking ties in rotation so that idle replicas all take turns.
"""

from __future__ import annotations

import functools
import itertools

import anyio
import grpc
from google.protobuf.message import DecodeError, Message

from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2
from tei_reconciler.router.methods import Method
from tei_reconciler.routing import Backend, Endpoint, RoutingTable


class RouteError(Exception):
    """A call the router answers itself with `code` and `message`."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


BackendKey = tuple[str, int]  # (address, generation): one process


class Balancer:
    """Counts requests in flight per instance (to pick the least loaded one) and per process
    (to tell when a process that left routing has no call left: the drain)."""

    def __init__(self) -> None:
        self.outstanding: dict[str, int] = {}
        self._by_process: dict[BackendKey, int] = {}
        self._turn = itertools.count()
        self._idle: dict[BackendKey, anyio.Event] = {}

    def acquire(self, endpoint: Endpoint) -> None:
        name, key = endpoint.name, (endpoint.address, endpoint.generation)
        self.outstanding[name] = self.outstanding.get(name, 0) + 1
        self._by_process[key] = self._by_process.get(key, 0) + 1

    def release(self, endpoint: Endpoint) -> None:
        name, key = endpoint.name, (endpoint.address, endpoint.generation)
        left = self.outstanding.get(name, 0) - 1
        if left > 0:
            self.outstanding[name] = left
        else:
            self.outstanding.pop(name, None)
        left = self._by_process.get(key, 0) - 1
        if left > 0:
            self._by_process[key] = left
            return
        self._by_process.pop(key, None)
        idle = self._idle.pop(key, None)
        if idle is not None:
            idle.set()

    def in_flight(self, backend: Backend) -> int:
        """Calls in flight to one process."""
        return self._by_process.get((backend.address, backend.generation), 0)

    async def idle(self, backend: Backend) -> None:
        """Return once no request is in flight to the process `backend`."""
        key = (backend.address, backend.generation)
        while self._by_process.get(key, 0) > 0:
            await self._idle.setdefault(key, anyio.Event()).wait()

    def pick(self, candidates: list[Endpoint]) -> Endpoint:
        if len(candidates) == 1:
            return candidates[0]
        load = self.outstanding
        least = min(load.get(e.name, 0) for e in candidates)
        idle = [e for e in candidates if load.get(e.name, 0) == least]
        return idle[next(self._turn) % len(idle)]


def _ready_or_unavailable(endpoint: Endpoint) -> Endpoint:
    if not endpoint.ready:
        raise RouteError(
            grpc.StatusCode.UNAVAILABLE,
            f"instance {endpoint.name} is not ready (phase {endpoint.phase})",
        )
    return endpoint


def by_name(table: RoutingTable, name: str) -> Endpoint:
    endpoint = table.get(name)
    if endpoint is None:
        raise RouteError(grpc.StatusCode.NOT_FOUND, f"Instance '{name}' not found")
    return _ready_or_unavailable(endpoint)


def by_model(table: RoutingTable, balancer: Balancer, model_id: str) -> Endpoint:
    ready = table.ready_for_model(model_id)
    if ready:
        return balancer.pick(ready)
    known = [e for e in table.all() if e.model_id == model_id]
    if not known:
        raise RouteError(grpc.StatusCode.NOT_FOUND, f"no instance serves model '{model_id}'")
    phases = ", ".join(f"{e.name} (phase {e.phase})" for e in known)
    raise RouteError(
        grpc.StatusCode.UNAVAILABLE, f"no Ready instance serves model '{model_id}': {phases}"
    )


def by_index(table: RoutingTable, index: int) -> Endpoint:
    ready = table.ready()
    if index >= len(ready):
        raise RouteError(
            grpc.StatusCode.NOT_FOUND,
            f"instance index {index} out of range ({len(ready)} Ready instances)",
        )
    return ready[index]


def parse_target(raw: bytes | None) -> multiplexer_pb2.Target:
    """Decode a wrapper's field 1 and check it names something (tei-manager's order)."""
    if raw is None:
        raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, "Missing target")
    try:
        target = multiplexer_pb2.Target.FromString(raw)
    except DecodeError as exc:
        raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid target: {exc}") from exc
    return validate_target(target)


@functools.cache
def _request_type(method: Method) -> type[Message]:
    service = tei_pb2.DESCRIPTOR.services_by_name[method.service]
    request: type[Message] = getattr(tei_pb2, service.methods_by_name[method.name].input_type.name)
    return request


#: The largest request message an instance accepts: tonic's default decoding limit, which TEI
#: keeps (no flag changes it), and grpcio's default, which the built-in engine keeps. The
#: router's own `max_message_mb` is larger, for Arrow requests it splits before forwarding.
INSTANCE_MAX_REQUEST_BYTES = 4 * 1024 * 1024


def too_large(size: int | str) -> str:
    """Why a request message of `size` bytes is not forwarded (`check_request`)."""
    return (
        f"request message of {size} bytes not forwarded: TEI instances accept at most "
        f"{INSTANCE_MAX_REQUEST_BYTES} bytes (4 MiB) per message, less than the router's "
        "max_message_mb (which is for Arrow requests); send fewer or shorter inputs per "
        "message, or stream them"
    )


def check_request(method: Method, raw: bytes) -> bytes:
    """`raw` when an instance can take it as `method`'s tei.v1 request.

    The bytes are forwarded as they are, but an instance answers bytes it cannot decode with an
    internal error (TEI) or UNKNOWN (the built-in engine), and a message above its 4 MiB limit
    with an error that does not say why the router let it through. The client hears the reason
    instead, on both the multiplexer and the plain tei.v1 routes: INVALID_ARGUMENT for
    malformed bytes, RESOURCE_EXHAUSTED naming both limits for a message too large."""
    if len(raw) > INSTANCE_MAX_REQUEST_BYTES:
        raise RouteError(grpc.StatusCode.RESOURCE_EXHAUSTED, too_large(len(raw)))
    try:
        _request_type(method).FromString(raw)
    except DecodeError as exc:
        raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed message: {exc}") from exc
    return raw


def validate_target(target: multiplexer_pb2.Target) -> multiplexer_pb2.Target:
    kind = target.WhichOneof("routing")
    if kind is None:
        raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, "No routing specified")
    if kind == "instance_name" and not target.instance_name:
        raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, "Instance name cannot be empty")
    if kind == "model_id" and not target.model_id:
        raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, "Model id cannot be empty")
    return target


def resolve(table: RoutingTable, balancer: Balancer, target: multiplexer_pb2.Target) -> Endpoint:
    kind = target.WhichOneof("routing")
    if kind == "instance_name":
        return by_name(table, target.instance_name)
    if kind == "model_id":
        return by_model(table, balancer, target.model_id)
    return by_index(table, target.instance_index)


def from_metadata(
    table: RoutingTable,
    balancer: Balancer,
    instance: str | None,
    model_id: str | None,
    default_instance: str | None,
) -> Endpoint:
    """Route a plain `tei.v1` call: `x-tei-instance`, `x-tei-model`, default, only instance."""
    if instance:
        return by_name(table, instance)
    if model_id:
        return by_model(table, balancer, model_id)
    default = default_instance or table.default_instance
    if default:
        return by_name(table, default)
    every = table.all()
    if len(every) == 1:
        return _ready_or_unavailable(every[0])
    if not every:
        raise RouteError(grpc.StatusCode.UNAVAILABLE, "no instance to route to")
    raise RouteError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{len(every)} instances and no default: "
        "set the x-tei-instance or x-tei-model metadata key",
    )
