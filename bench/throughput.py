"""Throughput and CPU per call of each data plane, driven by h2load (a C HTTP/2 load
generator, Debian's nghttp2-client) so the client is never the bottleneck.

Run with `.venv/bin/python -m bench.throughput`. One cheap engine (`hash/384`: the backend
costs little, so the proxy's own cost shows) and the four paths of `bench/dataplanes.py`;
h2load sends gRPC unary `tei.v1.Embed/Embed` calls (a framed protobuf body, `content-type:
application/grpc`, `te: trailers`, routed by `x-tei-instance`) with `-c` connections and `-m`
streams each, and `tei.v1.Embed/EmbedStream` calls of 20 messages each (a twentieth as many,
4 streams per connection). Each round runs every call on every path, the paths of a call
back to back in an order that rotates from round to round (`bench/rounds.py`); the report has
per path the median calls/s over the rounds with their spread, its share of direct, and the
proxy's CPU time per call (its processes' CPU time over the run, divided by the calls), then
the Envoy data plane against stock Envoy per round. The multiplexer's Embed and EmbedStream of
20 are measured the same way on the two paths that serve it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.dataplanes import INSTANCE, LABELS, Path_, started
from bench.rounds import Spread, ms, percent, rotated
from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux

#: name, URL path, body, the paths that serve it, (calls, streams per connection)
Call = tuple[str, str, Path, tuple[str, ...], tuple[int, int]]
_RATE = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
_DONE = re.compile(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed")


def framed(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load(
    h2load_bin: str,
    path: Path_,
    url_path: str,
    body: Path,
    *,
    calls: int,
    clients: int,
    streams: int,
    routed: bool,
) -> tuple[float, float]:
    """(requests per second, proxy CPU seconds per call) of one h2load run."""
    argv = [
        h2load_bin, "-n", str(calls), "-c", str(clients), "-m", str(streams), "-d", str(body),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
    ]  # fmt: skip
    if routed:
        argv += ["-H", f"x-tei-instance: {INSTANCE}"]
    argv.append(f"http://127.0.0.1:{path.port}{url_path}")
    cpu = path.cpu_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600).stdout
    used = path.cpu_seconds() - cpu
    rate, done = _RATE.search(out), _DONE.search(out)
    if rate is None or done is None or int(done.group(2)) > 0:
        raise SystemExit(f"h2load against {path.name} failed:\n{out}")
    return float(rate.group(1)), used / calls


def routed(call: str, kind: str) -> bool:
    """Plain tei.v1 calls through a proxy carry `x-tei-instance`; the multiplexer's name
    their instance in the message."""
    return kind != "direct" and call.startswith("tei.v1")


def report(
    results: dict[tuple[str, str], list[tuple[float, float]]],
    calls: list[Call],
    args: argparse.Namespace,
) -> None:
    print(
        f"h2load -c {args.clients}, unary -n {args.calls} -m {args.streams}, engine "
        f"{args.model_id}; median of {args.rounds} rounds [lowest to highest]; "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| call | path | calls/s | vs direct | proxy CPU per call |")
    print("|---|---|---|---|---|")
    for name, _, _, kinds, _ in calls:
        direct = results.get((name, "direct"))
        for kind in kinds:
            rounds = results[(name, kind)]
            rate = Spread.of([r for r, _ in rounds])
            share = (
                ""
                if direct is None
                else f"{rate.median / Spread.of([r for r, _ in direct]).median:.0%}"
            )
            cpu = "" if kind == "direct" else Spread.of([c for _, c in rounds]).text(ms)
            print(
                f"| {name} | {LABELS[kind]} | {rate.text(lambda v: f'{v:.0f}')} | {share} | {cpu} |"
            )
    print("\nPer round, the Envoy data plane against stock Envoy (plain tei.v1) and against grpcio "
          "(the multiplexer), then the median [range]:\n")  # fmt: skip
    print("| call | against | calls/s ratio | CPU per call ratio |")
    print("|---|---|---|---|")
    for name, _, _, kinds, _ in calls:
        other = "stock" if "stock" in kinds else "grpcio"
        ours, theirs = results[(name, "envoy")], results[(name, other)]
        rates = Spread.of([a[0] / b[0] for a, b in zip(ours, theirs, strict=True)])
        cpus = Spread.of([a[1] / b[1] for a, b in zip(ours, theirs, strict=True)])
        print(f"| {name} | {LABELS[other]} | {rates.text(percent)} | {cpus.text(percent)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-id", default="hash/384")
    args = parser.parse_args(argv)
    binary = shutil.which("h2load")
    if binary is None:
        print("skipped: h2load not found (Debian: apt-get install nghttp2-client)")
        return 0
    with tempfile.TemporaryDirectory() as tmp, started(args.model_id) as paths:
        plain = Path(tmp) / "embed.bin"
        plain.write_bytes(framed(tei_pb2.EmbedRequest(inputs="Hello world").SerializeToString()))
        wrapped = Path(tmp) / "mux.bin"
        request = mux.EmbedRequest(
            target=mux.Target(instance_name=INSTANCE),
            request=tei_pb2.EmbedRequest(inputs="Hello world"),
        )
        wrapped.write_bytes(framed(request.SerializeToString()))
        stream = Path(tmp) / "stream.bin"
        stream.write_bytes(
            b"".join(
                framed(tei_pb2.EmbedRequest(inputs=f"Hello world {i}").SerializeToString())
                for i in range(20)
            )
        )
        mux_stream = Path(tmp) / "mux_stream.bin"
        mux_stream.write_bytes(
            b"".join(
                framed(
                    mux.EmbedRequest(
                        target=mux.Target(instance_name=INSTANCE),
                        request=tei_pb2.EmbedRequest(inputs=f"Hello world {i}"),
                    ).SerializeToString()
                )
                for i in range(20)
            )
        )
        every = ("direct", "grpcio", "envoy", "stock")
        unary, streamed = (args.calls, args.streams), (max(args.calls // 20, 40), 4)
        calls: list[Call] = [
            ("tei.v1 Embed", "/tei.v1.Embed/Embed", plain, every, unary),
            ("tei.v1 EmbedStream of 20", "/tei.v1.Embed/EmbedStream", stream, every, streamed),
            ("multiplexer Embed", "/tei_multiplexer.v1.TeiMultiplexer/Embed", wrapped,
             ("grpcio", "envoy"), unary),
            ("multiplexer EmbedStream of 20", "/tei_multiplexer.v1.TeiMultiplexer/EmbedStream",
             mux_stream, ("grpcio", "envoy"), streamed),
        ]  # fmt: skip
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for name, url, body, kinds, (_, streams) in calls:
            for kind in kinds:  # warm up
                h2load(binary, paths[kind], url, body, calls=100, clients=args.clients,
                       streams=streams, routed=routed(name, kind))  # fmt: skip
        for r in range(args.rounds):
            for name, url, body, kinds, (count, streams) in calls:
                for kind in rotated(kinds, r):
                    rate, cpu = h2load(
                        binary, paths[kind], url, body, calls=count, clients=args.clients,
                        streams=streams, routed=routed(name, kind),
                    )  # fmt: skip
                    results.setdefault((name, kind), []).append((rate, cpu))
                    print(f"  {name} ({kind}): {rate:.0f} calls/s, {cpu * 1e3:.3f} ms CPU/call",
                          file=sys.stderr)  # fmt: skip
    report(results, calls, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
