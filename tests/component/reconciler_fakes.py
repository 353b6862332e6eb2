"""Fakes behind the controller's seams (Driver, Prober, Clock, loader) for fast, exact tests
of lifecycle decisions: no processes, no sockets, time moved by hand."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from tei_reconciler.build import build_controller
from tei_reconciler.desired.spec import DesiredState, InstanceSpec, spec_hash
from tei_reconciler.drivers.probe import Probe, ProbeOutcome, ProbeTarget
from tei_reconciler.drivers.process import Found, ProcessHandle, exit_info
from tei_reconciler.planner.status import ExitInfo, InstanceStatus
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

from support.clock import FakeClock
from support.net import port_ranges
from support.waiting import eventually

_pids = itertools.count(100_000)


def found(spec: InstanceSpec, *, pid: int = 4242, spec_hash_: str | None = None) -> Found:
    """A running child of ours as discovery reports it (port 8080, metrics 9100, CPU)."""
    return Found(
        pid=pid,
        instance=spec.name,
        spec_hash=spec_hash(spec) if spec_hash_ is None else spec_hash_,
        port=8080,
        prometheus_port=9100,
        gpu_id="",
    )


class FakeHandle(ProcessHandle):
    """A 'process' that lives until `die(code)`. `watch_errors`: what the next watches raise
    (one each) instead of waiting."""

    def __init__(self, *, spec_hash: str, clock: FakeClock, adopted: bool = False) -> None:
        super().__init__(pid=next(_pids), spec_hash=spec_hash, clock=clock)
        self.adopted = adopted
        self.died = anyio.Event()
        self.code: int | None = 0
        self.watch_errors: list[BaseException] = []

    def die(self, code: int | None) -> None:
        self.code = code
        self.died.set()

    async def watch(self) -> ExitInfo:
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        await self.died.wait()
        self.exit = exit_info(self.code, self._clock.wall())
        self._exited.set()
        return self.exit


class FakeDriver:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.spawned: list[tuple[str, str, FakeHandle]] = []  # (name, spec hash, handle)
        self.stopped: list[str] = []
        self.found: list[Found] = []
        self.errors: dict[str, BaseException] = {}  # what spawning that instance raises
        self.stop_errors: list[BaseException] = []  # what the next stops raise (one each)
        self.watch_errors: dict[str, list[BaseException]] = {}  # for the next spawned handle
        self.spawn_gate: anyio.Event | None = None
        self.stop_gate: anyio.Event | None = None
        self.adopted: dict[int, FakeHandle] = {}

    def log_path(self, name: str, *, beside: bool = False) -> Path:
        return Path("/nonexistent") / (f"{name}.next.log" if beside else f"{name}.log")

    def spawns_of(self, name: str) -> list[FakeHandle]:
        return [h for n, _, h in self.spawned if n == name]

    def hash_of(self, pid: int) -> str | None:
        """The spec hash process `pid` runs (spawned or adopted)."""
        for _, hash_, handle in self.spawned:
            if handle.pid == pid:
                return hash_
        adopted = self.adopted.get(pid)
        return adopted.spec_hash if adopted is not None else None

    async def spawn(
        self, argv: list[str], env: dict[str, str], *, name: str, hash_: str, log: Path
    ) -> ProcessHandle:
        if self.spawn_gate is not None:
            await self.spawn_gate.wait()
        if name in self.errors:
            raise self.errors[name]
        handle = FakeHandle(spec_hash=hash_, clock=self.clock)
        handle.watch_errors = self.watch_errors.pop(name, [])
        self.spawned.append((name, hash_, handle))
        return handle

    async def stop(self, handle: ProcessHandle, grace: float) -> ExitInfo:
        assert isinstance(handle, FakeHandle)
        self.stopped.append(str(handle.pid))
        if self.stop_errors:
            raise self.stop_errors.pop(0)
        if self.stop_gate is not None:
            await self.stop_gate.wait()
        handle.die(-15)
        return await handle.wait()

    def discover(self) -> list[Found]:
        return list(self.found)

    def reap_orphans(self) -> None:
        return None

    def adopt(self, found: Found) -> ProcessHandle | None:
        handle = FakeHandle(spec_hash=found.spec_hash, clock=self.clock, adopted=True)
        handle.pid = found.pid
        self.adopted[found.pid] = handle
        return handle


class FakeProber:
    """`mode[name]`: "ok" (default), "fail", "refuse" (the process refuses the probe's
    credentials), "hang", "stray" (raise a cancellation nobody
    asked for, as grpc.aio does on a closed channel), or "hang-grpc" (hang, and when cancelled
    raise a fresh cancellation in place of anyio's, as a cancelled grpc.aio call does);
    `by_hash[spec hash]` overrides it for the processes of one spec (`driver` tells their
    pids' hashes), e.g. a rollout's new one. `open[name]`: probes of that instance's
    processes open now (each process's probe loop opens its own)."""

    def __init__(self, driver: FakeDriver | None = None) -> None:
        self.mode: dict[str, str] = {}
        self.by_hash: dict[str, str] = {}
        self.calls: dict[str, int] = {}
        self.driver = driver
        self.open: Counter[str] = Counter()

    @asynccontextmanager
    async def probe(self, target: ProbeTarget) -> AsyncIterator[Probe]:
        self.open[target.name] += 1
        try:
            yield _FakeProbe(self, target)
        finally:
            self.open[target.name] -= 1

    async def check(self, target: ProbeTarget, within: float) -> ProbeOutcome:
        self.calls[target.name] = self.calls.get(target.name, 0) + 1
        hash_ = self.driver.hash_of(target.pid) if self.driver is not None else None
        mode = self.by_hash.get(hash_ or "") or self.mode.get(target.name, "ok")
        if mode == "hang":
            await anyio.sleep_forever()
        if mode == "stray":
            raise anyio.get_cancelled_exc_class()()
        if mode == "hang-grpc":
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                pass
            raise anyio.get_cancelled_exc_class()()  # outside the except: no __context__
        if mode == "refuse":
            return ProbeOutcome(ok=False, latency_ms=0.1, message="UNAUTHENTICATED", refused=True)
        return ProbeOutcome(ok=mode == "ok", latency_ms=0.1, message=mode)


class _FakeProbe:
    def __init__(self, prober: FakeProber, target: ProbeTarget) -> None:
        self.prober, self.target = prober, target

    async def check(self, within: float) -> ProbeOutcome:
        return await self.prober.check(self.target, within)


class World:
    """A controller wired to fakes, plus the knobs a test turns."""

    def __init__(self, tmp: Path, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "state_file": str(tmp / "state.toml"),
            "runtime_dir": str(tmp / "runtime"),
            **port_ranges(),
            "resync_interval_secs": 3600.0,
            "health_interval_secs": 0.01,
            "health_timeout_secs": 0.05,
            "failure_threshold": 3,
            "startup_timeout_secs": 60.0,
            "backoff_initial_secs": 10.0,
            "backoff_max_secs": 300.0,
            "backoff_reset_secs": 600.0,
            "stop_grace_secs": 1.0,
        }
        values.update(overrides)
        self.settings = Settings(**values)
        self.clock = FakeClock()
        self.driver = FakeDriver(self.clock)
        self.prober = FakeProber(self.driver)
        self.store = StatusStore()
        self.table = RoutingTable()
        self.desired = DesiredState()
        self._version = 0
        Path(self.settings.state_file).write_text("# version 0\n")
        self.controller = build_controller(
            self.settings,
            store=self.store,
            table=self.table,
            clock=self.clock,
            loader=lambda _path: self.desired,
            driver=self.driver,
            prober=self.prober,
            gpus=(),
            base_env={},
        )

    def set_desired(self, *specs: InstanceSpec) -> None:
        self.desired = DesiredState(instances={s.name: s for s in specs})
        self._version += 1
        Path(self.settings.state_file).write_text(f"# version {self._version}\n")
        self.controller.mark_dirty()

    def status(self, name: str) -> InstanceStatus | None:
        return self.store.get(name)

    async def until(self, check: Any, what: str = "condition") -> Any:
        return await eventually(check, what=what)

    async def phase(self, name: str, phase: str) -> InstanceStatus:
        result: InstanceStatus = await self.until(
            lambda: (s := self.status(name)) is not None and s.phase.value == phase and s,
            f"{name} {phase}",
        )
        return result

    async def passes(self, count: int) -> None:
        for _ in range(count):
            target = self.controller.passes + 1
            self.controller.mark_dirty()
            await self.until(lambda target=target: self.controller.passes >= target)


@asynccontextmanager
async def running(world: World) -> AsyncIterator[World]:
    async with anyio.create_task_group() as tg:
        await tg.start(world.controller.run)
        yield world
        tg.cancel_scope.cancel()
