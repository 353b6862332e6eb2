"""REST API throughput and latency: `python -m bench.api_bench`.

The server runs in a second process (a real hypercorn on port 0, the real state file in a
temporary directory, a status store filled as a controller would fill it), so the load
generator in this process does not share its event loop or GIL. Measured: `GET /instances`
with 10 and 100 instances, and a create+delete cycle (`POST /instances` then `DELETE`, each a
locked, fsynced rewrite of the state file). The load is bounded: a fixed number of requests
from a fixed number of concurrent clients.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx

from tei_reconciler.api import create_app, serve_api
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.planner.phase import Phase
from tei_reconciler.planner.status import InstanceStatus
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

LIST_REQUESTS = 2000
CYCLES = 300


async def _serve(directory: Path, instances: int) -> None:
    state = directory / "state.toml"
    state.write_text(
        "".join(
            f'[instances.bench-{i}]\nmodel_id = "hash/384"\nport = {20000 + i}\n\n'
            for i in range(instances)
        )
    )
    settings = Settings(
        runtime_dir=str(directory),
        api_port=0,
        grpc_port=0,
        max_instances=instances + 1000,
        instance_port_range=(30000, 40000),
    )
    statefile = StateFile(state, reserved_ports=settings.reserved_ports)
    store = StatusStore()
    now = time.time()
    for spec in statefile.load().instances.values():
        store.put(
            InstanceStatus(
                name=spec.name,
                spec=spec,
                phase=Phase.RUNNING,
                pid=1000,
                port=spec.port,
                prometheus_port=9100,
                created_at=now,
                ready_since=now,
            )
        )
    app = create_app(
        statefile=statefile,
        store=store,
        settings=settings,
        on_change=lambda: None,
        preview=lambda desired: [],
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_api(app, host="127.0.0.1", port=0, task_status=task_status)
        )
        print(port, flush=True)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                tg.cancel_scope.cancel()
                break


def _report(label: str, latencies: list[float], elapsed: float) -> dict[str, float | str]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    row: dict[str, float | str] = {
        "case": label,
        "requests": len(ordered),
        "rps": round(len(ordered) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
    }
    print(
        f"{label:<28} {row['requests']:>6} req  {row['rps']:>8} req/s  "
        f"p50 {row['p50_ms']:>7} ms  p99 {row['p99_ms']:>7} ms",
        flush=True,
    )
    return row


Request = Callable[[httpx.AsyncClient, int], Awaitable[None]]


async def _load(
    client: httpx.AsyncClient, total: int, concurrency: int, one: Request
) -> tuple[list[float], float]:
    latencies: list[float] = []
    remaining = iter(range(total))

    async def worker() -> None:
        for i in remaining:
            began = time.perf_counter()
            await one(client, i)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return latencies, time.perf_counter() - began


async def _list(client: httpx.AsyncClient, _: int) -> None:
    response = await client.get("/instances")
    response.raise_for_status()


async def _cycle(client: httpx.AsyncClient, i: int) -> None:
    name = f"cycle-{i}"
    created = await client.post("/instances", json={"name": name, "model_id": "hash/384"})
    created.raise_for_status()
    deleted = await client.delete(f"/instances/{name}")
    deleted.raise_for_status()


async def _measure(instances: int, concurrency: int) -> list[dict[str, float | str]]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "bench.api_bench", "--serve", tmp, str(instances)]
        server = await anyio.open_process(command, stderr=None)
        try:
            assert server.stdout is not None
            first = b""
            while not first.endswith(b"\n"):
                first += await server.stdout.receive()
            port = int(first)
            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
            ) as client:
                await _load(client, 50, concurrency, _list)  # warm up
                rows = [
                    _report(
                        f"GET /instances ({instances})",
                        *await _load(client, LIST_REQUESTS, concurrency, _list),
                    )
                ]
                if instances == 10:
                    rows.append(
                        _report(
                            "create+delete cycle",
                            *await _load(client, CYCLES, max(concurrency // 2, 1), _cycle),
                        )
                    )
                return rows
        finally:
            server.send_signal(signal.SIGTERM)
            with anyio.move_on_after(15):
                await server.wait()
            if server.returncode is None:
                server.kill()
                await server.wait()
            await server.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_bench")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--serve", nargs=2, metavar=("DIR", "INSTANCES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        anyio.run(_serve, Path(args.serve[0]), int(args.serve[1]), backend="asyncio")
        return 0
    print(f"REST API, {args.concurrency} concurrent clients, server in its own process")
    for instances in (10, 100):
        anyio.run(_measure, instances, args.concurrency, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
