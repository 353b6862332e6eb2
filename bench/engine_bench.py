"""Latency and throughput of the built-in engine's ONNX backend over direct gRPC.

Starts two engines with the real all-MiniLM-L6-v2 model, one with dynamic batching and one
without (`--disable-dynamic-batching`), and measures for each:

- single: one text per request, requests one after another (latency of a lone client);
- batch-32: 32 concurrent unary Embed calls (a client batch, as TEI's gRPC has no batch RPC).

Run with `python -m bench.engine_bench [--threads N] [--rounds N]`; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    f"Sentence {i}: the quick brown fox jumps over the lazy dog near river bank {i % 7}."
    for i in range(32)
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def engine(threads: int, *, batching: bool) -> Iterator[str]:
    port = _free_port()
    argv = [
        sys.executable, "-m", "tei_reconciler", "engine", "--model-id", MODEL,
        "--hostname", "127.0.0.1", "--port", str(port),
        "--prometheus-port", str(_free_port()), "--inference-threads", str(threads),
        *([] if batching else ["--disable-dynamic-batching"]),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"engine exited:\n{log.read().decode()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("engine did not start in 120 s") from None
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _measure(target: str, rounds: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        for text in TEXTS[:4]:  # warm the connection and the session
            await stub.Embed(tei_pb2.EmbedRequest(inputs=text))
        single: list[float] = []
        for i in range(rounds * 5):
            start = time.perf_counter()
            await stub.Embed(tei_pb2.EmbedRequest(inputs=TEXTS[i % len(TEXTS)]))
            single.append(time.perf_counter() - start)
        batch: list[float] = []
        for _ in range(rounds):
            start = time.perf_counter()
            await asyncio.gather(*(stub.Embed(tei_pb2.EmbedRequest(inputs=t)) for t in TEXTS))
            batch.append(time.perf_counter() - start)
    return {
        "single_p50_ms": statistics.median(single) * 1000,
        "single_p95_ms": statistics.quantiles(single, n=20)[18] * 1000,
        "single_rps": len(single) / sum(single),
        "batch_p50_ms": statistics.median(batch) * 1000,
        "batch_texts_per_s": len(TEXTS) * len(batch) / sum(batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for batching in (True, False):
        with engine(args.threads, batching=batching) as target:
            rows.append((batching, asyncio.run(_measure(target, args.rounds))))
    print(f"ONNX backend ({MODEL}, int8), {args.threads} inference threads, gRPC unary Embed")
    print()
    print("| dynamic batching | single p50 ms | single p95 ms | single req/s "
          "| batch-32 p50 ms | batch-32 texts/s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for batching, r in rows:
        print(
            f"| {'on' if batching else 'off'} | {r['single_p50_ms']:.1f} "
            f"| {r['single_p95_ms']:.1f} | {r['single_rps']:.0f} "
            f"| {r['batch_p50_ms']:.1f} | {r['batch_texts_per_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
