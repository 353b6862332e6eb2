"""What the gRPC port costs: the same engine called directly and through each data plane.

Run with `.venv/bin/python -m bench.router_overhead` (a few minutes). It starts one built-in
engine with the real all-MiniLM-L6-v2 model (ONNX) and, each in its own processes, the
grpcio data plane (the Python router alone), the Envoy data plane (`tei-reconciler run`'s
composition: Envoy programmed over ADS, the Python router behind it) and a stock Envoy with a
static one-route configuration (see `bench/dataplanes.py`). Each scenario alternates the paths
in small slices, so load drift on a shared machine hits all of them alike, and reports p50 per
path and the proxy's CPU time per call (its processes' user + system time over the calls).

Scenarios: plain tei.v1 unary (short, medium, long text), 20 in flight, EmbedStream of 20;
the multiplexer (unary, EmbedArrow of 100 texts), which only the Python router serves.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import grpc
import pyarrow as pa

from bench.dataplanes import INSTANCE, Path_, started
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SHORT = "Hello world"
MEDIUM = "The quick brown fox jumps over the lazy dog near the riverbank at dawn. " * 2
LONG = "Embedding servers turn text into vectors that capture meaning for search. " * 8
DEADLINE = 120.0
ROUTING = (("x-tei-instance", INSTANCE),)


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0  # proxy CPU seconds over these calls
    operations: int = 0

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def cpu_per_op_ms(self) -> float:
        return self.cpu / max(self.operations, 1) * 1e3


Op = Callable[[], Awaitable[None]]


async def measure(op: Op, count: int, concurrency: int, into: Sample, path: Path_) -> None:
    remaining = [count]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            began = time.perf_counter()
            await op()
            into.latencies.append(time.perf_counter() - began)

    cpu = path.cpu_seconds()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    into.cpu += path.cpu_seconds() - cpu
    into.operations += count


async def compare(
    name: str, ops: dict[str, tuple[Path_, Op]], count: int, rounds: int, concurrency: int = 1
) -> tuple[str, dict[str, Sample]]:
    """`rounds` x `count` calls per path, alternating in slices of a tenth of a round."""
    for path, op in ops.values():  # warm every path
        await measure(op, max(4, concurrency), concurrency, Sample(), path)
    samples = {kind: Sample() for kind in ops}
    slice_ = max(concurrency, count // 10, 1)
    for _ in range(rounds * max(1, count // slice_)):
        for kind, (path, op) in ops.items():
            await measure(op, slice_, concurrency, samples[kind], path)
    print(f"  {name}: done", file=sys.stderr, flush=True)
    return name, samples


def arrow_ipc(texts: list[str]) -> bytes:
    schema = pa.schema([pa.field("text", pa.string())])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array(texts)], schema=schema))
    data: bytes = sink.getvalue().to_pybytes()
    return data


async def run(paths: dict[str, Path_], scale: float) -> list[tuple[str, dict[str, Sample]]]:
    def n(count: int) -> int:
        return max(4, int(count * scale))

    channels = {kind: grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for kind, p in paths.items()}
    try:
        embed = {kind: tei_pb2_grpc.EmbedStub(c) for kind, c in channels.items()}
        mux_stubs = {
            kind: multiplexer_pb2_grpc.TeiMultiplexerStub(c) for kind, c in channels.items()
        }

        def unary(text: str) -> dict[str, tuple[Path_, Op]]:
            request = tei_pb2.EmbedRequest(inputs=text)

            def op(stub: tei_pb2_grpc.EmbedStub, routed: bool) -> Op:
                async def call() -> None:
                    await stub.Embed(request, timeout=DEADLINE, metadata=ROUTING if routed else ())

                return call

            return {k: (paths[k], op(embed[k], k != "direct")) for k in paths}

        def stream(batch: int) -> dict[str, tuple[Path_, Op]]:
            requests = [tei_pb2.EmbedRequest(inputs=f"{MEDIUM} {i}") for i in range(batch)]

            def op(stub: tei_pb2_grpc.EmbedStub, routed: bool) -> Op:
                async def call() -> None:
                    async def feed() -> AsyncIterator[tei_pb2.EmbedRequest]:
                        for request in requests:
                            yield request

                    metadata = ROUTING if routed else ()
                    _ = [
                        x
                        async for x in stub.EmbedStream(feed(), timeout=DEADLINE, metadata=metadata)
                    ]

                return call

            return {k: (paths[k], op(embed[k], k != "direct")) for k in paths}

        target = mux.Target(instance_name=INSTANCE)
        mux_request = mux.EmbedRequest(target=target, request=tei_pb2.EmbedRequest(inputs=MEDIUM))
        texts = [f"{SHORT} number {i}" for i in range(100)]
        arrow = mux.EmbedArrowRequest(target=target, arrow_ipc=arrow_ipc(texts))

        def multiplexed(kinds: tuple[str, ...], arrow_call: bool) -> dict[str, tuple[Path_, Op]]:
            def op(stub: multiplexer_pb2_grpc.TeiMultiplexerStub) -> Op:
                async def call() -> None:
                    if arrow_call:
                        await stub.EmbedArrow(arrow, timeout=DEADLINE)
                    else:
                        await stub.Embed(mux_request, timeout=DEADLINE)

                return call

            return {k: (paths[k], op(mux_stubs[k])) for k in kinds if k in paths}

        results = []
        for label, text in (("short", SHORT), ("medium", MEDIUM), ("long", LONG)):
            results.append(await compare(f"unary {label}", unary(text), n(100), 3))
        results.append(await compare("20 in flight", unary(MEDIUM), n(200), 2, concurrency=20))
        results.append(await compare("EmbedStream x20", stream(20), n(20), 3))
        results.append(
            await compare("multiplexer unary", multiplexed(("grpcio", "envoy"), False), n(100), 3)
        )
        results.append(
            await compare("EmbedArrow 100", multiplexed(("grpcio", "envoy"), True), n(6), 2)
        )
        return results
    finally:
        for channel in channels.values():
            await channel.close()


def report(results: list[tuple[str, dict[str, Sample]]]) -> None:
    kinds = ("direct", "grpcio", "envoy", "stock")
    print("| scenario | " + " | ".join(f"{k} p50" for k in kinds) + " | "
          + " | ".join(f"{k} CPU/call" for k in kinds[1:]) + " |")  # fmt: skip
    print("|---" * (len(kinds) * 2) + "|")
    for name, samples in results:
        p50 = [f"{samples[k].p(0.5) * 1e3:.2f} ms" if k in samples else "-" for k in kinds]
        cpu = [f"{samples[k].cpu_per_op_ms:.3f} ms" if k in samples else "-" for k in kinds[1:]]
        print(f"| {name} | " + " | ".join(p50) + " | " + " | ".join(cpu) + " |")
    print()
    for name, samples in results:
        if "stock" in samples and "envoy" in samples and "direct" in samples:
            direct = samples["direct"].p(0.5)
            envoy, stock = samples["envoy"], samples["stock"]
            print(
                f"{name}: overhead over direct p50 envoy {(envoy.p(0.5) - direct) * 1e3:+.3f} ms,"
                f" stock {(stock.p(0.5) - direct) * 1e3:+.3f} ms; envoy p50 / stock p50 "
                f"{envoy.p(0.5) / stock.p(0.5) - 1:+.1%}, CPU/call "
                f"{envoy.cpu_per_op_ms / max(stock.cpu_per_op_ms, 1e-9) - 1:+.1%}"
            )
        elif "grpcio" in samples and "envoy" in samples:
            delta = (samples["envoy"].p(0.5) - samples["grpcio"].p(0.5)) * 1e3
            print(f"{name}: envoy - grpcio p50 {delta:+.3f} ms")
    print(f"\n({os.cpu_count()} CPUs; p50 of per-call latency; CPU = the proxy's processes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router_overhead")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply iteration counts")
    parser.add_argument("--model-id", default=MODEL)
    args = parser.parse_args(argv)
    with started(args.model_id) as paths:
        ports = ", ".join(f"{k} :{p.port}" for k, p in paths.items())
        print(f"engine {args.model_id}; {ports}\n", flush=True)
        results = anyio.run(run, paths, args.scale, backend="asyncio")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
