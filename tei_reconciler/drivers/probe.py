"""Health probes: is the TEI behind host:port serving its model?

An unhealthy instance is data, never an exception: every probe returns a `ProbeOutcome`.
The gRPC build is asked through `grpc.health.v1` for the service of its model type (Embed,
Predict or Rerank; learned once from `tei.v1.Info`), falling back to `tei.v1.Info` where the
health service is missing; the HTTP build answers `GET /health`. Channels are kept per
process (tei-manager opened a fresh channel per check): a rollout probes an instance's old
and new process at once, and a process's channel is closed when that process goes, never
under another process of the same instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio
import grpc
import httpx
import msgspec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

STARTUP_PERIOD = 0.25  # seconds between startup probes (capped by the liveness period)

#: tei.v1 ModelType -> the health service TEI flips to SERVING once the model is up.

_SERVICE_BY_TYPE = {
    tei_pb2.MODEL_TYPE_EMBEDDING: "tei.v1.Embed",
    tei_pb2.MODEL_TYPE_CLASSIFIER: "tei.v1.Predict",
    tei_pb2.MODEL_TYPE_RERANKER: "tei.v1.Rerank",
}


class ProbeOutcome(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    latency_ms: float
    message: str


class Prober(Protocol):
    """Probes one process (`pid`) of instance `name` at host:port; `forget` releases what was
    kept for that process."""

    async def check(
        self, name: str, pid: int, host: str, port: int, within: float
    ) -> ProbeOutcome: ...

    async def forget(self, name: str, pid: int) -> None: ...


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class GrpcProber:
    """`grpc.health.v1.Health/Check` of the model's service, falling back to `tei.v1.Info`."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, int], tuple[str, grpc.aio.Channel]] = {}
        self._services: dict[tuple[str, int], str] = {}

    def _channel(self, key: tuple[str, int], address: str) -> grpc.aio.Channel:
        """The channel of one process (a process keeps its address for life)."""
        kept = self._channels.get(key)
        if kept is not None:
            return kept[1]
        channel = grpc.aio.insecure_channel(address)
        self._channels[key] = (address, channel)
        return channel

    async def check(self, name: str, pid: int, host: str, port: int, within: float) -> ProbeOutcome:
        start = time.perf_counter()
        target_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        key = (name, pid)
        channel = self._channel(key, f"{target_host}:{port}")
        try:
            service = self._services.get(key)
            if service is None:
                info = await tei_pb2_grpc.InfoStub(channel).Info(
                    tei_pb2.InfoRequest(), timeout=within
                )
                service = _SERVICE_BY_TYPE.get(info.model_type, "tei.v1.Embed")
                self._services[key] = service
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=within
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
                return await self._info(channel, start, within)
            return ProbeOutcome(
                ok=False,
                latency_ms=_elapsed_ms(start),
                message=f"{exc.code().name}: {exc.details()}",
            )
        ok = reply.status == health_pb2.HealthCheckResponse.SERVING
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return ProbeOutcome(ok=ok, latency_ms=_elapsed_ms(start), message=f"{service} {status}")

    async def _info(self, channel: grpc.aio.Channel, start: float, within: float) -> ProbeOutcome:
        try:
            await tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=within)
        except grpc.aio.AioRpcError as exc:
            return ProbeOutcome(
                ok=False,
                latency_ms=_elapsed_ms(start),
                message=f"{exc.code().name}: {exc.details()}",
            )
        return ProbeOutcome(ok=True, latency_ms=_elapsed_ms(start), message="tei.v1.Info OK")

    async def forget(self, name: str, pid: int) -> None:
        self._services.pop((name, pid), None)
        kept = self._channels.pop((name, pid), None)
        if kept is not None:
            await kept[1].close()

    async def aclose(self) -> None:
        """Close every channel (the controller is shutting down)."""
        channels = [channel for _, channel in self._channels.values()]
        self._channels.clear()
        self._services.clear()
        for channel in channels:
            await channel.close()


class HttpProber:
    """`GET /health` on TEI's HTTP build: 200 means the model answers."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient()

    async def check(self, name: str, pid: int, host: str, port: int, within: float) -> ProbeOutcome:
        start = time.perf_counter()
        url_host = f"[{host}]" if ":" in host else host
        try:
            response = await self._client.get(f"http://{url_host}:{port}/health", timeout=within)
        except httpx.HTTPError as exc:
            return ProbeOutcome(
                ok=False, latency_ms=_elapsed_ms(start), message=f"{type(exc).__name__}: {exc}"
            )
        ok = response.status_code == 200
        return ProbeOutcome(
            ok=ok, latency_ms=_elapsed_ms(start), message=f"GET /health {response.status_code}"
        )

    async def forget(self, name: str, pid: int) -> None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()


def make_prober(protocol: str) -> GrpcProber | HttpProber:
    return HttpProber() if protocol == "http" else GrpcProber()


async def probe_forever(
    prober: Prober,
    name: str,
    pid: int,
    host: str,
    port: int,
    *,
    interval: float,
    within: float,
    started: Callable[[], bool],
    report: Callable[[ProbeOutcome], None],
) -> None:
    """Probe one process until cancelled: every `STARTUP_PERIOD` until `started()` (so Ready
    comes quickly), then every `interval`. A probe that overruns `within` is a failure; one
    process's probes never wait for another's (each process has its own task)."""
    while True:
        outcome = None
        with anyio.move_on_after(within + 1.0):
            outcome = await prober.check(name, pid, host, port, within)
        if outcome is None:
            outcome = ProbeOutcome(
                ok=False, latency_ms=(within + 1.0) * 1000, message=f"no answer within {within:g}s"
            )
        report(outcome)
        await anyio.sleep(interval if started() else min(interval, STARTUP_PERIOD))
