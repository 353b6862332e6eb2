"""Continuous load through the router: several clients calling one instance in a loop, each
call's start, end and status kept, for tests that must show what users' traffic saw while the
reconciler changed something.

`traffic(target, instance=...)` runs the clients for the duration of its block; `Load.calls`
is every finished call. Nothing waits by sleeping: `more(n)` polls for n more answers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.waiting import eventually

CALL_TIMEOUT = 20.0  # a call's deadline: longer than any drain the tests wait out
_AFTER_FAILURE = 0.01  # a client that was refused calls again this much later (no busy loop)


@dataclass(frozen=True)
class Call:
    began: float  # time.monotonic() when the client sent it
    ended: float
    code: str  # "OK", or the gRPC status code's name


@dataclass
class Load:
    calls: list[Call] = field(default_factory=list)
    sent: int = 0  # calls sent so far (finished or not)

    def failed(self) -> list[Call]:
        return [c for c in self.calls if c.code != "OK"]

    def answered(self) -> int:
        return sum(1 for c in self.calls if c.code == "OK")

    async def sent_next(self) -> None:
        """Return once another call has been sent: one is surely in flight now."""
        target = self.sent + 1
        await eventually(lambda: self.sent >= target, what="a call to be sent")

    async def more(self, count: int, *, what: str = "calls") -> None:
        """Return once `count` more calls were answered OK than now."""
        target = self.answered() + count
        await eventually(lambda: self.answered() >= target, what=f"{count} more {what}")


async def _client(target: str, instance: str, load: Load, number: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        metadata = (("x-tei-instance", instance),)
        sent = 0
        while True:
            began = time.monotonic()
            request = tei_pb2.EmbedRequest(inputs=f"client {number} call {sent}")
            load.sent += 1
            try:
                await stub.Embed(request, metadata=metadata, timeout=CALL_TIMEOUT)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            load.calls.append(Call(began=began, ended=time.monotonic(), code=code))
            sent += 1
            if code != "OK":
                await anyio.sleep(_AFTER_FAILURE)


@asynccontextmanager
async def traffic(target: str, *, instance: str, clients: int = 4) -> AsyncIterator[Load]:
    """`clients` clients calling `instance` through the router at `target` in a loop."""
    load = Load()
    async with anyio.create_task_group() as tg:
        for number in range(clients):
            tg.start_soon(_client, target, instance, load, number)
        try:
            yield load
        finally:
            tg.cancel_scope.cancel()
