"""Health probes: is the TEI behind host:port serving its model?

An unhealthy instance is data, never an exception: every probe returns a `ProbeOutcome`.
The gRPC build is asked through `grpc.health.v1` for the service of its model type (Embed,
Predict or Rerank; learned once from `tei.v1.Info`), falling back to `tei.v1.Info` where the
health service is missing; the HTTP build answers `GET /health`. A probe belongs to one
process (`ProbeTarget`): its channel lives as long as that process's probe loop (tei-manager
opened a fresh channel per check) and is closed by the loop itself when it ends, so nothing
of one process's probe can reach another's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import anyio
import grpc
import httpx
import msgspec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tei_reconciler._types import Secret
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.tasks import scoped, stray

log = logging.getLogger(__name__)

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
    refused: bool = False  # the instance refused the probe's credentials (UNAUTHENTICATED)


class ProbeTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One process to probe. Probe state (a channel, the model type learned) belongs to one
    process, never to an instance name: two processes of one instance (a replacement under
    way, an instance deleted and created again) are probed apart."""

    name: str  # the instance (for messages)
    pid: int
    host: str
    port: int
    api_key: Secret | None = None  # sent as `authorization: Bearer <key>`, as TEI requires

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata (gRPC) or headers (HTTP) every probe carries."""
        if self.api_key is None:
            return ()
        return (("authorization", f"Bearer {self.api_key.reveal()}"),)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


class Probe(Protocol):
    """Probes one process; open for as long as its probe loop runs."""

    async def check(self, within: float) -> ProbeOutcome: ...


class Prober(Protocol):
    """Opens a probe of one process; what the probe holds is released when its block ends."""

    def probe(self, target: ProbeTarget) -> AbstractAsyncContextManager[Probe]: ...


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _failed(start: float, exc: grpc.aio.AioRpcError) -> ProbeOutcome:
    return ProbeOutcome(
        ok=False,
        latency_ms=_elapsed_ms(start),
        message=f"{exc.code().name}: {exc.details()}",
        refused=exc.code() == grpc.StatusCode.UNAUTHENTICATED,
    )


class GrpcProber:
    """`grpc.health.v1.Health/Check` of the model's service, falling back to `tei.v1.Info`;
    one channel per probed process."""

    @asynccontextmanager
    async def probe(self, target: ProbeTarget) -> AsyncIterator[Probe]:
        channel = grpc.aio.insecure_channel(target.address)
        try:
            yield _GrpcProbe(channel, target.metadata)
        finally:
            with anyio.CancelScope(shield=True):
                await channel.close()


class _GrpcProbe:
    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self._channel = channel
        self._metadata = metadata
        self._service: str | None = None  # learned once: a process serves one model type

    async def check(self, within: float) -> ProbeOutcome:
        start = time.perf_counter()
        try:
            service = self._service
            if service is None:
                info = await tei_pb2_grpc.InfoStub(self._channel).Info(
                    tei_pb2.InfoRequest(), timeout=within, metadata=self._metadata
                )
                service = self._service = _SERVICE_BY_TYPE.get(info.model_type, "tei.v1.Embed")
            reply = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=within,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
                return await self._info(start, within)
            return _failed(start, exc)
        ok = reply.status == health_pb2.HealthCheckResponse.SERVING
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return ProbeOutcome(ok=ok, latency_ms=_elapsed_ms(start), message=f"{service} {status}")

    async def _info(self, start: float, within: float) -> ProbeOutcome:
        try:
            await tei_pb2_grpc.InfoStub(self._channel).Info(
                tei_pb2.InfoRequest(), timeout=within, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            return _failed(start, exc)
        return ProbeOutcome(ok=True, latency_ms=_elapsed_ms(start), message="tei.v1.Info OK")


class HttpProber:
    """`GET /health` on TEI's HTTP build: 200 means the model answers. One client (its
    connection pool) serves every probe; `aclose` releases it."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient()

    @asynccontextmanager
    async def probe(self, target: ProbeTarget) -> AsyncIterator[Probe]:
        yield _HttpProbe(self._client, f"http://{target.address}/health", dict(target.metadata))

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpProbe:
    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self._client = client
        self._url = url
        self._headers = headers

    async def check(self, within: float) -> ProbeOutcome:
        start = time.perf_counter()
        try:
            response = await self._client.get(self._url, timeout=within, headers=self._headers)
        except httpx.HTTPError as exc:
            return ProbeOutcome(
                ok=False, latency_ms=_elapsed_ms(start), message=f"{type(exc).__name__}: {exc}"
            )
        ok = response.status_code == 200
        return ProbeOutcome(
            ok=ok,
            latency_ms=_elapsed_ms(start),
            message=f"GET /health {response.status_code}",
            refused=response.status_code == 401,
        )


def make_prober(protocol: str) -> GrpcProber | HttpProber:
    return HttpProber() if protocol == "http" else GrpcProber()


async def probe_forever(
    prober: Prober,
    target: ProbeTarget,
    *,
    interval: float,
    within: float,
    started: Callable[[], bool],
    report: Callable[[ProbeOutcome], None],
) -> None:
    """Probe one process until cancelled: every `STARTUP_PERIOD` until `started()` (so Ready
    comes quickly), then every `interval`. A probe that overruns `within` is a failure, and so
    is one that raises (a stray cancellation included): whatever a probe does, it reports an
    outcome and the loop goes on. One process's probes never wait for another's (each has its
    own task)."""
    async with prober.probe(target) as probe:
        while True:
            outcome = await _check(probe, within)
            report(outcome)
            await anyio.sleep(interval if started() else min(interval, STARTUP_PERIOD))


async def _check(probe: Probe, within: float) -> ProbeOutcome:
    start = time.perf_counter()
    with scoped(anyio.move_on_after(within + 1.0)):
        try:
            return await probe.check(within)
        except BaseException as exc:
            if not stray(exc):
                raise
            log.warning("probe failed unexpectedly", exc_info=exc)
            return ProbeOutcome(
                ok=False, latency_ms=_elapsed_ms(start), message=f"probe error: {exc!r}"
            )
    return ProbeOutcome(
        ok=False, latency_ms=(within + 1.0) * 1000, message=f"no answer within {within:g}s"
    )
