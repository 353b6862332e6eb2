"""Throughput and CPU per call of each data plane, driven by h2load (a C HTTP/2 load
generator, Debian's nghttp2-client) so the client is never the bottleneck.

Run with `.venv/bin/python -m bench.throughput`. One cheap engine (`hash/384`: the backend
costs little, so the proxy's own cost shows) and the four paths of `bench/dataplanes.py`;
h2load sends gRPC unary `tei.v1.Embed/Embed` calls (a framed protobuf body, `content-type:
application/grpc`, `te: trailers`, routed by `x-tei-instance`) with `-c` connections and `-m`
streams each, and `tei.v1.Embed/EmbedStream` calls of 20 messages each (a twentieth as many,
4 streams per connection). Each case runs `--rounds` times in rotation; the report has the
median calls/s, its share of direct, and the proxy's CPU time per call (its processes' user +
system time over the run, divided by the calls). The multiplexer's Embed is measured the same
way on the two paths that serve it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.dataplanes import INSTANCE, Path_, started
from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux

Case = tuple[str, Path_, str, Path, bool, tuple[int, int]]  # name, path, url, body, routed,
# (calls, streams per connection)
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
    """(requests per second, proxy CPU ms per call) of one h2load run."""
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
    return float(rate.group(1)), used / calls * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
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
        kinds = ("direct", "grpcio", "envoy", "stock")
        unary, streamed = (args.calls, args.streams), (max(args.calls // 20, 40), 4)
        cases: list[Case] = [
            (f"tei.v1 Embed ({k})", paths[k], "/tei.v1.Embed/Embed", plain, k != "direct", unary)
            for k in kinds
        ] + [
            (f"tei.v1 EmbedStream x20 ({k})", paths[k], "/tei.v1.Embed/EmbedStream", stream,
             k != "direct", streamed)
            for k in kinds
        ] + [
            (f"multiplexer Embed ({k})", paths[k], "/tei_multiplexer.v1.TeiMultiplexer/Embed",
             wrapped, False, unary)
            for k in ("grpcio", "envoy")
        ]  # fmt: skip
        for _, path, url, body, routed, (_, streams) in cases:  # warm up
            h2load(binary, path, url, body, calls=100, clients=args.clients, streams=streams,
                   routed=routed)  # fmt: skip
        rates: dict[str, list[float]] = {c[0]: [] for c in cases}
        cpus: dict[str, list[float]] = {c[0]: [] for c in cases}
        for _ in range(args.rounds):
            for name, path, url, body, routed, (calls, streams) in cases:
                rate, cpu = h2load(
                    binary, path, url, body, calls=calls, clients=args.clients,
                    streams=streams, routed=routed,
                )  # fmt: skip
                rates[name].append(rate)
                cpus[name].append(cpu)
                print(f"  {name}: {rate:.0f} calls/s, {cpu:.3f} ms CPU/call", file=sys.stderr)
    print(
        f"h2load -c {args.clients}, unary -n {args.calls} -m {args.streams}, engine "
        f"{args.model_id}, median of {args.rounds}; {os.cpu_count()} CPUs\n"
    )
    print("| call (path) | calls/s | vs direct | proxy CPU per call |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        direct_name = name.rsplit(" (", 1)[0] + " (direct)"
        direct = statistics.median(rates.get(direct_name, values))
        cpu = statistics.median(cpus[name])
        cpu_text = "-" if name.endswith("(direct)") else f"{cpu:.3f} ms"
        share = f"{rate / direct:.0%}" if direct_name in rates else "-"
        print(f"| {name} | {rate:.0f} | {share} | {cpu_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
