"""Traffic through the router while a test changes something: clients calling `Embed` on one
instance (by its `x-tei-instance` key) back to back, each call's start, end and status kept,
so the test can show what users' traffic saw meanwhile.

`traffic(target, instance=...)` runs the clients for the duration of its block in an async
test; `background_traffic(...)` does the same for a synchronous test, on an event loop of its
own in a thread. Either yields the `Load`: `calls` is every finished call. Nothing waits by
sleeping: `more(n)` polls for n more answers.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import anyio
import anyio.from_thread
import grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.waiting import DEADLINE, eventually, wait_until

_AFTER_FAILURE = 0.01  # a client that was refused calls again this much later (no busy loop)


@dataclass(frozen=True)
class Call:
    began: float  # time.monotonic() when the client sent it
    ended: float
    code: str  # "OK"; "EMPTY" for an answer without an embedding; else the gRPC code's name
    details: str = ""  # the error's message


@dataclass
class Load:
    calls: list[Call] = field(default_factory=list)
    sent: int = 0  # calls sent so far (finished or not)

    def failed(self) -> list[Call]:
        return [c for c in self.calls if c.code != "OK"]

    def answered(self) -> int:
        return sum(1 for c in self.calls if c.code == "OK")

    def summary(self) -> str:
        """`"812 ok, failed {'UNAVAILABLE': 2}: {'UNAVAILABLE': 'first message'}"`."""
        failed = self.failed()
        first = {c.code: c.details for c in reversed(failed)}
        return f"{self.answered()} ok, failed {dict(Counter(c.code for c in failed))}: {first}"

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
            details = ""
            try:
                reply = await stub.Embed(request, metadata=metadata, timeout=DEADLINE)
                code = "OK" if reply.embeddings else "EMPTY"
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code().name, exc.details() or ""
            load.calls.append(Call(began=began, ended=time.monotonic(), code=code, details=details))
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


@contextmanager
def background_traffic(target: str, *, instance: str, clients: int = 1) -> Iterator[Load]:
    """`traffic` for a synchronous test; the block starts once a first call has finished."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            traffic(target, instance=instance, clients=clients)
        ) as load,
    ):
        wait_until(lambda: load.calls, f"a first call to {instance}")
        yield load
