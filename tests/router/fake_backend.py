"""An in-process tei.v1 server that records what reached it.

Used where a test must see the backend's side of a call (metadata, deadlines, cancellation)
or needs a status the engine does not produce. Inputs starting with "fail:" are refused with
RESOURCE_EXHAUSTED, inputs starting with "slow" wait until cancelled, inputs starting with
"hold" wait until the test sets `recorder.release` (then answer).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc


def vector(text: str, dim: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [digest[i % len(digest)] / 255.0 for i in range(dim)]


class Recorder:
    def __init__(self) -> None:
        self.calls = 0
        self.metadata: list[dict[str, str]] = []
        self.time_remaining: list[float | None] = []
        self.cancelled = anyio.Event()
        self.slow_started = anyio.Event()
        self.held = 0  # "hold" calls waiting for `release`
        self.release = anyio.Event()


class FakeEmbed(tei_pb2_grpc.EmbedServicer):
    def __init__(self, recorder: Recorder, dim: int) -> None:
        self.recorder = recorder
        self.dim = dim

    async def _answer(self, request: Any, context: Any) -> tei_pb2.EmbedResponse:
        self.recorder.calls += 1
        self.recorder.metadata.append(dict(context.invocation_metadata()))
        self.recorder.time_remaining.append(context.time_remaining())
        if request.inputs.startswith("fail:"):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "model is overloaded")
        if request.inputs.startswith("hold"):
            self.recorder.held += 1
            await self.recorder.release.wait()
        if request.inputs.startswith("slow"):
            self.recorder.slow_started.set()
            try:
                await anyio.sleep_forever()
            finally:
                self.recorder.cancelled.set()
        return tei_pb2.EmbedResponse(embeddings=vector(request.inputs, self.dim))

    async def Embed(self, request: Any, context: Any) -> tei_pb2.EmbedResponse:
        return await self._answer(request, context)

    async def EmbedStream(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[tei_pb2.EmbedResponse]:
        try:
            async for request in requests:
                yield await self._answer(request, context)
        finally:
            if context.cancelled():
                self.recorder.cancelled.set()

    async def EmbedSparseStream(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[tei_pb2.EmbedSparseResponse]:
        async for request in requests:
            if request.inputs.startswith("fail:"):
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "model is overloaded")
            size = len(request.inputs)
            yield tei_pb2.EmbedSparseResponse(
                sparse_embeddings=[
                    tei_pb2.SparseValue(index=size, value=1.0),
                    tei_pb2.SparseValue(index=size + 1, value=0.5),
                ]
            )


class FakeInfo(tei_pb2_grpc.InfoServicer):
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    async def Info(self, request: Any, context: Any) -> tei_pb2.InfoResponse:
        return tei_pb2.InfoResponse(version="fake", model_id=self.model_id)


class FakeRerank(tei_pb2_grpc.RerankServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def RerankStream(self, requests: AsyncIterator[Any], context: Any) -> Any:
        self.recorder.calls += 1
        ranks = [
            tei_pb2.Rank(index=i, score=float(len(r.text)), text=r.text if r.return_text else None)
            async for i, r in _enum(requests)
        ]
        return tei_pb2.RerankResponse(ranks=ranks)


async def _enum(items: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1


@asynccontextmanager
async def fake_backend(
    model_id: str = "fake/model", dim: int = 8, port: int = 0, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[int, Recorder]]:
    """Serve the fake on `host` (port 0 picks one); yields (port, recorder)."""
    recorder = Recorder()
    server = grpc.aio.server()
    tei_pb2_grpc.add_EmbedServicer_to_server(FakeEmbed(recorder, dim), server)  # type: ignore[abstract]
    tei_pb2_grpc.add_InfoServicer_to_server(FakeInfo(model_id), server)
    tei_pb2_grpc.add_RerankServicer_to_server(FakeRerank(recorder), server)  # type: ignore[abstract]
    bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    await server.start()
    try:
        yield bound, recorder
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop(None)
