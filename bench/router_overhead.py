"""What the gRPC port costs: the same engine called directly and through each data plane.

Run with `.venv/bin/python -m bench.router_overhead` (a few minutes). It starts one built-in
engine with the real all-MiniLM-L6-v2 model (ONNX) and, each in its own processes, the
grpcio data plane (the Python router alone), the Envoy data plane (`tei-reconciler run`'s
composition: Envoy programmed over ADS, the Python router behind it) and a stock Envoy with a
static one-route configuration (see `bench/dataplanes.py`). Each scenario runs `--rounds`
rounds; within a round the paths take turns in small slices, so load drift on a shared machine
hits all of them alike (`bench/rounds.py`). Per path it reports the median of the per-round
p50s with their spread, the overhead against direct and the proxy's CPU time per call; then
the Envoy data plane against stock Envoy (ratios taken within each round) and the multiplexer
on the Envoy data plane against grpcio, next to the targets.

Scenarios: plain tei.v1 unary (short, medium, long text), 20 in flight, EmbedStream of 20;
the multiplexer (unary, EmbedStream of 20, EmbedArrow of 100 texts), on the two data planes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import grpc
import pyarrow as pa

from bench.dataplanes import INSTANCE, LABELS, PATHS, Path_, started
from bench.rounds import Spread, ms, percent, rotated, signed_ms
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SHORT = "Hello world"
MEDIUM = "The quick brown fox jumps over the lazy dog near the riverbank at dawn. " * 2
LONG = "Embedding servers turn text into vectors that capture meaning for search. " * 8
DEADLINE = 120.0
ROUTING = (("x-tei-instance", INSTANCE),)
SLICES = 5  # turns per path in a round


@dataclass
class Round:
    """One path's calls in one round."""

    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0  # proxy CPU seconds over these calls
    calls: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def cpu_per_call(self) -> float:
        return self.cpu / max(self.calls, 1)


Scenario = tuple[str, dict[str, list[Round]]]  # name, path -> its rounds
Op = Callable[[], Awaitable[None]]


async def measure(op: Op, count: int, concurrency: int, into: Round, path: Path_) -> None:
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
    into.calls += count


async def compare(
    name: str,
    ops: dict[str, tuple[Path_, Op]],
    calls: int,
    rounds: int,
    concurrency: int = 1,
    slices: int = SLICES,
) -> Scenario:
    """`rounds` rounds of `calls` calls per path; within a round the paths take turns in
    `slices` slices, the order rotating from slice to slice."""
    kinds = list(ops)
    for path, op in ops.values():  # warm every path
        await measure(op, max(4, concurrency), concurrency, Round(), path)
    per_slice = max(concurrency, calls // slices, 1)
    count = max(1, calls // per_slice)
    result: dict[str, list[Round]] = {kind: [] for kind in kinds}
    for r in range(rounds):
        current = {kind: Round() for kind in kinds}
        for s in range(count):
            for kind in rotated(kinds, r * count + s):
                path, op = ops[kind]
                await measure(op, per_slice, concurrency, current[kind], path)
        for kind in kinds:
            result[kind].append(current[kind])
    print(f"  {name}: done", file=sys.stderr, flush=True)
    return name, result


def arrow_ipc(texts: list[str]) -> bytes:
    schema = pa.schema([pa.field("text", pa.string())])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array(texts)], schema=schema))
    data: bytes = sink.getvalue().to_pybytes()
    return data


async def run(paths: dict[str, Path_], scale: float, rounds: int) -> list[Scenario]:
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
        mux_stream = [
            mux.EmbedRequest(target=target, request=tei_pb2.EmbedRequest(inputs=f"{MEDIUM} {i}"))
            for i in range(20)
        ]

        def multiplexed(kinds: tuple[str, ...], kind: str) -> dict[str, tuple[Path_, Op]]:
            def op(stub: multiplexer_pb2_grpc.TeiMultiplexerStub) -> Op:
                async def call() -> None:
                    if kind == "arrow":
                        await stub.EmbedArrow(arrow, timeout=DEADLINE)
                    elif kind == "stream":

                        async def feed() -> AsyncIterator[mux.EmbedRequest]:
                            for request in mux_stream:
                                yield request

                        _ = [x async for x in stub.EmbedStream(feed(), timeout=DEADLINE)]
                    else:
                        await stub.Embed(mux_request, timeout=DEADLINE)

                return call

            return {k: (paths[k], op(mux_stubs[k])) for k in kinds if k in paths}

        both = ("grpcio", "envoy")
        return [
            await compare("unary, short text", unary(SHORT), n(60), rounds),
            await compare("unary, medium text", unary(MEDIUM), n(60), rounds),
            await compare("unary, long text", unary(LONG), n(30), rounds),
            await compare("20 in flight", unary(MEDIUM), n(200), rounds, concurrency=20),
            await compare("EmbedStream of 20", stream(20), n(10), rounds),
            await compare("multiplexer Embed", multiplexed(both, "unary"), n(60), rounds),
            await compare(
                "multiplexer EmbedStream of 20", multiplexed(both, "stream"), n(10), rounds
            ),
            await compare(
                "multiplexer EmbedArrow, 100 texts", multiplexed(both, "arrow"), n(4), rounds
            ),
        ]
    finally:
        for channel in channels.values():
            await channel.close()


def _overheads(rounds: dict[str, list[Round]], kind: str, base: str) -> list[float]:
    """Per round: `kind`'s p50 minus `base`'s p50."""
    return [a.p50 - b.p50 for a, b in zip(rounds[kind], rounds[base], strict=True)]


def _ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True) if y > 0]


def report(results: list[Scenario], rounds: int) -> None:
    print(f"Per path: the median of {rounds} per-round p50s [lowest to highest round]; "
          "overhead = p50 minus direct's p50 in the same round (median over rounds); "
          "CPU = the proxy's processes per call (median over rounds).\n")  # fmt: skip
    print("| scenario | path | p50 | overhead vs direct | proxy CPU per call |")
    print("|---|---|---|---|---|")
    for name, by_path in results:
        for kind in PATHS:
            if kind not in by_path:
                continue
            p50 = Spread.of([r.p50 for r in by_path[kind]]).text(ms)
            over = cpu = ""
            if "direct" in by_path and kind != "direct":
                over = signed_ms(Spread.of(_overheads(by_path, kind, "direct")).median)
            if kind != "direct":
                cpu = Spread.of([r.cpu_per_call for r in by_path[kind]]).text(ms)
            print(f"| {name} | {LABELS[kind]} | {p50} | {over} | {cpu} |")
    print("\nEnvoy data plane against stock Envoy, plain tei.v1 (target: p50 overhead and CPU "
          "per call within 10 %; ratios per round, then their median [range]):\n")  # fmt: skip
    print("| scenario | p50 ratio | overhead: data plane / stock | CPU per call ratio |")
    print("|---|---|---|---|")
    for name, by_path in results:
        if not {"direct", "envoy", "stock"} <= by_path.keys():
            continue
        envoy, stock = by_path["envoy"], by_path["stock"]
        p50_ratio = Spread.of(_ratios([r.p50 for r in envoy], [r.p50 for r in stock]))
        over_envoy = statistics.median(_overheads(by_path, "envoy", "direct"))
        over_stock = statistics.median(_overheads(by_path, "stock", "direct"))
        gap = Spread.of(_overheads(by_path, "envoy", "stock")).median
        overheads = f"{signed_ms(over_envoy)} / {signed_ms(over_stock)} ({signed_ms(gap)})"
        cpu_ratio = Spread.of(
            _ratios([r.cpu_per_call for r in envoy], [r.cpu_per_call for r in stock])
        )
        print(f"| {name} | {p50_ratio.text(percent)} | {overheads} | {cpu_ratio.text(percent)} |")
    print("\nMultiplexer, Envoy data plane against grpcio (target: at most +0.3 ms p50):\n")
    print("| scenario | p50 difference | CPU per call ratio |")
    print("|---|---|---|")
    for name, by_path in results:
        if "stock" in by_path or not {"grpcio", "envoy"} <= by_path.keys():
            continue
        mux_gap = Spread.of(_overheads(by_path, "envoy", "grpcio"))
        mux_cpu = Spread.of(
            _ratios(
                [r.cpu_per_call for r in by_path["envoy"]],
                [r.cpu_per_call for r in by_path["grpcio"]],
            )
        )
        print(f"| {name} | {mux_gap.text(signed_ms)} | {mux_cpu.text(percent)} |")
    print(f"\n({os.cpu_count()} CPUs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router_overhead")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model-id", default=MODEL)
    args = parser.parse_args(argv)
    with started(args.model_id) as paths:
        ports = ", ".join(f"{k} :{p.port}" for k, p in paths.items())
        print(f"engine {args.model_id}; {ports}\n", flush=True)
        results = anyio.run(run, paths, args.scale, args.rounds, backend="asyncio")
    report(results, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
