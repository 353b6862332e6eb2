"""Router overhead: the same engine process called directly and through the router.

Run with `.venv/bin/python -m bench.router_overhead` (about two minutes). It starts one
built-in engine with the real all-MiniLM-L6-v2 model (ONNX) and one router in a separate
process (so the router does not share this process's event loop or GIL with the client),
then runs each scenario against both, alternating rounds so drift hits both sides alike:
unary Embed (short, medium, long text), concurrent unary (5, 10, 20 in flight), EmbedStream
(batches of 5, 10, 20), EmbedArrow (100 and 1000 texts; direct = the client's own
EmbedStream), and the plain tei.v1 passthrough. Overhead is router p50 / direct p50 - 1.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import anyio
import grpc
import pyarrow as pa

from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc
from tei_reconciler.router import serve_router
from tei_reconciler.routing import Endpoint, RoutingTable
from tei_reconciler.settings import Settings

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
INSTANCE = "minilm"
SHORT = "Hello world"
MEDIUM = "The quick brown fox jumps over the lazy dog near the riverbank at dawn. " * 2
LONG = "Embedding servers turn text into vectors that capture meaning for search. " * 8
DEADLINE = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(port: int, process: subprocess.Popen[bytes], secs: float = 120.0) -> None:
    deadline = time.monotonic() + secs
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode}")
            try:
                tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=2)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                with suppress(grpc.FutureTimeoutError):
                    grpc.channel_ready_future(channel).result(timeout=0.5)
            else:
                return


def serve_router_process(router_port: int, engine_port: int) -> None:
    """Child mode: one router with one Ready instance, until killed."""
    table = RoutingTable(default_instance=INSTANCE)
    table.update(
        [
            Endpoint(
                name=INSTANCE,
                model_id=MODEL,
                host="127.0.0.1",
                port=engine_port,
                ready=True,
                phase=Phase.RUNNING,
            )
        ]
    )

    async def main() -> None:
        await serve_router(table, Settings(grpc_host="127.0.0.1", grpc_port=router_port))

    anyio.run(main, backend="asyncio")


@dataclass
class Sample:
    latencies: list[float]
    wall: float
    operations: int

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def throughput(self) -> float:
        return self.operations / self.wall


Op = Callable[[], Awaitable[None]]


async def measure(op: Op, count: int, concurrency: int = 1) -> Sample:
    latencies: list[float] = []
    remaining = [count]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return Sample(latencies, time.perf_counter() - started, count)


async def compare(
    name: str, direct: Op, routed: Op, count: int, rounds: int, concurrency: int = 1
) -> tuple[str, Sample, Sample]:
    """`rounds` x `count` calls on each side, alternating in slices of about a tenth of a
    round (at least `concurrency` calls), so load drift on the shared machine hits both alike."""
    for op in (direct, routed):  # warm both paths
        await measure(op, max(2, concurrency), concurrency)
    a = Sample([], 0.0, 0)
    b = Sample([], 0.0, 0)
    slice_ = max(concurrency, count // 10, 1)
    for _ in range(rounds * max(1, count // slice_)):
        for side, op in ((a, direct), (b, routed)):
            sample = await measure(op, slice_, concurrency)
            side.latencies += sample.latencies
            side.wall += sample.wall
            side.operations += sample.operations
    print(f"  {name}: done", file=sys.stderr, flush=True)
    return name, a, b


def arrow_ipc(texts: list[str]) -> bytes:
    schema = pa.schema([pa.field("text", pa.string())])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array(texts)], schema=schema))
    data: bytes = sink.getvalue().to_pybytes()
    return data


async def run(engine_port: int, router_port: int, scale: float) -> None:
    def n(count: int) -> int:
        return max(2, int(count * scale))

    target = mux.Target(instance_name=INSTANCE)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{engine_port}") as direct_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{router_port}") as router_channel,
    ):
        direct = tei_pb2_grpc.EmbedStub(direct_channel)
        plain = tei_pb2_grpc.EmbedStub(router_channel)
        routed = multiplexer_pb2_grpc.TeiMultiplexerStub(router_channel)

        def unary_pair(text: str) -> tuple[Op, Op]:
            request = tei_pb2.EmbedRequest(inputs=text)
            wrapped = mux.EmbedRequest(target=target, request=request)

            async def d() -> None:
                await direct.Embed(request, timeout=DEADLINE)

            async def r() -> None:
                await routed.Embed(wrapped, timeout=DEADLINE)

            return d, r

        def stream_pair(batch: int) -> tuple[Op, Op]:
            requests = [tei_pb2.EmbedRequest(inputs=f"{MEDIUM} {i}") for i in range(batch)]

            async def d() -> None:
                async def feed() -> AsyncIterator[tei_pb2.EmbedRequest]:
                    for request in requests:
                        yield request

                _ = [x async for x in direct.EmbedStream(feed(), timeout=DEADLINE)]

            async def r() -> None:
                async def feed() -> AsyncIterator[mux.EmbedRequest]:
                    for i, request in enumerate(requests):
                        yield mux.EmbedRequest(target=target if i == 0 else None, request=request)

                _ = [x async for x in routed.EmbedStream(feed(), timeout=DEADLINE)]

            return d, r

        def arrow_pair(count: int) -> tuple[Op, Op]:
            texts = [f"{SHORT} number {i}" for i in range(count)]
            payload = mux.EmbedArrowRequest(target=target, arrow_ipc=arrow_ipc(texts))

            async def d() -> None:
                async def feed() -> AsyncIterator[tei_pb2.EmbedRequest]:
                    for text in texts:
                        yield tei_pb2.EmbedRequest(inputs=text, normalize=False)

                _ = [x async for x in direct.EmbedStream(feed(), timeout=DEADLINE)]

            async def r() -> None:
                await routed.EmbedArrow(payload, timeout=DEADLINE)

            return d, r

        plain_request = tei_pb2.EmbedRequest(inputs=MEDIUM)

        async def plain_direct() -> None:
            await direct.Embed(plain_request, timeout=DEADLINE)

        async def plain_routed() -> None:
            await plain.Embed(
                plain_request, timeout=DEADLINE, metadata=(("x-tei-instance", INSTANCE),)
            )

        results = []
        for label, text in (("short", SHORT), ("medium", MEDIUM), ("long", LONG)):
            results.append(await compare(f"unary {label}", *unary_pair(text), n(100), 3))
        for concurrency in (5, 10, 20):
            results.append(
                await compare(
                    f"concurrent {concurrency}",
                    *unary_pair(MEDIUM),
                    n(40 * concurrency // 5),
                    3,
                    concurrency,
                )
            )
        for batch in (5, 10, 20):
            results.append(await compare(f"stream batch {batch}", *stream_pair(batch), n(30), 3))
        results.append(await compare("arrow 100", *arrow_pair(100), n(6), 2))
        results.append(await compare("arrow 1000", *arrow_pair(1000), n(3), 2))
        results.append(await compare("plain tei.v1 unary", plain_direct, plain_routed, n(100), 3))
    report(results)


def report(results: list[tuple[str, Sample, Sample]]) -> None:
    header = (
        f"{'scenario':<20} {'direct p50':>11} {'router p50':>11} {'direct p99':>11} "
        f"{'router p99':>11} {'direct op/s':>11} {'router op/s':>11} {'overhead':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, d, r in results:
        overhead = r.p(0.5) / d.p(0.5) - 1
        print(
            f"{name:<20} {d.p(0.5) * 1e3:>9.2f}ms {r.p(0.5) * 1e3:>9.2f}ms "
            f"{d.p(0.99) * 1e3:>9.2f}ms {r.p(0.99) * 1e3:>9.2f}ms "
            f"{d.throughput:>11.1f} {r.throughput:>11.1f} {overhead:>+8.1%}"
        )
    print(f"\n(median of per-call latency; {os.cpu_count()} CPUs; p50 ratio as overhead)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router_overhead")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply iteration counts")
    parser.add_argument("--model-id", default=MODEL)
    parser.add_argument("--serve-router", nargs=2, type=int, metavar=("PORT", "ENGINE_PORT"))
    args = parser.parse_args(argv)
    if args.serve_router:
        serve_router_process(*args.serve_router)
        return 0
    engine_port, router_port = free_port(), free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "tei_reconciler", "engine", "--model-id", args.model_id,
         "--hostname", "127.0.0.1", "--port", str(engine_port),
         "--prometheus-port", str(free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    router = subprocess.Popen(
        [sys.executable, "-m", "bench.router_overhead", "--serve-router", str(router_port),
         str(engine_port)],
    )  # fmt: skip
    try:
        wait_ready(engine_port, engine)
        wait_ready(router_port, router)
        print(f"engine {args.model_id} on :{engine_port}, router on :{router_port}\n")
        anyio.run(run, engine_port, router_port, args.scale, backend="asyncio")
    finally:
        for process in (router, engine):
            process.kill()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
