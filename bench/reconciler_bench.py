"""How fast the reconciler converges, what a pass costs, and what it weighs.

- edit-to-spawn / edit-to-Ready: write a state file with N instances of the built-in engine's
  hash backend (the watcher notices, a pass plans, the driver spawns, the startup probe sees
  the model) and time each instance from the write; p50/p95 over instances (and rounds).
- kill-to-Ready: SIGKILL one Ready instance; time until its replacement is Ready (with the
  backoff's first delay set to `--backoff` seconds, as the default 10 s would dominate).
- plan(): the pure planner's cost for 10 ... 10000 instances, steady state and cold start.
- RSS: `tei-reconciler run` as a child process, idle and managing 50 Ready instances.
- rollouts, surge vs recreate: one instance behind the data plane (`--data-plane`), a client
  calling it through the gRPC port every few milliseconds, and its spec edited `--rounds`
  times. change-to-switched: from the write to the routing table sending calls to the new
  process (Ready). unavailable: from the first failed call to the next answered one, per
  change (0 when no call failed).

Run with `python -m bench.reconciler_bench [--sizes 1,10,50] [--rounds 5]`; prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import grpc
import msgspec
import psutil

from tei_reconciler.desired.spec import DesiredState, InstanceSpec, spec_hash
from tei_reconciler.planner.backoff import CrashLoop
from tei_reconciler.planner.observed import ObservedInstance, ProcessView
from tei_reconciler.planner.plan import plan
from tei_reconciler.planner.policy import Policy
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.routing import RoutingTable
from tei_reconciler.service import FrontEnds, serve
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore


def _settings(tmp: Path, backoff: float) -> Settings:
    base = random.randrange(20000, 40000, 1000)
    return Settings(
        api_port=0,
        grpc_port=0,
        state_file=str(tmp / "state.toml"),
        runtime_dir=str(tmp / "runtime"),
        tei_binary="builtin",
        instance_port_range=(base, base + 400),
        prometheus_port_range=(base + 400, base + 800),
        max_instances=64,
        backoff_initial_secs=backoff,
        stop_grace_secs=10.0,
    )


def _state(n: int, tag: str = "") -> str:
    return "".join(f'[instances.i{i}{tag}]\nmodel_id = "hash/384"\n' for i in range(n))


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _converge(settings: Settings, n: int, rounds: int) -> dict[str, Any]:
    state_file = Path(settings.state_file)
    _write(state_file, "")
    store, table = StatusStore(), RoutingTable()
    spawn: list[float] = []
    ready: list[float] = []
    kill: list[float] = []
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: serve(
                settings, store=store, table=table, handle_signals=False, task_status=task_status
            )
        )
        for r in range(rounds):
            names = [f"i{i}r{r}" for i in range(n)]
            t0 = time.perf_counter()
            _write(state_file, _state(n, f"r{r}"))
            seen_spawn: dict[str, float] = {}
            seen_ready: dict[str, float] = {}
            while len(seen_ready) < n:
                now = time.perf_counter() - t0
                for name in names:
                    status = store.get(name)
                    if status is None:
                        continue
                    if status.pid is not None:
                        seen_spawn.setdefault(name, now)
                    if status.ready:
                        seen_ready.setdefault(name, now)
                if now > 300:
                    raise RuntimeError(f"{n} instances not Ready after 300 s")
                await anyio.sleep(0.002)
            spawn += seen_spawn.values()
            ready += seen_ready.values()
            victim = store.get(names[0])
            assert victim is not None
            assert victim.pid is not None
            t1 = time.perf_counter()
            os.kill(victim.pid, signal.SIGKILL)
            while True:
                status = store.get(names[0])
                if status is not None and status.ready and status.pid != victim.pid:
                    break
                await anyio.sleep(0.002)
            kill.append(time.perf_counter() - t1)
            _write(state_file, "[instances]\n")
            while True:
                if all(store.get(name) is None for name in names):
                    break
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    return {
        "instances": n,
        "rounds": rounds,
        "spawn_p50_ms": 1000 * _pct(spawn, 0.5),
        "spawn_p95_ms": 1000 * _pct(spawn, 0.95),
        "ready_p50_ms": 1000 * _pct(ready, 0.5),
        "ready_p95_ms": 1000 * _pct(ready, 0.95),
        "kill_to_ready_p50_ms": 1000 * _pct(kill, 0.5),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_CALL_EVERY = 0.005  # the rollout client's pace: the resolution of "unavailable"


async def _caller(port: int, calls: list[tuple[float, bool]]) -> None:
    """Call instance `r` through the data plane in a loop: (time sent, answered) per call."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        while True:
            began = time.perf_counter()
            try:
                await stub.Embed(
                    tei_pb2.EmbedRequest(inputs="rollout bench"),
                    metadata=(("x-tei-instance", "r"),),
                    timeout=10,
                )
                calls.append((began, True))
            except grpc.aio.AioRpcError:
                calls.append((began, False))
            await anyio.sleep(_CALL_EVERY)


def _switched(table: RoutingTable, old: int) -> bool:
    """Whether instance `r`'s calls go to another process than generation `old`, Ready."""
    endpoint = table.get("r")
    return endpoint is not None and endpoint.ready and endpoint.generation != old


async def _until(check: Callable[[], object], step: float = 0.01) -> None:
    """Poll `check` every `step` seconds until it holds (what the bench times)."""
    while True:
        if check():
            return
        await anyio.sleep(step)


def _unavailable(calls: list[tuple[float, bool]], since: float) -> tuple[float, int]:
    """Seconds from the first failed call after `since` to the next answered one, and how many
    calls failed."""
    after = [(t, ok) for t, ok in calls if t >= since]
    failed = [t for t, ok in after if not ok]
    if not failed:
        return 0.0, 0
    last = failed[-1]
    resumed = next((t for t, ok in after if ok and t > last), last)
    return resumed - failed[0], len(failed)


async def _rollouts(settings: Settings, strategy: str, rounds: int) -> dict[str, Any]:
    state_file = Path(settings.state_file)

    def state(tokens: int) -> str:
        return (
            f'[instances.r]\nmodel_id = "hash/384"\ngpu = "none"\nrollout = "{strategy}"\n'
            f"max_batch_tokens = {tokens}\n"
        )

    _write(state_file, state(16384))
    store, table = StatusStore(), RoutingTable()
    switched: list[float] = []
    unavailable: list[float] = []
    failed = 0
    calls: list[tuple[float, bool]] = []
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: serve(
                settings,
                store=store,
                table=table,
                front=FrontEnds(settings),
                handle_signals=False,
                task_status=task_status,
            )
        )
        await _until(lambda: (s := store.get("r")) is not None and s.ready)
        tg.start_soon(_caller, settings.grpc_port, calls)
        await _until(lambda: calls and calls[-1][1])
        for r in range(rounds):
            before = table.get("r")
            assert before is not None
            old = before.generation
            t0 = time.perf_counter()
            _write(state_file, state(8192 if r % 2 == 0 else 16384))
            await _until(partial(_switched, table, old), step=0.001)
            switched.append(time.perf_counter() - t0)
            await _until(
                lambda: (s := store.get("r")) is not None and s.ready and len(s.processes) == 1
            )
            await anyio.sleep(0.3)  # calls after the change is over count too
            gap, lost = _unavailable(calls, t0)
            unavailable.append(gap)
            failed += lost
        tg.cancel_scope.cancel()
    return {
        "switched_p50_ms": 1000 * _pct(switched, 0.5),
        "switched_max_ms": 1000 * max(switched),
        "unavailable_p50_ms": 1000 * _pct(unavailable, 0.5),
        "unavailable_max_ms": 1000 * max(unavailable),
        "failed": failed,
        "calls": len(calls),
    }


def _plan_cost(n: int) -> dict[str, Any]:
    specs = {f"i{i}": InstanceSpec(name=f"i{i}", model_id="hash/384") for i in range(n)}
    desired = DesiredState(instances=specs)
    steady = {
        name: ObservedInstance(
            name=name,
            process=ProcessView(pid=1000 + i, spec_hash=spec_hash(spec), started_at=0.0),
            startup_ok=True,
            ready=True,
            crash=CrashLoop(),
        )
        for i, (name, spec) in enumerate(specs.items())
    }
    policy = Policy.of(Settings(max_instances=n + 1))
    number = max(1, 20_000 // n)
    steady_s = (
        min(
            timeit.repeat(
                lambda: plan(desired, steady, 100.0, policy=policy), number=number, repeat=3
            )
        )
        / number
    )
    cold_s = (
        min(timeit.repeat(lambda: plan(desired, {}, 100.0, policy=policy), number=number, repeat=3))
        / number
    )
    return {"instances": n, "steady_ms": steady_s * 1000, "cold_ms": cold_s * 1000}


def _rss(tmp: Path, n: int) -> dict[str, float]:
    settings = _settings(tmp, 10.0)
    config = tmp / "config.toml"
    low, high = settings.instance_port_range
    plow, phigh = settings.prometheus_port_range
    config.write_text(
        f'state_file = "{settings.state_file}"\nruntime_dir = "{settings.runtime_dir}"\n'
        f'tei_binary = "builtin"\ninstance_port_range = [{low}, {high}]\n'
        f"prometheus_port_range = [{plow}, {phigh}]\nmax_instances = 64\n"
    )
    Path(settings.state_file).write_text("")
    env = {**os.environ, "TEI_RECONCILER_API_PORT": "0", "TEI_RECONCILER_GRPC_PORT": "0"}
    child = subprocess.Popen(
        [sys.executable, "-m", "tei_reconciler", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc = psutil.Process(child.pid)
        time.sleep(5)
        idle = proc.memory_info().rss / 2**20
        Path(settings.state_file).write_text(_state(n))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            kids = [p for p in proc.children() if p.is_running()]
            if len(kids) == n:
                break
            time.sleep(0.5)
        time.sleep(10)  # let every startup probe pass and the loop settle
        loaded = proc.memory_info().rss / 2**20
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=120)
    return {"idle_mib": idle, "loaded_mib": loaded, "instances": n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconciler_bench")
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--rounds", type=int, default=5, help="rounds for the 1-instance size")
    parser.add_argument("--backoff", type=float, default=0.1, help="first crash backoff (s)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--data-plane", default="grpcio", help="the rollout part's data plane: grpcio or envoy"
    )
    parser.add_argument("--only-rollouts", action="store_true", help="run the rollout part only")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# reconciler bench ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})\n")
    _print_rollouts(args.rounds, args.data_plane)
    if args.only_rollouts:
        return 0
    print(
        "| instances | rounds | edit-to-spawn p50/p95 ms | edit-to-Ready p50/p95 ms "
        "| kill-to-Ready p50 ms |"
    )
    print("|---|---|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            rounds = args.rounds if n == 1 else 1
            r = anyio.run(
                _converge, _settings(Path(tmp), args.backoff), n, rounds, backend="asyncio"
            )
        print(
            f"| {n} | {rounds} | {r['spawn_p50_ms']:.0f} / {r['spawn_p95_ms']:.0f} "
            f"| {r['ready_p50_ms']:.0f} / {r['ready_p95_ms']:.0f} "
            f"| {r['kill_to_ready_p50_ms']:.0f} |",
            flush=True,
        )
    print("\n| plan() instances | steady state ms | cold start ms |")
    print("|---|---|---|")
    for n in (10, 100, 1000, 10000):
        c = _plan_cost(n)
        print(f"| {n} | {c['steady_ms']:.3f} | {c['cold_ms']:.3f} |", flush=True)
    if not args.skip_rss:
        with tempfile.TemporaryDirectory() as tmp:
            m = _rss(Path(tmp), max(sizes))
        print(
            f"\nreconciler RSS: idle {m['idle_mib']:.1f} MiB, with {m['instances']} Ready "
            f"instances {m['loaded_mib']:.1f} MiB"
        )
    return 0


def _print_rollouts(rounds: int, data_plane: str) -> None:
    print(
        f"| rollout ({data_plane}, {rounds} spec changes) | change-to-switched p50 / max ms "
        "| unavailable per change p50 / max ms | failed calls |"
    )
    print("|---|---|---|---|")
    for strategy in ("surge", "recreate"):
        with tempfile.TemporaryDirectory() as tmp:
            settings = msgspec.structs.replace(
                _settings(Path(tmp), 0.1),
                grpc_port=_free_port(),
                data_plane=data_plane,
                health_interval_secs=0.2,
            )
            r = anyio.run(_rollouts, settings, strategy, rounds, backend="asyncio")
        print(
            f"| {strategy} | {r['switched_p50_ms']:.0f} / {r['switched_max_ms']:.0f} "
            f"| {r['unavailable_p50_ms']:.0f} / {r['unavailable_max_ms']:.0f} "
            f"| {r['failed']} of {r['calls']} |",
            flush=True,
        )
    print()


if __name__ == "__main__":
    raise SystemExit(main())
